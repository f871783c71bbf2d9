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
//! One mode per object the proxies pull (`ZTSSH_BENCH_FLEET`, a comma
//! list; all three by default, in turn):
//! - `ban`: the root's revocation list (`revocation_url`), banning the
//!   sessions' principal, as above;
//! - `access`: the signed access list (`access_list_url`) of
//!   `ZTSSH_BENCH_PRINCIPALS` principals (10,000), each with an Ed25519
//!   key, signed by `ztssh-ca access`; the next version leaves out the one
//!   principal that holds every session;
//! - `krl`: the user CA's KRL (`user_ca_krl_url`) of
//!   `ZTSSH_BENCH_KRL_SERIALS` serials (100,000) from `ssh-keygen -k -s`;
//!   the sessions present an OpenSSH user certificate (`ssh-keygen -s`)
//!   and the next KRL also revokes its serial.
//!
//! For `access` and `krl` the bench also gives the object's load time
//! (its verification and parse, in this process, on the bytes served) and
//! each proxy's memory with it in force, against proxies without it,
//! side by side in the same run.
//!
//! `cargo bench -p ztssh-tests --bench fleet` (50 proxies × 20 sessions;
//! `ZTSSH_BENCH_PROXIES` and `ZTSSH_BENCH_PER_PROXY` to change them,
//! `ZTSSH_BENCH_SHORT=1` for the 5 × 4 run the test suite makes, with
//! 1,000 principals and 1,000 serials, which checks that every session
//! ends and every client is told why, and asserts no speed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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
        signer: CaSigner::default(),
    }
}

/// Writes the next object into `staging` with `write`, then renames it
/// over `served`; returns the moment just before the rename (monotonic and
/// wall clock).
fn publish(write: impl FnOnce(&Path), staging: &Path, served: &Path) -> (Instant, f64) {
    write(staging);
    let at = (Instant::now(), wall_secs());
    std::fs::rename(staging, served).expect("publish the list");
    at
}

/// What the fleet pulls, and what publishing its next version withdraws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object {
    /// The root's revocation list; the next one bans alice.
    Ban,
    /// The signed access list; the next one leaves alice out.
    Access,
    /// The user CA's KRL; the next one revokes alice's certificate.
    Krl,
}

impl Object {
    fn parse(word: &str) -> Self {
        match word.trim() {
            "ban" => Self::Ban,
            "access" => Self::Access,
            "krl" => Self::Krl,
            other => panic!("ZTSSH_BENCH_FLEET: unknown mode {other:?} (ban, access, krl)"),
        }
    }
}

/// One mode's CA side: the signer's files and how it writes each version.
struct Publisher {
    object: Object,
    dir: PathBuf,
    ca: PathBuf,
    alice: PathBuf,
    /// Principals in the access list, or serials in the KRL.
    size: usize,
    /// `krl`: the user CA's private key, and alice's certificate (binary).
    user_ca: Option<PathBuf>,
    cert: Option<Vec<u8>>,
}

/// alice's certificate serial (the KRL's other serials are random 63-bit).
const ALICE_SERIAL: u64 = 4242;

impl Publisher {
    fn new(object: Object, dir: &Path, ca: &Path, alice: &Path, size: usize) -> Self {
        let (mut user_ca, mut cert) = (None, None);
        if object == Object::Krl {
            let key = dir.join("user-ca");
            must(
                Command::new("ssh-keygen")
                    .args(["-q", "-N", "", "-t", "ed25519", "-f"])
                    .arg(&key),
                "ssh-keygen (user CA)",
            );
            must(
                Command::new("ssh-keygen")
                    .arg("-q")
                    .arg("-s")
                    .arg(&key)
                    .args(["-I", "alice@fleet", "-n", "alice", "-V", "-5m:+4h"])
                    .args(["-z", &ALICE_SERIAL.to_string()])
                    .arg(alice.with_extension("pub")),
                "ssh-keygen -s",
            );
            let text = read_text(&dir.join("alice-cert.pub"));
            let c = ssh_key::Certificate::from_openssh(text.trim()).expect("certificate");
            cert = Some(c.to_bytes().expect("encode"));
            user_ca = Some(key);
        }
        Self {
            object,
            dir: dir.to_owned(),
            ca: ca.to_owned(),
            alice: alice.to_owned(),
            size,
            user_ca,
            cert,
        }
    }

