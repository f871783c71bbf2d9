//! Operations: the metrics endpoint and the audit trail, against real
//! sessions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn metrics_count_sessions_challenges_and_terminations() {
    let port = free_port();
    let w = World::builder().proxy_toml(&format!(
        "metrics_listen = \"127.0.0.1:{port}\"\nchallenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 300\n"
    )).start();
    assert!(http_get(port, "/healthz").ends_with("ok\n"));
    assert!(http_get(port, "/nope").starts_with("HTTP/1.1 404"));
    // The session lives until two proofs were counted, however slow the
    // machine's timers are.
    let mut live = LiveSsh::start(w.ssh());
    live.send("hello\n");
    wait_until(T, "two proofs", || {
        metric_value(
            &http_get(port, "/metrics"),
            "ztssh_challenges_total{result=\"ok\"}",
        )
        .is_some_and(|n| n >= 2.0)
    });
    let out = live.finish();
    assert_ok(&out, "ssh");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    wait_metric(port, "ztssh_sessions_open", 0.0);
    let m = http_get(port, "/metrics");
    assert_eq!(metric(&m, "ztssh_sessions_total"), 1.0);
    assert_eq!(metric(&m, "ztssh_sessions_open"), 0.0);
    assert_eq!(metric(&m, "ztssh_handshakes_total{result=\"ok\"}"), 1.0);
    assert!(
        metric(&m, "ztssh_challenges_total{result=\"ok\"}") >= 2.0,
        "{m}"
    );
    assert!(metric(&m, "ztssh_proof_verify_seconds_count") >= 2.0);
    assert_eq!(metric(&m, "ztssh_certificates_total{kind=\"issued\"}"), 1.0);
    assert!(metric(&m, "ztssh_tunnel_bytes_total{direction=\"in\"}") > 1000.0);
    assert!(metric(&m, "ztssh_tunnel_bytes_total{direction=\"out\"}") > 1000.0);
    let licence_left = metric(&m, "ztssh_licence_expiry_seconds");
    assert!(
        licence_left > 80_000.0 && licence_left <= 86_400.0,
        "{licence_left}"
    );
    assert_eq!(metric(&m, "ztssh_crl_version"), 1.0);
    assert!(metric(&m, "ztssh_crl_next_update_seconds") > 0.0);

    // A refused user and a ban show up too.
    let mallory = user_key(w.dir.path(), "mallory");
    let mut cmd = w.ssh_with_key(&mallory);
    cmd.arg("true");
    assert!(!run_bounded(&mut cmd, T).status.success());
    let mut live = w.ssh();
    live.arg("sleep 60")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let live = Guard(live.spawn().expect("ssh"));
    wait_until(Duration::from_secs(20), "second session", || {
        metric(&http_get(port, "/metrics"), "ztssh_sessions_open") == 1.0
    });
    w.pki.revoke("principal", "alice");
    w.pki.publish_crl();
    wait_until(Duration::from_secs(10), "ban to be counted", || {
        http_get(port, "/metrics")
            .contains("ztssh_sessions_terminated_total{reason=\"principal_banned\"} 1")
    });
    // The open-sessions gauge goes down as the session's task ends, a
    // moment after the termination is counted.
    wait_until(
        Duration::from_secs(10),
        "the banned session to close",
        || metric(&http_get(port, "/metrics"), "ztssh_sessions_open") == 0.0,
    );
    let m = http_get(port, "/metrics");
    assert_eq!(metric(&m, "ztssh_handshakes_total{result=\"denied\"}"), 1.0);
    assert_eq!(metric(&m, "ztssh_crl_version"), 2.0);
    assert_eq!(metric(&m, "ztssh_config_reloads_total{result=\"ok\"}"), 1.0);
    assert_eq!(metric(&m, "ztssh_sessions_open"), 0.0);
    drop(live);
}

