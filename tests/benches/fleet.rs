//! Fleet revocation: P proxies, each a separate `ztssh-proxy` process with
//! its own keys and its own licence from one `ztssh-ca` root, pull the
//! root-signed list from one nginx on loopback every second
//! (`revocation_poll_secs = 1`, the default ±10 % jitter). S live sessions
//! on each. The bench first measures the fleet while idle (requests per
//! second at nginx, from its access log, and each proxy's CPU, from
//! `/proc/PID/stat`, beside a few proxies without sessions that only watch
//! their list file or only pull, so the pull's own cost shows), then bans
//! the principal: `ztssh-ca revoke` and
//! `ztssh-ca crl` write the next list beside the served directory and the
//! bench renames it over the served file (an atomic replace, as a deploy
//! would). The clock starts at that rename and stops, per session, when
//! the proxy's sshd-side socket closes. Every client must then have been
//! told why.
//!
//! The sessions are opened by the synthetic load client
//! (`tests/support/client.rs`) from many loopback sources
//! (127.20.0.0/16, ten sessions per address, as in the kill bench), and
//! each proxy's upstream is a TCP sink of its own standing in for sshd
//! (it records when each socket closes): a real sshd holding 1,000
//! sessions would take the two cores this machine has, and the kill
//! bench already measures the same close against a sink. Everything else
//! is real: nginx from Debian, and the `ztssh-proxy` and `ztssh-ca`
//! binaries.
//!
//! `cargo bench -p ztssh-tests --bench fleet` (50 proxies × 20 sessions;
//! `ZTSSH_BENCH_PROXIES` and `ZTSSH_BENCH_PER_PROXY` to change them,
//! `ZTSSH_BENCH_SHORT=1` for the 5 × 4 run the test suite makes, which
//! checks that every session ends and every client is told why, and
//! asserts no speed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{LibClient, clocks};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use ztssh_proto::conn::{ClientConn, ClientConnEvent};
use ztssh_proto::frame::Control;
use ztssh_tests::bench::{self, Better};
use ztssh_tests::nginx::{Nginx, WebRoot};
use ztssh_tests::*;

/// Sessions per loopback source address (the per-source burst is 20).
const PER_SOURCE: usize = 10;
/// Threads that open sessions; each owns whole source addresses.
const OPENERS: usize = 4;
/// The poll interval every proxy is given.
const POLL_SECS: u64 = 1;
const T: Duration = Duration::from_secs(10);

