//! The byte stream to the proxy: a TCP connection, or (`--jump`) the
//! socket of an `ssh -W` through a jump host. The pump uses either through
//! readiness and non-blocking reads and writes.

use std::io;

use tokio::net::TcpStream;
use ztssh_sidecar::platform::Jump;

/// Where the tunnel's records go.
pub enum Link {
    /// Straight to the proxy.
    Tcp(TcpStream),
    /// Through `ssh -W` to a jump host, then to the proxy.
    Jump(Jump),
}

impl Link {
    /// Waits until a read may make progress.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.readable().await,
            Self::Jump(j) => j.sock.readable().await,
        }
    }

    /// Waits until a write may make progress.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.writable().await,
            Self::Jump(j) => j.sock.writable().await,
        }
    }

    /// Reads what is there, without waiting.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_read(buf),
            Self::Jump(j) => j.sock.try_read(buf),
        }
    }

    /// Writes what fits, without waiting.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write(buf),
            Self::Jump(j) => j.sock.try_write(buf),
        }
    }
}
