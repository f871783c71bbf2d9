//! Unix: ssh-agent on a Unix-domain socket, SIGHUP and SIGTERM, stdin and
//! stdout as non-blocking pipes, POSIX file modes.

mod jump;
mod stdio;

pub use jump::{Jump, spawn_jump};
pub use stdio::{Stdio, open as open_stdio};

use std::io;
use std::path::Path;
use std::time::Duration;

/// The variable that names the home directory.
pub const HOME_VAR: &str = "HOME";

/// No agent without `SSH_AUTH_SOCK`.
pub(super) const DEFAULT_AGENT: Option<&str> = None;

/// What to do when ssh-agent cannot be reached.
pub const AGENT_HINT: &str = "start ssh-agent (eval \"$(ssh-agent)\") and ssh-add your key";

/// How a `ProxyCommand` word is quoted: ssh runs the line with the shell.
pub(super) const QUOTE: fn(&str) -> Option<String> = super::quote::posix;

/// A file's permission bits.
pub(super) fn mode_bits(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.mode())
}

/// The byte stream to ssh-agent: a Unix-domain socket.
pub type AgentStream = std::os::unix::net::UnixStream;

/// Connects to ssh-agent at `path` (`$SSH_AUTH_SOCK`); a reply that takes
/// longer than `read_timeout` fails the call instead of hanging it.
pub fn connect_agent(path: &Path, read_timeout: Duration) -> io::Result<AgentStream> {
    let sock = AgentStream::connect(path)?;
    sock.set_read_timeout(Some(read_timeout))?;
    Ok(sock)
}

/// What ssh sends the sidecar (stdin), readable without blocking.
pub type SshInput = tokio::net::unix::pipe::Receiver;
/// What the sidecar sends ssh (stdout), writable without blocking.
pub type SshOutput = tokio::net::unix::pipe::Sender;

/// The signals that mean ssh is gone: ssh sends its ProxyCommand SIGHUP as
/// it exits, and SIGTERM is the usual polite stop.
pub struct SshGone {
    hangup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl SshGone {
    /// Starts watching (inside the runtime).
    pub fn watch() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let hangup =
            signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
        let term =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        Ok(Self { hangup, term })
    }

    /// Resolves when either signal arrives.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.hangup.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Creates `dir` and any missing parents; a directory this call creates
/// gets mode 0700 (`~/.ssh`, `~/.config/ztssh`). An existing one is left
/// as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The permission bits of an existing file, to keep them when it is
/// replaced.
pub fn file_mode(path: &Path) -> io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Writes `contents` to `path` through a temporary file and a rename, with
/// permission bits `mode`: a reader sees the old file or the new one,
/// never half of either.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    ztssh_keyfile::write_atomic(path, contents, mode, ztssh_keyfile::Existing::Replace)
}
