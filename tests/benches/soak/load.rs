//! The synthetic sessions: each opened by the load client's handshake
//! (`tests/support/client.rs`) from a thread that joined the client
//! namespace, then driven by a task of its own that answers every
//! challenge and renews its certificate through the core, as the sidecar
//! does, with no ssh behind it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ssh_key::{HashAlg, PrivateKey};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use ztssh_proto::conn::{ClientConn, ClientConnEvent, ClientEnd};
use ztssh_proto::labels::SSHSIG_NAMESPACE_RENEW;
use ztssh_tests::netns::NetNs;

use crate::client::{LibClient, clocks, mono_ms};

/// How a synthetic session ended.
#[derive(Debug)]
pub enum How {
    /// The proxy said why (TERMINATE).
    Told(String),
    /// Closed both ways after this side's CLOSE (the end of the run).
    Closed,
    /// Anything else: the connection was lost, a renewal ran out, ...
    Failed(String),
}

/// One session's end.
pub struct End {
    pub principal: String,
    pub at: Instant,
    /// The same, as UTC HH:MM:SS.
    pub utc: String,
    pub how: How,
}

/// What the sessions did, summed.
#[derive(Default)]
pub struct Counts {
    pub answered: AtomicU64,
    pub renewed: AtomicU64,
    pub renew_failed: AtomicU64,
    pub open_retries: AtomicU64,
}

/// What every opener needs.
pub struct Plan<'a> {
    pub n: usize,
    pub per_source: usize,
    pub openers: usize,
    pub ns: &'a NetNs,
    pub relay: SocketAddr,
    pub root: ztssh_proto::rootkey::RootKey,
    pub key: &'a Path,
    pub rt: Handle,
    pub stop: watch::Receiver<bool>,
    pub ends: mpsc::UnboundedSender<End>,
    pub counts: Arc<Counts>,
}

/// Opens `plan.n` sessions, session `i` as `principal(i)` from the
/// namespace's source `i / per_source`; each is driven from the moment
/// it is established. Returns how long opening took.
pub fn open_all(plan: &Plan<'_>, principal: impl Fn(usize) -> String + Sync) -> Duration {
    let user = Arc::new(PrivateKey::read_openssh_file(plan.key).expect("user key"));
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..plan.openers {
            let (user, principal) = (Arc::clone(&user), &principal);
            s.spawn(move || {
                join_netns(plan.ns);
                let mine = (0..plan.n).filter(|i| (i / plan.per_source) % plan.openers == th);
                for i in mine {
                    let src = plan.ns.source(i / plan.per_source);
                    let name = principal(i);
                    let c = open_one(plan, src, &name);
                    let (sock, conn) = c.into_parts();
                    plan.rt.spawn(drive(
                        sock,
                        conn,
                        Arc::clone(&user),
                        name,
                        plan.stop.clone(),
                        plan.ends.clone(),
                        Arc::clone(&plan.counts),
                    ));
                }
            });
        }
    });
    t.elapsed()
}

/// Moves the calling thread into the namespace: the sockets it makes from
/// now on are the namespace's.
fn join_netns(ns: &NetNs) {
    let f = std::fs::File::open(ns.path()).expect("open the namespace");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// One handshake, certificate and all, tried at most three times (a lost
/// SYN or handshake message costs a retransmission, not a session).
fn open_one(plan: &Plan<'_>, src: Ipv4Addr, principal: &str) -> LibClient {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            plan.counts.open_retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(500));
        }
        let opened = connect(src, plan.relay).and_then(|sock| {
            let mut c = LibClient::handshake(sock, plan.root.clone(), plan.key, principal)?;
            c.ids().allow_short_certs();
            c.establish()?;
            c.conn.set_manual(false);
            Ok(c)
        });
        match opened {
            Ok(c) => return c,
            Err(e) => last = e.to_string(),
        }
    }
    panic!("session as {principal} from {src}: three attempts failed, the last: {last}");
}

