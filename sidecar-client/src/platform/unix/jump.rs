//! The jump leg: `ssh -W TARGET JUMP` with its stdin and stdout on one end
//! of a socket pair, the sidecar's tunnel on the other. ssh reaches the
//! jump host as the user's ssh_config says (through ztssh, when it is a
//! ztssh host) and opens a `direct-tcpip` channel from there to TARGET:
//! what `ssh -J` does, with the ztssh tunnel to the last host carried
//! inside.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

/// The jump leg's socket and the ssh that carries it (killed on drop).
pub struct Jump {
    /// The sidecar's end.
    pub sock: tokio::net::UnixStream,
    _ssh: tokio::process::Child,
}

/// Starts `ssh [-F CONFIG] -W TARGET JUMP` with `env` (the jump depth) set;
/// its messages go to the sidecar's stderr, which ssh shows the user.
pub fn spawn_jump(
    ssh: &Path,
    config: Option<&Path>,
    target: &str,
    jump: &str,
    env: (&str, u32),
) -> io::Result<Jump> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let out = theirs.try_clone()?;
    let mut cmd = tokio::process::Command::new(ssh);
    if let Some(c) = config {
        cmd.arg("-F").arg(c);
    }
    // `--` so that a JUMP beginning with `-` is never read as an option.
    cmd.arg("-W")
        .arg(target)
        .arg("--")
        .arg(jump)
        .stdin(OwnedFd::from(theirs))
        .stdout(OwnedFd::from(out))
        .env(env.0, env.1.to_string())
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    ours.set_nonblocking(true)?;
    Ok(Jump {
        sock: tokio::net::UnixStream::from_std(ours)?,
        _ssh: child,
    })
}
