//! A soak with faults. One real `ztssh-proxy` (1 s challenges, 2 s
//! deadline, 10 s certificates under `insecure_short_certs`) holds N
//! synthetic sessions (the load client, `tests/support/client.rs`, which
//! answers every challenge and renews every certificate through the core
//! as the sidecar does) and W real ssh sessions at a time (the real `ssh`
//! and `ztssh-sidecar`: uploads, downloads and interactive sessions, every
//! byte checked), while the run:
//!
//! - restarts the real sshd twice (listener and sessions, by PID);
//! - stops the real nginx that serves the revocation list for a minute
//!   (scaled down in the short run), then starts it again on its port;
//! - sends the proxy SIGHUP every 5 s;
//! - publishes a new revocation list every 30 s (15 s short) banning one
//!   more synthetic principal (20 sessions each);
//! - floods the proxy with idle sockets and garbage handshakes.
//!
//! Every client leg runs through a network namespace: a veth pair with a
//! rate limit on both ends (tc tbf), random loss of TCP packets both ways
//! (an nftables `numgen random` drop rule) and, since this kernel has no
//! netem, a userspace relay that delays every byte each way (`relay.rs`).
//! The proxy's upstream passes real ssh on to sshd and keeps the synthetic
//! sessions in a sink (`relay.rs`).
//!
//! It fails on any false kill: a synthetic session that ended other than
//! banned (told so) or closed by the run at its end, a banned one not told
//! within the poll interval + 1 s of its list landing, a real ssh session
//! that failed with no sshd restart during it, a proxy log line ending a
//! session for a reason the run did not cause; and on any byte of a real
//! session that did not arrive intact, a panic in the proxy, or the proxy's
//! descriptors and memory not back near their baseline once every session
//! has ended.
//!
//! `cargo bench -p ztssh-tests --bench soak` (1,000 synthetic sessions and
//! 20 ssh workers for 600 s; `ZTSSH_SOAK_SECS` to change the length,
//! `ZTSSH_BENCH_SESSIONS` the synthetic count); `ZTSSH_BENCH_SHORT=1` for
//! the run the test suite makes (100 and 4, 60 s, every fault at least
//! once). Root only (namespaces, nftables).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "soak/flood.rs"]
mod flood;
#[path = "soak/load.rs"]
mod load;
#[path = "soak/real.rs"]
mod real;
#[path = "soak/relay.rs"]
mod relay;
#[path = "soak/verdict.rs"]
mod verdict;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use ztssh_tests::netns::{NetNs, Shaping};
use ztssh_tests::nginx::{Nginx, WebRoot};
use ztssh_tests::*;

/// The proxy's revocation poll interval; a ban must end its sessions
/// within this + 1 s of the list landing.
pub const POLL_SECS: u64 = 1;
const CHALLENGE_SECS: u64 = 1;
const DEADLINE_SECS: u64 = 2;
const CERT_SECS: u64 = 10;
/// Synthetic sessions per namespace source address, and per principal.
const PER_SOURCE: usize = 10;
const PER_PRINCIPAL: usize = 20;
const OPENERS: usize = 4;
const SIGHUP_EVERY: Duration = Duration::from_secs(5);
/// The relay's delay, each way.
const DELAY: Duration = Duration::from_millis(25);
const SHAPING: Shaping = Shaping {
    rate_kbit: 40_000,
    loss_per_mille: 10,
};

