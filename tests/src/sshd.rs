//! A private sshd: its own config, host key, port and log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::ok;
use crate::{Guard, count, descendants, read_text, run_bounded, wait_until};

/// The sshd binary the tests run: `ZTSSH_TEST_SSHD` (such as the OpenSSH
/// 10 that tests/sshd10.sh takes from the image of docker/Dockerfile's
/// `sshd-backports` stage), or the system's /usr/sbin/sshd.
pub fn sshd_bin() -> PathBuf {
    std::env::var_os("ZTSSH_TEST_SSHD")
        .map_or_else(|| PathBuf::from("/usr/sbin/sshd"), PathBuf::from)
}

/// The OpenSSH version of [`sshd_bin`] (major, minor).
pub fn sshd_version() -> (u32, u32) {
    let out = run_bounded(Command::new(sshd_bin()).arg("-V"), Duration::from_secs(10));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let rest = text.split("OpenSSH_").nth(1).unwrap_or_else(|| {
        panic!(
            "no OpenSSH version from {} -V: {text}",
            sshd_bin().display()
        )
    });
    let (major, rest) = rest.split_once('.').expect("OpenSSH_X.Y");
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (major.parse().expect("major"), minor.parse().expect("minor"))
}

/// sshd 9.8+ runs its per-connection programs from fixed paths; an sshd
/// taken out of an image keeps them beside itself.
pub fn sshd_helper_lines() -> String {
    let bin = sshd_bin();
    let Some(dir) = bin.parent() else {
        return String::new();
    };
    let mut out = String::new();
    for (keyword, name) in [
        ("SshdSessionPath", "sshd-session"),
        ("SshdAuthPath", "sshd-auth"),
    ] {
        let helper = dir.join(name);
        if bin != Path::new("/usr/sbin/sshd") && helper.exists() {
            out.push_str(&format!("{keyword} {}\n", helper.display()));
        }
    }
    out
}

/// A private sshd.
pub struct Sshd {
    pub port: u16,
    pub log: PathBuf,
    config: PathBuf,
    _child: Guard,
}

impl Sshd {
    /// Starts sshd in `dir` on `port` with `head` (lines that say where it
    /// listens and how it finds keys, such as `ztssh-proxy sshd-config`'s)
    /// read before the harness's own settings.
    pub fn start(dir: &Path, port: u16, head: &str) -> Self {
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
                 Subsystem sftp internal-sftp\nMaxStartups 100\n{}",
                host_key.display(),
                dir.join("sshd.pid").display(),
                sshd_helper_lines(),
            ),
        )
        .expect("write sshd_config");
        Self {
            port,
            _child: spawn(&cfg, &log),
            log,
            config: cfg,
        }
    }

    /// Stops sshd and every session under it, as a crash or a restart of
    /// a unit with `KillMode=control-group` would (Debian's ssh.service has
    /// `KillMode=process` and keeps sessions), then starts it again on the
    /// same port and config. Each process is stopped by its PID (SIGTERM,
    /// then SIGKILL after 10 s). Returns once sshd listens again.
    pub fn restart(&mut self) {
        let sessions = descendants(self.pid());
        for pid in std::iter::once(self.pid()).chain(sessions.iter().copied()) {
            quiet_signal(pid, "TERM");
        }
        let start = std::time::Instant::now();
        while !matches!(self._child.0.try_wait(), Ok(Some(_))) {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self._child.0.kill();
                let _ = self._child.0.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in sessions {
            quiet_signal(pid, "KILL");
        }
        let before = count(&self.log_text(), "Server listening on");
        let child = spawn_after(&self.config, &self.log, before);
        self._child = child;
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

/// Sends `sig` to `pid` if it is still there (a session may have ended
/// on its own meanwhile); says nothing either way.
fn quiet_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Starts `sshd -D` with `cfg`, logging to `log`; returns once it listens.
fn spawn(cfg: &Path, log: &Path) -> Guard {
    let before = count(&read_text(log), "Server listening on");
    spawn_after(cfg, log, before)
}

/// Same, once the log holds more than `before` "Server listening on" lines.
fn spawn_after(cfg: &Path, log: &Path, before: usize) -> Guard {
    let child = Command::new(sshd_bin())
        .arg("-D")
        .arg("-f")
        .arg(cfg)
        .arg("-E")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd (is openssh-server installed?)");
    let child = Guard(child);
    wait_until(Duration::from_secs(10), "sshd to listen", || {
        count(&read_text(log), "Server listening on") > before
    });
    child
}

/// sshd's host key in `dir` (`ssh_host_ed25519_key`, and `.pub` beside
/// it), made with ssh-keygen unless it exists: call it before
/// sshd starts (in [`crate::WorldBuilder::before_start`]) to certify the
/// key first.
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