    /// The first version into `out`; `next` the one that withdraws alice.
    fn write(&self, out: &Path, next: bool) {
        match self.object {
            Object::Ban => {
                if next {
                    must(
                        Command::new(bin("ztssh-ca"))
                            .arg("revoke")
                            .arg("--dir")
                            .arg(&self.ca)
                            .args(["--principal", "alice"]),
                        "ztssh-ca revoke",
                    );
                }
                must(
                    Command::new(bin("ztssh-ca"))
                        .arg("crl")
                        .arg("--dir")
                        .arg(&self.ca)
                        .arg("--out")
                        .arg(out),
                    "ztssh-ca crl",
                );
            }
            Object::Access => {
                let input = self.dir.join("access.toml");
                std::fs::write(&input, self.access_toml(!next)).expect("access.toml");
                must(
                    Command::new(bin("ztssh-ca"))
                        .args(["access", "--dir"])
                        .arg(&self.ca)
                        .arg("--in")
                        .arg(&input)
                        .arg("--out")
                        .arg(out),
                    "ztssh-ca access",
                );
            }
            Object::Krl => {
                let spec = self.dir.join("krl-spec");
                std::fs::write(&spec, krl_spec(self.size, next)).expect("KRL spec");
                let version = if next { "2" } else { "1" };
                let ca = self.user_ca.as_ref().expect("user CA");
                must(
                    Command::new("ssh-keygen")
                        .args(["-k", "-z", version, "-f"])
                        .arg(out)
                        .arg("-s")
                        .arg(ca.with_extension("pub"))
                        .arg(&spec),
                    "ssh-keygen -k",
                );
            }
        }
    }

