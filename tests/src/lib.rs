//! Harness for end-to-end tests: a private real OpenSSH `sshd` on a free
//! loopback port with its own config and host key, a temporary CA, the real
//! `ztssh-proxy` binary, and the real `ssh`, `scp`, `sftp` and `rsync`
//! clients with `ProxyCommand ztssh-sidecar %h %p`.
//!
//! Every wait is bounded; every process started here is stopped by PID on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod agent;
pub mod listserver;
pub mod nginx;
pub mod skagent;
pub mod zsk;

/// Paths of the built binaries (next to the test executable's directory).
/// `ZTSSH_BIN_<NAME>` (e.g. `ZTSSH_BIN_ZTSSH_PROXY`) points at another build
/// of one of them, for a bench that compares two builds side by side.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("ZTSSH_BIN_{}", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// The `p` quantile (0.0 to 1.0) of durations sorted ascending (nearest
/// rank); `sorted` must not be empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The loopback source of the benches' session `i`, `per_source` sessions
/// to each address of 127.20.0.0/16 (250 addresses per /24, from .1).
pub fn bench_source(i: usize, per_source: usize) -> String {
    let s = i / per_source;
    format!("127.20.{}.{}", s / 250, s % 250 + 1)
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    wait_bounded(child, limit)
}

