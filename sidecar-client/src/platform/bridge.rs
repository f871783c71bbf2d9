//! Blocking handles (stdin, stdout, a child's pipes) turned into tokio
//! sockets the pump can use by readiness (what Windows uses for ssh's pipes
//! and `--jump`'s; built everywhere, so its tests run on every system): a loopback TCP connection whose
//! far end a thread copies to or from the handle. Only the connection this
//! process made is taken: the accepted peer must be our own socket's
//! address, so another local process that races to the listener gets
//! nothing, and the listener is gone once the pair is made.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};

/// A connected pair of loopback sockets: (ours, theirs).
fn pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let ours = TcpStream::connect(listener.local_addr()?)?;
    let want = ours.local_addr()?;
    // Bounded: a stranger's connection is dropped and the next one taken,
    // at most a few times.
    for _ in 0..8 {
        let (theirs, from) = listener.accept()?;
        if from == want {
            ours.set_nodelay(true)?;
            theirs.set_nodelay(true)?;
            return Ok((ours, theirs));
        }
    }
    Err(io::Error::other(
        "another process kept connecting to the sidecar's loopback bridge",
    ))
}

fn into_tokio(s: TcpStream) -> io::Result<tokio::net::TcpStream> {
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

/// A socket that reads what `from` gives: a thread copies `from` into the
/// far end until `from` ends (then the socket reads end-of-stream) or the
/// socket is dropped.
pub fn reader_into(mut from: impl Read + Send + 'static) -> io::Result<tokio::net::TcpStream> {
    let (ours, mut theirs) = pair()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if theirs.write_all(&buf[..n]).is_err() {
                return;
            }
        }
        let _ = theirs.shutdown(Shutdown::Write);
    });
    into_tokio(ours)
}

/// A socket whose writes go to `to`: a thread copies the far end into
/// `to` until the socket is dropped or `to` fails.
pub fn writer_from(mut to: impl Write + Send + 'static) -> io::Result<tokio::net::TcpStream> {
    let (ours, mut theirs) = pair()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = theirs.read(&mut buf) {
            if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                return;
            }
        }
    });
    into_tokio(ours)
}

/// One socket both ways: reads come from `from`, writes go to `to` (a
/// child's stdout and stdin).
pub fn duplex(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
) -> io::Result<tokio::net::TcpStream> {
    let (ours, theirs) = pair()?;
    let mut theirs_in = theirs.try_clone()?;
    let mut theirs_out = theirs;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if theirs_in.write_all(&buf[..n]).is_err() {
                return;
            }
        }
        let _ = theirs_in.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = theirs_out.read(&mut buf) {
            if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                return;
            }
        }
    });
    into_tokio(ours)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_the_bridge_both_ways_and_the_end_arrives() {
        let mut r = super::reader_into(std::io::Cursor::new(b"from ssh".to_vec())).unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"from ssh");

        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        struct Sink(std::sync::mpsc::Sender<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.send(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = super::writer_from(Sink(tx)).unwrap();
        w.write_all(b"to ssh").await.unwrap();
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(got, b"to ssh");
    }
}
