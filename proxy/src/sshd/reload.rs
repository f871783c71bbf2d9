//! Reloading sshd and checking it came back, for `sshd-setup`; bounded
//! subprocesses.
//!
//! A reload (SIGHUP, which `systemctl reload` also sends on Debian) makes
//! sshd close its listening sockets and re-execute itself with the new
//! config. It is done when a socket listening on the upstream port has an
//! inode none of the old ones had (read from /proc/net/tcp and tcp6) and
//! answers with an SSH banner.

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long sshd may take to come back after a reload.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// How sshd is reloaded.
pub enum Reload {
    /// SIGHUP to the pid in this file (sshd's `PidFile`).
    PidFile(PathBuf),
    /// `systemctl reload NAME`.
    Service(String),
}

impl Reload {
    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Reload::PidFile(p) => format!("SIGHUP to the pid in {}", p.display()),
            Reload::Service(s) => format!("systemctl reload {s}"),
        }
    }
}

/// Runs `cmd` with its output captured, killing it after `limit`.
///
/// The command runs in a process group of its own, killed whole on timeout
/// and once the command exited (what it left behind, `sleep 600 &` holding
/// its stdout, say, goes with it). Output is read for at most 2 s more after
/// the exit, so the wait is bounded either way.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    run_bounded_until(cmd, limit, None)
}

/// [`run_bounded`] with `input` on the command's standard input (written
/// from a thread of its own, then closed): a root command reads exactly
/// these bytes, never a file another user could swap meanwhile.
pub fn run_bounded_input(
    cmd: &mut Command,
    input: Vec<u8>,
    limit: Duration,
) -> Result<Output, String> {
    run_inner(cmd, limit, None, Some(input))
}

/// [`run_bounded`], also ended (group killed) as soon as `stop` is set.
pub fn run_bounded_until(
    cmd: &mut Command,
    limit: Duration,
    stop: Option<&AtomicBool>,
) -> Result<Output, String> {
    run_inner(cmd, limit, stop, None)
}

fn run_inner(
    cmd: &mut Command,
    limit: Duration,
    stop: Option<&AtomicBool>,
    input: Option<Vec<u8>>,
) -> Result<Output, String> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let group = child
        .id()
        .try_into()
        .ok()
        .map(nix::unistd::Pid::from_raw)
        .filter(|p| p.as_raw() > 1);
    let kill_group = || {
        if let Some(g) = group {
            let _ = nix::sys::signal::killpg(g, nix::sys::signal::SIGKILL);
        }
    };
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // Dropped at the end of the thread: the command sees end of input.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&buf);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            if let Some(mut r) = r {
                let mut chunk = [0u8; 4096];
                loop {
                    match r.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut b = shared.lock().unwrap_or_else(|e| e.into_inner());
                            let room = (1usize << 20).saturating_sub(b.len());
                            b.extend_from_slice(&chunk[..n.min(room)]);
                        }
                    }
                }
            }
            let _ = done.send(());
        });
        buf
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    drop(done_tx);
    let start = Instant::now();
    let stopped = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if stopped() => {
                kill_group();
                let _ = child.wait();
                return Err(format!("{what} was stopped: setup was interrupted"));
            }
            Ok(None) if start.elapsed() < limit => std::thread::sleep(POLL),
            Ok(None) => {
                kill_group();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {}s", limit.as_secs()));
            }
            Err(e) => {
                kill_group();
                return Err(format!("{what}: {e}"));
            }
        }
    };
    // What the command left behind in its group (`sleep 600 &` holding its
    // stdout, say) goes with it; a process that left the group and still
    // holds a pipe is not waited for beyond a grace period.
    kill_group();
    let grace = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        if done_rx
            .recv_timeout(grace.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
    let take =
        |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Output {
        status,
        stdout: take(&out),
        stderr: take(&err),
    })
}