/// The loopback address bench session `i` connects from.
fn source(i: usize) -> String {
    bench_source(i, PER_SOURCE)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wall_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Lets this process hold two sockets per session (its clients and the
/// sinks), plus room for everything else.
fn raise_fd_limit(sessions: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (2 * sessions + 512) as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= want {
        return;
    }
    assert!(
        want <= hard,
        "{sessions} sessions need {want} open files in this process; the hard limit is {hard}"
    );
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
}

fn must(cmd: &mut Command, what: &str) {
    let out = run_bounded(cmd, T);
    assert_ok(&out, what);
}

/// One proxy of the fleet, with its sink's records.
struct Member {
    proxy: Proxy,
    accepted: Arc<AtomicUsize>,
    closed: Arc<Mutex<Vec<Instant>>>,
}

/// The stand-in for this proxy's sshd: counts connections and records when
/// the proxy closes each one.
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

/// Reads one tunnel until the proxy's end of it; returns why.
async fn await_end(sock: std::net::TcpStream, mut conn: ClientConn) -> String {
    sock.set_nonblocking(true).expect("nonblocking");
    let sock = TcpStream::from_std(sock).expect("tokio socket");
    loop {
        while let Some(ev) = conn.poll_event() {
            match ev {
                ClientConnEvent::Control(Control::Terminate { reason, .. }) => return reason,
                ClientConnEvent::Ended(e) => return format!("ended: {e:?}"),
                _ => {}
            }
        }
        if sock.readable().await.is_err() {
            return "socket error".into();
        }
        match sock.try_read(conn.recv_buf()) {
            Ok(0) => return "closed without TERMINATE".into(),
            Ok(n) => {
                conn.handle_peer_read(n, clocks());
                let pending = conn.poll_local().len();
                conn.delivered(pending, clocks());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return format!("read: {e}"),
        }
    }
}

/// `ztssh-proxy keygen` and a licence from the shared root for proxy `name`.
fn member_pki(ca: &Path, dir: &Path, name: &str) -> Pki {
    let state = dir.join("state");
    let licence = dir.join("licence.pem");
    must(
        Command::new(bin("ztssh-proxy"))
            .arg("keygen")
            .arg("--dir")
            .arg(&state),
        "proxy keygen",
    );
    must(
        Command::new(bin("ztssh-ca"))
            .arg("authorize-server")
            .arg("--dir")
            .arg(ca)
            .arg("--request")
            .arg(state.join("licence-request.pem"))
            .args(["--server-id", name, "--hostname", "localhost"])
            .arg("--out")
            .arg(&licence),
        "authorize-server",
    );
    Pki {
        ca: ca.to_owned(),
        state,
        licence,
    }
}

/// Signs the next list with `ztssh-ca crl` into `staging`, then renames it
/// over `served`; returns the moment just before the rename (monotonic and
/// wall clock).
fn publish(ca: &Path, staging: &Path, served: &Path) -> (Instant, f64) {
    must(
        Command::new(bin("ztssh-ca"))
            .arg("crl")
            .arg("--dir")
            .arg(ca)
            .arg("--out")
            .arg(staging),
        "ztssh-ca crl",
    );
    let at = (Instant::now(), wall_secs());
    std::fs::rename(staging, served).expect("publish the list");
    at
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let short = std::env::var_os("ZTSSH_BENCH_SHORT").is_some();
    let proxies = env_usize("ZTSSH_BENCH_PROXIES", if short { 5 } else { 50 });
    let per = env_usize("ZTSSH_BENCH_PER_PROXY", if short { 4 } else { 20 });
    let idle_secs = if short { 3 } else { 30 };
    let n = proxies * per;
    assert!(proxies > 0 && per > 0, "nothing to measure");
    raise_fd_limit(n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // The CA and the proxies' keys live in a private directory; nginx's
    // tree in another that its workers (www-data) may read.
    let dir = tempfile::Builder::new()
        .prefix("ztssh-fleet-")
        .tempdir()
        .expect("tmp");
    let web = WebRoot::new();
    let (served, staging) = (web.served(), web.staging());

    let alice = user_key(dir.path(), "alice");
    let principals = format!("alice {}", read_text(&alice.with_extension("pub")));
    let ca = ca_init(dir.path());
    let root = ztssh_keyfile::read_root_public(&ca.join("root.pub")).expect("root.pub");
    publish(&ca, &staging, &served);
    let nginx = Nginx::start(&web);

    let t = Instant::now();
    let start = |name: String, url: bool, list: bool| -> Member {
        let pdir = dir.path().join(&name);
        std::fs::create_dir_all(&pdir).expect("proxy dir");
        let pki = member_pki(&ca, &pdir, &name);
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind sink");
        let sink_port = listener.local_addr().expect("addr").port();
        let accepted: Arc<AtomicUsize> = Arc::default();
        let closed: Arc<Mutex<Vec<Instant>>> = Arc::default();
        rt.spawn(sink(listener, Arc::clone(&accepted), Arc::clone(&closed)));
        // No challenge during the bench: the synthetic clients sit idle
        // and answer none, so only the ban ends their sessions.
        let mut extra = "challenge_interval_secs = 3600
challenge_deadline_secs = 300
\
                         cert_ttl_secs = 3600\n"
            .to_owned();
        // Each proxy starts from its own copy of the list (as after a
        // deploy), kept there by the proxy when it pulls a newer one.
        if list {
            let cache = pdir.join("crl.pem");
            std::fs::copy(&served, &cache).expect("copy the list");
            extra += &format!("revocation_list = \"{}\"\n", cache.display());
        }
        // All pull from the one server; the query string only tells the
        // proxies apart in nginx's access log.
        if url {
            extra += &format!(
                "revocation_url = \"{}\"\nrevocation_poll_secs = {POLL_SECS}\n",
                nginx.url(&name)
            );
        }
        let proxy = Proxy::start(&pdir, &pki, sink_port, &principals, &extra);
        Member {
            proxy,
            accepted,
            closed,
        }
    };
    let fleet: Vec<Member> = (0..proxies)
        .map(|i| start(format!("proxy{i}"), true, true))
        .collect();
    // Side by side while idle, without sessions: proxies that only watch
    // their list file (the deployment before revocation_url), and proxies
    // that only pull (no file to keep the list in).
    let controls = (proxies / 10).clamp(1, 5);
    let file_only: Vec<Member> = (0..controls)
        .map(|i| start(format!("fileonly{i}"), false, true))
        .collect();
    let url_only: Vec<Member> = (0..controls)
        .map(|i| start(format!("urlonly{i}"), true, false))
        .collect();
    let started = t.elapsed();

    // Sessions: session j of proxy p is global session p * per + j.
    let t = Instant::now();
    let ports: Vec<u16> = fleet.iter().map(|m| m.proxy.port).collect();
    let clients: Vec<(usize, LibClient)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|th| {
                let ports = &ports;
                let alice = &alice;
                s.spawn(move || {
                    (0..n)
                        .filter(|g| (g / PER_SOURCE) % OPENERS == th)
                        .map(|g| {
                            let p = g / per;
                            let sock = connect_from(&source(g), ports[p]).expect("connect");
                            let mut c = LibClient::handshake(sock, root, alice, "alice")
                                .unwrap_or_else(|e| {
                                    panic!("session {g} on proxy {p} from {}: {e}", source(g))
                                });
                            c.establish().expect("establish");
                            (p, c)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("opener"))
            .collect()
    });
    let setup = t.elapsed();
    wait_until(Duration::from_secs(60), "every upstream connection", || {
        fleet
            .iter()
            .all(|m| m.accepted.load(Ordering::SeqCst) >= per)
    });
    // Every proxy has had its first answer (a 200: it starts without the
    // server's validators) before the idle window.
    wait_until(Duration::from_secs(30), "every proxy's first fetch", || {
        let seen: std::collections::BTreeSet<String> =
            nginx.requests().into_iter().map(|r| r.2).collect();
        seen.len() >= proxies + controls
    });

    // Idle: the fleet's requests per second and each proxy's CPU, with
    // the controls over the same window.
    let pids = |g: &[Member]| -> Vec<u32> { g.iter().map(|m| m.proxy.pid()).collect() };
    let groups = [
        pids(&fleet),
        pids(&file_only),
        pids(&url_only),
        nginx.pids(),
    ];
    let cpu = || -> Vec<Vec<f64>> {
        groups
            .iter()
            .map(|g| g.iter().map(|&p| proc_cpu(p, false)).collect())
            .collect()
    };
    let (w0, c0) = (wall_secs(), cpu());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (w1, c1) = (wall_secs(), cpu());
    let window = w1 - w0;
    let idle: Vec<(f64, u16, String)> = nginx
        .requests()
        .into_iter()
        .filter(|r| r.0 > w0 && r.0 <= w1 && r.2.starts_with("proxy"))
        .collect();
    let idle_304 = idle.iter().filter(|r| r.1 == 304).count();
    // CPU seconds per second of each process in group `g`, sorted.
    let rates = |g: usize| -> Vec<f64> {
        let mut v: Vec<f64> = c0[g]
            .iter()
            .zip(&c1[g])
            .map(|(a, b)| (b - a) / window)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (cpu_fleet, cpu_file, cpu_url) = (rates(0), rates(1), rates(2));
    let nginx_cpu: f64 = rates(3).iter().sum();

    // The ban.
    must(
        Command::new(bin("ztssh-ca"))
            .arg("revoke")
            .arg("--dir")
            .arg(&ca)
            .args(["--principal", "alice"]),
        "ztssh-ca revoke",
    );
    let (landed, landed_wall) = publish(&ca, &staging, &served);
    let all_closed = wait_until_ok(Duration::from_secs(60), || {
        fleet
            .iter()
            .all(|m| m.closed.lock().expect("lock").len() >= per)
    });
    let done = landed.elapsed();
    assert!(
        all_closed,
        "not every sshd-side socket closed within 60 s of the ban: {} of {n}\n{}",
        fleet
            .iter()
            .map(|m| m.closed.lock().expect("lock").len())
            .sum::<usize>(),
        fleet
            .iter()
            .find(|m| m.closed.lock().expect("lock").len() < per)
            .map(|m| m.proxy.log_text())
            .unwrap_or_default()
    );

    // Only now do the clients read what they were told (in a fleet they
    // are elsewhere; here they would share the proxies' cores).
    let ends: Vec<_> = clients
        .into_iter()
        .map(|(p, c)| {
            let (sock, conn) = c.into_parts();
            (p, rt.spawn(await_end(sock, conn)))
        })
        .collect();
    let reasons: Vec<(usize, String)> = rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for (p, e) in ends {
            let r = tokio::time::timeout(Duration::from_secs(60), e)
                .await
                .expect("every client is told within 60 s")
                .expect("reader");
            out.push((p, r));
        }
        out
    });

    // Per session: the list landing to its sshd-side socket closing.
    let mut up: Vec<Duration> = Vec::with_capacity(n);
    let mut last_close: Vec<Duration> = Vec::with_capacity(proxies);
    for m in &fleet {
        let closed = m.closed.lock().expect("lock");
        let mine: Vec<Duration> = closed
            .iter()
            .map(|t| t.saturating_duration_since(landed))
            .collect();
        last_close.push(mine.iter().copied().max().unwrap_or_default());
        up.extend(mine);
    }
    up.sort();
    // Per proxy: the list landing to nginx logging that proxy's 200.
    let mut fetched: BTreeMap<String, f64> = BTreeMap::new();
    for (at, status, q) in nginx.requests() {
        if at >= landed_wall && status == 200 && q.starts_with("proxy") {
            fetched.entry(q).or_insert(at - landed_wall);
        }
    }
    let mut fetch: Vec<Duration> = fetched
        .values()
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
        .collect();
    fetch.sort();
    let mut after_fetch: Vec<Duration> = (0..proxies)
        .filter_map(|i| {
            let f = fetched.get(&format!("proxy{i}"))?;
            Some(last_close[i].saturating_sub(Duration::from_secs_f64(f.max(0.0))))
        })
        .collect();
    after_fetch.sort();

    let banned = reasons
        .iter()
        .filter(|(_, r)| r == "principal alice banned")
        .count();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    let row = |what: &str, v: &[Duration]| {
        if v.is_empty() {
            println!("| {what} | — | — | — | — |");
        } else {
            println!(
                "| {what} | {} | {} | {} | {} |",
                v.len(),
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99)),
                ms(v[v.len() - 1])
            );
        }
    };
    println!(
        "fleet revocation: {proxies} ztssh-proxy processes × {per} live sessions = {n}, \
         one nginx on loopback, revocation_poll_secs = {POLL_SECS} (±10 % jitter)"
    );
    println!(
        "  setup: {} keygens, licences and proxies in {:.1} s; {n} sessions in {:.1} s",
        proxies + 2 * controls,
        started.as_secs_f64(),
        setup.as_secs_f64()
    );
    println!(
        "  idle, over {window:.1} s: {} requests at nginx = {:.1}/s for the fleet, {:.2}/s per proxy ({idle_304} of them 304)",
        idle.len(),
        idle.len() as f64 / window,
        idle.len() as f64 / window / proxies as f64
    );
    println!(
        "  idle CPU per proxy, in ms of CPU per second (of one core), mean / max, {} proxies side by side in the same window:",
        2 * controls
    );
    println!(
        "    revocation_url + revocation_list (the fleet, {per} idle sessions each): {:.2} / {:.2}",
        mean(&cpu_fleet) * 1e3,
        cpu_fleet.last().copied().unwrap_or(0.0) * 1e3
    );
    println!(
        "    revocation_list only, no sessions ({controls}): {:.2} / {:.2}",
        mean(&cpu_file) * 1e3,
        cpu_file.last().copied().unwrap_or(0.0) * 1e3
    );
    println!(
        "    revocation_url only, no sessions ({controls}): {:.2} / {:.2}",
        mean(&cpu_url) * 1e3,
        cpu_url.last().copied().unwrap_or(0.0) * 1e3
    );
    println!("    nginx (master and worker): {:.2}", nginx_cpu * 1e3);
    println!("| from the new list landing on nginx to … | samples | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    row(
        "the proxy's GET answered 200 (nginx's log, per proxy)",
        &fetch,
    );
    row("the sshd-side socket closed (per session)", &up);
    row(
        "(per proxy: its last sshd-side socket closed, after its 200)",
        &after_fetch,
    );
    let target = Duration::from_millis(POLL_SECS * 1000 + 500);
    let max = up[up.len() - 1];
    println!(
        "  target max ≤ {} (poll + 0.5 s): {} (max {}; every socket closed {} after the list landed)",
        ms(target),
        if max <= target { "met" } else { "NOT met" },
        ms(max),
        ms(done)
    );
    let k = |f: &str| format!("fleet/proxies={proxies}/sessions={n}/{f}");
    let msf = |d: Duration| d.as_secs_f64() * 1e3;
    bench::figure(
        &k("idle_cpu_per_proxy"),
        mean(&cpu_fleet) * 1e3,
        "ms/s",
        Better::Lower,
    );
    bench::figure(
        &k("idle_requests_per_proxy"),
        idle.len() as f64 / window / proxies as f64,
        "req/s",
        Better::Lower,
    );
    if !up.is_empty() {
        bench::figure(
            &k("close_p50"),
            msf(percentile(&up, 0.5)),
            "ms",
            Better::Lower,
        );
        bench::figure(
            &k("close_p99"),
            msf(percentile(&up, 0.99)),
            "ms",
            Better::Lower,
        );
        bench::figure(&k("close_max"), msf(max), "ms", Better::Lower);
    }
    println!("  {banned}/{n} clients were told \"principal alice banned\"");
    assert_eq!(up.len(), n, "every sshd-side socket closed once");
    assert_eq!(fetch.len(), proxies, "every proxy fetched the new list");
    if banned != n {
        let bad: Vec<_> = reasons
            .iter()
            .filter(|(_, r)| r != "principal alice banned")
            .take(5)
            .collect();
        panic!("every session must be told why; not told: {bad:?}");
    }
    drop(fleet);
    drop(file_only);
    drop(url_only);
    drop(nginx);
}

/// Polls `cond` every 5 ms for at most `limit`; whether it held.
fn wait_until_ok(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}
