//! Kill latency: N tunnelled sessions are live; the principal is banned in
//! a new revocation list; how long until the proxy has closed every
//! upstream socket? Also reports the setup time, the proxy's resident
//! memory per idle authenticated session and the CPU the kill cost it.
//! Every client must then have been told why (it reads its TERMINATE once
//! the last upstream socket has closed, so the load client does not share
//! the proxy's cores during the kill).
//!
//! The sessions come from many loopback source addresses (127.20.0.0/16, ten
//! sessions per address), as a fleet's would, so the proxy's per-source
//! limits stay on at their defaults. They are opened by a synthetic load
//! client (the protocol library, `tests/support/client.rs`), not by
//! N ssh processes, and the upstream is a TCP sink standing in for sshd (N
//! concurrent sshd sessions would measure sshd's MaxStartups, not ztssh).
//! Everything else is the real `ztssh-proxy` and `ztssh-ca` binaries.
//!
//! `cargo bench -p ztssh-tests --bench kill` (1,000 sessions;
//! `ZTSSH_BENCH_SESSIONS` to change the count, `ZTSSH_BENCH_SHORT=1` for the
//! 100-session run the test suite makes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{LibClient, clocks};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use ztssh_proto::conn::{ClientConn, ClientConnEvent};
use ztssh_proto::frame::Control;
use ztssh_tests::bench::{self, Better};
use ztssh_tests::*;

/// Sessions per loopback source address: well inside the default burst of
/// the per-source rate limit (20).
const PER_SOURCE: usize = 10;
/// Threads that open sessions; each owns whole source addresses, so no
/// source ever has more than one handshake in flight.
const OPENERS: usize = 4;

/// The loopback address bench session `i` connects from.
fn source(i: usize) -> String {
    bench_source(i, PER_SOURCE)
}

/// Lets this process and the proxy it starts hold two sockets per session
/// (plus room for everything else), or says how many sessions fit.
fn raise_fd_limit(n: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (2 * n + 256) as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= want {
        return;
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE and a host that allows
    // it; some sandboxes refuse even root.
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return;
    }
    assert!(
        want <= hard,
        "{n} sessions need {want} open files in this process and in the proxy, \
         and the hard limit here is {hard}; use ZTSSH_BENCH_SESSIONS={} or less",
        (hard - 256) / 2
    );
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
}

/// CPU seconds this process has used.
fn self_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    s(u.user_time()) + s(u.system_time())
}

/// The stand-in for sshd: counts connections and records when the proxy
/// closes each one.
async fn sink(listener: TcpListener, accepted: Arc<AtomicUsize>, closed: Arc<Mutex<Vec<Instant>>>) {
    while let Ok((mut s, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        let closed = Arc::clone(&closed);
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            closed.lock().expect("lock").push(Instant::now());
        });
    }
}

