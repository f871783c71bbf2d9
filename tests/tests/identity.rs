//! Continuous identity end to end: challenges and renewals keep a real ssh
//! session alive; revocation and silence end it, and say why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::LibClient;
use ztssh_proto::frame::Control;
use ztssh_tests::agent::RealAgent;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);
const FAST: &str = "challenge_interval_secs = 1\nchallenge_deadline_secs = 1\ncert_ttl_secs = 4\ninsecure_short_certs = true\n";
const SLOW_CERTS: &str =
    "challenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 300\n";

/// Publishes a revocation and returns how long the session took to die.
fn revoke_and_time(
    w: &World,
    kind: &str,
    value: &str,
    sessions: Vec<Child>,
) -> Vec<(Duration, String)> {
    w.pki.revoke(kind, value);
    let landed = Instant::now();
    w.pki.publish_crl();
    sessions
        .into_iter()
        .map(|child| {
            let out = wait_bounded(child, Duration::from_secs(15));
            assert!(!out.status.success(), "ssh must fail: {}", stderr(&out));
            (landed.elapsed(), stderr(&out))
        })
        .collect()
}

#[test]
fn a_live_session_survives_ten_challenges_and_two_renewals() {
    let w = World::builder().proxy_toml(FAST).start();
    // The session lives until ten proofs and two renewals were logged,
    // however slow the machine's timers are; then it ends normally.
    let mut live = LiveSsh::start(w.ssh());
    live.send("tick\n");
    wait_until(T, "ten proofs and two renewals", || {
        let log = w.proxy.log_text();
        count(&log, "event=\"challenge_ok\"") >= 10 && count(&log, "event=\"cert_renewed\"") >= 2
    });
    live.send("tock\n");
    let out = live.finish();
    assert_ok(&out, "long session");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tick\ntock\n");
    let log = w.proxy.log_text();
    assert!(
        !log.contains("session_terminated"),
        "{log}\nssh stderr: {}",
        stderr(&out)
    );
}

