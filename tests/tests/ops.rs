//! Operations: the metrics endpoint and the audit trail, against real
//! sessions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[test]
fn metrics_count_sessions_challenges_and_terminations() {
    let port = free_port();
    let w = World::with_extra(&format!(
        "metrics_listen = \"127.0.0.1:{port}\"\nchallenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 300\n"
    ));
    assert!(http_get(port, "/healthz").ends_with("ok\n"));
    assert!(http_get(port, "/nope").starts_with("HTTP/1.1 404"));
    assert_ok(&run_bounded(w.ssh().arg("sleep 3; echo done"), T), "ssh");
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
    let mut cmd = std::process::Command::new("ssh");
    let opts: Vec<String> = w
        .client_opts(&mallory, "")
        .into_iter()
        .map(|o| {
            o.replace(
                &format!("--identity {}", w.alice.display()),
                &format!("--identity {}", mallory.display()),
            )
        })
        .collect();
    cmd.args(opts)
        .arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@localhost")
        .arg("true");
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
    let m = http_get(port, "/metrics");
    assert_eq!(metric(&m, "ztssh_handshakes_total{result=\"denied\"}"), 1.0);
    assert_eq!(metric(&m, "ztssh_crl_version"), 2.0);
    assert_eq!(metric(&m, "ztssh_config_reloads_total{result=\"ok\"}"), 1.0);
    assert_eq!(metric(&m, "ztssh_sessions_open"), 0.0);
    drop(live);
}
