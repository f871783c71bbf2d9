//! Logins at once: N commands started together, each waited for (bounded),
//! with the time until the last one that succeeded was done.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a burst did.
pub struct Burst {
    /// Commands that exited 0 and printed `ok`.
    pub ok: usize,
    /// From the first start to the exit of the last command that succeeded.
    pub last_ok: Duration,
    /// The stderr of each command that failed (`exit status: stderr`).
    pub failures: Vec<String>,
}

/// Starts `n` commands from `make` at once (each should print `ok`) and
/// waits for all of them, at most `limit` in all; any still running then
/// is killed and counted as failed.
pub fn burst(n: usize, make: impl Fn() -> Command, limit: Duration) -> Burst {
    let start = Instant::now();
    let mut running: Vec<Option<Child>> = (0..n)
        .map(|_| {
            let child = make()
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a login");
            Some(child)
        })
        .collect();
    let mut ended: Vec<(Child, Duration, bool)> = Vec::with_capacity(n);
    while ended.len() < n && start.elapsed() < limit {
        for slot in running.iter_mut() {
            let Some(child) = slot.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                let at = start.elapsed();
                ended.push((slot.take().expect("child"), at, status.success()));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut failures = Vec::new();
    for mut child in running.into_iter().flatten() {
        let _ = child.kill();
        let _ = child.wait();
        failures.push(format!("still running after {limit:?}"));
    }
    let (mut ok, mut last_ok) = (0, Duration::ZERO);
    for (child, at, success) in ended {
        let out = child.wait_with_output().expect("output");
        let said_ok = String::from_utf8_lossy(&out.stdout).trim() == "ok";
        if success && said_ok {
            ok += 1;
            last_ok = last_ok.max(at);
        } else {
            failures.push(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Burst {
        ok,
        last_ok,
        failures,
    }
}

/// The lines of `systemd/sshd-loopback.conf` that set sshd's limits
/// (`MaxStartups`, `PerSource...`), for a test sshd that stands where the
/// drop-in is installed.
pub fn loopback_drop_in_limits() -> String {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf();
    let text = std::fs::read_to_string(repo.join("systemd/sshd-loopback.conf"))
        .expect("systemd/sshd-loopback.conf");
    text.lines()
        .filter(|l| l.starts_with("MaxStartups") || l.starts_with("PerSource"))
        .map(|l| format!("{l}\n"))
        .collect()
}
