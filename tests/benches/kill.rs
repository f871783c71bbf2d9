//! Kill latency: 1,000 tunnelled sessions are live; the principal is banned
//! in a new revocation list; how long until the proxy has closed every
//! upstream socket?
//!
//! The sessions are opened by a synthetic load client (the protocol library,
//! `ztssh_tests::client::LibClient`), not by 1,000 ssh processes, and the
//! upstream is a TCP sink standing in for sshd (1,000 concurrent sshd
//! sessions would measure sshd's MaxStartups, not ztssh). Everything else is
//! the real `ztssh-proxy` and `ztssh-ca` binaries.
//!
//! `cargo bench -p ztssh-tests --bench kill` (`ZTSSH_BENCH_SESSIONS` to change the count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ztssh_proto::frame::Control;
use ztssh_tests::client::LibClient;
use ztssh_tests::*;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("ZTSSH_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tmp");
    let alice = user_key(dir.path(), "alice");
    let pki = Pki::create(dir.path(), &["localhost"]);
    pki.publish_crl();

    // The sink: records when each upstream socket is closed by the proxy.
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let sink_port = sink.local_addr().expect("addr").port();
    let closed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let closed_by_sink = Arc::clone(&closed);
    std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, _)) = sink.accept() else {
                return;
            };
            let closed = Arc::clone(&closed_by_sink);
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                closed.lock().expect("lock").push(Instant::now());
            });
        }
    });

    let extra = format!(
        "revocation_list = \"{}\"\nchallenge_interval_secs = 3600\nchallenge_deadline_secs = 300\ncert_ttl_secs = 3600\nmax_connections = {}\n",
        pki.crl().display(),
        n + 16
    );
    let principals = format!("alice {}", read_text(&alice.with_extension("pub")));
    let proxy = Proxy::start(dir.path(), &pki, sink_port, &principals, &extra);

    let t = Instant::now();
    let root = pki.root_key();
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = LibClient::connect(proxy.port, root, &alice, "alice").expect("connect");
        c.establish().expect("establish");
        clients.push(c);
    }
    let setup = t.elapsed();
    // Every upstream connection exists before the ban.
    wait_until(Duration::from_secs(30), "all upstream connections", || {
        count_lines(&proxy.log_text(), "event=\"upstream_connected\"") >= n
    });

    let terminated: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let mut readers = Vec::with_capacity(n);
    for mut c in clients {
        let terminated = Arc::clone(&terminated);
        readers.push(std::thread::spawn(move || {
            let reason = match c.next_control() {
                Ok(Some(Control::Terminate { reason, .. })) => reason,
                other => format!("{other:?}"),
            };
            terminated
                .lock()
                .expect("lock")
                .push((Instant::now(), reason));
        }));
    }
    std::thread::sleep(Duration::from_millis(500));

    pki.revoke("principal", "alice");
    let landed = Instant::now();
    pki.publish_crl();
    let published = landed.elapsed();
    for r in readers {
        r.join().expect("reader");
    }
    wait_until(
        Duration::from_secs(30),
        "every upstream socket to close",
        || closed.lock().expect("lock").len() >= n,
    );

    let mut up: Vec<Duration> = closed
        .lock()
        .expect("lock")
        .iter()
        .map(|t| t.saturating_duration_since(landed))
        .collect();
    up.sort();
    let term = terminated.lock().expect("lock");
    let banned = term
        .iter()
        .filter(|(_, r)| r == "principal alice banned")
        .count();
    let mut tt: Vec<Duration> = term
        .iter()
        .map(|(t, _)| t.saturating_duration_since(landed))
        .collect();
    tt.sort();
    println!(
        "kill latency with {n} live tunnelled sessions (synthetic load client, TCP sink as upstream)"
    );
    println!(
        "  setup: {n} hybrid handshakes + certificates in {:.2} s",
        setup.as_secs_f64()
    );
    println!(
        "  `ztssh-ca crl` itself took {:.1} ms (included below)",
        published.as_secs_f64() * 1e3
    );
    println!("| from the new list landing to … | p50 | p99 | max |");
    println!("|---|---|---|---|");
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "| upstream (sshd-side) socket closed | {} | {} | {} |",
        ms(pct(&up, 0.5)),
        ms(pct(&up, 0.99)),
        ms(up[up.len() - 1])
    );
    println!(
        "| client received TERMINATE | {} | {} | {} |",
        ms(pct(&tt, 0.5)),
        ms(pct(&tt, 0.99)),
        ms(tt[tt.len() - 1])
    );
    println!("  {banned}/{n} clients were told \"principal alice banned\"");
    assert_eq!(banned, n, "every session must be told why");
}

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}
