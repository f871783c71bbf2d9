//! Enforcement that no IO can stall, end to end with real sshd and ssh: a
//! client that stops reading (its sidecar SIGSTOPped while 40 forwarded
//! channels stream into it) can switch off neither a ban nor its own
//! deadline, and nothing it sends after a ban reaches sshd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);
/// Forwarded channels streaming at once.
const CHANNELS: usize = 40;
/// The challenge deadline (and so the write bound) in these worlds.
const DEADLINE: u64 = 8;

/// A source that streams zeros to everyone who connects, until `stop`.
struct Source {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Source {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind source");
        let port = l.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        l.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < T * 2 {
                match l.accept() {
                    Ok((s, _)) => {
                        let flag = Arc::clone(&flag);
                        std::thread::spawn(move || stream_zeros(s, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn stream_zeros(mut s: TcpStream, stop: &AtomicBool) {
    let chunk = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    while !stop.load(Ordering::Relaxed) && started.elapsed() < T * 2 {
        match s.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// ssh with `CHANNELS` local forwards to the source, and readers on each.
/// Dropped before its end (a failed wait), it resumes the sidecar and
/// kills ssh, so no stopped process outlives the test.
struct Forwarded {
    ssh: Option<Child>,
    /// 0 until found.
    sidecar: u32,
    received: Arc<AtomicU64>,
}

impl Forwarded {
    fn ssh(&mut self) -> &mut Child {
        self.ssh.as_mut().expect("ssh not yet waited for")
    }

    /// Waits for ssh to exit (bounded) and collects its output.
    fn wait(mut self, limit: Duration) -> std::process::Output {
        wait_bounded(self.ssh.take().expect("ssh"), limit)
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        if let Some(mut ssh) = self.ssh.take() {
            if self.sidecar != 0 {
                // Not signal(), which asserts: this may run while a failed
                // assertion unwinds, and the sidecar may be gone.
                let _ = try_signal(self.sidecar, "CONT");
            }
            let _ = ssh.kill();
            let _ = ssh.wait();
        }
    }
}

/// ssh as `principal` with the forwards, running `command` (its stdin
/// piped) or nothing (`-N`). ssh listens on Unix sockets in the test's own
/// directory, so no other test can take a forward's address first.
fn forward(w: &World, source: &Source, principal: &str, command: Option<&str>) -> Forwarded {
    let sockets: Vec<PathBuf> = (0..CHANNELS)
        .map(|i| w.dir.path().join(format!("fwd-{principal}-{i}")))
        .collect();
    // sun_path holds 108 bytes with its terminating NUL.
    let longest = sockets.iter().map(|p| p.as_os_str().len()).max();
    assert!(
        longest < Some(108),
        "forward socket paths under {} are too long for a Unix socket; set a shorter TMPDIR",
        w.dir.path().display()
    );
    let log = w.dir.path().join(format!("ssh-{principal}.log"));
    let mut cmd = Command::new("ssh");
    cmd.args(w.direct_opts(&w.alice))
        .arg("-o")
        .arg(format!(
            "ProxyCommand={}",
            w.proxy_command_as(&w.alice, principal, "")
        ))
        .args(["-o", "ExitOnForwardFailure=yes"])
        .arg("-p")
        .arg(w.proxy.port.to_string());
    for s in &sockets {
        cmd.arg("-L")
            .arg(format!("{}:127.0.0.1:{}", s.display(), source.port));
    }
    match command {
        Some(c) => cmd.arg("root@localhost").arg(c).stdin(Stdio::piped()),
        None => cmd.arg("-N").arg("root@localhost").stdin(Stdio::null()),
    };
    let ssh = cmd
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("ssh log"))
        .spawn()
        .expect("ssh -L");
    let mut f = Forwarded {
        ssh: Some(ssh),
        sidecar: 0,
        received: Arc::new(AtomicU64::new(0)),
    };
    for path in sockets {
        let mut s = None;
        wait_until(T, "ssh to listen on its forwards", || {
            if let Some(status) = f.ssh().try_wait().expect("wait ssh") {
                panic!(
                    "ssh -L exited ({status}) before its forwards listened: {}",
                    read_text(&log)
                );
            }
            s = UnixStream::connect(&path).ok();
            s.is_some()
        });
        let mut s = s.expect("forward");
        let counter = Arc::clone(&f.received);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let started = Instant::now();
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            while started.elapsed() < T * 2 {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        });
    }
    f.sidecar = wait_for_child_of(f.ssh().id());
    f
}

/// Stops the sidecar once data flows, and waits until the proxy's writes
/// to it are blocked: the sidecar's socket holds a full receive queue.
fn stall(w: &World, f: &Forwarded) {
    wait_until(Duration::from_secs(20), "data to flow", || {
        f.received.load(Ordering::Relaxed) > 8 << 20
    });
    signal(f.sidecar, "STOP");
    wait_until(Duration::from_secs(20), "the client socket to fill", || {
        tcp_sockets()
            .iter()
            .any(|s| s.remote_port == w.proxy.port && s.rx_queue > 256 << 10)
    });
}

fn stall_world() -> World {
    World::builder()
        .proxy_toml(&format!(
            "challenge_interval_secs = 300\nchallenge_deadline_secs = {DEADLINE}\n"
        ))
        .start()
}

#[test]
fn a_ban_closes_the_sshd_socket_while_the_client_reads_nothing() {
    let w = stall_world();
    let source = Source::start();
    let f = forward(&w, &source, "alice", None);
    let upstream = upstream_ports(&w.proxy.log_text())[0];
    assert!(established(upstream, w.sshd.port));
    stall(&w, &f);
    w.pki.revoke("principal", "alice");
    w.pki.publish_crl();
    wait_until(
        Duration::from_secs(DEADLINE + 1),
        "the ban to close the proxy's socket to sshd",
        || !established(upstream, w.sshd.port),
    );
    // The proxy drops sshd's socket the moment it decides and logs the
    // end after that, through its log thread: wait for the line.
    let log = w
        .proxy
        .wait_log("reason=\"principal_banned\"", Duration::from_secs(10));
    assert!(
        log.lines()
            .any(|l| l.contains("event=\"session_terminated\"")
                && l.contains("reason=\"principal_banned\"")),
        "{log}"
    );
    signal(f.sidecar, "CONT");
    let out = f.wait(T);
    assert!(!out.status.success());
}

#[test]
fn a_client_that_reads_nothing_is_ended_at_its_deadline() {
    let w = stall_world();
    let source = Source::start();
    let f = forward(&w, &source, "alice", None);
    let upstream = upstream_ports(&w.proxy.log_text())[0];
    stall(&w, &f);
    // The write bound runs from the proxy's last progress, which may come
    // a while after stall() returns (socket buffers grow to megabytes), so
    // the wait is generous; the reason below says which rule ended it.
    wait_until(T, "the stalled client to be ended", || {
        !established(upstream, w.sshd.port)
    });
    // The proxy drops sshd's socket the moment it decides and logs the
    // end after that, through its log thread: wait for the line.
    let log = w
        .proxy
        .wait_log("reason=\"client_stalled\"", Duration::from_secs(10));
    assert!(
        log.lines()
            .any(|l| l.contains("event=\"session_terminated\"")
                && l.contains("reason=\"client_stalled\"")),
        "{log}"
    );
    signal(f.sidecar, "CONT");
    let _ = f.wait(T);
}

/// One trial: a `bash -s` session beside the streaming forwards, its
/// sidecar stopped; its principal is banned; only then is a command written
/// into it, and the sidecar resumed. Returns whether the command ran.
fn command_after_ban_ran(w: &World, source: &Source, principal: &str, trial: usize) -> bool {
    let marker = w.dir.path().join(format!("ran-{trial}"));
    let mut f = forward(w, source, principal, Some("bash -s"));
    let mut stdin = f.ssh().stdin.take().expect("stdin");
    let lists_before = count(&w.proxy.log_text(), "event=\"crl_loaded\"");
    stall(w, &f);
    w.pki.revoke("principal", principal);
    w.pki.publish_crl();
    // The list banning the principal has landed on the proxy and is in
    // force: its session was ended. (`crl_loaded` is logged when the list
    // is read, a moment before the authority carrying it is published: a
    // command written between the two reached sshd under a loaded CI
    // machine, before the ban was in force.)
    wait_until(T, "the new list to load", || {
        count(&w.proxy.log_text(), "event=\"crl_loaded\"") > lists_before
    });
    wait_until(T, "the ban in force", || {
        count_terminated(w, principal) == 1
    });
    writeln!(stdin, "touch {}", marker.display()).expect("command after the ban");
    drop(stdin);
    signal(f.sidecar, "CONT");
    let _ = f.wait(T);
    // sshd has closed that connection: whatever reached it is processed.
    let port = *upstream_ports(&w.proxy.log_text())
        .last()
        .expect("upstream port");
    wait_until(T, "sshd to close the session", || {
        sshd_saw_close(&w.sshd.log_text(), port)
    });
    assert_eq!(
        count_terminated(w, principal),
        1,
        "{principal} was not ended by the ban"
    );
    marker.exists()
}

fn count_terminated(w: &World, principal: &str) -> usize {
    w.proxy
        .log_text()
        .lines()
        .filter(|l| {
            l.contains("event=\"session_terminated\"")
                && l.contains(&format!("principal={principal} "))
                && l.contains("reason=\"principal_banned\"")
        })
        .count()
}

#[test]
fn a_command_written_after_the_ban_never_runs() {
    const TRIALS: usize = 20;
    let names: Vec<String> = (0..TRIALS).map(|i| format!("user{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let w = World::builder()
        .principals(&refs)
        .proxy_toml(&format!(
            "challenge_interval_secs = 300\nchallenge_deadline_secs = {DEADLINE}\n"
        ))
        .start();
    let source = Source::start();
    let ran: Vec<usize> = (0..TRIALS)
        .filter(|&i| command_after_ban_ran(&w, &source, &names[i], i))
        .collect();
    assert!(ran.is_empty(), "the command ran in trials {ran:?}");
}

/// Sessions the stalled-log test opens: enough log lines to fill a pipe
/// (64 KiB) a few times over.
const LOG_SESSIONS: usize = 200;

/// A proxy whose stderr nobody reads (journald stuck, a full pipe) still
/// admits sessions and enforces a ban: its log lines are written by a
/// thread of their own, never by the workers that carry out a kill.
#[test]
fn a_proxy_whose_log_nobody_reads_still_admits_and_kills() {
    // Upstream: a sink that counts the sockets the proxy closes.
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let sink_port = sink.local_addr().expect("addr").port();
    let closed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&closed);
    std::thread::spawn(move || {
        for _ in 0..LOG_SESSIONS {
            let Ok((mut s, _)) = sink.accept() else {
                return;
            };
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(T * 2));
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let (front, log) = World::builder()
        .proxy_toml(&format!(
            "max_connections = {0}\nmax_sessions_per_principal = {0}\n",
            LOG_SESSIONS + 16
        ))
        .start_in_front_of_piped(sink_port);
    let Front {
        pki, proxy, alice, ..
    } = &front;
    let pipe_size = nix::fcntl::fcntl(&log, nix::fcntl::FcntlArg::F_GETPIPE_SZ).expect("pipe size");

    // Nobody reads the log from here on.
    let root = pki.root_key();
    let mut clients = Vec::with_capacity(LOG_SESSIONS);
    for i in 0..LOG_SESSIONS {
        // Ten sessions per source address, inside the per-source burst.
        let src = format!("127.22.0.{}", i / 10 + 1);
        let sock = connect_from(&src, proxy.port).expect("connect");
        let mut c = crate::client::LibClient::handshake(sock, root.clone(), alice, "alice")
            .unwrap_or_else(|e| panic!("session {i} with the log unread: {e}"));
        c.establish().expect("establish");
        clients.push(c);
    }
    pki.revoke("principal", "alice");
    pki.publish_crl();
    wait_until(T, "the ban to close every upstream socket", || {
        closed.load(Ordering::SeqCst) >= LOG_SESSIONS as u64
    });

    // Now read the log: the first kill comes after more than a pipe's worth
    // of lines, so the ban was carried out while stderr was blocked.
    let text = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_text = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut log = log;
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = log.read(&mut buf) {
            sink_text.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let kills = || {
        let t = text.lock().expect("lock");
        String::from_utf8_lossy(&t)
            .lines()
            .filter(|l| {
                l.contains("event=\"session_terminated\"") && l.contains("principal_banned")
            })
            .count()
    };
    wait_until(T, "the kills in the log", || kills() >= LOG_SESSIONS);
    let t = String::from_utf8_lossy(&text.lock().expect("lock")).into_owned();
    let first_kill = t.find("event=\"session_terminated\"").expect("a kill");
    assert!(
        first_kill > usize::try_from(pipe_size).expect("size"),
        "the log before the first kill ({first_kill} bytes) fits the pipe ({pipe_size} bytes): stderr never blocked"
    );
    drop(clients);
}

/// What a client sent before its ban and sshd had not read yet is not
/// delivered after the ban: the proxy resets sshd's socket (zero linger),
/// so the kernel discards what it still held for sshd instead of
/// delivering it once sshd reads again.
#[test]
fn bytes_sshd_had_not_read_are_discarded_at_a_kill() {
    use socket2::{Domain, Socket, Type};
    const MIB: f64 = 1024.0 * 1024.0;
    // sshd's stand-in: a small receive buffer, and nothing read until told.
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    l.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    l.bind(&addr.into()).expect("bind");
    l.listen(4).expect("listen");
    let l: TcpListener = l.into();
    let sink_port = l.local_addr().expect("addr").port();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let _ = wait.recv_timeout(T);
        s.set_read_timeout(Some(T)).expect("timeout");
        let mut got = 0u64;
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            got += n as u64;
        }
        got
    });
    let mport = free_port();
    let front = World::builder()
        .proxy_toml(&format!("metrics_listen = \"127.0.0.1:{mport}\"\n"))
        .start_in_front_of(sink_port);
    let Front {
        pki, proxy, alice, ..
    } = &front;
    let mut c = crate::client::LibClient::connect(proxy.port, pki.root_key(), alice, "alice")
        .expect("connect");
    c.establish().expect("establish");
    // The client sends 8 MiB; the proxy hands what it can to the kernel
    // for sshd, then stops reading the client (its queues are full).
    c.sock.set_write_timeout(Some(T)).expect("timeout");
    let writer = std::thread::spawn(move || {
        let chunk = pseudo_random(16 * 1024, 9);
        for _ in 0..512 {
            if c.send_data(&chunk).is_err() {
                return;
            }
        }
    });
    let delivered = || {
        metric_value(
            &http_get(mport, "/metrics"),
            "ztssh_tunnel_bytes_total{direction=\"in\"}",
        )
        .unwrap_or(0.0)
    };
    wait_until(T, "1 MiB handed to the kernel for sshd", || {
        delivered() >= MIB
    });
    pki.revoke("principal", "alice");
    pki.publish_crl();
    wait_until(T, "the ban", || {
        proxy.log_text().contains("reason=\"principal_banned\"")
    });
    let handed = delivered();
    go.send(()).expect("go");
    let got = reader.join().expect("reader") as f64;
    let _ = writer.join();
    assert!(
        got < handed - 512.0 * 1024.0,
        "sshd's stand-in read {got} bytes after the ban, of the {handed} the proxy had handed to the kernel: the send queue was delivered"
    );
}