fn json_events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn audit_trail_is_json_and_joins_sshd_log_lines_to_real_clients() {
    let w = World::builder()
        .proxy_toml("log_format = \"json\"\n")
        .start();
    assert_ok(&run_bounded(w.ssh().arg("true"), T), "ssh");
    wait_until(Duration::from_secs(10), "session_closed event", || {
        w.proxy.log_text().contains("\"session_closed\"")
    });
    let events = json_events(&w.proxy.log_text());
    assert!(
        !events.is_empty(),
        "log is not JSON lines: {}",
        w.proxy.log_text()
    );
    let named = |name: &str| {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    for name in [
        "connection_accepted",
        "authorized",
        "cert_issued",
        "upstream_connected",
        "upstream_closed",
        "session_closed",
    ] {
        let found = named(name);
        assert_eq!(found.len(), 1, "{name} in {events:?}");
        let e = &found[0];
        // Every session event carries the session id and the real source.
        assert!(
            e["span"]["session"].as_str().is_some_and(|s| s.len() == 16),
            "{name}: {e}"
        );
        assert!(
            e["span"]["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{name}: {e}"
        );
        if name != "connection_accepted" {
            assert_eq!(e["principal"], "alice", "{name}: {e}");
        }
        // The certificate is issued only once the session is admitted, so
        // `authorized` comes before any serial exists.
        if name == "authorized" {
            assert!(e.get("serial").is_none(), "{name}: {e}");
        } else if name != "connection_accepted" {
            assert!(
                e["serial"].as_str().is_some_and(|s| s.len() == 32),
                "{name}: {e}"
            );
        }
    }
    let up = &named("upstream_connected")[0];
    let port = up["local_port"].as_u64().expect("local_port");
    let slog = w.sshd.log_text();
    assert!(
        slog.contains(&format!(
            "Accepted publickey for root from 127.0.0.1 port {port} "
        )),
        "{slog}"
    );
    // Keys are never logged.
    let root_key = std::fs::read_to_string(w.pki.ca.join("root.key")).expect("key");
    let noise_key = std::fs::read_to_string(w.pki.state.join("noise.key")).expect("key");
    for secret in [root_key, noise_key] {
        let b64 = secret.lines().nth(1).expect("pem body");
        assert!(
            !w.proxy.log_text().contains(b64),
            "a private key appears in the log"
        );
    }
}

/// A second proxy process on the world's config, on its own port.
fn spawn_proxy(
    w: &World,
    extra_env: &[(&str, &std::path::Path)],
    log: &std::path::Path,
) -> (Guard, u16) {
    let port = free_port();
    let mut cmd = std::process::Command::new(bin("ztssh-proxy"));
    cmd.arg("run")
        .arg("--config")
        .arg(&w.proxy.config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    cmd.stderr(std::fs::File::create(log).expect("log"));
    let child = Guard(cmd.spawn().expect("proxy"));
    wait_until(Duration::from_secs(10), "second proxy", || {
        read_text(log).contains("\"listening\"")
    });
    (child, port)
}

#[test]
fn systemd_readiness_reload_and_stop_are_notified() {
    use std::os::unix::net::UnixDatagram;
    let w = World::start();
    let sock_path = w.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let log = w.dir.path().join("proxy2.log");
    let (mut proxy, _port) = spawn_proxy(&w, &[("NOTIFY_SOCKET", &sock_path)], &log);
    let recv = || {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1");
    signal(proxy.0.id(), "HUP");
    assert_eq!(recv(), "RELOADING=1");
    assert_eq!(recv(), "READY=1");
    signal(proxy.0.id(), "TERM");
    assert_eq!(recv(), "STOPPING=1");
    let status = wait_until_exit(&mut proxy);
    assert!(status.success(), "{status}");
}

fn wait_until_exit(g: &mut Guard) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(Duration::from_secs(20), "proxy to exit", || {
        status = g.0.try_wait().expect("wait");
        status.is_some()
    });
    status.expect("status")
}

#[test]
fn sigterm_drains_live_sessions_and_refuses_new_ones() {
    let w = World::start();
    let log = w.dir.path().join("proxy2.log");
    let (mut proxy, port) = spawn_proxy(&w, &[], &log);
    let mut ssh = std::process::Command::new("ssh");
    ssh.args(w.client_opts(&w.alice, ""))
        .arg("-p")
        .arg(port.to_string())
        .arg("root@localhost");
    ssh.arg("sleep 2; echo finished")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let live = ssh.spawn().expect("ssh");
    wait_until(Duration::from_secs(20), "live session", || {
        read_text(&log).contains("upstream_connected")
    });
    signal(proxy.0.id(), "TERM");
    wait_until(Duration::from_secs(10), "drain to start", || {
        read_text(&log).contains("\"draining\"") || read_text(&log).contains("event=\"draining\"")
    });
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "new connections must be refused while draining"
    );
    let out = wait_bounded(live, T);
    assert_ok(&out, "the live session finishes");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "finished\n");
    assert!(wait_until_exit(&mut proxy).success());
}

#[test]
fn sessions_still_open_when_the_drain_period_ends_are_told_why() {
    let w = World::builder().proxy_toml("drain_grace_secs = 1").start();
    let live = w.live_session();
    signal(w.proxy.pid(), "TERM");
    let out = wait_bounded(live, T);
    assert!(!out.status.success(), "the session must be ended");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("session terminated by")
            && err.contains("the proxy is shutting down and this session was still open"),
        "the user must be told why: {err}"
    );
    let log = w.proxy.wait_log("event=\"session_terminated\"", T);
    assert!(log.contains("reason=\"shutdown\""), "{log}");
    assert!(log.contains("event=\"drain_timeout\""), "{log}");
    // Ended like a kill: sshd's side is closed too.
    assert!(log.contains("event=\"upstream_closed\""), "{log}");
}

