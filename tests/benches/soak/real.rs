//! The real ssh sessions: each worker runs the real `ssh` (and, as its
//! ProxyCommand, the real `ztssh-sidecar`) inside the client namespace,
//! one session after another: an upload, a download and an interactive
//! session in turn, every byte checked.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::Digest;
use ztssh_tests::netns::NetNs;
use ztssh_tests::*;

/// What a job did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A blob sent to `sha256sum` on the server.
    Upload,
    /// A file on the server read with `cat`.
    Download,
    /// Lines typed, one every [`Plan::line_gap`], echoed by `cat`.
    Interactive,
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    /// ssh succeeded and every byte matched.
    Intact,
    /// ssh succeeded and the bytes did not match.
    Corrupt(String),
    /// ssh failed (its exit status and last words).
    Failed(String),
}

/// One ssh session.
pub struct Job {
    pub worker: usize,
    pub kind: Kind,
    pub start: Instant,
    pub end: Instant,
    /// Start and end as UTC HH:MM:SS.
    pub utc: (String, String),
    pub outcome: Outcome,
}

/// What every worker shares.
pub struct Plan<'a> {
    pub ns: &'a NetNs,
    /// Worker `w`'s ssh arguments up to the remote command: its sidecar
    /// connects through a relay of its own (its own source address at the
    /// proxy).
    pub ssh_args: Vec<Vec<String>>,
    /// The world's directory (the download files).
    pub dir: PathBuf,
    pub bulk: usize,
    pub lines: usize,
    pub line_gap: Duration,
    /// Set at the end of the run: finish the job under way, start none.
    pub stop: &'a AtomicBool,
    /// Set while sshd restarts: start no job.
    pub sshd_down: &'a AtomicBool,
}

/// The file worker `w` downloads, made before the run.
pub fn download_file(dir: &Path, w: usize) -> PathBuf {
    dir.join(format!("download-{w}"))
}

/// Writes every worker's download file; returns their SHA-256s.
pub fn make_downloads(dir: &Path, workers: usize, bulk: usize) -> Vec<String> {
    (0..workers)
        .map(|w| {
            let data = pseudo_random(bulk, 7_000 + w as u64);
            std::fs::write(download_file(dir, w), &data).expect("download file");
            hex(&data)
        })
        .collect()
}

fn hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Worker `w`: jobs until told to stop (at most 100,000).
pub fn worker(plan: &Plan<'_>, w: usize, download_sum: &str) -> Vec<Job> {
    let mut jobs = Vec::new();
    for round in 0..100_000usize {
        // While sshd restarts, wait (bounded) rather than fail at once.
        let paused = Instant::now();
        while plan.sshd_down.load(Ordering::SeqCst) && paused.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if plan.stop.load(Ordering::SeqCst) {
            break;
        }
        let kind = [Kind::Upload, Kind::Download, Kind::Interactive][(round + w) % 3];
        let (start, began) = (Instant::now(), crate::utc_now());
        let outcome = match kind {
            Kind::Upload => upload(plan, w, round),
            Kind::Download => download(plan, w, download_sum),
            Kind::Interactive => interactive(plan, w, round),
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        jobs.push(Job {
            worker: w,
            kind,
            start,
            end: Instant::now(),
            utc: (began, crate::utc_now()),
            outcome,
        });
        // A user tries again after a moment, not in a tight loop (which
        // the proxy's per-source penalties would rightly refuse).
        if failed {
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    jobs
}

/// Worker `w`'s ssh arguments (before the remote command) for `world`,
/// its sidecar connecting to `relay`.
pub fn ssh_args(world: &World, relay: SocketAddr) -> Vec<String> {
    let mut args = world.client_opts(&world.alice, &format!("--connect {relay}"));
    args.extend(["-o", "ConnectTimeout=30", "-p"].map(String::from));
    args.push(world.proxy.port.to_string());
    args.push("root@localhost".into());
    args
}

fn ssh(plan: &Plan<'_>, w: usize, remote: &str) -> Command {
    let mut c = plan.ns.exec("ssh");
    c.args(&plan.ssh_args[w]).arg(remote);
    c
}

/// Runs `cmd` with `feed` writing its input from a thread of its own.
fn run_fed(
    mut cmd: Command,
    feed: impl FnOnce(std::process::ChildStdin) + Send + 'static,
) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    let stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || feed(stdin));
    let out = wait_bounded(child, Duration::from_secs(300));
    let _ = feeder.join();
    out
}

fn judge(out: &std::process::Output, check: impl FnOnce(&[u8]) -> Result<(), String>) -> Outcome {
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().rev().take(3).collect();
        return Outcome::Failed(format!("{}: {}", out.status, last.join(" | ")));
    }
    match check(&out.stdout) {
        Ok(()) => Outcome::Intact,
        Err(e) => Outcome::Corrupt(e),
    }
}

fn upload(plan: &Plan<'_>, w: usize, round: usize) -> Outcome {
    let data = pseudo_random(plan.bulk, (w * 100_000 + round) as u64);
    let want = hex(&data);
    let out = run_fed(ssh(plan, w, "sha256sum"), move |mut i| {
        let _ = i.write_all(&data);
    });
    judge(&out, |got| {
        let got = String::from_utf8_lossy(got);
        match got.split_whitespace().next() {
            Some(h) if h == want => Ok(()),
            _ => Err(format!(
                "upload: sent {want}, sshd's sha256sum said {got:?}"
            )),
        }
    })
}

fn download(plan: &Plan<'_>, w: usize, want: &str) -> Outcome {
    let remote = format!("cat {}", download_file(&plan.dir, w).display());
    let out = run_fed(ssh(plan, w, &remote), drop);
    judge(&out, |got| {
        let h = hex(got);
        if h == want {
            Ok(())
        } else {
            Err(format!(
                "download: {} bytes, sha256 {h}, want {want}",
                got.len()
            ))
        }
    })
}

fn interactive(plan: &Plan<'_>, w: usize, round: usize) -> Outcome {
    let seed = (w * 100_000 + round) as u64 | 1 << 40;
    let text: String = pseudo_random(plan.lines * 32, seed)
        .chunks(32)
        .map(|c| {
            format!(
                "{}\n",
                c.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        })
        .collect();
    let sent = text.clone();
    let gap = plan.line_gap;
    let out = run_fed(ssh(plan, w, "cat"), move |mut i| {
        for line in sent.lines() {
            if writeln!(i, "{line}").is_err() {
                return;
            }
            std::thread::sleep(gap);
        }
    });
    judge(&out, |got| {
        if got == text.as_bytes() {
            Ok(())
        } else {
            Err(format!(
                "interactive: typed {} bytes, {} came back different",
                text.len(),
                got.len()
            ))
        }
    })
}
