//! Side-by-side benchmark in one run: stock ssh straight to sshd against the
//! same ssh through ztssh-sidecar → ztssh-proxy → the same sshd.
//!
//! `cargo bench -p ztssh-tests --bench e2e` (after `cargo build --release --workspace`).
//! `ZTSSH_BENCH_MIB` sets the transfer size (default 1024), `ZTSSH_BENCH_RUNS`
//! the repetitions (default 3); medians are reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use ztssh_tests::*;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `cmd`, drains its stdout, returns (seconds, bytes).
fn timed(cmd: &mut Command) -> (f64, u64) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{cmd:?} failed: {status}");
    (start.elapsed().as_secs_f64(), total)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib = env_or("ZTSSH_BENCH_MIB", 1024);
    let runs = env_or("ZTSSH_BENCH_RUNS", 3).max(1);
    let w = World::new();
    let cipher = ["-c", "aes128-gcm@openssh.com"];
    let direct = |args: &[&str]| {
        let mut c = Command::new("ssh");
        c.args(w.direct_opts(&w.alice)).args(cipher);
        c.arg("-p")
            .arg(w.sshd.port.to_string())
            .arg("root@localhost")
            .args(args);
        c
    };
    let tunnelled = |args: &[&str]| {
        let mut c = Command::new("ssh");
        c.args(w.client_opts(&w.alice, "")).args(cipher);
        c.arg("-p")
            .arg(w.proxy.port.to_string())
            .arg("root@localhost")
            .args(args);
        c
    };
    let bulk = format!("head -c {} /dev/zero", mib << 20);
    // Warm up both paths (known_hosts, page cache).
    timed(&mut direct(&["true"]));
    timed(&mut tunnelled(&["true"]));

    let (mut d_bulk, mut t_bulk) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (s, n) = timed(&mut direct(&[&bulk]));
        assert_eq!(n, (mib as u64) << 20);
        d_bulk.push(s);
        let (s, n) = timed(&mut tunnelled(&[&bulk]));
        assert_eq!(n, (mib as u64) << 20);
        t_bulk.push(s);
    }
    let (mut d_conn, mut t_conn) = (Vec::new(), Vec::new());
    for _ in 0..(runs * 5) {
        d_conn.push(timed(&mut direct(&["true"])).0);
        t_conn.push(timed(&mut tunnelled(&["true"])).0);
    }
    let (db, tb) = (median(d_bulk), median(t_bulk));
    let (dc, tc) = (median(d_conn), median(t_conn));
    let rate = |s: f64| mib as f64 / s;
    println!(
        "ztssh end-to-end benchmark: {mib} MiB `ssh host {bulk}`, aes128-gcm, median of {runs}; connect median of {}",
        runs * 5
    );
    println!();
    println!("| path | {mib} MiB transfer | throughput | ratio | `ssh host true` | delta |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| direct ssh → sshd | {db:.2} s | {:.0} MiB/s | 1.00 | {:.1} ms | — |",
        rate(db),
        dc * 1e3
    );
    println!(
        "| ssh → ztssh-sidecar → ztssh-proxy → sshd | {tb:.2} s | {:.0} MiB/s | {:.2} | {:.1} ms | {:+.1} ms |",
        rate(tb),
        db / tb,
        tc * 1e3,
        (tc - dc) * 1e3
    );
}
