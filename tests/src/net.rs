//! Loopback networking: free ports, connections from chosen source
//! addresses, a bit-flipping relay, and the kernel's socket table.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits (at most `within`) until the peer closes `s`; panics if it keeps
/// the connection open.
pub fn expect_closed(s: &mut std::net::TcpStream, within: Duration) {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the peer kept the connection open: {e}"),
        }
    }
}

/// A TCP connection to the proxy from the loopback source address `src`
/// (any 127.0.0.0/8 address works on Linux), so tests can play several
/// clients.
pub fn connect_from(src: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let src: std::net::SocketAddr = format!("{src}:0").parse().map_err(std::io::Error::other)?;
    s.bind(&src.into())?;
    let dst: std::net::SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .map_err(std::io::Error::other)?;
    s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// Which way a [`Relay`] tampers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Sidecar → proxy.
    Up,
    /// Proxy → sidecar.
    Down,
}

/// A TCP relay in front of the proxy that can flip one bit at a given byte
/// offset of one direction: a man in the middle with no keys.
pub struct Relay {
    pub port: u16,
}

impl Relay {
    /// Relays connections to `target`; flips bit 0 of byte `offset` in `dir`.
    pub fn start(target: u16, flip: Option<(Dir, usize)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for _ in 0..8 {
                let Ok((client, _)) = listener.accept() else {
                    return;
                };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let pairs = [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                        Dir::Up,
                    ),
                    (server, client, Dir::Down),
                ];
                for (mut from, mut to, dir) in pairs {
                    let flip_at = flip.filter(|(d, _)| *d == dir).map(|(_, o)| o);
                    std::thread::spawn(move || copy_flipping(&mut from, &mut to, flip_at));
                }
            }
        });
        Self { port }
    }
}

fn copy_flipping(
    from: &mut std::net::TcpStream,
    to: &mut std::net::TcpStream,
    flip_at: Option<usize>,
) {
    use std::io::Write;
    let _ = from.set_read_timeout(Some(Duration::from_secs(120)));
    let mut seen = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = flip_at.filter(|at| (seen..seen + n).contains(at)) {
            buf[at - seen] ^= 1;
        }
        seen += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// One IPv4 TCP socket of this machine, from `/proc/net/tcp`.
#[derive(Debug, Clone, Copy)]
pub struct TcpSock {
    pub local_port: u16,
    pub remote_port: u16,
    /// Kernel state (1 = ESTABLISHED).
    pub state: u8,
    /// Bytes queued to send (not yet acknowledged).
    pub tx_queue: u64,
    /// Bytes received and not yet read by the application.
    pub rx_queue: u64,
}

/// Every IPv4 TCP socket, as the kernel lists them.
pub fn tcp_sockets() -> Vec<TcpSock> {
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| {
        addr.split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some(TcpSock {
                local_port: port(f.get(1)?)?,
                remote_port: port(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                tx_queue: u64::from_str_radix(tx, 16).ok()?,
                rx_queue: u64::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// Whether the socket from local `port` to sshd's `sshd_port` is still
/// ESTABLISHED.
pub fn established(port: u16, sshd_port: u16) -> bool {
    tcp_sockets()
        .iter()
        .any(|s| s.local_port == port && s.remote_port == sshd_port && s.state == 1)
}
