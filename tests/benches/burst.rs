//! Logins at once (issue 26 item 5), side by side in one run: N concurrent
//! `ssh host 'echo ok'` from one address straight to sshd, and the same N
//! through ztssh-sidecar → ztssh-proxy (default settings) → the same sshd.
//! sshd carries the loopback drop-in's `MaxStartups` (as behind a proxy).
//!
//! Reports, for each path: how many got in, and the time from the start of
//! the burst until the last one that got in had run its command. The
//! bursts alternate, straight first, `ZTSSH_BENCH_RUNS` times (default 2);
//! medians are reported.
//!
//! `cargo bench -p ztssh-tests --bench burst` (after `cargo build --release
//! --workspace`). `ZTSSH_BURST` sets N (default 200). `ZTSSH_BENCH_SHORT=1`
//! is the small run the test suite makes (20 logins, one run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use ztssh_tests::bench::{self, Better};
use ztssh_tests::*;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Lets this process hold three pipes per login, plus room.
fn raise_fd_limit(logins: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (4 * logins + 512) as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).expect("setrlimit");
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let short = std::env::var_os("ZTSSH_BENCH_SHORT").is_some();
    let n = if short {
        20
    } else {
        env_or("ZTSSH_BURST", 200)
    };
    let runs = if short {
        1
    } else {
        env_or("ZTSSH_BENCH_RUNS", 2).max(1)
    };
    raise_fd_limit(n);
    let w = World::builder()
        .sshd_config(&loopback_drop_in_limits())
        .start();
    let direct = || {
        let mut c = Command::new("ssh");
        c.args(w.direct_opts(&w.alice))
            .arg("-p")
            .arg(w.sshd.port.to_string())
            .arg("root@localhost")
            .arg("echo ok");
        c
    };
    let through = || {
        let mut c = w.ssh();
        c.arg("echo ok");
        c
    };
    let limit = Duration::from_secs(600);
    let (mut d_times, mut z_times, mut d_ok, mut z_ok) = (Vec::new(), Vec::new(), 0, 0);
    for run in 0..runs {
        for (name, make, times, oks) in [
            (
                "straight to sshd",
                &direct as &dyn Fn() -> Command,
                &mut d_times,
                &mut d_ok,
            ),
            ("through ztssh", &through, &mut z_times, &mut z_ok),
        ] {
            let b = burst(n, make, limit);
            println!(
                "run {}: {name}: {}/{n} in, the last after {:.2} s",
                run + 1,
                b.ok,
                b.last_ok.as_secs_f64()
            );
            // Each distinct reason once, with how many failed for it.
            let mut why: std::collections::BTreeMap<&str, usize> = Default::default();
            for f in &b.failures {
                *why.entry(f.lines().next().unwrap_or("")).or_default() += 1;
            }
            for (reason, count) in why {
                println!("  {count} failed: {reason}");
            }
            times.push(b.last_ok);
            if run == 0 {
                *oks = b.ok;
            } else {
                *oks = (*oks).min(b.ok);
            }
        }
    }
    let (d, z) = (median(d_times), median(z_times));
    println!("{n} logins at once from one address (`ssh host 'echo ok'`), median of {runs}:");
    println!("| path | logins in (fewest of the runs) | time until the last is in | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| straight to sshd | {d_ok}/{n} | {:.2} s | 1.00 |",
        d.as_secs_f64()
    );
    println!(
        "| through ztssh (default settings) | {z_ok}/{n} | {:.2} s | {:.2} |",
        z.as_secs_f64(),
        z.as_secs_f64() / d.as_secs_f64().max(1e-9)
    );
    let k = |f: &str| format!("burst/logins={n}/{f}");
    bench::figure(&k("direct_ok"), d_ok as f64, "logins", Better::Higher);
    bench::figure(&k("direct_last"), d.as_secs_f64(), "s", Better::Lower);
    bench::figure(&k("ztssh_ok"), z_ok as f64, "logins", Better::Higher);
    bench::figure(&k("ztssh_last"), z.as_secs_f64(), "s", Better::Lower);
    bench::figure(
        &k("ztssh_last_ratio"),
        z.as_secs_f64() / d.as_secs_f64().max(1e-9),
        "ratio",
        Better::Lower,
    );
}
