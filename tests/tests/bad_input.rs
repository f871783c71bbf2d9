//! Bad input, case by case, against the real proxy, sidecar and sshd. Each
//! test pins the exact behaviour: the proxy's log line, the sidecar's exit
//! status and message, and that nothing reached sshd. (Random bytes, HTTP,
//! slowloris, tampered handshake and data records, foreign roots and
//! revocation lists, and config mistakes are in hostile.rs, e2e.rs,
//! identity.rs and policy.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client::LibClient;
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_keyfile as keyfile;
use ztssh_proto::cert::{ClientCert, Licence};
use ztssh_proto::frame::{Control, FrameSize, TerminateCode};
use ztssh_proto::handshake::{self, HELLO_LEN, message_len, testkit};
use ztssh_proto::keys::{NoiseKeypair, SigningKey};
use ztssh_proto::labels::pem;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn wait_log(w: &World, needle: &str) -> String {
    w.proxy.wait_log(needle, Duration::from_secs(10))
}

fn no_sshd_connection(w: &World) {
    let sshd = w.sshd.log_before_sentinel();
    assert!(
        !sshd.contains("Connection from"),
        "sshd saw a connection:\n{sshd}"
    );
}

/// The local port of the proxy's connection to sshd, from its log.
fn upstream_port(log: &str) -> u16 {
    upstream_ports(log)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no upstream_connected line with local_port:\n{log}"))
}

/// Messages 1 and 2 of an honest handshake from `src`: the client state
/// that verified the proxy, message 1 as sent, and the socket.
fn up_to_message_3(w: &World, src: &str) -> (handshake::ServerVerified, Vec<u8>, TcpStream) {
    let mut s = connect_from(src, w.proxy.port).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (v, msg1) = client::hello(&mut s, w.pki.root_key()).expect("messages 1 and 2");
    (v, msg1, s)
}

/// Messages 1 and 3 of an honest handshake as alice, and the socket.
fn honest_handshake(w: &World, src: &str) -> (Vec<u8>, Vec<u8>, TcpStream) {
    let (v, msg1, mut s) = up_to_message_3(w, src);
    let (_, msg3) = client::client_auth(v, &w.alice, "alice").expect("msg3");
    s.write_all(&msg3).expect("write msg3");
    (msg1, msg3, s)
}

#[test]
fn truncated_message_1_and_3_are_dropped_with_a_clear_log_line() {
    let w = World::start();
    // Message 1: half of it, then the client hangs up.
    let mut s = connect_from("127.0.0.21", w.proxy.port).expect("connect");
    s.write_all(&pseudo_random(HELLO_LEN / 2, 1))
        .expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    expect_closed(&mut s, Duration::from_secs(10));
    let log = wait_log(&w, "reason=\"closed\"");
    assert!(
        log.contains("client closed the connection during the handshake"),
        "{log}"
    );

    // Message 3: real messages 1 and 2, then half of message 3.
    let f = FrameSize::default();
    let (_, _, mut s) = up_to_message_3(&w, "127.0.0.22");
    s.write_all(&pseudo_random(message_len(3, f) / 2, 2))
        .expect("half msg3");
    s.shutdown(Shutdown::Write).expect("shutdown");
    expect_closed(&mut s, Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "second log line", || {
        count(&w.proxy.log_text(), "reason=\"closed\"") == 2
    });
    assert!(!w.proxy.log_text().contains("panicked"));
    no_sshd_connection(&w);
}

