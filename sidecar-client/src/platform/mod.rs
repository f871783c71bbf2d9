//! Everything the sidecar needs from the operating system that is not
//! portable, behind this one module, so the protocol, the pump and the
//! agent wire format are the same everywhere:
//!
//! | what | Unix (Linux, macOS) | Windows |
//! |---|---|---|
//! | ssh-agent | the Unix socket in `SSH_AUTH_SOCK` | OpenSSH for Windows' named pipe `\\.\pipe\openssh-ssh-agent` (or `SSH_AUTH_SOCK`) |
//! | "ssh is gone" | SIGHUP, SIGTERM | console control events (Ctrl-C, Ctrl-Break, close); no Unix signals |
//! | ssh's stdin/stdout | non-blocking pipes | bridged by threads to a loopback socket pair |
//! | `--jump`'s `ssh -W` | a Unix socket pair | its pipes, bridged the same way |
//! | key files' permissions | mode bits: a key others can read is refused (keyfile) or warned about | no mode bits: see [`private_mode`] and `ztssh_keyfile::read_private` |
//! | home directory | `HOME` | `USERPROFILE` |
//! | `ProxyCommand` quoting | POSIX shell words | Windows command-line quoting ([`quote`]) |
//!
//! Built and tested: Linux (x86_64, Debian 12). Type-checked: macOS
//! (`aarch64-apple-darwin`, `x86_64-apple-darwin`). Built for Windows
//! (`x86_64-pc-windows-gnu`); see the README for what runs there.

pub mod bridge;
pub mod quote;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

#[cfg(not(any(unix, windows)))]
compile_error!(
    "ztssh-sidecar is built for Unix (Linux, macOS) and Windows: a port adds a platform \
     module (agent transport, signals, stdio, file modes) beside platform/unix/"
);

use std::path::PathBuf;

/// The user's home directory: `HOME` on Unix, `USERPROFILE` on Windows
/// (where ssh looks for `.ssh\config` too); unset or empty is `None`.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os(HOME_VAR)
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The agent to use when `SSH_AUTH_SOCK` is unset or empty: none on
/// Unix, OpenSSH for Windows' service pipe on Windows.
pub fn default_agent() -> Option<PathBuf> {
    DEFAULT_AGENT.map(PathBuf::from)
}

/// The permission bits to judge a private key file by, where the system
/// has them: `Some(mode)` on Unix, `None` on Windows, whose access control
/// lists are not read here (a key under the user's profile directory
/// inherits its owner-only ACL).
pub fn private_mode(meta: &std::fs::Metadata) -> Option<u32> {
    mode_bits(meta)
}

/// The program's path as the first word of a `ProxyCommand` line, quoted
/// the way ssh on this system runs it.
pub fn proxy_command_word(path: &str) -> Option<String> {
    QUOTE(path)
}
