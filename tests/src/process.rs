//! Running commands and processes, every one bounded in time and stopped
//! by its own PID: the built binaries, commands run to completion,
//! children guarded on drop, signals, and a long-lived ssh session.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{read_text, wait_until};

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

pub(crate) fn ok(out: &Output, what: &str) {
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

/// Asserts a command succeeded, printing its output otherwise.
pub fn assert_ok(out: &Output, what: &str) {
    ok(out, what);
}

/// Text of a command's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

/// Every process under `pid` (children, their children, ...), from
/// `/proc/PID/task/*/children`; bounded at 100,000.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for t in tasks {
            let kids = read_text(&t.join("children"));
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                if out.len() < 100_000 && !out.contains(&k) {
                    out.push(k);
                    todo.push(k);
                }
            }
        }
    }
    out
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