/// The run's sizes.
pub struct Sizes {
    pub short: bool,
    pub secs: u64,
    pub n: usize,
    pub workers: usize,
    pub ban_every: u64,
    pub nginx_down: u64,
    pub bulk: usize,
    pub lines: usize,
    pub flood_idle: usize,
    pub flood_garbage: usize,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

impl Sizes {
    fn from_env() -> Self {
        let short = std::env::var_os("ZTSSH_BENCH_SHORT").is_some();
        let secs = env_u64("ZTSSH_SOAK_SECS").unwrap_or(if short { 60 } else { 600 });
        let n =
            env_u64("ZTSSH_BENCH_SESSIONS").map_or(if short { 100 } else { 1000 }, |v| v as usize);
        // The sidecar gives at most 120 renewal signatures an hour; a
        // session renews when a third of its certificate is left.
        let per_renewal = CERT_SECS - CERT_SECS / 3;
        assert!(
            secs <= 110 * per_renewal,
            "ZTSSH_SOAK_SECS={secs}: with {CERT_SECS} s certificates a session renews every \
             {per_renewal} s and the sidecar signs at most 120 renewals an hour; use {} or less",
            110 * per_renewal
        );
        let s = Self {
            short,
            secs,
            n,
            workers: if short { 4 } else { 20 },
            ban_every: if short { 15 } else { 30 },
            nginx_down: if short { 15 } else { 60 }.min(secs / 4),
            bulk: if short { 256 << 10 } else { 4 << 20 },
            lines: if short { 40 } else { 150 },
            flood_idle: if short { 40 } else { 100 },
            flood_garbage: if short { 20 } else { 50 },
        };
        let bans = (secs - 1) / s.ban_every;
        assert!(
            n.is_multiple_of(PER_PRINCIPAL) && (bans as usize) < n / PER_PRINCIPAL,
            "{n} sessions make {} principals of {PER_PRINCIPAL}; the run bans {bans}",
            n / PER_PRINCIPAL
        );
        s
    }
}

/// Lets this process and the proxy hold two sockets per session and the
/// relay's two more.
fn raise_fd_limit(n: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (4 * n + 2048) as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= want {
        return;
    }
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return;
    }
    assert!(
        want <= hard,
        "{n} sessions need {want} open files; the hard limit is {hard}"
    );
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
}

/// A fault the run causes, at an offset from the start of the soak.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Sighup,
    Ban,
    SshdRestart,
    NginxStop,
    NginxStart,
}

fn schedule(z: &Sizes) -> Vec<(Duration, Fault)> {
    let s = |f: f64| Duration::from_secs_f64(z.secs as f64 * f);
    let mut v = vec![
        (s(0.25), Fault::SshdRestart),
        (s(0.65), Fault::SshdRestart),
        (s(0.35), Fault::NginxStop),
        (
            s(0.35) + Duration::from_secs(z.nginx_down),
            Fault::NginxStart,
        ),
    ];
    let mut t = SIGHUP_EVERY;
    while t < s(1.0) {
        v.push((t, Fault::Sighup));
        t += SIGHUP_EVERY;
    }
    let mut t = Duration::from_secs(z.ban_every);
    while t < s(1.0) {
        v.push((t, Fault::Ban));
        t += Duration::from_secs(z.ban_every);
    }
    v.sort_by_key(|e| e.0);
    v
}

/// A principal banned: when its list was published and when it could
/// first be fetched (nginx back up, if it was down).
pub struct Ban {
    pub principal: String,
    pub published: Instant,
    pub landed: Option<Instant>,
}

