//! Everything the sidecar needs from the operating system that is not
//! portable: the ssh-agent transport, the signals that mean "ssh is gone",
//! ssh's pipes, and file modes for what `setup` writes. Each lives behind
//! this one module, so a port to another system adds a module beside
//! `unix/` (say `windows/`, with the agent's named pipe and console
//! events) and leaves the protocol, the pump and the agent wire format as
//! they are.
//!
//! Only Linux (x86_64, Debian 12) is built and tested; see the README.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(not(unix))]
compile_error!(
    "ztssh-sidecar is built and tested on Linux only: a port adds a platform module \
     (agent transport, signals, stdio, file modes) beside platform/unix/"
);
