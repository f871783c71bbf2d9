//! An ssh-agent stand-in in front of a real agent: it passes requests
//! through, but holds every sign request after the first few without ever
//! answering, like an agent waiting on a confirmation (`ssh-add -c`) or a
//! touch that never comes. Also [`RealAgent`], a real ssh-agent for tests.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SIGN_REQUEST: u8 = 13;
/// The stand-in serves at most this long and this many connections.
const LIFETIME: Duration = Duration::from_secs(120);
const MAX_CONNECTIONS: usize = 64;

/// The stand-in; it stops (and closes what it holds) when dropped.
pub struct HoldingAgent {
    /// Its socket, for `SSH_AUTH_SOCK`.
    pub sock: PathBuf,
    held: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HoldingAgent {
    /// Listens at `sock`, passing requests to the agent at `agent` and
    /// answering only the first `pass_signs` sign requests.
    pub fn start(sock: &Path, agent: &Path, pass_signs: usize) -> Self {
        let listener = UnixListener::bind(sock).expect("bind agent stand-in");
        listener.set_nonblocking(true).expect("nonblocking");
        let held = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, agent) = (Arc::clone(&held), Arc::clone(&stop), agent.to_owned());
        let thread = std::thread::spawn(move || serve(&listener, &agent, pass_signs, &h, &s));
        Self {
            sock: sock.to_owned(),
            held,
            stop,
            thread: Some(thread),
        }
    }

    /// Sign requests held so far.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for HoldingAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: &UnixListener,
    agent: &Path,
    pass_signs: usize,
    held: &AtomicUsize,
    stop: &AtomicBool,
) {
    let start = Instant::now();
    let mut signs = 0;
    let mut holding = Vec::new();
    let mut served = 0;
    while !stop.load(Ordering::SeqCst) && start.elapsed() < LIFETIME && served < MAX_CONNECTIONS {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        served += 1;
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let Some(request) = read_frame(&mut conn) else {
            continue;
        };
        if request.first() == Some(&SIGN_REQUEST) {
            if signs == pass_signs {
                held.fetch_add(1, Ordering::SeqCst);
                holding.push(conn);
                continue;
            }
            signs += 1;
        }
        if let Some(reply) = forward(agent, &request) {
            let _ = write_frame(&mut conn, &reply);
        }
    }
}

/// One request to the real agent, and its reply.
fn forward(agent: &Path, request: &[u8]) -> Option<Vec<u8>> {
    let mut a = UnixStream::connect(agent).ok()?;
    a.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write_frame(&mut a, request)?;
    read_frame(&mut a)
}

/// One ssh-agent frame (a 4-byte length, then the body; at most 256 KiB).
pub(crate) fn read_frame(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
    if len > 256 * 1024 {
        return None;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// Writes one ssh-agent frame.
pub(crate) fn write_frame(s: &mut UnixStream, body: &[u8]) -> Option<()> {
    let len = u32::try_from(body.len()).ok()?;
    s.write_all(&len.to_be_bytes()).ok()?;
    s.write_all(body).ok()
}

/// A real ssh-agent on `sock` holding `keys`, in that order; stops when
/// dropped.
pub struct RealAgent {
    _guard: crate::Guard,
    /// Its socket, for `SSH_AUTH_SOCK`.
    pub sock: PathBuf,
}

impl RealAgent {
    /// Starts `ssh-agent -D -a sock` and adds `keys` with ssh-add.
    pub fn start(sock: &Path, keys: &[&Path]) -> Self {
        use std::process::{Command, Stdio};
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let guard = crate::Guard(child);
        let limit = Duration::from_secs(10);
        // The socket appears at bind(), a moment before the agent listens:
        // wait until it answers (`ssh-add -l` exits 2 only when it cannot
        // reach the agent).
        crate::wait_until(limit, "agent to listen", || {
            sock.exists()
                && crate::run_bounded(
                    Command::new("ssh-add").arg("-l").env("SSH_AUTH_SOCK", sock),
                    limit,
                )
                .status
                .code()
                    != Some(2)
        });
        for k in keys {
            let add = crate::run_bounded(
                Command::new("ssh-add").arg(k).env("SSH_AUTH_SOCK", sock),
                Duration::from_secs(60),
            );
            crate::assert_ok(&add, "ssh-add");
        }
        Self {
            _guard: guard,
            sock: sock.to_owned(),
        }
    }
}
