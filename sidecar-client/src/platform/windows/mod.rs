//! Windows: ssh-agent on OpenSSH for Windows' named pipe, console control
//! events instead of signals, ssh's pipes bridged to loopback sockets
//! (tokio has no readiness-based IO on anonymous pipes), no mode bits.

mod jump;

pub use jump::{Jump, spawn_jump};

use std::io;
use std::path::Path;
use std::time::Duration;

/// The variable that names the home directory (where OpenSSH for Windows
/// looks for `.ssh\config`).
pub const HOME_VAR: &str = "USERPROFILE";

/// The ssh-agent service's pipe, when `SSH_AUTH_SOCK` is unset or empty:
/// what OpenSSH for Windows' ssh and ssh-add use.
pub(super) const DEFAULT_AGENT: Option<&str> = Some(r"\\.\pipe\openssh-ssh-agent");

/// What to do when ssh-agent cannot be reached.
pub const AGENT_HINT: &str = "start the OpenSSH Authentication Agent service \
    (Start-Service ssh-agent, as an administrator) and ssh-add your key";

/// How a `ProxyCommand` word is quoted: ssh starts the line with
/// CreateProcess.
pub(super) const QUOTE: fn(&str) -> Option<String> = super::quote::windows;

/// No permission bits on Windows.
pub(super) fn mode_bits(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

/// The byte stream to ssh-agent: the named pipe, opened as a file.
pub type AgentStream = std::fs::File;

/// Connects to ssh-agent's named pipe at `path`. A pipe handle opened
/// this way has no read timeout: a reply that never comes holds the
/// blocking-pool thread that asked (the session itself goes on).
pub fn connect_agent(path: &Path, _read_timeout: Duration) -> io::Result<AgentStream> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

/// What ssh sends the sidecar: the sidecar's end of a loopback socket a
/// thread copies stdin into.
pub type SshInput = tokio::net::TcpStream;
/// What the sidecar sends ssh: the end of a loopback socket a thread
/// copies to stdout.
pub type SshOutput = tokio::net::TcpStream;

/// Our stdin and stdout, ready for readiness-based IO.
pub struct Stdio {
    /// What ssh sends.
    pub input: SshInput,
    /// What goes to ssh.
    pub output: SshOutput,
}

/// Opens stdin and stdout through two bridged loopback sockets.
pub fn open_stdio() -> io::Result<Stdio> {
    let input = super::bridge::reader_into(std::io::stdin())?;
    let output = super::bridge::writer_from(std::io::stdout())?;
    Ok(Stdio { input, output })
}

/// What means ssh is gone on Windows: there are no Unix signals. ssh for
/// Windows ends its ProxyCommand by closing its pipes (the pump then sees
/// the end of input) or by TerminateProcess, which nothing can catch;
/// from a console, Ctrl-C, Ctrl-Break and closing the window arrive as
/// control events.
pub struct SshGone {
    c: tokio::signal::windows::CtrlC,
    brk: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
}

impl SshGone {
    /// Starts watching (inside the runtime).
    pub fn watch() -> Result<Self, String> {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        let e = |what: &str, e: io::Error| format!("cannot watch {what}: {e}");
        Ok(Self {
            c: ctrl_c().map_err(|x| e("Ctrl-C", x))?,
            brk: ctrl_break().map_err(|x| e("Ctrl-Break", x))?,
            close: ctrl_close().map_err(|x| e("the console's close", x))?,
        })
    }

    /// Resolves when any of the events arrives.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.c.recv() => {}
            _ = self.brk.recv() => {}
            _ = self.close.recv() => {}
        }
    }
}

/// Creates `dir` and any missing parents. Windows has no mode bits: a
/// directory made under the user's profile inherits its access control
/// list (the user, SYSTEM and Administrators).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// The permission bits to keep when a file is replaced: Windows has none,
/// so 0o600 stands in (ignored by [`write_atomic`] there).
pub fn file_mode(path: &Path) -> io::Result<u32> {
    std::fs::metadata(path).map(|_| 0o600)
}

/// Writes `contents` to `path` through a temporary file and a rename
/// (MoveFileEx, replacing): a reader sees the old file or the new one.
/// `mode` has no meaning on Windows.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    ztssh_keyfile::write_atomic(path, contents, mode, ztssh_keyfile::Existing::Replace)
}
