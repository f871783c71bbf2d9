//! Side-by-side benchmark in one run: stock ssh straight to sshd against the
//! same ssh through ztssh-sidecar → ztssh-proxy → the same sshd.
//!
//! Reports, for both paths, measured alternately in the same run:
//! - a bulk transfer (`ssh host head -c N /dev/zero`, the client drains
//!   stdout): time, throughput and ratio;
//! - the CPU each process spent on that transfer, per GiB: ssh, sshd (with
//!   its session processes and the remote `head`), ztssh-sidecar and
//!   ztssh-proxy; and ztssh's CPU as a share of ssh's and sshd's;
//! - connection setup (`ssh host true`);
//! - the round trip of one byte through `ssh host cat`.
//!
//! `cargo bench -p ztssh-tests --bench e2e` (after `cargo build --release --workspace`).
//! `ZTSSH_BENCH_MIB` sets the transfer size (default 1024), `ZTSSH_BENCH_RUNS`
//! the repetitions (default 3), `ZTSSH_BENCH_ECHOES` the round trips per
//! run (default 2000); medians are reported. `ZTSSH_BENCH_SHORT=1` is the
//! small run the test suite makes (16 MiB, one run, 100 round trips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use ztssh_tests::bench::{self, Better};
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

/// CPU seconds one transfer cost each process.
#[derive(Default, Clone, Copy)]
struct Cpu {
    ssh: f64,
    sshd: f64,
    sidecar: f64,
    proxy: f64,
    relay: f64,
}

/// CPU seconds of the processes this process has reaped.
fn children_cpu() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    s(u.user_time()) + s(u.system_time())
}

/// The CPU seconds `pid` has used by the time it exits: its `/proc` entry
/// read every 5 ms until it is gone (the last reading misses at most the
/// final 5 ms of its life). Bounded to 30 minutes.
fn sample_cpu(pid: u32) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let path = format!("/proc/{pid}/stat");
        let mut last = 0.0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1800) {
            let Ok(stat) = std::fs::read_to_string(&path) else {
                break;
            };
            // A zombie's entry stays until it is reaped and keeps its totals.
            last = proc_cpu_of(&stat, false);
            std::thread::sleep(Duration::from_millis(5));
        }
        last
    })
}

/// Waits (bounded) until sshd has reaped every session process, so their
/// CPU is in its children's total.
fn sshd_settled(sshd: u32) {
    wait_until(Duration::from_secs(20), "sshd to reap its sessions", || {
        Command::new("pgrep")
            .arg("-P")
            .arg(sshd.to_string())
            .output()
            .is_ok_and(|o| o.stdout.is_empty())
    });
}

/// Reaps the sidecar that `ssh` left behind (ssh never waits for its
/// ProxyCommand; this process is a subreaper, so it inherits it).
fn reap(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
            _ => return,
        }
    }
    panic!("the sidecar {pid} did not exit within 20 s of ssh");
}

/// A plain TCP relay in front of sshd: one thread per direction moving
/// bytes with 256 KiB reads and no cryptography. It stands for the least a
/// process in the data path can cost: what it spends is the floor under
/// ztssh-proxy's share (the proxy moves the same bytes, and seals them).
struct Relay {
    port: u16,
    /// CPU seconds of every relay thread that has finished, and how many
    /// have.
    cpu: std::sync::Arc<std::sync::Mutex<(f64, usize)>>,
}

impl Relay {
    fn start(upstream: u16) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = l.local_addr().expect("addr").port();
        let cpu = std::sync::Arc::new(std::sync::Mutex::new((0.0, 0)));
        let total = std::sync::Arc::clone(&cpu);
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let Ok(u) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = (c.set_nodelay(true), u.set_nodelay(true));
                for (from, to) in [(&c, &u), (&u, &c)] {
                    let (mut from, mut to) =
                        (from.try_clone().expect("dup"), to.try_clone().expect("dup"));
                    let total = std::sync::Arc::clone(&total);
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 256 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
                        let s = |t: nix::sys::time::TimeVal| {
                            t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6
                        };
                        let mut t = total.lock().expect("lock");
                        t.0 += s(u.user_time()) + s(u.system_time());
                        t.1 += 1;
                    });
                }
            }
        });
        Self { port, cpu }
    }

    fn cpu(&self) -> f64 {
        self.cpu.lock().expect("lock").0
    }

    fn finished(&self) -> usize {
        self.cpu.lock().expect("lock").1
    }
}

/// The three paths, measured in turn.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Relay,
    Ztssh,
}