    /// `size` principals, alice among them when `with_alice`, each with
    /// one Ed25519 key (the others from fixed seeds: no key files).
    fn access_toml(&self, with_alice: bool) -> String {
        let mut s = String::with_capacity(self.size * 120);
        if with_alice {
            let key = read_text(&self.alice.with_extension("pub"));
            writeln!(s, "[principal.alice]\nkeys = [\"{}\"]", key.trim()).unwrap();
        }
        for i in 1..self.size {
            let mut seed = [0x21u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
            let key = ssh_key::PublicKey::from(pair.public).to_openssh().unwrap();
            writeln!(s, "[principal.user{i:05}]\nkeys = [\"{key}\"]").unwrap();
        }
        s
    }

    /// What each proxy's `proxy.toml` says about the object: its own copy
    /// (`file`, in `pdir`) and the URL (`url`); `None` of both: a proxy
    /// without the object.
    fn config(&self, pdir: &Path, served: &Path, url: Option<String>, file: bool) -> String {
        let (file_key, url_key, poll) = match self.object {
            Object::Ban => ("revocation_list", "revocation_url", "revocation_poll_secs"),
            Object::Access => ("access_list", "access_list_url", "revocation_poll_secs"),
            Object::Krl => ("user_ca_krl", "user_ca_krl_url", "user_ca_krl_poll_secs"),
        };
        let mut extra = String::new();
        if let Some(ca) = &self.user_ca {
            writeln!(
                extra,
                "trusted_user_ca_keys = \"{}\"",
                ca.with_extension("pub").display()
            )
            .unwrap();
        }
        // Each proxy starts from its own copy (as after a deploy), kept
        // there by the proxy when it pulls a newer one.
        if file {
            let copy = pdir.join("object");
            std::fs::copy(served, &copy).expect("copy the object");
            writeln!(extra, "{file_key} = \"{}\"", copy.display()).unwrap();
        }
        // All pull from the one server; the query string only tells the
        // proxies apart in nginx's access log.
        if let Some(url) = url {
            writeln!(extra, "{url_key} = \"{url}\"\n{poll} = {POLL_SECS}").unwrap();
            if self.object == Object::Krl {
                // nginx on loopback: the opt-in an unsigned KRL needs.
                extra += "user_ca_krl_allow_http = true\n";
            }
        }
        extra
    }

    /// The authorized principals file: alice's key for a ban; nothing for
    /// the others (the list or the certificate is what admits her).
    fn principals(&self) -> String {
        match self.object {
            Object::Ban => format!("alice {}", read_text(&self.alice.with_extension("pub"))),
            Object::Access | Object::Krl => {
                "# none: the access list or the user CA admits\n".into()
            }
        }
    }

    /// Whether a client was told why its session ended.
    fn told(&self, reason: &str) -> bool {
        match self.object {
            Object::Ban => reason == "principal alice banned",
            Object::Access => reason.contains("principal alice is no longer authorized"),
            Object::Krl => reason.contains("was revoked by your SSH CA's KRL"),
        }
    }

    /// The key prefix of this mode's figures.
    fn key(&self, proxies: usize, n: usize) -> String {
        match self.object {
            Object::Ban => format!("fleet/proxies={proxies}/sessions={n}"),
            Object::Access => {
                format!(
                    "fleet/access_principals={}/proxies={proxies}/sessions={n}",
                    self.size
                )
            }
            Object::Krl => format!(
                "fleet/krl_serials={}/proxies={proxies}/sessions={n}",
                self.size
            ),
        }
    }

    /// Load time of the object in this process (min, median, max of 5):
    /// what a proxy's reload does with the bytes it fetched.
    fn load_times(
        &self,
        bytes: &[u8],
        root: &ztssh_proto::rootkey::RootKey,
    ) -> Option<[Duration; 3]> {
        let load = || match self.object {
            Object::Ban => None,
            Object::Access => {
                let l = ztssh_proto::access::verify_pem(bytes, root, None, 0)
                    .expect("the list verifies");
                Some(l.principals.len())
            }
            Object::Krl => {
                let k = ztssh_proto::krl::Krl::decode(bytes).expect("the KRL decodes");
                Some(k.counts().1)
            }
        };
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let n = std::hint::black_box(load())?;
            times.push(t.elapsed());
            assert_eq!(n, self.size, "the object holds what was written");
        }
        times.sort();
        Some([times[0], times[2], times[4]])
    }
}

