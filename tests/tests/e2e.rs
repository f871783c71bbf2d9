//! End-to-end: real ssh, scp, sftp and rsync → ztssh-sidecar → tunnel →
//! ztssh-proxy → a private real sshd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn exec_returns_output_and_exit_status() {
    let w = World::start();
    let out = run_bounded(w.ssh().arg("echo ok"), T);
    assert_ok(&out, "ssh echo ok");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let out = run_bounded(w.ssh().arg("echo to-stderr >&2; exit 7"), T);
    assert_eq!(out.status.code(), Some(7), "remote exit status propagates");
    assert_eq!(
        stderr(&out),
        "to-stderr\n",
        "stderr carries only the remote's bytes"
    );

    // The proxy authorized alice, and sshd saw the connection from the
    // proxy's local port that the proxy logged.
    let plog = w.proxy.log_text();
    assert!(
        plog.contains("event=\"authorized\" principal=alice"),
        "{plog}"
    );
    let port: u16 = plog
        .split("local_port=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("local_port in proxy log");
    let slog = w.sshd.log_text();
    assert!(
        slog.contains(&format!(
            "Accepted publickey for root from 127.0.0.1 port {port}"
        )),
        "{slog}"
    );
}

#[test]
fn stdin_eof_propagates() {
    let w = World::start();
    let mut cmd = w.ssh();
    cmd.arg("wc -c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&vec![b'x'; 100_000]).expect("write");
    drop(stdin);
    let out = wait_bounded(child, T);
    assert_ok(&out, "wc -c");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
}

#[test]
fn interactive_session_through_a_pty() {
    let w = World::start();
    let mut cmd = w.ssh();
    cmd.arg("-tt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"echo \"answer=$((6*7))\"; tty\nexit 5\n")
        .expect("type");
    let out = wait_bounded(child, T);
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("answer=42"), "{text}");
    assert!(text.contains("/dev/pts/"), "remote side has a pty: {text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
}

#[test]
fn scp_64_mib_both_ways() {
    let w = World::start();
    let dir = w.dir.path();
    let src = dir.join("big.bin");
    std::fs::write(&src, pseudo_random(64 << 20, 7)).expect("write");
    let remote = dir.join("remote.bin");
    let back = dir.join("back.bin");
    assert_ok(
        &run_bounded(
            w.scp()
                .arg(&src)
                .arg(format!("root@localhost:{}", remote.display())),
            T,
        ),
        "scp up",
    );
    assert_ok(
        &run_bounded(
            w.scp()
                .arg(format!("root@localhost:{}", remote.display()))
                .arg(&back),
            T,
        ),
        "scp down",
    );
    let sum = sha256_file(&src);
    assert_eq!(sha256_file(&remote), sum);
    assert_eq!(sha256_file(&back), sum);
}

#[test]
fn sftp_batch_put_and_get() {
    let w = World::start();
    let dir = w.dir.path();
    let src = dir.join("put.bin");
    std::fs::write(&src, pseudo_random(3 << 20, 11)).expect("write");
    let (remote, got) = (dir.join("sftp-remote.bin"), dir.join("sftp-got.bin"));
    let batch = dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            src.display(),
            remote.display(),
            remote.display(),
            got.display()
        ),
    )
    .expect("batch");
    let out = run_bounded(w.sftp().arg("-b").arg(&batch).arg("root@localhost"), T);
    assert_ok(&out, "sftp batch");
    assert_eq!(sha256_file(&remote), sha256_file(&src));
    assert_eq!(sha256_file(&got), sha256_file(&src));
}