/// A sidecar whose wall clock is `offset` (like "+290s") off: through
/// libfaketime, monotonic clock untouched, as NTP trouble would leave it.
fn skewed_session_lives_through_renewals(offset: &str) {
    let w = World::builder()
        .proxy_toml("challenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 6\ninsecure_short_certs = true\n")
        .start();
    let mut cmd = Command::new("ssh");
    cmd.args(w.direct_opts(&w.alice))
        .arg("-o")
        .arg(format!(
            "ProxyCommand=env FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f {offset} {}",
            w.proxy_command("")
        ))
        .arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@localhost");
    let mut live = LiveSsh::start(cmd);
    live.send("before\n");
    wait_until(T, "three renewals", || {
        count(&w.proxy.log_text(), "event=\"cert_renewed\"") >= 3
    });
    live.send("after\n");
    let out = live.finish();
    assert_ok(&out, &format!("session with the client clock {offset}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
    let log = w.proxy.log_text();
    assert!(!log.contains("session_terminated"), "{log}");
    assert!(!log.contains("renew_refused"), "{log}");
}

#[test]
fn a_client_clock_290s_ahead_lives_through_renewals() {
    skewed_session_lives_through_renewals("+290s");
}

#[test]
fn a_client_clock_290s_behind_lives_through_renewals() {
    skewed_session_lives_through_renewals("-290s");
}

#[test]
fn banning_the_principal_ends_the_live_shell() {
    let w = World::builder().proxy_toml(SLOW_CERTS).start();
    let ssh = w.live_session();
    let local_port = w
        .proxy
        .log_text()
        .split("local_port=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .expect("local_port");
    let results = revoke_and_time(&w, "principal", "alice", vec![ssh]);
    let (elapsed, err) = &results[0];
    println!("ban → ssh exit: {elapsed:?} (list written → session gone, including ssh's own exit)");
    assert!(
        err.contains("ztssh: session terminated by web1: principal alice banned"),
        "{err}"
    );
    assert!(
        *elapsed < Duration::from_secs(10),
        "liveness bound; the 1 s target is measured by the kill bench"
    );
    wait_until(Duration::from_secs(10), "proxy log", || {
        w.proxy.log_text().contains("reason=\"principal_banned\"")
    });
    wait_until(
        Duration::from_secs(10),
        "sshd to log the disconnect",
        || {
            w.sshd.log_text().lines().any(|l| {
                l.contains(&format!("port {local_port}"))
                    && (l.contains("closed") || l.contains("Disconnected") || l.contains("reset"))
            })
        },
    );
    // A new session is refused at once, before sshd hears of it.
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(
        stderr(&out).contains("refused the session: principal alice banned"),
        "{}\n{}",
        stderr(&out),
        w.proxy.log_text()
    );
}

#[test]
fn revoking_the_certificate_serial_ends_the_session() {
    let w = World::builder().proxy_toml(SLOW_CERTS).start();
    let ssh = w.live_session();
    let serial = w
        .proxy
        .log_text()
        .split("event=\"authorized\"")
        .nth(1)
        .and_then(|s| s.split("serial=").nth(1))
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .expect("serial in log");
    let results = revoke_and_time(&w, "serial", &serial, vec![ssh]);
    let (elapsed, err) = &results[0];
    println!("serial revoked → ssh exit: {elapsed:?}");
    assert!(
        err.contains(&format!(
            "session terminated by web1: certificate {serial} revoked"
        )),
        "{err}"
    );
}

#[test]
fn revoking_the_server_licence_ends_every_session() {
    let w = World::builder().proxy_toml(SLOW_CERTS).start();
    let sessions = vec![w.live_session(), w.live_session()];
    let results = revoke_and_time(&w, "server", "web1", sessions);
    for (elapsed, err) in &results {
        println!("licence revoked → ssh exit: {elapsed:?}");
        assert!(
            err.contains("session terminated by web1: server licence for web1 revoked"),
            "{err}"
        );
    }
    // And the Sub-CA issues nothing more.
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(
        stderr(&out).contains("refused the session: server licence for web1 revoked"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_frozen_sidecar_loses_its_session_after_the_deadline() {
    let w = World::builder().proxy_toml(FAST).start();
    let ssh = w.live_session();
    let sidecar = wait_for_child_of(ssh.id());
    signal(sidecar, "STOP");
    wait_until(
        Duration::from_secs(15),
        "proxy to kill the silent session",
        || w.proxy.log_text().contains("reason=\"proof_late\""),
    );
    signal(sidecar, "CONT");
    let out = wait_bounded(ssh, Duration::from_secs(15));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("session terminated by web1: no proof for challenge"),
        "{}",
        stderr(&out)
    );
}

fn lib_client(w: &World) -> LibClient {
    let mut c =
        LibClient::connect(w.proxy.port, w.pki.root_key(), &w.alice, "alice").expect("connect");
    c.establish().expect("establish");
    c
}

fn terminate_reason(c: &mut LibClient) -> String {
    loop {
        match c.next_control() {
            Ok(Some(Control::Terminate { reason, .. })) => return reason,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => panic!("connection closed without TERMINATE"),
        }
    }
}

#[test]
fn a_replayed_proof_is_rejected() {
    let w = World::builder().proxy_toml(SLOW_CERTS).start();
    let mut c = lib_client(&w);
    let ch1 = c.next_control().expect("read").expect("challenge 1");
    let proof1 = c.answer(&ch1).expect("answer");
    assert!(matches!(
        c.next_control().expect("read"),
        Some(Control::Ack { .. })
    ));
    let _ch2 = c.next_control().expect("read").expect("challenge 2");
    c.send(&proof1).expect("replay");
    let reason = terminate_reason(&mut c);
    assert!(
        reason.contains("proof for challenge 1, expected 2"),
        "{reason}"
    );
    wait_until(Duration::from_secs(10), "proxy log", || {
        w.proxy.log_text().contains("reason=\"proof_wrong_seq\"")
    });
}

#[test]
fn a_proof_relayed_from_another_connection_is_rejected() {
    let w = World::builder().proxy_toml(SLOW_CERTS).start();
    let mut a = lib_client(&w);
    let mut b = lib_client(&w);
    let ch_a = a.next_control().expect("read").expect("challenge a");
    let ch_b = b.next_control().expect("read").expect("challenge b");
    let (
        Control::Challenge { nonce, seq, .. },
        Control::Challenge {
            nonce: nonce_b,
            seq: seq_b,
            ..
        },
    ) = (&ch_a, &ch_b)
    else {
        panic!("expected challenges")
    };
    assert_eq!(seq, seq_b);
    // Connection A answers B's challenge; the proof is relayed into B.
    let relayed = a
        .answer(&Control::Challenge {
            seq: *seq,
            nonce: *nonce_b,
            deadline_secs: 2,
        })
        .expect("answer");
    let _ = nonce;
    b.send(&relayed).expect("relay");
    // A's proof carries A's certificate, which is not B's: the proxy
    // refuses it for that before checking the signature. The binding of a
    // proof to the handshake hash alone (same certificate, other hash) is
    // tested in proto (identity_tests.rs,
    // a_proof_for_another_handshake_hash_fails_even_with_this_sessions_certificate).
    let reason = terminate_reason(&mut b);
    assert_eq!(
        reason,
        "proof carries a certificate that is not this session's current one"
    );
    wait_until(Duration::from_secs(10), "proof_wrong_cert logged", || {
        w.proxy.log_text().contains("reason=\"proof_wrong_cert\"")
    });
}

/// A genuine RENEW (alice's key signs), not sent.
fn signed_renewal(c: &mut LibClient, w: &World) -> Control {
    let data = c
        .ids()
        .renewal_data(&mut rand_core::UnwrapErr(getrandom::SysRng))
        .expect("data");
    let user = ssh_key::PrivateKey::read_openssh_file(&w.alice).expect("key");
    let sig = user
        .sign(
            ztssh_proto::labels::SSHSIG_NAMESPACE_RENEW,
            ssh_key::HashAlg::Sha512,
            &data,
        )
        .expect("sign");
    use ssh_key::encoding::Encode;
    c.ids()
        .renew(sig.encode_vec().expect("enc"))
        .expect("renew")
}

#[test]
fn a_renewal_that_switches_principal_is_refused() {
    let w = World::builder().proxy_toml(SLOW_CERTS).start();
    let mut c = lib_client(&w);
    let Control::Renew {
        new_key,
        new_sig,
        old_sig,
        user_sig,
        ..
    } = signed_renewal(&mut c, &w)
    else {
        panic!()
    };
    c.send(&Control::Renew {
        principal: "root".into(),
        new_key,
        new_sig,
        old_sig,
        user_sig,
    })
    .expect("send");
    let reason = terminate_reason(&mut c);
    assert_eq!(
        reason,
        "renewal tried to switch principal from alice to root"
    );
}

#[test]
fn early_renewals_are_logged_once_counted_and_end_the_session_past_the_bound() {
    let port = free_port();
    let w = World::builder().proxy_toml(&format!(
        "metrics_listen = \"127.0.0.1:{port}\"\nchallenge_interval_secs = 300\ncert_ttl_secs = 300\n"
    )).start();
    let mut c = lib_client(&w);
    // Genuine renewals, all within the first 75 s of the certificate.
    let renew_early = |c: &mut LibClient| {
        let renew = signed_renewal(c, &w);
        c.ids().abandon_renewal();
        c.send(&renew).expect("send");
    };
    for _ in 0..3 {
        renew_early(&mut c);
    }
    wait_metric(port, "ztssh_renewals_refused_total", 3.0);
    // The log is written by a thread of its own: wait for the line.
    wait_until(Duration::from_secs(10), "renew_refused logged", || {
        w.proxy.log_text().contains("event=\"renew_refused\"")
    });
    let log = w.proxy.log_text();
    assert_eq!(count(&log, "event=\"renew_refused\""), 1, "{log}");
    assert!(!log.contains("session_terminated"), "{log}");
    renew_early(&mut c);
    let reason = terminate_reason(&mut c);
    assert!(
        reason.starts_with("4 renewals within the first 75s of certificate ")
            && reason.ends_with("; at most 3 are ignored"),
        "{reason}"
    );
    wait_until(Duration::from_secs(10), "renew_too_early logged", || {
        w.proxy.log_text().contains("reason=\"renew_too_early\"")
    });
    let log = w.proxy.log_text();
    assert_eq!(count(&log, "event=\"renew_refused\""), 1, "{log}");
    assert_eq!(count(&log, "event=\"cert_renewed\""), 0, "{log}");
}

/// A real ssh-agent holding alice's key, and its socket.
fn agent_with_alice(w: &World) -> (RealAgent, std::path::PathBuf) {
    let agent = RealAgent::start(&w.dir.path().join("agent.sock"), &[&w.alice]);
    let sock = agent.sock.clone();
    (agent, sock)
}

#[test]
fn a_key_removed_from_the_agent_ends_the_session_at_certificate_expiry() {
    let w = World::builder()
        .proxy_toml("challenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 6\ninsecure_short_certs = true\n")
        .start();
    let (_agent, sock) = agent_with_alice(&w);
    // The sidecar signs with the agent: no --identity.
    let opts: Vec<String> = w
        .client_opts(&w.alice, "")
        .into_iter()
        .map(|o| o.replace(&format!("--identity {} ", w.alice.display()), ""))
        .collect();
    let mut cmd = Command::new("ssh");
    cmd.args(opts)
        .arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@localhost")
        .arg("sleep 60");
    cmd.env("SSH_AUTH_SOCK", &sock)
        .env("XDG_CACHE_HOME", w.dir.path().join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ssh = cmd.spawn().expect("ssh");
    wait_until(Duration::from_secs(20), "session", || {
        w.proxy.log_text().contains("upstream_connected")
    });
    let del = run_bounded(
        Command::new("ssh-add")
            .arg("-D")
            .env("SSH_AUTH_SOCK", &sock),
        T,
    );
    assert_ok(&del, "ssh-add -D");
    let out = wait_bounded(ssh, Duration::from_secs(30));
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("certificate renewal failed"), "{err}");
    assert!(
        err.contains("session terminated by web1: client certificate for alice expired"),
        "{err}"
    );
    // Said once (retries come every few seconds), with what to do.
    assert_eq!(count(&err, "certificate renewal failed"), 1, "{err}");
    assert!(
        err.contains("add it back with ssh-add KEY in another terminal, then reconnect"),
        "{err}"
    );
}

#[test]
fn the_sidecar_exits_at_once_while_a_renewal_signature_waits_on_the_agent() {
    // Renewal 4 s into a 6 s certificate; no challenges meanwhile.
    let w = World::builder()
        .proxy_toml(
            "challenge_interval_secs = 300\ncert_ttl_secs = 6\ninsecure_short_certs = true\n",
        )
        .start();
    let (_agent, real) = agent_with_alice(&w);
    // The handshake's signature passes; the renewal's is never answered.
    let agent = ztssh_tests::agent::HoldingAgent::start(&w.dir.path().join("held.sock"), &real, 1);
    let mut cmd = Command::new(bin("ztssh-sidecar"));
    cmd.arg("--insecure-short-certs")
        .arg("--root")
        .arg(w.pki.root_pub())
        .arg("--principal")
        .arg("alice")
        .arg("--connect")
        .arg(format!("127.0.0.1:{}", w.proxy.port))
        .args(["web1", "22"])
        .env("SSH_AUTH_SOCK", &agent.sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // stdin stays open (in `sidecar`) until the sidecar is gone.
    let sidecar = cmd.spawn().expect("sidecar");
    wait_until(Duration::from_secs(30), "a renewal signature held", || {
        agent.held() == 1
    });
    // ssh going away: the sidecar sends CLOSE and must exit, not wait
    // for the agent (its read timeout is 30 s).
    signal(sidecar.id(), "HUP");
    let out = wait_bounded(sidecar, Duration::from_secs(10));
    assert_ok(&out, "sidecar");
}

#[test]
fn bad_revocation_lists_are_refused_and_the_last_good_one_stays() {
    let w = World::builder().proxy_toml(SLOW_CERTS).start();
    let crl = w.pki.crl();
    let v1 = std::fs::read(&crl).expect("v1");
    w.pki.revoke("principal", "mallory");
    w.pki.publish_crl();
    wait_until(Duration::from_secs(10), "v2 loaded", || {
        w.proxy.log_text().contains("list_version=2")
    });
    let ssh = w.live_session();

    // A list signed by another root.
    let other = Pki::create(&w.dir.path().join("other"), &["localhost"]);
    other.revoke("principal", "alice");
    other.publish_crl();
    std::fs::copy(other.crl(), &crl).expect("copy foreign");
    wait_until(Duration::from_secs(10), "foreign list rejected", || {
        w.proxy.log_text().contains("not issued by the trusted key")
    });
    // A rollback to version 1 (which did not ban mallory).
    std::fs::write(&crl, &v1).expect("rollback");
    wait_until(Duration::from_secs(10), "rollback refused", || {
        w.proxy.log_text().contains("older than the loaded 2")
    });
    // Garbage.
    std::fs::write(
        &crl,
        b"-----BEGIN ZTSSH REVOCATION LIST-----\nAAAA\n-----END ZTSSH REVOCATION LIST-----\n",
    )
    .expect("garbage");
    wait_until(Duration::from_secs(10), "garbage rejected", || {
        count(&w.proxy.log_text(), "crl_reload_failed") >= 3
    });
    // Alice's session survived all of it.
    assert_ok(
        &run_bounded(w.ssh().arg("echo still-allowed"), T),
        "new session after bad lists",
    );

    // SIGHUP with a valid newer list that bans alice ends her live session.
    w.pki.revoke("principal", "alice");
    w.pki.publish_crl();
    w.proxy.sighup();
    let out = wait_bounded(ssh, Duration::from_secs(15));
    assert!(
        stderr(&out).contains("principal alice banned"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_sidecar_not_told_to_allow_short_certificates_refuses_one_and_names_the_server() {
    // Security issue 23, item 8: a proxy that issues short certificates
    // would have the user's key sign every second. The real sidecar,
    // without --insecure-short-certs, refuses the first one before any
    // renewal signature.
    let mut w = World::builder()
        .proxy_toml(
            "challenge_interval_secs = 300\ncert_ttl_secs = 4\ninsecure_short_certs = true\n",
        )
        .start();
    wait_until(
        Duration::from_secs(10),
        "the insecure_short_certs warning",
        || {
            w.proxy
                .log_text()
                .contains("event=\"insecure_short_certs\"")
        },
    );
    w.short_certs = false;
    let mut cmd = w.sidecar_to(w.proxy.port);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sidecar");
    // ssh's side stays open: the session ends on the sidecar's refusal.
    let _stdin = child.stdin.take();
    let out = wait_bounded(child, Duration::from_secs(60));
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("web1 broke the protocol: the proxy issued a certificate valid for 4s, less than the 60s minimum"),
        "{err}"
    );
    assert!(err.contains("cert_ttl_secs to 60 or more"), "{err}");
    assert!(!err.contains("renewed"), "{err}");
}

#[test]
fn cert_ttl_secs_below_the_floor_is_a_config_error_naming_its_line() {
    let w = World::start();
    let base = std::fs::read_to_string(&w.proxy.config).expect("config");
    let check = |name: &str, lines: &str| {
        let path = w.dir.path().join(name);
        std::fs::write(&path, format!("{base}{lines}")).expect("write");
        let line = base.lines().count() + 1;
        let out = run_bounded(
            Command::new(bin("ztssh-proxy"))
                .arg("check")
                .arg("--config")
                .arg(&path),
            Duration::from_secs(60),
        );
        (out, format!("{}:{line}: ", path.display()))
    };
    for ttl in [1, 59] {
        let (out, at) = check(
            &format!("bad{ttl}.toml"),
            &format!("cert_ttl_secs = {ttl}\n"),
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(
            err.contains(&format!(
                "{at}cert_ttl_secs = {ttl}: must be between 60 and 3600"
            )),
            "{err}"
        );
    }
    // Exactly at the floor, and below it only with the explicit override,
    // which `check` says out loud.
    let (out, _) = check("floor.toml", "cert_ttl_secs = 60\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, _) = check(
        "short.toml",
        "cert_ttl_secs = 2\ninsecure_short_certs = true\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("INSECURE: insecure_short_certs"), "{said}");
    let (out, _) = check(
        "short1.toml",
        "cert_ttl_secs = 1\ninsecure_short_certs = true\n",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("cert_ttl_secs = 1: must be between 2 and 3600"),
        "{err}"
    );
}

/// The value of `field=` on the first log line that has `event`.
fn field_of(log: &str, event: &str, field: &str) -> String {
    log.lines()
        .find(|l| l.contains(&format!("event=\"{event}\"")))
        .and_then(|l| l.split(&format!(" {field}=")).nth(1))
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no {field}= on a {event} line:\n{log}"))
}

#[test]
fn revoking_the_first_serial_after_a_renewal_ends_the_session() {
    // Issue 23 item 1: each renewal mints a new serial; the audit log's
    // first serial used to end nothing once the session had renewed.
    let w = World::builder()
        .proxy_toml("challenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 6\ninsecure_short_certs = true\n")
        .start();
    let ssh = w.live_session();
    let log = w.proxy.log_text();
    let first = field_of(&log, "cert_issued", "serial");
    assert_eq!(field_of(&log, "cert_issued", "session_serial"), first);
    let log = w.proxy.wait_log("event=\"cert_renewed\"", T);
    let renewed = field_of(&log, "cert_renewed", "serial");
    assert_ne!(renewed, first, "a renewal mints a new serial");
    // Every line of the session shows the session serial.
    assert_eq!(field_of(&log, "cert_renewed", "session_serial"), first);
    assert_eq!(field_of(&log, "challenge_ok", "session_serial"), first);
    let results = revoke_and_time(&w, "serial", &first, vec![ssh]);
    let (elapsed, err) = &results[0];
    println!("first serial revoked after a renewal → ssh exit: {elapsed:?}");
    assert!(
        err.contains(&format!(
            "session terminated by web1: session {first} revoked"
        )),
        "{err}\n{}",
        w.proxy.log_text()
    );
    let log = w.proxy.wait_log("reason=\"serial_revoked\"", T);
    assert_eq!(
        field_of(&log, "session_terminated", "session_serial"),
        first
    );
}

#[test]
fn another_sessions_first_serial_ends_only_that_session() {
    // The way around tried: revoking one session's serial must not reach
    // another; and the other session, renewed, stays revocable by its own.
    let w = World::builder()
        .proxy_toml("challenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 6\ninsecure_short_certs = true\n")
        .start();
    let a = w.live_session();
    let first_a = field_of(&w.proxy.log_text(), "cert_issued", "serial");
    let b = w.live_session();
    let b_line = w
        .proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("event=\"cert_issued\""))
        .nth(1)
        .expect("second session")
        .to_owned();
    let first_b = field_of(&b_line, "cert_issued", "serial");
    assert_ne!(first_a, first_b);
    // Both renew before the revocation.
    wait_until(T, "both sessions to renew", || {
        let log = w.proxy.log_text();
        [&first_a, &first_b].iter().all(|s| {
            log.lines().any(|l| {
                l.contains("event=\"cert_renewed\"") && l.contains(&format!("session_serial={s}"))
            })
        })
    });
    let results = revoke_and_time(&w, "serial", &first_b, vec![b]);
    assert!(
        results[0].1.contains(&format!("session {first_b} revoked")),
        "{}",
        results[0].1
    );
    // Session a lives on: it proves itself after the list landed.
    let proofs_a = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains("event=\"challenge_ok\"")
                    && l.contains(&format!("session_serial={first_a}"))
            })
            .count()
    };
    let after = proofs_a(&w.proxy.log_text());
    wait_until(T, "session a to prove itself twice more", || {
        proofs_a(&w.proxy.log_text()) >= after + 2
    });
    assert!(
        !w.proxy
            .log_text()
            .lines()
            .any(|l| l.contains("session_terminated")
                && l.contains(&format!("session_serial={first_a}"))),
        "{}",
        w.proxy.log_text()
    );
    drop(a);
}
