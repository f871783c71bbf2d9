//! Where a workload's platform token comes from (`--token-file`,
//! `--token-command`): read at the handshake and again before each renewal,
//! so a projected token the kubelet refreshes, or a token a CI job mints
//! on request, keeps the session alive for as long as the job lives.
//!
//! The token is a bearer secret: it is held zeroized, never printed, and
//! only its length and shape are checked here. The proxy verifies it.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;
use ztssh_proto::trust::workload::MAX_TOKEN;

/// How long a token command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of a command's stderr kept for the message that says why it
/// failed (its last ones).
const STDERR_KEPT: usize = 400;

/// Where the token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A file holding the token (a Kubernetes projected service-account
    /// token; symbolic links are followed, as the kubelet's `..data` swap
    /// needs).
    File(PathBuf),
    /// A command whose standard output is the token; `%a` in it is replaced
    /// by the audience the server asks for, quoted for the shell, and
    /// `%%` by `%`.
    Command(String),
}

impl TokenSource {
    /// From the two flags; both at once is refused by clap.
    pub fn from_args(file: Option<PathBuf>, command: Option<String>) -> Option<Self> {
        file.map(Self::File).or(command.map(Self::Command))
    }

    /// Where the token comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => format!("--token-file {}", p.display()),
            Self::Command(c) => format!("--token-command {c:?}"),
        }
    }

    /// The current token for `audience`, or what went wrong and what to do.
    pub fn fetch(&self, audience: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        let raw = match self {
            Self::File(p) => read_file(p)?,
            Self::Command(c) => run(c, audience, COMMAND_TIMEOUT)?,
        };
        let token = trimmed(raw);
        check_shape(&token).map_err(|why| format!("{}: {why}", self.describe()))?;
        Ok(token)
    }
}

fn read_file(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| {
        format!("cannot read the token file {shown}: {e}; check the path (a Kubernetes projected volume's mountPath) and that this user may read it")
    })?;
    let mut out = Zeroizing::new(Vec::with_capacity(MAX_TOKEN + 2));
    file.take(MAX_TOKEN as u64 + 3)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read the token file {shown}: {e}"))?;
    Ok(out)
}

/// Runs `command` through the system shell with `%a` replaced, for at most
/// `limit` in all: the command and everything it starts run in a process
/// group of their own, stopped whole at the limit, and its output is read
/// within the same limit (a process it left behind holding the output
/// open cannot stall the sidecar). Its standard output is the token.
fn run(command: &str, audience: &str, limit: Duration) -> Result<Zeroizing<Vec<u8>>, String> {
    let deadline = Instant::now() + limit;
    let line = expand(command, audience);
    let mut cmd = shell(&line);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("ZTSSH_TOKEN_AUDIENCE", audience);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the token command {command:?}: {e}"))?;
    let timed_out = |child: &mut std::process::Child| {
        stop(child);
        format!(
            "the token command {command:?} did not finish within {}s and was stopped (with \
             everything it started); check that it can reach its token service",
            limit.as_secs()
        )
    };
    // Both pipes are drained off this thread, so a command that writes
    // more than a pipe holds cannot block on them; only a bounded part is
    // kept, and each arrives through a channel waited on until the deadline.
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    if let Some(s) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut out = Zeroizing::new(Vec::with_capacity(MAX_TOKEN + 2));
            let _ = s.take(MAX_TOKEN as u64 + 3).read_to_end(&mut out);
            let _ = out_tx.send(out);
        });
    }
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    if let Some(s) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut err = Vec::new();
            let _ = s.take(64 * 1024).read_to_end(&mut err);
            let _ = err_tx.send(err);
        });
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => return Err(timed_out(&mut child)),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("the token command {command:?}: {e}")),
        }
    };
    let left = || deadline.saturating_duration_since(Instant::now());
    let Ok(out) = out_rx.recv_timeout(left()) else {
        return Err(timed_out(&mut child));
    };
    let err = err_rx.recv_timeout(left()).unwrap_or_default();
    if !status.success() {
        let tail = tail_text(&err);
        return Err(format!(
            "the token command {command:?} failed ({status}){}; the job may have ended, or it \
             cannot mint a token for audience {audience}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ));
    }
    Ok(out)
}

/// Stops the command and, on Unix, every process of its group.
fn stop(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(unix)]
fn shell(line: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(line);
    c
}

#[cfg(windows)]
fn shell(line: &str) -> Command {
    let mut c = Command::new("cmd");
    c.arg("/C").arg(line);
    c
}

/// `%a` → the audience quoted for the shell, `%%` → `%`; any other `%`
/// stays as it is.
fn expand(command: &str, audience: &str) -> String {
    let mut out = String::with_capacity(command.len() + audience.len());
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('a')) => {
                chars.next();
                out.push_str(&quote(audience));
            }
            ('%', Some('%')) => {
                chars.next();
                out.push('%');
            }
            _ => out.push(c),
        }
    }
    out
}

