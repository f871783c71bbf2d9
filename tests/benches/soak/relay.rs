//! The soak's userspace pieces of the network: the delay relay on the
//! client leg (the kernel here has no netem), and the upstream that sends
//! real ssh to sshd and keeps the synthetic sessions in a sink.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction of a relayed connection (each at most
/// [`CHUNK`] bytes): the relay reads no further ahead than this.
const IN_FLIGHT: usize = 64;
const CHUNK: usize = 16 * 1024;

/// Where the relay's connection to the proxy comes from, so the proxy's
/// per-source limits see the clients apart.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// 127.21.C.D for a client at A.B.C.D.
    MapPeer,
    /// One loopback address for every connection of this relay.
    Fixed(Ipv4Addr),
}

/// A relay listening at `addr`: every byte, each way, waits `delay` before
/// it is passed on.
pub struct Relay {
    pub addr: SocketAddr,
    /// Connections relayed so far.
    pub total: Arc<AtomicUsize>,
}

impl Relay {
    /// Listens on `listen` (port 0: any) and relays to `target`.
    pub fn start(
        rt: &Handle,
        listen: SocketAddr,
        target: SocketAddr,
        delay: Duration,
        source: Source,
    ) -> Self {
        let listener = rt
            .block_on(TcpListener::bind(listen))
            .unwrap_or_else(|e| panic!("relay bind {listen}: {e}"));
        let addr = listener.local_addr().expect("addr");
        let total: Arc<AtomicUsize> = Arc::default();
        let count = Arc::clone(&total);
        rt.spawn(async move {
            while let Ok((client, peer)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let src = match (source, peer.ip()) {
                    (Source::Fixed(a), _) => a,
                    (Source::MapPeer, std::net::IpAddr::V4(p)) => {
                        let o = p.octets();
                        Ipv4Addr::new(127, 21, o[2], o[3])
                    }
                    (Source::MapPeer, _) => Ipv4Addr::LOCALHOST,
                };
                tokio::spawn(relay_one(client, src, target, delay));
            }
        });
        Self { addr, total }
    }
}

async fn relay_one(client: TcpStream, src: Ipv4Addr, target: SocketAddr, delay: Duration) {
    let server = async {
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::from((src, 0)))?;
        s.connect(target).await
    };
    let Ok(server) = server.await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pipe(cr, sw, delay), pipe(sr, cw, delay));
}

/// One direction: what is read now is written `delay` later, in order;
/// end of input is passed on (after the same delay) as end of output.
async fn pipe(r: OwnedReadHalf, mut w: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(IN_FLIGHT);
    let reader = async move {
        loop {
            // No buffer is held while the connection is idle.
            if r.readable().await.is_err() {
                let _ = tx.send((Instant::now() + delay, None)).await;
                return;
            }
            let mut buf = vec![0u8; CHUNK];
            match r.try_read(&mut buf) {
                Ok(n) if n > 0 => {
                    buf.truncate(n);
                    if tx.send((Instant::now() + delay, Some(buf))).await.is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // End of input, or an error (a reset is passed on as an
                // end): the other side's end follows after the delay.
                _ => {
                    let _ = tx.send((Instant::now() + delay, None)).await;
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            match chunk {
                Some(b) => {
                    if w.write_all(&b).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = w.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

/// What the upstream saw.
#[derive(Default)]
pub struct UpstreamStats {
    /// Connections that began with an SSH banner (sent on to sshd).
    pub ssh: AtomicUsize,
    /// Connections that sent nothing before the proxy closed them (the
    /// synthetic sessions), once closed.
    pub sink_closed: AtomicUsize,
}

/// The proxy's upstream: a connection whose first bytes are an SSH banner
/// (a real ssh) is passed to sshd on `sshd_port`, byte for byte, each end's
/// close passed on; any other (a synthetic session, which sends nothing)
/// is read and discarded until the proxy closes it.
/// sshd's port is read at each connection (0: not known yet).
pub fn start_upstream(rt: &Handle, sshd_port: Arc<AtomicU16>) -> (u16, Arc<UpstreamStats>) {
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    let stats: Arc<UpstreamStats> = Arc::default();
    let st = Arc::clone(&stats);
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let port = sshd_port.load(Ordering::SeqCst);
            tokio::spawn(upstream_one(s, port, Arc::clone(&st)));
        }
    });
    (port, stats)
}

async fn upstream_one(mut s: TcpStream, sshd_port: u16, st: Arc<UpstreamStats>) {
    let mut first = vec![0u8; 4096];
    let n = s.read(&mut first).await.unwrap_or(0);
    if n >= 4 && first.starts_with(b"SSH-") {
        st.ssh.fetch_add(1, Ordering::SeqCst);
        // sshd down (restarting): the proxy sees its upstream close.
        let Ok(mut sshd) = TcpStream::connect(("127.0.0.1", sshd_port)).await else {
            return;
        };
        if sshd.write_all(&first[..n]).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut s, &mut sshd).await;
        }
        return;
    }
    let mut buf = [0u8; 512];
    let mut got = n;
    while got > 0 {
        got = s.read(&mut buf).await.unwrap_or(0);
    }
    st.sink_closed.fetch_add(1, Ordering::SeqCst);
}