/// Reads one tunnel until the proxy's end of it; returns when and why.
async fn await_end(sock: std::net::TcpStream, mut conn: ClientConn) -> (Instant, String) {
    sock.set_nonblocking(true).expect("nonblocking");
    let sock = TcpStream::from_std(sock).expect("tokio socket");
    loop {
        while let Some(ev) = conn.poll_event() {
            match ev {
                ClientConnEvent::Control(Control::Terminate { reason, .. }) => {
                    return (Instant::now(), reason);
                }
                ClientConnEvent::Ended(e) => return (Instant::now(), format!("ended: {e:?}")),
                _ => {}
            }
        }
        if sock.readable().await.is_err() {
            return (Instant::now(), "socket error".into());
        }
        match sock.try_read(conn.recv_buf()) {
            Ok(0) => return (Instant::now(), "closed without TERMINATE".into()),
            Ok(n) => {
                conn.handle_peer_read(n, clocks());
                let pending = conn.poll_local().len();
                conn.delivered(pending, clocks());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return (Instant::now(), format!("read: {e}")),
        }
    }
}

/// Opens `n` sessions from `OPENERS` threads, each from its own sources.
fn open_sessions(n: usize, port: u16, pki: &Pki, key: &std::path::Path) -> Vec<LibClient> {
    let root = pki.root_key();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|t| {
                let root = &root;
                s.spawn(move || {
                    let mine = (0..n).filter(|i| (i / PER_SOURCE) % OPENERS == t);
                    mine.map(|i| {
                        let sock = connect_from(&source(i), port).expect("connect");
                        let mut c = LibClient::handshake(sock, root.clone(), key, "alice")
                            .unwrap_or_else(|e| panic!("session {i} from {}: {e}", source(i)));
                        c.establish().expect("establish");
                        c
                    })
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("opener"))
            .collect()
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let short = std::env::var_os("ZTSSH_BENCH_SHORT").is_some();
    let n: usize = std::env::var("ZTSSH_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if short { 100 } else { 1000 });
    raise_fd_limit(n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind sink");
    let sink_port = listener.local_addr().expect("addr").port();
    let accepted: Arc<AtomicUsize> = Arc::default();
    let closed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    rt.spawn(sink(listener, Arc::clone(&accepted), Arc::clone(&closed)));

    let front = World::builder()
        .proxy_toml(&format!(
            "challenge_interval_secs = 3600\nchallenge_deadline_secs = 300\ncert_ttl_secs = 3600\nmax_connections = {0}\nmax_sessions_per_principal = {0}\n",
            n + 16
        ))
        .start_in_front_of(sink_port);
    let Front {
        pki, proxy, alice, ..
    } = &front;
    let rss_before = proxy.rss_kib();

    let t = Instant::now();
    let clients = open_sessions(n, proxy.port, pki, alice);
    let setup = t.elapsed();
    // Every upstream connection exists before the ban.
    wait_until(Duration::from_secs(60), "all upstream connections", || {
        accepted.load(Ordering::SeqCst) >= n
    });
    let rss_after = proxy.rss_kib();

    if let Some(hook) = std::env::var_os("ZTSSH_BENCH_BEFORE_KILL") {
        // A profiler to attach to the proxy, say: `perf record -p $PROXY_PID`.
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(hook)
            .env("PROXY_PID", proxy.pid().to_string())
            .status();
    }

    pki.revoke("principal", "alice");
    let cpu_before = (proc_cpu(proxy.pid(), false), self_cpu());
    let landed = Instant::now();
    pki.publish_crl();
    let published = landed.elapsed();
    wait_until(
        Duration::from_secs(60),
        "every upstream socket to close",
        || closed.lock().expect("lock").len() >= n,
    );
    let cpu_after = (proc_cpu(proxy.pid(), false), self_cpu());
    // Only now do the clients read what they were told: in a fleet they are
    // on other machines, and here they would take the proxy's two cores
    // during the kill. Each TERMINATE waits in its socket.
    let ends: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let (sock, conn) = c.into_parts();
            rt.spawn(await_end(sock, conn))
        })
        .collect();
    let term: Vec<(Instant, String)> = rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for e in ends {
            let r = tokio::time::timeout(Duration::from_secs(60), e)
                .await
                .expect("every client is told within 60 s")
                .expect("reader");
            out.push(r);
        }
        out
    });
    let mut up: Vec<Duration> = closed
        .lock()
        .expect("lock")
        .iter()
        .map(|t| t.saturating_duration_since(landed))
        .collect();
    up.sort();
    let banned = term
        .iter()
        .filter(|(_, r)| r == "principal alice banned")
        .count();
    let per_session = (rss_after.saturating_sub(rss_before) as f64) / n as f64;
    println!(
        "kill latency with {n} live tunnelled sessions from {} loopback sources (synthetic load client, TCP sink as upstream)",
        n.div_ceil(PER_SOURCE)
    );
    println!(
        "  setup: {n} hybrid handshakes + certificates in {:.2} s ({OPENERS} client threads)",
        setup.as_secs_f64()
    );
    println!(
        "  proxy RSS: {rss_before} KiB before, {rss_after} KiB with {n} idle sessions: {per_session:.1} KiB per session"
    );
    println!(
        "  CPU during the kill: proxy {:.0} ms, the sink {:.0} ms",
        (cpu_after.0 - cpu_before.0) * 1e3,
        (cpu_after.1 - cpu_before.1) * 1e3
    );
    println!(
        "  `ztssh-ca crl` itself took {:.1} ms (included below)",
        published.as_secs_f64() * 1e3
    );
    println!("| from the new list landing to … | first | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "| upstream (sshd-side) socket closed | {} | {} | {} | {} |",
        ms(up[0]),
        ms(percentile(&up, 0.5)),
        ms(percentile(&up, 0.99)),
        ms(up[up.len() - 1])
    );
    let k = |f: &str| format!("kill/sessions={n}/{f}");
    let msf = |d: Duration| d.as_secs_f64() * 1e3;
    bench::figure(&k("setup"), setup.as_secs_f64(), "s", Better::Lower);
    bench::figure(&k("rss_per_session"), per_session, "KiB", Better::Lower);
    bench::figure(
        &k("proxy_cpu"),
        (cpu_after.0 - cpu_before.0) * 1e3,
        "ms",
        Better::Lower,
    );
    bench::figure(&k("first"), msf(up[0]), "ms", Better::Lower);
    bench::figure(&k("p50"), msf(percentile(&up, 0.5)), "ms", Better::Lower);
    bench::figure(&k("p99"), msf(percentile(&up, 0.99)), "ms", Better::Lower);
    bench::figure(&k("max"), msf(up[up.len() - 1]), "ms", Better::Lower);
    println!("  {banned}/{n} clients were told \"principal alice banned\"");
    assert_eq!(banned, n, "every session must be told why");
}