/// Reloads sshd and waits until it listens again on `addrs` (what the
/// config it reloads with listens on) and answers on the first of them.
pub fn reload(how: &Reload, addrs: &[SocketAddr]) -> Result<String, String> {
    let Some(first) = addrs.first() else {
        return Err("no address to wait for sshd on after the reload".into());
    };
    // A wildcard listener answers on loopback.
    let upstream = match first.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, first.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, first.port()))
        }
        _ => *first,
    };
    let ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
    // sshd's own listening sockets only: another program on the same port
    // number (at another address) neither blocks nor fakes the wait. sshd
    // re-executes itself in place on SIGHUP, so its pid stays.
    let pid = crate::sshd::running::pid(how)?;
    let inodes = || -> Result<HashSet<u64>, String> {
        let all: HashSet<u64> = ports.iter().flat_map(|p| listen_inodes(*p)).collect();
        Ok(all.intersection(&socket_inodes(pid)?).copied().collect())
    };
    // Empty when sshd moves to this port. Either way the wait ends only
    // when sshd itself holds a listener on it that it did not before: a
    // pid file naming another sshd (a stale one, one in another network
    // namespace) never passes on someone else's socket.
    let before = inodes()?;
    let sent = match how {
        Reload::PidFile(path) => {
            // The pid read once, above: the one waited on is the one
            // signalled (review, eleventh round).
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGHUP)
                .map_err(|e| {
                    format!(
                        "cannot signal sshd (pid {pid} from {}): {e}",
                        path.display()
                    )
                })?;
            format!("sent SIGHUP to sshd (pid {pid})")
        }
        Reload::Service(name) => {
            let out = run_bounded(
                Command::new("systemctl").args(["reload", name]),
                RELOAD_TIMEOUT,
            )?;
            if !out.status.success() {
                return Err(format!(
                    "systemctl reload {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            format!("systemctl reload {name}")
        }
    };
    let start = Instant::now();
    loop {
        // Gone (sshd died) reads as an error: wait on, until the time runs out.
        if let Ok(now) = inodes()
            && !now.is_empty()
            && now.is_disjoint(&before)
        {
            break;
        }
        if start.elapsed() > RELOAD_TIMEOUT {
            return Err(format!(
                "{sent}, but sshd (pid {pid}) held no new socket listening on port {:?} within {}s: \
                 it did not come back (see its log), or it is not the sshd that serves this port \
                 (a stale pid file, another instance)",
                ports,
                RELOAD_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
    // Still the sshd named by the pid file (or systemd): one that names
    // another since would have sshd-setup check a process it did not
    // signal next.
    let now_named = crate::sshd::running::pid(how)?;
    if now_named != pid {
        return Err(format!(
            "{sent}, but {} now names pid {now_named}, not the sshd (pid {pid}) that was \
             signalled: another sshd was started meanwhile. Stop it, then run sshd-setup again",
            how.describe()
        ));
    }
    let banner = banner(upstream, start)?;
    Ok(format!(
        "{sent}; a new socket listens on {upstream} and answers {banner:?}"
    ))
}

pub(crate) fn read_pid(path: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read sshd's pid file {}: {e}", path.display()))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| format!("{}: not a pid: {:?}", path.display(), text.trim()))
}

/// The inodes of the sockets process `pid` holds open.
pub fn socket_inodes(pid: i32) -> Result<HashSet<u64>, String> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("cannot read sshd's descriptors (/proc/{pid}/fd): {e}"))?;
    Ok(dir
        .take(65_536)
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect())
}

/// The inodes of the sockets listening on `port` (any address).
pub fn listen_inodes(port: u16) -> HashSet<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| parse_listeners(&t, port))
        .collect()
}

/// The inodes of LISTEN (state 0A) rows for `port` in /proc/net/tcp text.
pub fn parse_listeners(text: &str, port: u16) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == "0A")
                .then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// Connects to sshd and reads its version line, retrying until
/// [`RELOAD_TIMEOUT`] after `start`.
fn banner(upstream: SocketAddr, start: Instant) -> Result<String, String> {
    let mut last = String::new();
    while start.elapsed() < RELOAD_TIMEOUT {
        match read_banner(upstream) {
            Ok(b) if b.starts_with("SSH-2.0-") => return Ok(b),
            Ok(b) => last = format!("it answered {b:?}, not an SSH banner"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(POLL);
    }
    Err(format!(
        "sshd does not answer with an SSH banner on {upstream}: {last}"
    ))
}

fn read_banner(upstream: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < 255 && s.read(&mut byte)? == 1 && byte[0] != b'\n' {
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
}

/// Runs the operator's login check with `sh -c`; exit 0 is success.
/// Ended early when `stop` is set.
pub fn login_check(check: &str, limit: Duration, stop: Option<&AtomicBool>) -> Result<(), String> {
    let out = run_bounded_until(Command::new("sh").arg("-c").arg(check), limit, stop)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Err(format!(
        "the login check `{check}` failed ({}): {}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review (att23, eighth round): another program listening on sshd's
    /// port number at another address made the reload wait fail. Only the
    /// process's own listeners count.
    #[test]
    fn a_processs_own_listeners_are_told_from_anothers() {
        let mine = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = mine.local_addr().expect("addr").port();
        let all = listen_inodes(port);
        let own = socket_inodes(i32::try_from(std::process::id()).expect("pid")).expect("own fds");
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all.is_subset(&own), "{all:?} {own:?}");
        assert!(socket_inodes(i32::MAX).is_err());
    }

    #[test]
    fn listeners_are_read_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:08AE 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1\n\
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listeners(text, 2222), vec![4242]);
        assert_eq!(parse_listeners(text, 22), vec![17]);
        assert!(parse_listeners(text, 23).is_empty());
        assert!(parse_listeners("garbage\nline with few fields\n", 22).is_empty());
    }

    #[test]
    fn bounded_runs_report_exit_and_time_out() {
        let out = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .expect("sh runs");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let slow = run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert!(slow.expect_err("killed").contains("did not finish"));
        assert!(
            login_check("echo nope >&2; false", Duration::from_secs(10), None)
                .expect_err("fails")
                .contains("nope")
        );
    }
}