/// What the faults did, for the verdict.
#[derive(Default)]
pub struct Faults {
    pub sighups: usize,
    pub bans: Vec<Ban>,
    /// sshd stopped, and listening again.
    pub sshd: Vec<(Instant, Instant)>,
    /// nginx stopped, and serving again.
    pub nginx: Vec<(Instant, Option<Instant>)>,
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Copies the proxy's and sshd's logs out of the world's directory (which
/// is deleted on drop) for a look at a failed run.
fn keep_logs(world: &World) {
    let keep = std::env::temp_dir().join(format!("ztssh-soak-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&keep);
    for (from, name) in [
        (&world.proxy.log, "proxy.log"),
        (&world.sshd.log, "sshd.log"),
    ] {
        let _ = std::fs::copy(from, keep.join(name));
    }
    println!("  the logs are kept in {}", keep.display());
}

/// Now, as UTC HH:MM:SS (to find a fault in the proxy's log).
pub fn utc_now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    read_text(std::path::Path::new("/proc/loadavg"))
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn principal(i: usize) -> String {
    format!("syn{}", i / PER_PRINCIPAL)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let z = Sizes::from_env();
    raise_fd_limit(z.n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ns = NetNs::create(SHAPING, z.n.div_ceil(PER_SOURCE));

    // nginx first, empty: the proxy's config names its URL; the CA's first
    // list is put there before the proxy starts.
    let web = WebRoot::new();
    let mut nginx = Nginx::start_empty(&web);
    let nginx_port = nginx.port;
    let url = nginx.url("soak");
    let sshd_port = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let (upstream_port, upstream) = relay::start_upstream(rt.handle(), Arc::clone(&sshd_port));
    let mut names: Vec<String> = (0..z.n / PER_PRINCIPAL)
        .map(|p| format!("syn{p}"))
        .collect();
    names.push("alice".into());
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let flood_slots = z.flood_idle + z.flood_garbage;
    let (served, staging) = (web.served(), web.staging());
    let mut world = World::builder()
        .principals(&names_ref)
        .upstream_port(upstream_port)
        .proxy_toml(&format!(
            "{SHORT_CERTS}challenge_interval_secs = {CHALLENGE_SECS}\n\
             challenge_deadline_secs = {DEADLINE_SECS}\ncert_ttl_secs = {CERT_SECS}\n\
             max_connections = {}\nrevocation_url = \"{url}\"\nrevocation_poll_secs = {POLL_SECS}\n",
            z.n + z.workers + flood_slots + 256
        ))
        .before_start(|pki, _| {
            pki.publish_crl_to(&staging, "24h");
            std::fs::rename(&staging, &served).expect("first list");
        })
        .start();
    sshd_port.store(world.sshd.port, Ordering::SeqCst);
    wait_until(Duration::from_secs(30), "the proxy's first fetch", || {
        nginx.requests().iter().any(|r| r.2 == "soak")
    });
    let pid = world.proxy.pid();
    let (fds_base, rss_base) = (open_fds(pid), world.proxy.rss_kib());

    // The relays: one for the synthetic sessions (each namespace source
    // becomes a loopback source at the proxy, 127.21.C.D), one per ssh
    // worker (127.40.0.1 on).
    let proxy_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, world.proxy.port));
    let on_veth = SocketAddr::from((ns.host_addr(), 0));
    let load_relay = relay::Relay::start(
        rt.handle(),
        on_veth,
        proxy_addr,
        DELAY,
        relay::Source::MapPeer,
    );
    let ssh_relays: Vec<relay::Relay> = (0..z.workers)
        .map(|w| {
            // Each worker in a /16 of its own, as users on different
            // networks: the flood's idle sockets come from 150 /16s, and
            // when the handshake table is full the network holding the
            // most pending handshakes gives up its oldest.
            let src = Ipv4Addr::new(127, 40 + w as u8, 0, 1);
            relay::Relay::start(
                rt.handle(),
                on_veth,
                proxy_addr,
                DELAY,
                relay::Source::Fixed(src),
            )
        })
        .collect();

    // The synthetic sessions, each driven from the moment it is up.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ends_tx, mut ends_rx) = mpsc::unbounded_channel();
    let counts: Arc<load::Counts> = Arc::default();
    let plan = load::Plan {
        n: z.n,
        per_source: PER_SOURCE,
        openers: OPENERS,
        ns: &ns,
        relay: load_relay.addr,
        root: world.pki.root_key(),
        key: &world.alice,
        rt: rt.handle().clone(),
        stop: stop_rx,
        ends: ends_tx,
        counts: Arc::clone(&counts),
    };
    let setup = load::open_all(&plan, principal);
    drop(plan);
    let rss_open = world.proxy.rss_kib();
    println!(
        "soak: {} synthetic sessions opened in {:.1} s through the namespace ({} sources); proxy RSS {rss_base} KiB before, {rss_open} KiB with them",
        z.n,
        setup.as_secs_f64(),
        z.n.div_ceil(PER_SOURCE)
    );

    // The soak: ssh workers, the flood, and the faults on schedule.
    let downloads = real::make_downloads(world.dir.path(), z.workers, z.bulk);
    let stop = AtomicBool::new(false);
    let sshd_down = AtomicBool::new(false);
    let flood_counts = flood::Counts::default();
    let faults = Mutex::new(Faults::default());
    let mut rss_samples: Vec<u64> = Vec::new();
    let load_at_start = loadavg();
    let started = Instant::now();
    let rplan = real::Plan {
        ns: &ns,
        ssh_args: ssh_relays
            .iter()
            .map(|r| real::ssh_args(&world, r.addr))
            .collect(),
        dir: world.dir.path().to_owned(),
        bulk: z.bulk,
        lines: z.lines,
        line_gap: Duration::from_millis(100),
        stop: &stop,
        sshd_down: &sshd_down,
    };
    let proxy_port = world.proxy.port;
    let jobs: Vec<real::Job> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..z.workers)
            .map(|w| {
                let (rplan, sum) = (&rplan, &downloads[w]);
                s.spawn(move || real::worker(rplan, w, sum))
            })
            .collect();
        let flooder = s.spawn(|| {
            flood::run(
                proxy_port,
                z.flood_idle,
                z.flood_garbage,
                &stop,
                &flood_counts,
            );
        });
        // The faults, in order, each at its time.
        let mut samples_at = Instant::now();
        for (at, fault) in schedule(&z) {
            while started.elapsed() < at {
                std::thread::sleep((at - started.elapsed()).min(Duration::from_millis(200)));
                if samples_at.elapsed() >= Duration::from_secs(5) {
                    rss_samples.push(world.proxy.rss_kib());
                    samples_at = Instant::now();
                }
            }
            let mut f = faults.lock().expect("lock");
            if !matches!(fault, Fault::Sighup) {
                println!(
                    "  +{:.0} s ({} UTC): {fault:?}",
                    started.elapsed().as_secs_f64(),
                    utc_now()
                );
            }
            match fault {
                Fault::Sighup => {
                    world.proxy.sighup();
                    f.sighups += 1;
                }
                Fault::Ban => {
                    let p = format!("syn{}", f.bans.len());
                    world.pki.revoke("principal", &p);
                    world.pki.publish_crl_to(&staging, "24h");
                    let published = Instant::now();
                    std::fs::rename(&staging, &served).expect("publish the list");
                    let up = f.nginx.last().is_none_or(|n| n.1.is_some());
                    f.bans.push(Ban {
                        principal: p,
                        published,
                        landed: up.then_some(published),
                    });
                }
                Fault::SshdRestart => {
                    sshd_down.store(true, Ordering::SeqCst);
                    let down = Instant::now();
                    world.sshd.restart();
                    f.sshd.push((down, Instant::now()));
                    sshd_down.store(false, Ordering::SeqCst);
                }
                Fault::NginxStop => {
                    nginx.stop();
                    f.nginx.push((Instant::now(), None));
                }
                Fault::NginxStart => {
                    nginx = Nginx::start_on(&web, nginx_port);
                    let back = Instant::now();
                    if let Some(last) = f.nginx.last_mut() {
                        last.1 = Some(back);
                    }
                    for b in f.bans.iter_mut().filter(|b| b.landed.is_none()) {
                        b.landed = Some(back);
                    }
                }
            }
        }
        while started.elapsed() < Duration::from_secs(z.secs) {
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::SeqCst);
        let jobs = workers
            .into_iter()
            .flat_map(|h| h.join().expect("ssh worker"))
            .collect();
        flooder.join().expect("flood");
        jobs
    });
    let soaked = started.elapsed();
    println!(
        "  machine: {} cores, load average (1 5 15 min) {load_at_start} at the start of the soak, {} at its end",
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg()
    );
    let rss_peak = rss_samples.iter().copied().max().unwrap_or(rss_open);

    // The end: every synthetic session closes (CLOSE both ways).
    let _ = stop_tx.send(true);
    let ends: Vec<load::End> = rt.block_on(async {
        let mut out = Vec::with_capacity(z.n);
        while out.len() < z.n {
            match tokio::time::timeout(Duration::from_secs(60), ends_rx.recv()).await {
                Ok(Some(e)) => out.push(e),
                _ => break,
            }
        }
        out
    });
    // The proxy lets go of every session: its descriptors come back to
    // where they were (bounded wait), then its memory is read.
    let fd_margin = 8;
    let fds_back = {
        let t = Instant::now();
        while open_fds(pid) > fds_base + fd_margin && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        open_fds(pid)
    };
    let rss_after = world.proxy.rss_kib();
    let (dropped, tbf) = ns.counters();
    let log = world.proxy.log_text();

    let f = faults.into_inner().expect("lock");
    let v = verdict::Inputs {
        sizes: &z,
        faults: &f,
        ends: &ends,
        jobs: &jobs,
        log: &log,
        counts: &counts,
        flood: &flood_counts,
        upstream: &upstream,
        relayed: load_relay.total.load(Ordering::SeqCst)
            + ssh_relays
                .iter()
                .map(|r| r.total.load(Ordering::SeqCst))
                .sum::<usize>(),
        soaked,
        dropped,
        tbf: &tbf,
        mem: verdict::Mem {
            fds_base,
            fds_back,
            fd_margin,
            rss_base,
            rss_open,
            rss_peak,
            rss_samples,
            rss_after,
        },
        proxy_alive: std::path::Path::new(&format!("/proc/{pid}")).exists(),
    };
    let failures = verdict::judge(&v);
    if !failures.is_empty() {
        keep_logs(&world);
    }
    drop(nginx);
    drop(world);
    drop(ns);
    assert!(
        failures.is_empty(),
        "the soak failed:\n  {}",
        failures.join("\n  ")
    );
}