#[test]
fn privileges_are_dropped_after_binding() {
    let w = World::start();
    let cfg = std::fs::read_to_string(&w.proxy.config).expect("config");
    let nobody = w.dir.path().join("nobody.toml");
    std::fs::write(&nobody, format!("{cfg}user = \"nobody\"\n")).expect("write");
    let port = free_port();
    let log = w.dir.path().join("proxy-nobody.log");
    let mut cmd = std::process::Command::new(bin("ztssh-proxy"));
    cmd.arg("run")
        .arg("--config")
        .arg(&nobody)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let proxy = Guard(cmd.spawn().expect("proxy"));
    wait_until(Duration::from_secs(10), "proxy", || {
        read_text(&log).contains("privileges_dropped")
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.0.id())).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    // Keys were loaded before the switch, so sessions still work.
    let mut ssh = std::process::Command::new("ssh");
    ssh.args(w.client_opts(&w.alice, ""))
        .arg("-p")
        .arg(port.to_string())
        .arg("root@localhost")
        .arg("echo ok");
    let out = run_bounded(&mut ssh, T);
    assert_ok(&out, "ssh through the unprivileged proxy");

    // A user that does not exist is a config error, before anything is bound.
    std::fs::write(&nobody, format!("{cfg}user = \"no-such-user-ztssh\"\n")).expect("write");
    let out = run_bounded(
        std::process::Command::new(bin("ztssh-proxy"))
            .arg("check")
            .arg("--config")
            .arg(&nobody),
        T,
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));
}

#[test]
fn a_licence_renewed_and_reloaded_is_the_one_new_clients_see() {
    let w = World::start();
    let serial_in = |out: &std::process::Output| {
        stderr(out)
            .split("serial ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .map(str::to_owned)
            .expect("serial in -v output")
    };
    let verbose = || {
        let mut c = std::process::Command::new("ssh");
        c.args(w.direct_opts(&w.alice));
        c.arg("-o")
            .arg(format!("ProxyCommand={}", w.proxy_command("-v")));
        c.arg("-p")
            .arg(w.proxy.port.to_string())
            .arg("root@localhost")
            .arg("true");
        c
    };
    let before = serial_in(&run_bounded(&mut verbose(), T));
    let mut auth = std::process::Command::new(bin("ztssh-ca"));
    auth.arg("authorize-server").arg("--dir").arg(&w.pki.ca);
    auth.arg("--request")
        .arg(w.pki.state.join("licence-request.pem"));
    auth.args([
        "--server-id",
        "web1",
        "--hostname",
        "localhost",
        "--hostname",
        "web1",
        "--out",
    ])
    .arg(&w.pki.licence);
    assert_ok(&run_bounded(&mut auth, T), "re-sign the licence");
    w.proxy.sighup();
    wait_until(Duration::from_secs(10), "reload", || {
        w.proxy.log_text().contains("result=\"ok\"")
    });
    let after = serial_in(&run_bounded(&mut verbose(), T));
    assert_ne!(
        before, after,
        "new clients must be shown the reloaded licence"
    );
}

#[test]
fn an_unreachable_sshd_is_counted_as_a_denied_handshake_and_not_penalised() {
    let port = free_port();
    let w = World::builder()
        .proxy_toml(&format!("metrics_listen = \"127.0.0.1:{port}\"\n"))
        .start();
    // sshd's listener gone: the proxy's connect is refused.
    signal(w.sshd.pid(), "KILL");
    wait_until(T, "sshd's port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", w.sshd.port)).is_err()
    });
    let mut cmd = w.ssh();
    cmd.arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach its sshd"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every handshake ends in exactly one result: this one in `denied`.
    wait_until(T, "the handshake to be counted", || {
        metric_value(
            &http_get(port, "/metrics"),
            "ztssh_handshakes_total{result=\"denied\"}",
        ) == Some(1.0)
    });
    let m = http_get(port, "/metrics");
    let results: f64 = [
        "ok",
        "denied",
        "protocol_error",
        "timeout",
        "closed",
        "evicted",
    ]
    .iter()
    .filter_map(|r| metric_value(&m, &format!("ztssh_handshakes_total{{result=\"{r}\"}}")))
    .sum();
    assert_eq!(results, 1.0, "{m}");
    // Not the client's fault: no penalty.
    assert_eq!(
        metric_value(&m, "ztssh_source_penalties_total").unwrap_or(0.0),
        0.0
    );
    let log = w.proxy.log_text();
    assert_eq!(count(&log, "event=\"upstream_failed\""), 1, "{log}");
    assert!(log.contains("reason=\"upstream_unavailable\""), "{log}");
}