/// `n` random 63-bit serials (splitmix64, as CAs that pick random serials
/// write them), as an `ssh-keygen -k` spec; `with_alice` adds hers.
fn krl_spec(n: usize, with_alice: bool) -> String {
    let mut state = 0x5eed_0021u64;
    let mut spec = String::with_capacity(30 * n + 30);
    for _ in 0..n {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        writeln!(spec, "serial: {}", (z ^ (z >> 31)) >> 1 | 1).unwrap();
    }
    if with_alice {
        writeln!(spec, "serial: {ALICE_SERIAL}").unwrap();
    }
    spec
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    read_text(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let short = std::env::var_os("ZTSSH_BENCH_SHORT").is_some();
    let modes = std::env::var("ZTSSH_BENCH_FLEET").unwrap_or_else(|_| "ban,access,krl".into());
    for word in modes.split(',') {
        run(Object::parse(word), short);
    }
}

/// One mode: the fleet up, idle, then the next version of `object`
/// published and every session it withdraws closed.
fn run(object: Object, short: bool) {
    let proxies = env_usize("ZTSSH_BENCH_PROXIES", if short { 5 } else { 50 });
    let per = env_usize("ZTSSH_BENCH_PER_PROXY", if short { 4 } else { 20 });
    let size = match object {
        Object::Ban => 0,
        Object::Access => env_usize("ZTSSH_BENCH_PRINCIPALS", if short { 1_000 } else { 10_000 }),
        Object::Krl => env_usize(
            "ZTSSH_BENCH_KRL_SERIALS",
            if short { 1_000 } else { 100_000 },
        ),
    };
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
    // The one file nginx serves (named crl.pem, whichever object it holds).
    let (served, staging) = (web.served(), web.staging());

    let alice = user_key(dir.path(), "alice");
    let ca = ca_init(dir.path());
    let root = ztssh_keyfile::read_root_public(&ca.join("root.pub")).expect("root.pub");
    let publisher = Publisher::new(object, dir.path(), &ca, &alice, size);
    let principals = publisher.principals();
    publish(|out| publisher.write(out, false), &staging, &served);
    let load = publisher.load_times(&std::fs::read(&served).expect("served"), &root);
    let nginx = Nginx::start_empty(&web);

    let t = Instant::now();
    let start = |name: String, url: bool, file: bool| -> Member {
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
        extra += &publisher.config(&pdir, &served, url.then(|| nginx.url(&name)), file);
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
    // For the memory an access list or a KRL takes: proxies without it.
    let without: Vec<Member> = match object {
        Object::Ban => Vec::new(),
        Object::Access | Object::Krl => (0..controls)
            .map(|i| start(format!("without{i}"), false, false))
            .collect(),
    };
    let started = t.elapsed();

    // Sessions: session j of proxy p is global session p * per + j.
    let t = Instant::now();
    let ports: Vec<u16> = fleet.iter().map(|m| m.proxy.port).collect();
    let clients: Vec<(usize, LibClient)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|th| {
                let ports = &ports;
                let alice = &alice;
                let root = &root;
                let cert = publisher.cert.as_ref();
                s.spawn(move || {
                    (0..n)
                        .filter(|g| (g / PER_SOURCE) % OPENERS == th)
                        .map(|g| {
                            let p = g / per;
                            let sock = connect_from(&source(g), ports[p]).expect("connect");
                            let mut c = LibClient::handshake_with_cert(
                                sock,
                                root.clone(),
                                alice,
                                "alice",
                                cert.cloned(),
                            )
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
    // Memory with the object in force: resident now, and the peak so far
    // (its first load included), mean per proxy of each group, KiB.
    let mem = |g: &[Member], field: &str| -> f64 {
        let v: Vec<f64> = g
            .iter()
            .map(|m| status_kib(m.proxy.pid(), field) as f64)
            .collect();
        mean(&v)
    };
    let memory: Vec<(&str, &[Member])> = vec![
        ("the fleet (pull + file, sessions)", &fleet),
        ("file only, no sessions", &file_only),
        ("pull only, no sessions", &url_only),
        ("without the object, no sessions", &without),
    ];
    let memory: Vec<(&str, f64, f64)> = memory
        .into_iter()
        .filter(|(_, g)| !g.is_empty())
        .map(|(what, g)| (what, mem(g, "VmRSS"), mem(g, "VmHWM")))
        .collect();
    let fleet_cpu_before: Vec<f64> = fleet
        .iter()
        .map(|m| proc_cpu(m.proxy.pid(), false))
        .collect();

    // The change: a ban, alice left out of the access list, or her
    // certificate's serial in the KRL.
    let (landed, landed_wall) = publish(|out| publisher.write(out, true), &staging, &served);
    let all_closed = wait_until_ok(Duration::from_secs(60), || {
        fleet
            .iter()
            .all(|m| m.closed.lock().expect("lock").len() >= per)
    });
    let done = landed.elapsed();
    assert!(
        all_closed,
        "not every sshd-side socket closed within 60 s of the change: {} of {n}\n{}",
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

    // Each fleet proxy's CPU from just before the publish until its
    // sessions were closed and their clients told (the fetch, the
    // verification and parse, the reload and 20 kills), and its peak
    // memory by then.
    let mut change_cpu: Vec<f64> = fleet
        .iter()
        .zip(&fleet_cpu_before)
        .map(|(m, before)| proc_cpu(m.proxy.pid(), false) - before)
        .collect();
    change_cpu.sort_by(f64::total_cmp);
    let peak_after = mem(&fleet, "VmHWM");

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

    let banned = reasons.iter().filter(|(_, r)| publisher.told(r)).count();
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
    let what = match object {
        Object::Ban => "revocation list, a ban".to_owned(),
        Object::Access => format!("access list of {size} principals, one left out"),
        Object::Krl => format!("user CA KRL of {size} serials, one live certificate's added"),
    };
    println!(
        "fleet ({what}): {proxies} ztssh-proxy processes × {per} live sessions = {n}, \
         one nginx on loopback, poll every {POLL_SECS} s (±10 % jitter)"
    );
    if let Some([lo, mid, hi]) = load {
        println!(
            "  load ({} bytes verified and parsed in this process, 5 runs): min {:.2} / median {:.2} / max {:.2} ms",
            std::fs::metadata(&served).map(|m| m.len()).unwrap_or(0),
            lo.as_secs_f64() * 1e3,
            mid.as_secs_f64() * 1e3,
            hi.as_secs_f64() * 1e3
        );
    }
    println!("  memory per proxy, mean, KiB (resident / peak), before the change:");
    for (what, rss, hwm) in &memory {
        println!("    {what}: {rss:.0} / {hwm:.0}");
    }
    println!(
        "  the fleet's peak after the change: {peak_after:.0} KiB; CPU per fleet proxy for the change, mean / max: {:.0} / {:.0} ms",
        mean(&change_cpu) * 1e3,
        change_cpu.last().copied().unwrap_or(0.0) * 1e3
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
        "    pull + file (the fleet, {per} idle sessions each): {:.2} / {:.2}",
        mean(&cpu_fleet) * 1e3,
        cpu_fleet.last().copied().unwrap_or(0.0) * 1e3
    );
    println!(
        "    file only, no sessions ({controls}): {:.2} / {:.2}",
        mean(&cpu_file) * 1e3,
        cpu_file.last().copied().unwrap_or(0.0) * 1e3
    );
    println!(
        "    pull only, no sessions ({controls}): {:.2} / {:.2}",
        mean(&cpu_url) * 1e3,
        cpu_url.last().copied().unwrap_or(0.0) * 1e3
    );
    println!("    nginx (master and worker): {:.2}", nginx_cpu * 1e3);
    println!("| from the new version landing on nginx to … | samples | p50 | p99 | max |");
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
    let prefix = publisher.key(proxies, n);
    let k = |f: &str| format!("{prefix}/{f}");
    if let Some([_, mid, _]) = load {
        bench::figure(&k("load"), mid.as_secs_f64() * 1e3, "ms", Better::Lower);
    }
    if object != Object::Ban {
        let with = memory
            .iter()
            .find(|m| m.0.starts_with("pull only"))
            .map_or(0.0, |m| m.1);
        let base = memory
            .iter()
            .find(|m| m.0.starts_with("without"))
            .map_or(0.0, |m| m.1);
        bench::figure(&k("object_rss"), with - base, "KiB", Better::Lower);
        bench::figure(
            &k("change_cpu_per_proxy"),
            mean(&change_cpu) * 1e3,
            "ms",
            Better::Lower,
        );
    }
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
    println!("  {banned}/{n} clients were told why");
    assert_eq!(up.len(), n, "every sshd-side socket closed once");
    assert_eq!(fetch.len(), proxies, "every proxy fetched the new list");
    if banned != n {
        let bad: Vec<_> = reasons
            .iter()
            .filter(|(_, r)| !publisher.told(r))
            .take(5)
            .collect();
        panic!("every session must be told why; not told: {bad:?}");
    }
    drop(fleet);
    drop(file_only);
    drop(url_only);
    drop(without);
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
