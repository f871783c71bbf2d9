//! Load under abuse: 500 idle sockets and 200 garbage handshakes from many
//! sources while a real ssh session connects and works. The proxy's memory
//! must stay bounded. Figures are printed (and recorded in
//! docs/BENCHMARKS.md); only correctness and the memory bound are asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ztssh_proto::handshake::HELLO_LEN;
use ztssh_tests::*;

const IDLE: usize = 500;
const GARBAGE: usize = 200;

#[test]
fn idle_and_garbage_floods_do_not_lock_out_a_real_session() {
    let w = World::start();
    let rss_before = w.proxy.rss_kib();
    // 500 idle sockets from 250 sources (two each), opened and left silent.
    // Each source is in a /16 of its own: the half-open table caps what one
    // /24 or /16 may hold (fair_limits.rs), and this flood is meant to fill
    // the whole table and turn it over.
    let mut idle: Vec<TcpStream> = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let src = format!("127.{}.0.1", 2 + i / 2);
        idle.push(connect_from(&src, w.proxy.port).expect("idle connect"));
    }
    wait_until(Duration::from_secs(20), "idle sockets accepted", || {
        count(&w.proxy.log_text(), "event=\"connection_accepted\"") >= IDLE
    });
    let rss_idle = w.proxy.rss_kib();

    // 200 garbage handshakes from 200 sources, in a second thread, while a
    // real ssh session connects and runs. They share a /16 of their own, not
    // the user's 127.0/16: a flood from the user's own /16 would tie with the
    // user there, and the oldest pending handshake (the user's) would make
    // room first.
    let port = w.proxy.port;
    let flood = std::thread::spawn(move || {
        let mut sent = 0;
        for i in 0..GARBAGE {
            let src = format!("127.1.3.{}", 1 + i);
            if let Ok(mut s) = connect_from(&src, port) {
                if s.write_all(&pseudo_random(HELLO_LEN, i as u64)).is_ok() {
                    sent += 1;
                }
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut b = [0u8; 16];
                let _ = s.read(&mut b);
            }
        }
        sent
    });
    let started = Instant::now();
    let out = run_bounded(
        w.ssh()
            .arg("head -c 1048576 /dev/zero | sha256sum; echo done"),
        Duration::from_secs(60),
    );
    let ssh_secs = started.elapsed().as_secs_f64();
    let sent = flood.join().expect("flood");
    assert_ok(&out, "ssh during the flood");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"),
        "{stdout}"
    );
    assert_eq!(sent, GARBAGE);
    let rss_flood = w.proxy.rss_kib();

    // Every idle socket is dropped: evicted to make room, or at the deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &mut idle {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .expect("timeout");
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("idle socket still open: {other:?}"),
        }
    }
    // The proxy writes its log from a thread of its own: wait (bounded) for
    // the lines of what the sockets already showed.
    wait_until(
        Duration::from_secs(10),
        "every idle and garbage handshake in the log",
        || {
            let log = w.proxy.log_text();
            count(&log, "reason=\"evicted\"") + count(&log, "reason=\"timeout\"") >= IDLE
                && count(&log, "reason=\"protocol\"") >= GARBAGE
        },
    );
    let log = w.proxy.log_text();
    let evicted = count(&log, "reason=\"evicted\"");
    let timeouts = count(&log, "reason=\"timeout\"");
    let garbage = count(&log, "reason=\"protocol\"");
    let rss_after = w.proxy.rss_kib();
    println!(
        "load: {IDLE} idle + {GARBAGE} garbage; ssh session {ssh_secs:.2}s; idle dropped: {evicted} evicted, {timeouts} at the deadline; \
         garbage rejected: {garbage}; proxy RSS KiB: before {rss_before}, with idle {rss_idle}, after flood {rss_flood}, after drain {rss_after}"
    );
    assert_eq!(evicted + timeouts, IDLE, "{log}");
    assert_eq!(garbage, GARBAGE);
    assert!(!log.contains("panicked"));
    // Bounded memory: the whole flood may not cost more than 64 MiB.
    let peak = rss_idle.max(rss_flood).max(rss_after);
    assert!(
        peak < rss_before + 64 * 1024,
        "proxy memory grew from {rss_before} KiB to {peak} KiB"
    );
    // sshd only ever saw the real session.
    assert_eq!(count(&w.sshd.log_text(), "Connection from"), 1);
}