#[test]
fn local_port_forwarding_reaches_an_echo_server() {
    let w = World::start();
    let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo_port = echo.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for _ in 0..4 {
            let Ok((mut s, _)) = echo.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    // The forward's port is picked free but not held: another test may
    // take it first. The test connects only once ssh says it listens on
    // it (-v), so never to another test's listener nor to itself; if the
    // port was taken, ssh exits (ExitOnForwardFailure) and is started
    // again on another.
    let mut forwarded = None;
    for attempt in 1..=3 {
        let fwd_port = free_port();
        let log = w.dir.path().join(format!("ssh-L-{attempt}.log"));
        let mut cmd = w.ssh();
        cmd.args(["-v", "-N", "-o", "ExitOnForwardFailure=yes", "-L"])
            .arg(format!("127.0.0.1:{fwd_port}:127.0.0.1:{echo_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("ssh log"));
        let mut ssh = Guard(cmd.spawn().expect("spawn ssh -L"));
        let listening = format!("Local forwarding listening on 127.0.0.1 port {fwd_port}.");
        let mut exited = false;
        wait_until(T, "ssh to listen on the forwarded port", || {
            exited = matches!(ssh.0.try_wait(), Ok(Some(_)));
            exited || read_text(&log).contains(&listening)
        });
        if !exited {
            let conn = TcpStream::connect(("127.0.0.1", fwd_port)).expect("connect");
            forwarded = Some((ssh, conn));
            break;
        }
        let why = read_text(&log);
        assert!(
            why.contains("Address already in use"),
            "ssh -L exited: {why}"
        );
    }
    let (_ssh, mut conn) = forwarded.expect("a forward after three ports were taken");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    conn.write_all(b"hello through the tunnel").expect("write");
    let mut got = [0u8; 24];
    conn.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"hello through the tunnel");
}

#[test]
fn rsync_over_the_tunnel() {
    let w = World::start();
    let dir = w.dir.path();
    let src = dir.join("tree");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"alpha\n").expect("write");
    std::fs::write(src.join("sub/b.bin"), pseudo_random(1 << 20, 3)).expect("write");
    let dst = dir.join("copy");
    let out = run_bounded(
        Command::new("rsync")
            .arg("-a")
            .arg("-e")
            .arg(w.rsync_rsh())
            .arg(format!("{}/", src.display()))
            .arg(format!("root@localhost:{}/", dst.display())),
        T,
    );
    assert_ok(&out, "rsync");
    assert_eq!(std::fs::read(dst.join("a.txt")).expect("a"), b"alpha\n");
    assert_eq!(
        sha256_file(&dst.join("sub/b.bin")),
        sha256_file(&src.join("sub/b.bin"))
    );
}

#[test]
fn wrong_user_key_stops_at_the_proxy() {
    let w = World::start();
    let mallory = user_key(w.dir.path(), "mallory");
    // Mallory's key signs, claiming to be alice.
    let mut cmd = w.ssh_with_key(&mallory);
    cmd.arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "ztssh: web1 refused the session: principal alice is not authorized with key SHA256:"
        ),
        "{err}"
    );
    wait_until(T, "authorization_denied logged", || {
        w.proxy
            .log_text()
            .contains("event=\"authorization_denied\"")
    });
    let plog = w.proxy.log_text();
    assert!(!plog.contains("upstream_connected"), "{plog}");
    let slog = w.sshd.log_text();
    assert!(
        !slog.contains("Connection from"),
        "sshd saw a connection: {slog}"
    );
}

#[test]
fn foreign_root_and_uncovered_host_are_refused_by_the_sidecar() {
    let w = World::start();
    let other = Pki::create(&w.dir.path().join("other"), &["localhost"]);
    let mut cmd = Command::new("ssh");
    let opts: Vec<String> = w
        .client_opts(&w.alice, "")
        .into_iter()
        .map(|o| {
            o.replace(
                &w.pki.root_pub().display().to_string(),
                &other.root_pub().display().to_string(),
            )
        })
        .collect();
    cmd.args(opts)
        .arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@localhost")
        .arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ztssh: host key not certified by your root CA"),
        "{}",
        stderr(&out)
    );

    let mut cmd = Command::new("ssh");
    cmd.args(w.client_opts(&w.alice, &format!("--connect 127.0.0.1:{}", w.proxy.port)));
    cmd.arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@db1")
        .arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("the server's licence does not cover \"db1\" (it covers: localhost, web1)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !w.sshd.log_text().contains("Connection from"),
        "sshd saw a connection"
    );
}

/// A host named like one of the sidecar's subcommands (`man`,
/// `completions`, `setup`) is still a host: ssh runs `ztssh-sidecar ... %h
/// %p`, and the port after the name says it is the ProxyCommand form.
/// Each is reached through a Host alias in a real ssh_config, with `%h`
/// the alias itself; the licence covers the three names.
#[test]
fn a_host_named_man_completions_or_setup_is_reached_as_a_host() {
    let names = ["man", "completions", "setup"];
    let w = World::builder()
        .licence_hosts(&["localhost", "web1", "man", "completions", "setup"])
        .start();
    let config = w.dir.path().join("named_like_commands_ssh_config");
    let text = format!(
        "Host {}\n    Port {}\n    User root\n    IdentityFile {}\n    IdentitiesOnly yes\n    \
         BatchMode yes\n    StrictHostKeyChecking no\n    UserKnownHostsFile {}\n    \
         LogLevel ERROR\n    ProxyCommand {}\n",
        names.join(" "),
        w.proxy.port,
        w.alice.display(),
        w.dir.path().join("known_hosts").display(),
        w.proxy_command("--connect 127.0.0.1:%p")
    );
    std::fs::write(&config, text).expect("ssh_config");
    for host in names {
        let out = run_bounded(
            Command::new("ssh")
                .arg("-F")
                .arg(&config)
                .arg(host)
                .arg(format!("echo reached-{host}")),
            T,
        );
        assert_ok(&out, &format!("ssh {host}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("reached-{host}\n")
        );
    }
    let plog = w.proxy.log_text();
    assert_eq!(
        count(&plog, "event=\"authorized\" principal=alice"),
        names.len(),
        "{plog}"
    );
}