const PATHS: [Path; 3] = [Path::Direct, Path::Relay, Path::Ztssh];

struct Bench<'w> {
    w: &'w World,
    relay: Relay,
}

impl Bench<'_> {
    fn ssh(&self, path: Path, args: &[&str]) -> Command {
        let w = self.w;
        let mut c = Command::new("ssh");
        let port = match path {
            Path::Direct => w.sshd.port,
            Path::Relay => self.relay.port,
            Path::Ztssh => w.proxy.port,
        };
        if path == Path::Ztssh {
            c.args(w.client_opts(&w.alice, ""));
        } else {
            c.args(w.direct_opts(&w.alice));
        }
        c.arg("-p").arg(port.to_string());
        c.args(["-c", "aes128-gcm@openssh.com"])
            .arg("root@localhost")
            .args(args);
        c
    }

    /// Runs `args` over ssh, drains stdout; returns seconds, bytes and the
    /// CPU each process spent.
    fn transfer(&self, path: Path, args: &[&str]) -> (f64, u64, Cpu) {
        let (sshd, proxy) = (self.w.sshd.pid(), self.w.proxy.pid());
        let tunnelled = path == Path::Ztssh;
        let relay_done = self.relay.finished();
        let base = Cpu {
            ssh: children_cpu(),
            sshd: proc_cpu(sshd, true),
            sidecar: 0.0,
            proxy: proc_cpu(proxy, false),
            relay: self.relay.cpu(),
        };
        let mut cmd = self.ssh(path, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("spawn ssh");
        let sidecar = tunnelled.then(|| wait_for_child_of(child.id()));
        let sampler = sidecar.map(sample_cpu);
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n @ 1..) = out.read(&mut buf) {
            total += n as u64;
        }
        let status = child.wait().expect("wait");
        let secs = start.elapsed().as_secs_f64();
        assert!(status.success(), "{cmd:?} failed: {status}");
        if let Some(pid) = sidecar {
            reap(pid);
        }
        // ssh and the sidecar together, whoever reaped the sidecar (ssh
        // reaps a ProxyCommand that exits first; this process adopts one
        // that outlives ssh).
        let both = children_cpu() - base.ssh;
        let sidecar_cpu = sampler.map_or(0.0, |s| s.join().expect("sampler"));
        sshd_settled(sshd);
        if path == Path::Relay {
            // Both relay threads have accounted for themselves.
            let relay = &self.relay;
            wait_until(Duration::from_secs(20), "relay threads", || {
                relay.finished() >= relay_done + 2
            });
        }
        let cpu = Cpu {
            ssh: both - sidecar_cpu,
            sshd: proc_cpu(sshd, true) - base.sshd,
            sidecar: sidecar_cpu,
            proxy: proc_cpu(proxy, false) - base.proxy,
            relay: self.relay.cpu() - base.relay,
        };
        (secs, total, cpu)
    }

    /// Round trips of one byte through `ssh host cat`, after a warm-up.
    fn echoes(&self, path: Path, rounds: usize) -> Vec<f64> {
        let tunnelled = path == Path::Ztssh;
        let mut cmd = self.ssh(path, &["cat"]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn ssh");
        let sidecar = tunnelled.then(|| wait_for_child_of(child.id()));
        let mut tx = child.stdin.take().expect("stdin");
        let mut rx = child.stdout.take().expect("stdout");
        let mut rtts = Vec::with_capacity(rounds);
        let mut byte = [0u8; 1];
        for i in 0..rounds + 20 {
            let t = Instant::now();
            tx.write_all(b"x").expect("write");
            rx.read_exact(&mut byte).expect("echo");
            if i >= 20 {
                rtts.push(t.elapsed().as_secs_f64());
            }
        }
        drop(tx);
        let status = child.wait().expect("wait");
        assert!(status.success(), "echo over ssh failed: {status}");
        if let Some(pid) = sidecar {
            reap(pid);
        }
        rtts
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let short = std::env::var_os("ZTSSH_BENCH_SHORT").is_some();
    let mib = env_or("ZTSSH_BENCH_MIB", if short { 16 } else { 1024 });
    let runs = env_or("ZTSSH_BENCH_RUNS", if short { 1 } else { 3 }).max(1);
    let rounds = env_or("ZTSSH_BENCH_ECHOES", if short { 100 } else { 2000 }).max(1);
    // ssh does not wait for its ProxyCommand: adopt the orphaned sidecars
    // so their CPU can be read when they are reaped.
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let w = World::start();
    let relay = Relay::start(w.sshd.port);
    let b = Bench { w: &w, relay };
    let bulk = format!("head -c {} /dev/zero", mib << 20);
    // Warm up every path (known_hosts, page cache).
    for path in PATHS {
        b.transfer(path, &["true"]);
    }

    let mut bulk_s = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpus = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, path) in PATHS.into_iter().enumerate() {
            let (s, n, cpu) = b.transfer(path, &[&bulk]);
            assert_eq!(n, (mib as u64) << 20);
            bulk_s[i].push(s);
            cpus[i].push(cpu);
        }
    }
    let mut conn = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..(runs * 5) {
        for (i, path) in PATHS.into_iter().enumerate() {
            conn[i].push(b.transfer(path, &["true"]).0);
        }
    }
    let mut echo = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, path) in PATHS.into_iter().enumerate() {
            echo[i].extend(b.echoes(path, rounds));
        }
    }

    let t = bulk_s.clone().map(median);
    let c = conn.map(median);
    let e = echo.map(median);
    let rate = |s: f64| mib as f64 / s;
    println!(
        "ztssh end-to-end benchmark: {mib} MiB `ssh host {bulk}`, aes128-gcm, median of {runs}; connect median of {}; one-byte echo median of {} round trips",
        runs * 5,
        runs * rounds
    );
    println!();
    println!(
        "| path | {mib} MiB transfer | throughput | ratio | `ssh host true` | delta | echo round trip | delta |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let names = [
        "direct ssh → sshd",
        "ssh → plain TCP relay → sshd",
        "ssh → ztssh-sidecar → ztssh-proxy → sshd",
    ];
    for i in 0..3 {
        let delta = |v: f64, d: f64, prec: usize| {
            if i == 0 {
                "—".to_string()
            } else {
                format!("{:+.prec$} ms", (v - d) * 1e3)
            }
        };
        println!(
            "| {} | {:.2} s | {:.0} MiB/s | {:.2} | {:.1} ms | {} | {:.3} ms | {} |",
            names[i],
            t[i],
            rate(t[i]),
            t[0] / t[i],
            c[i] * 1e3,
            delta(c[i], c[0], 1),
            e[i] * 1e3,
            delta(e[i], e[0], 3)
        );
    }
    let tag = |i: usize| ["direct", "relay", "ztssh"][i];
    for i in 0..3 {
        let k = |f: &str| format!("e2e/mib={mib}/{}/{f}", tag(i));
        bench::figure(&k("mib_per_s"), rate(t[i]), "MiB/s", Better::Higher);
        bench::figure(&k("connect"), c[i] * 1e3, "ms", Better::Lower);
        bench::figure(&k("echo"), e[i] * 1e3, "ms", Better::Lower);
    }
    bench::figure(
        &format!("e2e/mib={mib}/ztssh/ratio_to_direct"),
        t[0] / t[2],
        "ratio",
        Better::Higher,
    );
    println!();
    // CPU: the run with the median transfer time of each path.
    let gib = mib as f64 / 1024.0;
    let pick = |i: usize| {
        let mut v: Vec<(f64, Cpu)> = bulk_s[i].iter().copied().zip(cpus[i].clone()).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2].1
    };
    println!(
        "CPU seconds per GiB transferred (the median run of each path; sshd includes its session processes and the remote `head`)"
    );
    println!();
    println!(
        "| path | ssh | sshd | relay | ztssh-sidecar | ztssh-proxy | in the middle ÷ (ssh + sshd) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, path) in PATHS.into_iter().enumerate() {
        let c = pick(i);
        let g = |s: f64| format!("{:.2} s", s / gib);
        let show = |on: bool, s: f64| if on { g(s) } else { "—".to_string() };
        let middle = c.relay + c.sidecar + c.proxy;
        let share = if path == Path::Direct {
            "—".to_string()
        } else {
            format!("{:.2}", middle / (c.ssh + c.sshd))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {share} |",
            names[i],
            g(c.ssh),
            g(c.sshd),
            show(path == Path::Relay, c.relay),
            show(path == Path::Ztssh, c.sidecar),
            show(path == Path::Ztssh, c.proxy),
        );
        if path == Path::Ztssh {
            let k = |f: &str| format!("e2e/mib={mib}/ztssh/{f}");
            bench::figure(
                &k("sidecar_cpu_per_gib"),
                c.sidecar / gib,
                "s",
                Better::Lower,
            );
            bench::figure(&k("proxy_cpu_per_gib"), c.proxy / gib, "s", Better::Lower);
        }
    }
}
