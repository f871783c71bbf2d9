//! The jump leg on Windows: `ssh -W TARGET JUMP` with its stdin and stdout
//! piped, bridged to a loopback socket the pump uses (see `bridge.rs`).
//! As on Unix, ssh reaches the jump host as the user's ssh_config says.

use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The jump leg's socket and the ssh that carries it (killed on drop).
pub struct Jump {
    /// The sidecar's end.
    pub sock: tokio::net::TcpStream,
    _ssh: KillOnDrop,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ssh [-F CONFIG] -W TARGET -- JUMP` with `env` (the jump depth)
/// set; its messages go to the sidecar's stderr, which ssh shows the user.
pub fn spawn_jump(
    ssh: &Path,
    config: Option<&Path>,
    target: &str,
    jump: &str,
    env: (&str, u32),
) -> io::Result<Jump> {
    let mut cmd = Command::new(ssh);
    if let Some(c) = config {
        cmd.arg("-F").arg(c);
    }
    // `--` so that a JUMP beginning with `-` is never read as an option.
    cmd.arg("-W")
        .arg(target)
        .arg("--")
        .arg(jump)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env(env.0, env.1.to_string());
    let mut child = KillOnDrop(cmd.spawn()?);
    let (Some(stdin), Some(stdout)) = (child.0.stdin.take(), child.0.stdout.take()) else {
        return Err(io::Error::other("ssh -W started without its pipes"));
    };
    let sock = crate::platform::bridge::duplex(stdout, stdin)?;
    Ok(Jump { sock, _ssh: child })
}
