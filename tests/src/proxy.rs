//! A running `ztssh-proxy`: its config, start-up (again on another port
//! when its port was taken), log and metrics.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Guard, Pki, bin, free_port, read_text, wait_until};

/// A running proxy.
pub struct Proxy {
    pub port: u16,
    pub log: PathBuf,
    pub config: PathBuf,
    run_args: Vec<String>,
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

    /// Stops the proxy (by PID) and starts it again on the same port,
    /// config and flags, with a fresh log.
    pub fn restart(&mut self) {
        let _ = self._child.0.kill();
        let _ = self._child.0.wait();
        let dir = self.log.parent().expect("log dir").to_owned();
        let run_args: Vec<&str> = self.run_args.iter().map(String::as_str).collect();
        *self = Self::try_spawn(&dir, self.port, self.config.clone(), &run_args)
            .unwrap_or_else(|why| panic!("{why}"));
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
        wait_until(Duration::from_secs(30), "proxy to listen", || {
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
            run_args: run_args.iter().map(|a| (*a).to_owned()).collect(),
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
            run_args: Vec::new(),
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