#[test]
fn truncated_message_2_gets_a_clear_message_from_the_sidecar() {
    let w = World::start();
    // A server that answers message 1 with half a message 2 and hangs up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut msg1 = vec![0u8; HELLO_LEN];
        s.read_exact(&mut msg1).expect("msg1");
        s.write_all(&pseudo_random(message_len(2, FrameSize::default()) / 2, 3))
            .expect("half msg2");
    });
    let out = run_bounded(w.sidecar_to(port).stdin(Stdio::null()), T);
    server.join().expect("server");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("ztssh: web1 closed the connection during the handshake"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn oversized_length_field_in_message_1_is_refused_before_any_state() {
    let w = World::start();
    // Valid Noise around a payload whose body_len (0xffff) exceeds the message.
    let msg1 =
        testkit::client_hello_raw(&[0xff, 0xff, 0, 1], &mut UnwrapErr(SysRng)).expect("msg1");
    let mut s = connect_from("127.0.0.23", w.proxy.port).expect("connect");
    s.write_all(&msg1).expect("write");
    expect_closed(&mut s, Duration::from_secs(10));
    let log = wait_log(&w, "event=\"handshake_failed\"");
    assert!(
        log.contains("handshake rejected event=\"handshake_failed\" reason=\"protocol\" error=client hello is truncated"),
        "{log}"
    );
    no_sshd_connection(&w);
}

#[test]
fn a_replayed_handshake_is_refused_and_never_reaches_sshd() {
    let w = World::start();
    let (msg1, msg3, first) = honest_handshake(&w, "127.0.0.24");
    // The honest session is accepted and reaches sshd once.
    let mut c = first.try_clone().expect("clone");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut rec = vec![0u8; 1024];
    c.read_exact(&mut rec).expect("ACCEPT record");
    wait_until(Duration::from_secs(10), "sshd connection", || {
        count(&w.sshd.log_text(), "Connection from") == 1
    });
    // Replay both client messages on a new connection.
    let mut s = connect_from("127.0.0.25", w.proxy.port).expect("connect");
    s.write_all(&msg1).expect("replay msg1");
    let mut msg2 = vec![0u8; message_len(2, FrameSize::default())];
    s.read_exact(&mut msg2).expect("fresh msg2");
    s.write_all(&msg3).expect("replay msg3");
    expect_closed(&mut s, Duration::from_secs(10));
    let log = wait_log(&w, "peer=127.0.0.25");
    wait_until(Duration::from_secs(10), "replay rejected", || {
        w.proxy.log_text().lines().any(|l| {
            l.contains("peer=127.0.0.25")
                && l.contains("reason=\"protocol\"")
                && l.contains("error=tunnel cryptography failed (decrypt error)")
        })
    });
    assert!(!log.contains("panicked"));
    assert_eq!(
        count(&w.sshd.log_before_sentinel(), "Connection from"),
        1,
        "the replay reached sshd"
    );
    first.shutdown(Shutdown::Both).ok();
}

#[test]
fn a_flipped_bit_in_a_control_record_kills_the_session() {
    let w = World::builder()
        .proxy_toml("challenge_interval_secs = 1\n")
        .start();
    let mut c =
        LibClient::connect(w.proxy.port, w.pki.root_key(), &w.alice, "alice").expect("handshake");
    c.establish().expect("established");
    let ch = c.next_control().expect("read").expect("challenge");
    assert!(matches!(ch, Control::Challenge { .. }), "{ch:?}");
    // Seal the honest proof, flip one bit of the record, send it.
    let proof = c.proof(&ch).expect("proof");
    let mut rec = c
        .conn
        .seal_detached(|s, out| s.seal_control(&proof, out).expect("seal"));
    rec[517] ^= 0x10;
    c.sock.write_all(&rec).expect("send");
    expect_closed(&mut c.sock, Duration::from_secs(10));
    let log = wait_log(&w, "event=\"session_terminated\"");
    assert!(log.contains("reason=\"bad_record\""), "{log}");
    assert!(
        log.contains("session killed, upstream sshd socket closed: client sent a bad record: tunnel cryptography failed"),
        "{log}"
    );
    // The sshd side was closed (reset: a kill discards what sshd had not
    // read): sshd logs the end of that session.
    let port = *upstream_ports(&w.proxy.log_text())
        .last()
        .expect("upstream port");
    wait_until(Duration::from_secs(10), "sshd saw the close", || {
        sshd_saw_close(&w.sshd.log_text(), port)
    });
}

#[test]
fn a_foreign_issuer_certificate_in_a_proof_ends_the_session() {
    let w = World::builder()
        .proxy_toml("challenge_interval_secs = 1\n")
        .start();
    let mut c =
        LibClient::connect(w.proxy.port, w.pki.root_key(), &w.alice, "alice").expect("handshake");
    c.establish().expect("established");
    let ch = c.next_control().expect("read").expect("challenge");
    let Control::Proof { seq, sig, cert } = c.proof(&ch).expect("proof") else {
        panic!("no proof")
    };
    // Same principal and session key, issued by a Sub-CA nobody licensed.
    let genuine = ClientCert::decode(&cert).expect("cert");
    let foreign = ClientCert::issue(
        &SigningKey::generate(&mut UnwrapErr(SysRng)),
        "alice",
        Some(genuine.session),
        genuine.session_key,
        now(),
        300,
        &mut UnwrapErr(SysRng),
    )
    .expect("issue");
    c.send(&Control::Proof {
        seq,
        cert: foreign.encode(),
        sig,
    })
    .expect("send");
    let end = c.next_control().expect("read").expect("terminate");
    assert_eq!(
        end,
        Control::Terminate {
            code: TerminateCode::IdentityRevoked,
            reason: "proof carries a certificate that is not this session's current one".into(),
        }
    );
    let log = wait_log(&w, "event=\"challenge_failed\"");
    assert!(log.contains("reason=\"proof_wrong_cert\""), "{log}");
}

#[test]
fn frames_after_terminate_are_ignored_by_the_sidecar() {
    let w = World::start();
    // A server with the proxy's real keys and licence that refuses the
    // session, then keeps talking: DATA and ACCEPT after TERMINATE.
    let noise = NoiseKeypair::from_private(
        keyfile::read_secret(&w.pki.state.join("noise.key"), pem::NOISE_KEY).expect("noise"),
    );
    let lic_bytes = keyfile::read_pem(&w.pki.licence, pem::LICENCE).expect("licence");
    let licence = Licence::decode(&lic_bytes)
        .expect("decode")
        .verify(&w.pki.root_key(), now())
        .expect("the proxy's real licence verifies");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let f = FrameSize::default();
        let state =
            handshake::server_start(&noise, &licence, f, &mut UnwrapErr(SysRng)).expect("start");
        let mut msg1 = vec![0u8; HELLO_LEN];
        s.read_exact(&mut msg1).expect("msg1");
        let (state, msg2) = state
            .handle_client_hello(&msg1, &mut UnwrapErr(SysRng))
            .expect("hello");
        s.write_all(&msg2).expect("msg2");
        let mut msg3 = vec![0u8; message_len(3, f)];
        s.read_exact(&mut msg3).expect("msg3");
        let mut authed = state
            .handle_client_auth(&msg3)
            .ok()
            .and_then(ztssh_proto::handshake::ClientAuth::authenticated)
            .expect("auth");
        let mut out = Vec::new();
        let sealer = &mut authed.transport.sealer;
        sealer
            .seal_control(
                &Control::Terminate {
                    code: TerminateCode::NotAuthorized,
                    reason: "go away".into(),
                },
                &mut out,
            )
            .expect("seal");
        sealer
            .seal_data(b"SHOULD-NOT-APPEAR", &mut out)
            .expect("seal");
        sealer
            .seal_control(
                &Control::Accept {
                    server_id: "web1".into(),
                    caps: 0,
                },
                &mut out,
            )
            .expect("seal");
        let _ = s.write_all(&out);
        // Keep the socket open until the sidecar hangs up: closing it with
        // the sidecar's bytes unread would reset the connection, and the
        // sidecar might see the reset before TERMINATE.
        expect_closed(&mut s, Duration::from_secs(10));
    });
    let out = run_bounded(w.sidecar_to(port).stdin(Stdio::piped()), T);
    server.join().expect("server");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ztssh: web1 refused the session: go away"),
        "{}",
        stderr(&out)
    );
    assert!(
        out.stdout.is_empty(),
        "data after TERMINATE reached ssh: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn frames_after_terminate_never_reach_sshd() {
    let w = World::start();
    let mut c =
        LibClient::connect(w.proxy.port, w.pki.root_key(), &w.alice, "alice").expect("handshake");
    c.establish().expect("established");
    wait_until(Duration::from_secs(10), "sshd connection", || {
        count(&w.sshd.log_text(), "Connection from") == 1
    });
    w.pki.revoke("principal", "alice");
    w.pki.publish_crl();
    let end = c.next_control().expect("read").expect("terminate");
    assert_eq!(
        end,
        Control::Terminate {
            code: TerminateCode::IdentityRevoked,
            reason: "principal alice banned".into(),
        }
    );
    // The client keeps sending: an SSH banner and more.
    let _ = c.send_data(b"SSH-2.0-after-terminate\r\n");
    expect_closed(&mut c.sock, Duration::from_secs(10));
    let log = wait_log(&w, "event=\"session_terminated\"");
    assert_eq!(count(&log, "event=\"session_terminated\""), 1, "{log}");
    // sshd's socket was closed before TERMINATE went out; sshd never saw
    // a client banner on it. sshd reads that socket in order, so once it
    // logs the close, anything sent before the close is in its log.
    let port = upstream_port(&log);
    wait_until(Duration::from_secs(10), "sshd to log the close", || {
        sshd_saw_close(&w.sshd.log_text(), port)
    });
    let sshd = w.sshd.log_text();
    assert!(!sshd.contains("after-terminate"), "{sshd}");
    assert!(!sshd.contains("Remote protocol version"), "{sshd}");
}

#[test]
fn a_bad_record_after_authentication_is_penalised() {
    // In this world one bad record (3 s) reaches the threshold (3 s).
    let w = World::builder().proxy_toml(
        "[penalties]\nbad_handshake_secs = 3\nthreshold_secs = 3\ntimeout_secs = 1\nevicted_secs = 1\n",
    ).start();
    let (_, _, mut s) = honest_handshake(&w, "127.0.0.26");
    let mut rec = vec![0u8; 1024];
    s.read_exact(&mut rec).expect("ACCEPT record");
    // A record that does not authenticate, from an authenticated client.
    s.write_all(&pseudo_random(1024, 26))
        .expect("forged record");
    let log = wait_log(&w, "event=\"source_penalised\"");
    assert!(
        log.lines().any(|l| l.contains("peer=127.0.0.26")
            && l.contains("event=\"session_terminated\"")
            && l.contains("reason=\"bad_record\"")),
        "{log}"
    );
    assert!(
        log.contains("event=\"source_penalised\" source=127.0.0.26 secs=3"),
        "{log}"
    );
}