/// Waits for `child`, killing it after `limit`; collects its output.
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let s = child.wait().expect("wait after kill");
            panic!("command timed out after {limit:?} (status {s})");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Polls `cond` every 20 ms for at most `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a file as text, empty if missing.
pub fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed (by its PID) when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private sshd.
pub struct Sshd {
    pub port: u16,
    pub log: PathBuf,
    _child: Guard,
}

impl Sshd {
    /// Starts sshd in `dir` accepting `authorized_keys` for root.
    pub fn start(dir: &Path, authorized_keys: &str) -> Self {
        Self::start_with_extra(dir, authorized_keys, "")
    }

    /// Same, with `extra` config lines (such as `HostCertificate`).
    pub fn start_with_extra(dir: &Path, authorized_keys: &str, extra: &str) -> Self {
        let ak = dir.join("authorized_keys");
        fs::write(&ak, authorized_keys).expect("write authorized_keys");
        let port = free_port();
        let head = format!(
            "Port {port}\nListenAddress 127.0.0.1\nAuthorizedKeysFile {}\n{extra}",
            ak.display()
        );
        Self::start_with_head(dir, port, &head)
    }

    /// Starts sshd in `dir` on `port` with `head` (lines that say where it
    /// listens and how it finds keys, such as `ztssh-proxy sshd-config`'s)
    /// read before the harness's own settings.
    pub fn start_with_head(dir: &Path, port: u16, head: &str) -> Self {
        let _ = fs::create_dir_all("/run/sshd");
        let host_key = sshd_host_key(dir);
        let log = dir.join("sshd.log");
        let cfg = dir.join("sshd_config");
        fs::write(
            &cfg,
            format!(
                "{head}HostKey {}\nPidFile {}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nLogLevel DEBUG1\nAllowTcpForwarding yes\n\
                 Subsystem sftp internal-sftp\nMaxStartups 100\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
            ),
        )
        .expect("write sshd_config");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&cfg)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd (is openssh-server installed?)");
        let child = Guard(child);
        wait_until(Duration::from_secs(10), "sshd to listen", || {
            read_text(&log).contains("Server listening on")
        });
        Self {
            port,
            log,
            _child: child,
        }
    }

    /// sshd's log so far.
    pub fn log_text(&self) -> String {
        read_text(&self.log)
    }

    /// The listening sshd's PID (its per-connection processes are its
    /// children).
    pub fn pid(&self) -> u32 {
        self._child.0.id()
    }

    /// sshd's log up to a sentinel: a fresh direct connection made now,
    /// waited for until sshd logs it. sshd accepts connections in order and
    /// logs each one as it accepts it, so every connection that reached sshd
    /// before this call is in the returned text (the sentinel's line is not).
    pub fn log_before_sentinel(&self) -> String {
        let sentinel =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("sentinel connection");
        let port = sentinel.local_addr().expect("sentinel addr").port();
        let line = format!("Connection from 127.0.0.1 port {port} ");
        wait_until(Duration::from_secs(10), "sshd to log the sentinel", || {
            self.log_text().contains(&line)
        });
        let log = self.log_text();
        let at = log.find(&line).unwrap_or(log.len());
        let line_start = log[..at].rfind('\n').map_or(0, |i| i + 1);
        log[..line_start].to_owned()
    }
}

/// sshd's host key in `dir` (`ssh_host_ed25519_key`, and `.pub` beside
/// it), made with ssh-keygen unless it exists: call it before
/// [`Sshd::start`] to certify the key first.
pub fn sshd_host_key(dir: &Path) -> PathBuf {
    let host_key = dir.join("ssh_host_ed25519_key");
    if !host_key.exists() {
        ok(
            &run_bounded(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(&host_key),
                Duration::from_secs(10),
            ),
            "ssh-keygen host key",
        );
    }
    host_key
}

/// `ztssh-ca init` in `dir/ca`; returns the CA directory.
pub fn ca_init(dir: &Path) -> PathBuf {
    let ca = dir.join("ca");
    ok(
        &run_bounded(
            Command::new(bin("ztssh-ca"))
                .arg("init")
                .arg("--dir")
                .arg(&ca),
            Duration::from_secs(10),
        ),
        "ca init",
    );
    ca
}

/// A temporary CA plus a proxy state directory and licence.
pub struct Pki {
    pub ca: PathBuf,
    pub state: PathBuf,
    pub licence: PathBuf,
}

impl Pki {
    /// `ztssh-ca init`, `ztssh-proxy keygen`, `ztssh-ca authorize-server`.
    pub fn create(dir: &Path, hostnames: &[&str]) -> Self {
        let ca = ca_init(dir);
        let state = dir.join("state");
        let licence = dir.join("licence.pem");
        let t = Duration::from_secs(10);
        ok(
            &run_bounded(
                Command::new(bin("ztssh-proxy"))
                    .arg("keygen")
                    .arg("--dir")
                    .arg(&state),
                t,
            ),
            "proxy keygen",
        );
        let mut auth = Command::new(bin("ztssh-ca"));
        auth.arg("authorize-server")
            .arg("--dir")
            .arg(&ca)
            .arg("--request")
            .arg(state.join("licence-request.pem"));
        auth.args(["--server-id", "web1"]);
        for h in hostnames {
            auth.args(["--hostname", h]);
        }
        auth.arg("--out").arg(&licence);
        ok(&run_bounded(&mut auth, t), "authorize-server");
        Self { ca, state, licence }
    }

    /// The root public key file.
    pub fn root_pub(&self) -> PathBuf {
        self.ca.join("root.pub")
    }

    /// The root public key.
    pub fn root_key(&self) -> ztssh_proto::keys::PublicKey {
        ztssh_keyfile::read_root_public(&self.root_pub()).expect("root.pub")
    }

    /// Where the proxy reads its revocation list.
    pub fn crl(&self) -> PathBuf {
        self.ca.parent().expect("dir").join("crl.pem")
    }

    /// `ztssh-ca crl`: signs and atomically replaces the revocation list.
    pub fn publish_crl(&self) {
        let mut c = Command::new(bin("ztssh-ca"));
        c.arg("crl")
            .arg("--dir")
            .arg(&self.ca)
            .arg("--out")
            .arg(self.crl());
        ok(
            &run_bounded(&mut c, Duration::from_secs(10)),
            "ztssh-ca crl",
        );
    }

    /// `ztssh-ca crl --ttl TTL` into `out` (a web server's copy, say):
    /// the next version, signed and atomically replaced.
    pub fn publish_crl_to(&self, out: &Path, ttl: &str) {
        let mut c = Command::new(bin("ztssh-ca"));
        c.arg("crl")
            .arg("--dir")
            .arg(&self.ca)
            .arg("--out")
            .arg(out)
            .args(["--ttl", ttl]);
        ok(
            &run_bounded(&mut c, Duration::from_secs(10)),
            "ztssh-ca crl",
        );
    }

    /// `ztssh-ca revoke --KIND VALUE`.
    pub fn revoke(&self, kind: &str, value: &str) {
        let mut c = Command::new(bin("ztssh-ca"));
        c.arg("revoke")
            .arg("--dir")
            .arg(&self.ca)
            .arg(format!("--{kind}"))
            .arg(value);
        ok(
            &run_bounded(&mut c, Duration::from_secs(10)),
            "ztssh-ca revoke",
        );
    }
}

/// A user key pair made with ssh-keygen.
pub fn user_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    ok(
        &run_bounded(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path),
            Duration::from_secs(10),
        ),
        "ssh-keygen user",
    );
    path
}

/// A running proxy.
pub struct Proxy {
    pub port: u16,
    pub log: PathBuf,
    pub config: PathBuf,
    _child: Guard,
}

impl Proxy {
    /// Writes a config and starts `ztssh-proxy run`.
    pub fn start(dir: &Path, pki: &Pki, upstream: u16, principals: &str, extra: &str) -> Self {
        Self::start_with(dir, pki, upstream, principals, extra, &[])
    }

    /// Same, with extra `run` flags (`--listen [::]:PORT`, say); `{port}` in
    /// a flag is replaced by the proxy's port.
    pub fn start_with(
        dir: &Path,
        pki: &Pki,
        upstream: u16,
        principals: &str,
        extra: &str,
        run_args: &[&str],
    ) -> Self {
        // The port is picked free but not held: another test's connection
        // may take it first (a `[::]` listener conflicts with any socket on
        // the port). The proxy then exits at once, and starts again on
        // another port.
        for attempt in 1.. {
            let (port, config) = Self::configure(dir, pki, upstream, principals, extra);
            match Self::try_spawn(dir, port, config, run_args) {
                Ok(p) => return p,
                Err(why) if attempt < 3 && why.contains("Address already in use") => {}
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the loop returns or panics by its third attempt")
    }

    /// Starts `ztssh-proxy run` on a config [`Proxy::configure`] wrote.
    pub fn spawn(dir: &Path, port: u16, config: PathBuf, run_args: &[&str]) -> Self {
        Self::try_spawn(dir, port, config, run_args).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Same; `Err` with its log when the proxy exits before it listens.
    fn try_spawn(
        dir: &Path,
        port: u16,
        config: PathBuf,
        run_args: &[&str],
    ) -> Result<Self, String> {
        let log = dir.join("proxy.log");
        let child = Command::new(bin("ztssh-proxy"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(
                run_args
                    .iter()
                    .map(|a| a.replace("{port}", &port.to_string())),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start proxy");
        let mut child = Guard(child);
        let mut exited = None;
        wait_until(Duration::from_secs(10), "proxy to listen", || {
            if let Ok(Some(status)) = child.0.try_wait() {
                exited = Some(status);
                return true;
            }
            let text = read_text(&log);
            text.contains("event=\"listening\"") || text.contains("\"event\":\"listening\"")
        });
        if let Some(status) = exited {
            return Err(format!("proxy exited ({status}): {}", read_text(&log)));
        }
        Ok(Self {
            port,
            log,
            config,
            _child: child,
        })
    }

    /// Writes `principals` and a `proxy.toml` into `dir`; returns the port
    /// the proxy will listen on and the config's path.
    pub fn configure(
        dir: &Path,
        pki: &Pki,
        upstream: u16,
        principals: &str,
        extra: &str,
    ) -> (u16, PathBuf) {
        let port = free_port();
        let principals_path = dir.join("principals");
        fs::write(&principals_path, principals).expect("principals");
        let config = dir.join("proxy.toml");
        fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:{upstream}\"\nstate_dir = \"{}\"\n\
                 licence = \"{}\"\nroot_public_key = \"{}\"\nauthorized_principals = \"{}\"\n{extra}",
                pki.state.display(),
                pki.licence.display(),
                pki.root_pub().display(),
                principals_path.display()
            ),
        )
        .expect("proxy.toml");
        (port, config)
    }

    /// Starts the proxy with its stderr on a pipe: the caller reads (or,
    /// on purpose, stops reading) the log from the returned end. Returns
    /// once the proxy has logged that it listens.
    pub fn start_piped(
        dir: &Path,
        pki: &Pki,
        upstream: u16,
        principals: &str,
        extra: &str,
    ) -> (Self, std::io::PipeReader) {
        let (port, config) = Self::configure(dir, pki, upstream, principals, extra);
        let (mut reader, writer) = std::io::pipe().expect("pipe");
        let child = Command::new(bin("ztssh-proxy"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(writer)
            .spawn()
            .expect("start proxy");
        let child = Guard(child);
        // The proxy's first lines are short: reading until "listening" takes
        // a few reads; EOF means it exited.
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("event=\"listening\"") {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => panic!("proxy exited: {}", String::from_utf8_lossy(&seen)),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            assert!(seen.len() < 1 << 20, "no listening line");
        }
        let log = dir.join("proxy.log");
        fs::write(&log, &seen).expect("log");
        let proxy = Self {
            port,
            log,
            config,
            _child: child,
        };
        (proxy, reader)
    }

    /// Sends the proxy SIGHUP (reload licence, principals, revocation list).
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self._child.0.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// The proxy's PID.
    pub fn pid(&self) -> u32 {
        self._child.0.id()
    }

    /// The proxy's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = read_text(Path::new(&format!("/proc/{}/status", self.pid())));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The proxy's log so far.
    pub fn log_text(&self) -> String {
        read_text(&self.log)
    }

    /// Waits (at most `within`) until the log contains `needle`, which the
    /// proxy's log thread may write a little after the event; returns the
    /// log then.
    pub fn wait_log(&self, needle: &str, within: Duration) -> String {
        wait_until(within, needle, || self.log_text().contains(needle));
        self.log_text()
    }
}

/// Waits (at most `within`) until the peer closes `s`; panics if it keeps
/// the connection open.
pub fn expect_closed(s: &mut std::net::TcpStream, within: Duration) {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the peer kept the connection open: {e}"),
        }
    }
}

/// `GET path` from the metrics endpoint on `port`; the whole response.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

/// The value of `series` (name and labels) in a metrics text, if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// The value of `series` in a metrics text; panics if it is missing.
pub fn metric(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Waits (at most 10 s) until `series` on the metrics endpoint `port`
/// reads `want`. A series not exported yet (a label value never counted)
/// reads as 0.
pub fn wait_metric(port: u16, series: &str, want: f64) {
    wait_until(Duration::from_secs(10), series, || {
        metric_value(&http_get(port, "/metrics"), series).unwrap_or(0.0) == want
    });
}

/// How many times `needle` occurs in `haystack` (log lines, say).
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// A TCP connection to the proxy from the loopback source address `src`
/// (any 127.0.0.0/8 address works on Linux), so tests can play several
/// clients.
pub fn connect_from(src: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let src: std::net::SocketAddr = format!("{src}:0").parse().map_err(std::io::Error::other)?;
    s.bind(&src.into())?;
    let dst: std::net::SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .map_err(std::io::Error::other)?;
    s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// A whole private world: CA, sshd, proxy, and user alice.
pub struct World {
    pub dir: TempDir,
    pub pki: Pki,
    pub sshd: Sshd,
    pub proxy: Proxy,
    pub alice: PathBuf,
}

impl World {
    /// Sets everything up with alice authorized (on both the proxy and sshd).
    pub fn new() -> Self {
        Self::with_extra("")
    }

    /// Same, with extra proxy config lines.
    pub fn with_extra(extra: &str) -> Self {
        Self::build(extra, &[], &[])
    }

    /// Same, with extra `ztssh-proxy run` flags, and `files` (name, text)
    /// written into the world's directory first; `{dir}` in `extra` is that
    /// directory.
    pub fn build(extra: &str, run_args: &[&str], files: &[(&str, &str)]) -> Self {
        Self::build_for(&["alice"], extra, run_args, files, &|_| {}, "")
    }

    /// Same, with `sshd_extra` lines in sshd's config (`{dir}` is the
    /// world's directory), calling `before_sshd`
    /// once the CA exists and before sshd starts (to make and certify its
    /// host key with [`sshd_host_key`], say; the world's directory is
    /// `pki.ca`'s parent).
    pub fn with_sshd(sshd_extra: &str, before_sshd: &dyn Fn(&Pki)) -> Self {
        Self::build_for(&["alice"], "", &[], &[], before_sshd, sshd_extra)
    }

    /// Same as [`World::with_extra`], calling `before_proxy` once the CA
    /// has published its first list and before the proxy starts (to put
    /// that list on a web server, say).
    pub fn with_hook(extra: &str, before_proxy: &dyn Fn(&Pki)) -> Self {
        Self::build_for(&["alice"], extra, &[], &[], before_proxy, "")
    }

    /// Same, with every principal in `principals` authorized with alice's
    /// key on the proxy (sshd trusts alice's key for root either way).
    pub fn with_principals(principals: &[&str], extra: &str) -> Self {
        Self::build_for(principals, extra, &[], &[], &|_| {}, "")
    }

    fn build_for(
        names: &[&str],
        extra: &str,
        run_args: &[&str],
        files: &[(&str, &str)],
        before_proxy: &dyn Fn(&Pki),
        sshd_extra: &str,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ztssh-e2e-")
            .tempdir()
            .expect("tempdir");
        let alice = user_key(dir.path(), "alice");
        let alice_pub = read_text(&alice.with_extension("pub"));
        for (name, text) in files {
            fs::write(dir.path().join(name), text).expect("world file");
        }
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        let pki = Pki::create(dir.path(), &["localhost", "web1"]);
        pki.publish_crl();
        before_proxy(&pki);
        let sshd_extra = sshd_extra.replace("{dir}", &dir.path().display().to_string());
        let sshd = Sshd::start_with_extra(dir.path(), &alice_pub, &sshd_extra);
        let extra = format!("revocation_list = \"{}\"\n{extra}", pki.crl().display());
        let principals: String = names
            .iter()
            .map(|n| format!("{n} {}\n", alice_pub.trim()))
            .collect();
        let proxy = Proxy::start_with(dir.path(), &pki, sshd.port, &principals, &extra, run_args);
        Self {
            dir,
            pki,
            sshd,
            proxy,
            alice,
        }
    }

    /// Starts `ssh host 'echo started; sleep 60'` through ztssh and waits
    /// until the proxy has connected it to sshd and sshd accepted it.
    pub fn live_session(&self) -> Child {
        let before = count(&self.proxy.log_text(), "event=\"upstream_connected\"");
        let mut cmd = self.ssh();
        cmd.arg("echo started; sleep 60")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn ssh");
        wait_until(Duration::from_secs(20), "session to connect", || {
            count(&self.proxy.log_text(), "event=\"upstream_connected\"") > before
                && count(&self.sshd.log_text(), "Accepted publickey") > before
        });
        child
    }

    /// `ztssh-sidecar` as alice for host web1, connecting to `port` on
    /// loopback (a stand-in server, say) instead of the proxy.
    pub fn sidecar_to(&self, port: u16) -> Command {
        let mut c = Command::new(bin("ztssh-sidecar"));
        c.arg("--root")
            .arg(self.pki.root_pub())
            .arg("--identity")
            .arg(&self.alice)
            .arg("--principal")
            .arg("alice")
            .arg("--connect")
            .arg(format!("127.0.0.1:{port}"))
            .arg("web1")
            .arg("22");
        c
    }

    /// The ProxyCommand for ssh, with extra sidecar flags.
    pub fn proxy_command(&self, extra: &str) -> String {
        self.proxy_command_for(&self.alice, extra)
    }

    /// The ProxyCommand with `identity` signing for the sidecar as alice.
    pub fn proxy_command_for(&self, identity: &Path, extra: &str) -> String {
        self.proxy_command_as(identity, "alice", extra)
    }

    /// The ProxyCommand with `identity` signing as `principal`.
    pub fn proxy_command_as(&self, identity: &Path, principal: &str, extra: &str) -> String {
        format!(
            "{} --root {} --identity {} --principal {principal} {extra} %h %p",
            bin("ztssh-sidecar").display(),
            self.pki.root_pub().display(),
            identity.display()
        )
    }

    /// `ssh root@localhost` where `key` logs in to sshd and also signs for
    /// the sidecar, claiming to be alice.
    pub fn ssh_with_key(&self, key: &Path) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.direct_opts(key));
        c.arg("-o")
            .arg(format!("ProxyCommand={}", self.proxy_command_for(key, "")));
        c.arg("-p")
            .arg(self.proxy.port.to_string())
            .arg("root@localhost");
        c
    }

    /// Common client options (`-F /dev/null`, the ProxyCommand, no prompts).
    pub fn client_opts(&self, identity: &Path, sidecar_extra: &str) -> Vec<String> {
        let mut opts = self.direct_opts(identity);
        opts.push("-o".into());
        opts.push(format!(
            "ProxyCommand={}",
            self.proxy_command(sidecar_extra)
        ));
        opts
    }

    /// The same options without a ProxyCommand (straight to sshd).
    pub fn direct_opts(&self, identity: &Path) -> Vec<String> {
        let kh = self.dir.path().join("known_hosts");
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            identity.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", kh.display()),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// `ssh -p PORT root@localhost` through the sidecar.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.client_opts(&self.alice, ""))
            .arg("-p")
            .arg(self.proxy.port.to_string());
        c.arg("root@localhost");
        c
    }

    /// `scp -P PORT` through the sidecar (add the paths).
    pub fn scp(&self) -> Command {
        let mut c = Command::new("scp");
        c.args(self.client_opts(&self.alice, ""))
            .arg("-P")
            .arg(self.proxy.port.to_string());
        c
    }

    /// `sftp -P PORT` through the sidecar (add `-b` and the host).
    pub fn sftp(&self) -> Command {
        let mut c = Command::new("sftp");
        c.args(self.client_opts(&self.alice, ""))
            .arg("-P")
            .arg(self.proxy.port.to_string());
        c
    }

    /// The `-e` argument for rsync.
    pub fn rsync_rsh(&self) -> String {
        let opts = self.client_opts(&self.alice, "");
        let quoted: Vec<String> = opts.iter().map(|o| format!("'{o}'")).collect();
        format!("ssh {} -p {}", quoted.join(" "), self.proxy.port)
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// Deterministic pseudo-random bytes (xorshift), for large test files.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts a command succeeded, printing its output otherwise.
pub fn assert_ok(out: &Output, what: &str) {
    ok(out, what);
}

/// Text of a command's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Which way a [`Relay`] tampers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Sidecar → proxy.
    Up,
    /// Proxy → sidecar.
    Down,
}

/// A TCP relay in front of the proxy that can flip one bit at a given byte
/// offset of one direction: a man in the middle with no keys.
pub struct Relay {
    pub port: u16,
}

impl Relay {
    /// Relays connections to `target`; flips bit 0 of byte `offset` in `dir`.
    pub fn start(target: u16, flip: Option<(Dir, usize)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for _ in 0..8 {
                let Ok((client, _)) = listener.accept() else {
                    return;
                };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let pairs = [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                        Dir::Up,
                    ),
                    (server, client, Dir::Down),
                ];
                for (mut from, mut to, dir) in pairs {
                    let flip_at = flip.filter(|(d, _)| *d == dir).map(|(_, o)| o);
                    std::thread::spawn(move || copy_flipping(&mut from, &mut to, flip_at));
                }
            }
        });
        Self { port }
    }
}

fn copy_flipping(
    from: &mut std::net::TcpStream,
    to: &mut std::net::TcpStream,
    flip_at: Option<usize>,
) {
    use std::io::Write;
    let _ = from.set_read_timeout(Some(Duration::from_secs(120)));
    let mut seen = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = flip_at.filter(|at| (seen..seen + n).contains(at)) {
            buf[at - seen] ^= 1;
        }
        seen += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// CPU seconds of `pid` from `/proc`: its own, plus its reaped children's
/// when `children` is set (in clock ticks, usually of 10 ms).
pub fn proc_cpu(pid: u32, children: bool) -> f64 {
    proc_cpu_of(
        &read_text(Path::new(&format!("/proc/{pid}/stat"))),
        children,
    )
}

/// CPU seconds from the text of a `/proc/PID/stat`.
pub fn proc_cpu_of(stat: &str, children: bool) -> f64 {
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // Fields 14..17 of proc(5) (utime, stime, cutime, cstime) are 11..14
    // after the command name.
    let f: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(if children { 4 } else { 2 })
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    f.iter().sum::<f64>() / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The pid of the `ztssh-sidecar` that `pid` (an ssh) started.
pub fn wait_for_child_of(pid: u32) -> u32 {
    let mut found = None;
    wait_until(Duration::from_secs(10), "sidecar process", || {
        let out = Command::new("pgrep")
            .arg("-P")
            .arg(pid.to_string())
            .arg("ztssh-sidecar")
            .output()
            .expect("pgrep");
        found = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok());
        found.is_some()
    });
    found.expect("sidecar pid")
}

/// Sends `sig` (e.g. "STOP", "CONT") to `pid`, one this test started.
pub fn signal(pid: u32, sig: &str) {
    assert!(try_signal(pid, sig), "kill -{sig} {pid}");
}

/// Sends `sig` to `pid`; whether it was delivered (for clean-ups that run
/// while a failed assertion unwinds, or after the process is gone).
pub fn try_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether sshd's log shows the connection from `port` ended: closed or
/// reset, before or after authentication (a killed session's socket is
/// dropped with sshd's unread bytes in it, so the kernel sends RST).
pub fn sshd_saw_close(sshd_log: &str, port: u16) -> bool {
    let peer = format!("127.0.0.1 port {port}");
    let ends = [
        "Connection closed by ",
        "Connection reset by ",
        "Read error from remote host ",
    ];
    sshd_log.lines().any(|l| {
        let Some((_, rest)) = l.split_once(peer.as_str()) else {
            return false;
        };
        let whole_port = rest.is_empty() || rest.starts_with(' ') || rest.starts_with(':');
        whole_port && ends.iter().any(|e| l.starts_with(e))
    })
}

/// The local ports of the proxy's connections to sshd, from its log, in
/// order.
pub fn upstream_ports(log: &str) -> Vec<u16> {
    log.lines()
        .filter(|l| l.contains("event=\"upstream_connected\""))
        .filter_map(|l| {
            l.split_once("local_port=")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// One IPv4 TCP socket of this machine, from `/proc/net/tcp`.
#[derive(Debug, Clone, Copy)]
pub struct TcpSock {
    pub local_port: u16,
    pub remote_port: u16,
    /// Kernel state (1 = ESTABLISHED).
    pub state: u8,
    /// Bytes queued to send (not yet acknowledged).
    pub tx_queue: u64,
    /// Bytes received and not yet read by the application.
    pub rx_queue: u64,
}

/// Every IPv4 TCP socket, as the kernel lists them.
pub fn tcp_sockets() -> Vec<TcpSock> {
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| {
        addr.split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some(TcpSock {
                local_port: port(f.get(1)?)?,
                remote_port: port(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                tx_queue: u64::from_str_radix(tx, 16).ok()?,
                rx_queue: u64::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// Whether the socket from local `port` to sshd's `sshd_port` is still
/// ESTABLISHED.
pub fn established(port: u16, sshd_port: u16) -> bool {
    tcp_sockets()
        .iter()
        .any(|s| s.local_port == port && s.remote_port == sshd_port && s.state == 1)
}

/// An ssh session that lasts until the test ends it: `cat` on the server,
/// fed from a pipe. Tests wait on events while it lives instead of
/// sleeping for a fixed time.
pub struct LiveSsh {
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
}

impl LiveSsh {
    /// Starts `ssh ... cat` from `cmd` (an ssh command without the remote
    /// command).
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .arg("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh cat");
        let stdin = child.stdin.take();
        Self {
            child: Some(child),
            stdin,
        }
    }

    /// Sends `text` through the session.
    pub fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("session open");
        stdin.write_all(text.as_bytes()).expect("write to ssh");
    }

    /// Ends the session (end of input) and returns ssh's output.
    pub fn finish(mut self) -> Output {
        drop(self.stdin.take());
        let child = self.child.take().expect("session running");
        wait_bounded(child, Duration::from_secs(60))
    }
}

impl Drop for LiveSsh {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sshd_saw_close;

    #[test]
    fn sshd_saw_close_knows_every_way_sshd_logs_a_dropped_connection() {
        let lines = [
            "Connection closed by 127.0.0.1 port 40001 [preauth]",
            "Connection reset by 127.0.0.1 port 40002",
            "Read error from remote host 127.0.0.1 port 40003: Connection reset by peer",
            "Connection closed by authenticating user root 127.0.0.1 port 40004 [preauth]",
        ];
        let log = lines.join("\n");
        for port in 40001..=40004 {
            assert!(sshd_saw_close(&log, port), "port {port}");
        }
        // Another port, a prefix of a port, or another kind of line: no.
        assert!(!sshd_saw_close(&log, 4000));
        assert!(!sshd_saw_close(&log, 40005));
        assert!(!sshd_saw_close(
            "Accepted publickey for root from 127.0.0.1 port 40006 ssh2",
            40006
        ));
    }
}