fn connect(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((src, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(10))?;
    Ok(s.into())
}

fn sign_renewal(user: &PrivateKey, data: &[u8]) -> Result<Vec<u8>, String> {
    let sig = user
        .sign(SSHSIG_NAMESPACE_RENEW, HashAlg::Sha512, data)
        .map_err(|e| e.to_string())?;
    ztssh_proto::userkey::encode_sig(&sig, ztssh_proto::control::MAX_SSHSIG)
        .map_err(|e| e.to_string())
}

/// Drives one session until it ends; reports how.
async fn drive(
    sock: std::net::TcpStream,
    mut conn: ClientConn,
    user: Arc<PrivateKey>,
    principal: String,
    mut stop: watch::Receiver<bool>,
    ends: mpsc::UnboundedSender<End>,
    counts: Arc<Counts>,
) {
    let how = run(sock, &mut conn, &user, &mut stop, &counts).await;
    let _ = ends.send(End {
        principal,
        at: Instant::now(),
        utc: crate::utc_now(),
        how,
    });
}

async fn run(
    sock: std::net::TcpStream,
    conn: &mut ClientConn,
    user: &PrivateKey,
    stop: &mut watch::Receiver<bool>,
    counts: &Counts,
) -> How {
    sock.set_nonblocking(true).expect("nonblocking");
    sock.set_read_timeout(None).expect("no read timeout");
    let sock = TcpStream::from_std(sock).expect("tokio socket");
    let mut stopping = false;
    let mut sock_error: Option<String> = None;
    // Bounded: a session lives at most a day of iterations' worth of
    // events; each pass waits on the socket, a timer or the stop signal.
    for _ in 0..u32::MAX {
        while !conn.poll_transmit().is_empty() {
            match sock.try_write(conn.poll_transmit()) {
                Ok(n) => conn.transmitted(n, clocks()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    sock_error.get_or_insert(e.to_string());
                    conn.handle_peer_eof(clocks());
                    break;
                }
            }
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                ClientConnEvent::Ended(end) => return how(end, stopping, sock_error),
                ClientConnEvent::Answered { .. } => {
                    counts.answered.fetch_add(1, Ordering::Relaxed);
                }
                ClientConnEvent::CertInstalled { renewed: true, .. } => {
                    counts.renewed.fetch_add(1, Ordering::Relaxed);
                }
                ClientConnEvent::RenewalFailed { .. } => {
                    counts.renew_failed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        if let Some(data) = conn.poll_sign() {
            conn.handle_signature(sign_renewal(user, &data), clocks());
            continue;
        }
        // DATA from upstream (none: the sink sends nothing) is dropped.
        let pending = conn.poll_local().len();
        if pending > 0 {
            conn.delivered(pending, clocks());
        }
        let timer = conn.poll_timeout().map(|at| {
            tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(mono_ms()))
        });
        let want_tx = !conn.poll_transmit().is_empty();
        tokio::select! {
            r = sock.readable(), if conn.wants_peer() => match r {
                Ok(()) => match sock.try_read(conn.recv_buf()) {
                    Ok(0) => conn.handle_peer_eof(clocks()),
                    Ok(n) => conn.handle_peer_read(n, clocks()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        sock_error.get_or_insert(e.to_string());
                        conn.handle_peer_eof(clocks());
                    }
                },
                Err(e) => {
                    sock_error.get_or_insert(e.to_string());
                    conn.handle_peer_eof(clocks());
                }
            },
            _ = sock.writable(), if want_tx => {}
            () = tokio::time::sleep_until(timer.unwrap_or_else(tokio::time::Instant::now)), if timer.is_some() => {
                conn.handle_timeout(clocks());
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.handle_local_eof(clocks());
            }
        }
    }
    How::Failed("the driver's loop bound ran out".into())
}

fn how(end: Option<ClientEnd>, stopping: bool, sock_error: Option<String>) -> How {
    match end {
        None if stopping => How::Closed,
        None => How::Failed("closed normally before the run ended it".into()),
        Some(ClientEnd::Terminated(t) | ClientEnd::Refused(t) | ClientEnd::KeyRefused(t)) => {
            How::Told(t.reason)
        }
        Some(other) => How::Failed(match sock_error {
            Some(e) => format!("{other:?} (socket: {e})"),
            None => format!("{other:?}"),
        }),
    }
}