/// One shell word holding `text` literally.
#[cfg(unix)]
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(windows)]
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// The last line or so of a command's stderr, printable.
fn tail_text(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let text = text.trim();
    let start = text.len().saturating_sub(STDERR_KEPT);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The token without surrounding white space (a file's final newline, a
/// command's `echo`).
fn trimmed(raw: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    Zeroizing::new(raw[start..end.max(start)].to_vec())
}

/// A compact JWT: three base64url parts (header and claims not empty), at most
/// [`MAX_TOKEN`] bytes. Nothing more is checked here: the proxy verifies.
fn check_shape(token: &[u8]) -> Result<(), String> {
    if token.is_empty() {
        return Err("gave no token (empty output)".into());
    }
    if token.len() > MAX_TOKEN {
        return Err(format!(
            "gave more than {MAX_TOKEN} bytes, longer than any platform token ztssh takes"
        ));
    }
    let b64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let parts: Vec<&[u8]> = token.split(|b| *b == b'.').collect();
    // An empty signature part is passed on: the proxy refuses it and says
    // why (an unsigned token), which is the clearer message.
    let shaped = parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| p.iter().all(b64url));
    if !shaped {
        return Err(
            "did not give a token (expected a JWT: three base64url parts joined by dots); \
             check what it prints"
                .into(),
        );
    }
    Ok(())
}

/// This machine's clock, in Unix seconds (0 if it reads before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds until the token's `exp` on this machine's clock (read without
/// verifying it), `None` when it says none.
pub fn seconds_left(token: &[u8], now: u64) -> Option<u64> {
    claim_times(token).map(|(_, exp)| exp.saturating_sub(now))
}

/// The token's `iat` and `exp`, read without verifying it.
fn claim_times(token: &[u8]) -> Option<(u64, u64)> {
    use base64ct::Encoding;
    let payload = token.split(|b| *b == b'.').nth(1)?;
    let json = base64ct::Base64UrlUnpadded::decode_vec(std::str::from_utf8(payload).ok()?).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let at = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
    Some((at("iat")?, at("exp")?))
}

/// When to look for a fresh token before the one in force runs out: at
/// two thirds of its lifetime (`iat` + ⅔ × (`exp` − `iat`), read from the
/// token without verifying it: this only times the next look; the proxy
/// verifies), counted from `now` on this machine's clock, so a projected
/// token read late in its life is refreshed before it ends. Never sooner
/// than a tenth of its life (at least 10 s): a clock that is off repeats
/// no look in a loop. `None` when the token says nothing usable.
pub fn refresh_after(token: &[u8], now: u64) -> Option<Duration> {
    let (iat, exp) = claim_times(token)?;
    let life = exp.checked_sub(iat).filter(|l| *l > 0)?;
    let due = iat.saturating_add(life / 3 * 2).saturating_sub(now);
    let floor = (life / 10).max(10).min(life * 2 / 3);
    Some(Duration::from_secs(
        due.clamp(floor, (life * 2 / 3).max(floor)),
    ))
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpYXQiOjEwMDAsImV4cCI6MTMwMH0.c2ln";

    #[test]
    fn a_command_gets_the_audience_quoted_and_its_output_trimmed() {
        let src = TokenSource::Command(format!(
            "test %a = \"$ZTSSH_TOKEN_AUDIENCE\" && echo {TOKEN}"
        ));
        let t = src.fetch("ztssh:web1").expect("token");
        assert_eq!(t.as_slice(), TOKEN.as_bytes());
        // An audience cannot break out of its quotes.
        let evil = "x'; echo pwned; '";
        let src = TokenSource::Command(format!(
            "test %a = \"$ZTSSH_TOKEN_AUDIENCE\" && echo {TOKEN}"
        ));
        assert_eq!(src.fetch(evil).expect("token").as_slice(), TOKEN.as_bytes());
        assert_eq!(expand("a %% %b %a", "q"), "a % %b 'q'");
    }

    #[test]
    fn a_failing_slow_or_silent_command_says_why() {
        let e = TokenSource::Command("echo 'no token for you' >&2; exit 3".into())
            .fetch("a")
            .unwrap_err();
        assert!(
            e.contains("no token for you") && e.contains("exit status: 3"),
            "{e}"
        );
        let e = run("sleep 5", "a", Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not finish within"), "{e}");
        // A process left behind holding the output open does not stall the
        // sidecar, and is stopped with the command (the review's F4).
        let pidfile = std::env::temp_dir().join(format!("ztssh-left-{}", std::process::id()));
        let started = Instant::now();
        let e = run(
            &format!("echo tok; sleep 30 & echo $! > {}", pidfile.display()),
            "a",
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(e.contains("did not finish within"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let pid = std::fs::read_to_string(&pidfile).expect("pid");
        let stat = format!("/proc/{}/stat", pid.trim());
        // Gone, or a zombie waiting for init: SIGKILL took it.
        let gone = || {
            std::fs::read_to_string(&stat).map_or(true, |t| {
                t.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        };
        let until = Instant::now() + Duration::from_secs(10);
        while !gone() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "the process left behind runs on: {stat}");
        let _ = std::fs::remove_file(&pidfile);
        let e = TokenSource::Command("true".into()).fetch("a").unwrap_err();
        assert!(e.contains("empty output"), "{e}");
        let e = TokenSource::Command("echo not-a-token".into())
            .fetch("a")
            .unwrap_err();
        assert!(e.contains("three base64url parts"), "{e}");
        let e = TokenSource::Command(format!("head -c {} /dev/zero | tr '\\0' a", MAX_TOKEN + 10))
            .fetch("a")
            .unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn a_file_is_read_again_each_time_through_its_link() {
        let dir = std::env::temp_dir().join(format!("ztssh-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("v1")).expect("dir");
        std::fs::write(dir.join("v1/token"), format!("{TOKEN}\n")).expect("write");
        std::os::unix::fs::symlink("v1", dir.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/token", dir.join("token")).expect("link");
        let src = TokenSource::File(dir.join("token"));
        assert_eq!(src.fetch("a").expect("token").as_slice(), TOKEN.as_bytes());
        let missing = TokenSource::File(dir.join("nope")).fetch("a").unwrap_err();
        assert!(missing.contains("cannot read the token file"), "{missing}");
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn refresh_comes_at_two_thirds_of_the_token_life() {
        // iat 1000, exp 1300: due at 1200.
        let t = TOKEN.as_bytes();
        assert_eq!(refresh_after(t, 1000), Some(Duration::from_secs(200)));
        // Read late in its life (a projected token), sooner.
        assert_eq!(refresh_after(t, 1150), Some(Duration::from_secs(50)));
        // Past it, or a clock far off: not in a loop.
        assert_eq!(refresh_after(t, 1250), Some(Duration::from_secs(30)));
        assert_eq!(refresh_after(t, 0), Some(Duration::from_secs(200)));
        assert_eq!(refresh_after(b"a.b.c", 1000), None);
    }
}
