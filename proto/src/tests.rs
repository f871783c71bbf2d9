//! In-memory client/server pair with virtual time: the whole handshake and
//! record layer without sockets or clocks.

use crate::keys::TestRng;
use ssh_key::{HashAlg, PrivateKey};

use crate::cert::{LicenceBody, LicenceVerified, Serial};
use crate::error::{AuthError, ProtoError};
use crate::frame::{Control, Event, FrameSize, TerminateCode};
use crate::handshake::{
    self, ClientAuth, ClientAuthenticated, ClientConfig, ClientSession, HELLO_LEN, message_len,
};
use crate::keys::{NoiseKeypair, SigningKey};
use crate::labels::SSHSIG_NAMESPACE_HANDSHAKE;

/// Virtual "now" for the pair.
const NOW: u64 = 1_800_000_000;

pub(crate) struct Pki {
    root: SigningKey,
    noise: NoiseKeypair,
    licence: LicenceVerified,
}

impl Pki {
    pub(crate) fn noise(&self) -> &NoiseKeypair {
        &self.noise
    }

    pub(crate) fn licence(&self) -> &LicenceVerified {
        &self.licence
    }
}

fn pki_with(root: &SigningKey, signer: &SigningKey, noise: NoiseKeypair, nb: u64, na: u64) -> Pki {
    let body = LicenceBody {
        serial: Serial::random(&mut TestRng),
        server_id: "web1".into(),
        hostnames: vec!["web1".into(), "localhost".into()],
        subca_key: SigningKey::generate(&mut TestRng).public(),
        noise_key: noise.public(),
        not_before: nb,
        not_after: na,
        issuer: signer.public(),
    };
    Pki {
        root: SigningKey::from_seed(&root.to_seed()),
        noise,
        licence: LicenceVerified::assume(body.sign(signer).expect("sign")),
    }
}

pub(crate) fn pki() -> Pki {
    let root = SigningKey::generate(&mut TestRng);
    pki_with(
        &root,
        &root,
        NoiseKeypair::generate(&mut TestRng),
        NOW - 10,
        NOW + 86_400,
    )
}

pub(crate) fn user(seed: u8) -> PrivateKey {
    let kp = ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
    PrivateKey::from(kp)
}

pub(crate) fn client_cfg(pki: &Pki, host: &str) -> ClientConfig {
    ClientConfig {
        root: pki.root.public().into(),
        host: host.into(),
        frame_size: FrameSize::default(),
    }
}

/// Runs the handshake as alice; `signer` signs while `claimed` is the key
/// sent. Returns the client's session and the server's outcome, accepted
/// or refused.
pub(crate) fn run_to_outcome(
    pki: &Pki,
    cfg: ClientConfig,
    claimed: &PrivateKey,
    signer: &PrivateKey,
) -> Result<(ClientSession, ClientAuth), ProtoError> {
    let server =
        handshake::server_start(&pki.noise, &pki.licence, FrameSize::default(), &mut TestRng)?;
    let (client, msg1) = handshake::client_start(cfg, &mut TestRng)?;
    let (server, msg2) = server.handle_client_hello(&msg1, &mut TestRng)?;
    let verified = client.handle_server_hello(&msg2, NOW, &mut TestRng)?;
    let sig = signer
        .sign(
            SSHSIG_NAMESPACE_HANDSHAKE,
            HashAlg::Sha512,
            &verified.user_signed_data(),
        )
        .expect("sign");
    let (session, msg3) = verified.into_client_auth("alice", claimed.public_key(), &sig)?;
    Ok((session, server.handle_client_auth(&msg3)?))
}

/// [`run_to_outcome`], for a handshake the server must accept.
pub(crate) fn run(
    pki: &Pki,
    cfg: ClientConfig,
    claimed: &PrivateKey,
    signer: &PrivateKey,
) -> Result<(ClientSession, ClientAuthenticated), ProtoError> {
    let (session, outcome) = run_to_outcome(pki, cfg, claimed, signer)?;
    let authed = outcome
        .authenticated()
        .ok_or(ProtoError::Internal("user key refused"))?;
    Ok((session, authed))
}

#[test]
fn a_transports_debug_never_shows_plaintext() {
    let pki = pki();
    let alice = user(1);
    let (mut c, mut s) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    let secret = b"hunter2 typed into the session";
    let mut wire = Vec::new();
    c.transport
        .sealer
        .seal_data(secret, &mut wire)
        .expect("seal");
    let (mut data, mut events) = (Vec::new(), Vec::new());
    s.transport
        .opener
        .open_all(&wire, &mut data, &mut events)
        .expect("open");
    assert_eq!(data, secret);
    // "hunt" as Debug prints bytes.
    for shown in [format!("{:?}", c.transport), format!("{:?}", s.transport)] {
        assert!(!shown.contains("104, 117, 110, 116"), "{shown}");
        assert!(shown.contains("nonce: 1"), "{shown}");
    }
}

#[test]
fn handshake_then_records_both_ways() {
    let pki = pki();
    let alice = user(1);
    let (mut c, mut s) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    assert_eq!(s.principal(), "alice");
    assert_eq!(s.user_key().key_data(), alice.public_key().key_data());
    assert_eq!(s.session_key(), c.session_key.public());
    assert_eq!(c.handshake_hash, s.handshake_hash);

    let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = Vec::new();
    c.transport
        .sealer
        .seal_data(&payload, &mut wire)
        .expect("seal");
    c.transport.sealer.seal_close(&mut wire).expect("close");
    assert_eq!(wire.len() % 1024, 0, "only whole frames on the wire");
    assert_eq!(wire.len(), (5000usize.div_ceil(1004) + 1) * 1024);
    let (mut data, mut events) = (Vec::new(), Vec::new());
    let used = s
        .transport
        .opener
        .open_all(&wire[..wire.len() - 1], &mut data, &mut events)
        .expect("open");
    assert_eq!(
        used,
        wire.len() - 1024,
        "a partial record waits for more bytes"
    );
    s.transport
        .opener
        .open_all(&wire[used..], &mut data, &mut events)
        .expect("open tail");
    assert_eq!(data, payload);
    assert_eq!(events, vec![Event::Close]);

    let mut back = Vec::new();
    let accept = Control::Accept {
        server_id: "web1".into(),
        caps: 0,
    };
    s.transport
        .sealer
        .seal_control(&accept, &mut back)
        .expect("seal");
    s.transport.sealer.seal_pad(&mut back).expect("pad");
    let (mut data, mut events) = (Vec::new(), Vec::new());
    c.transport
        .opener
        .open_all(&back, &mut data, &mut events)
        .expect("open");
    assert!(data.is_empty());
    assert_eq!(events, vec![Event::Control(accept)]);
}

#[test]
fn handshake_messages_have_fixed_sizes() {
    let pki = pki();
    for f in [1024usize, 1040, 4096, 16_384] {
        let fs = FrameSize::new(f).expect("f");
        let cfg = ClientConfig {
            frame_size: fs,
            ..client_cfg(&pki, "web1")
        };
        let server =
            handshake::server_start(&pki.noise, &pki.licence, fs, &mut TestRng).expect("start");
        let (client, msg1) = handshake::client_start(cfg, &mut TestRng).expect("start");
        assert_eq!(msg1.len(), HELLO_LEN);
        let (_, msg2) = server
            .handle_client_hello(&msg1, &mut TestRng)
            .expect("hello");
        assert_eq!(msg2.len(), message_len(2, fs));
        assert_eq!(msg2.len() % f, 0);
        let v = client
            .handle_server_hello(&msg2, NOW, &mut TestRng)
            .expect("server hello");
        let alice = user(1);
        let sig = alice
            .sign(
                SSHSIG_NAMESPACE_HANDSHAKE,
                HashAlg::Sha512,
                &v.user_signed_data(),
            )
            .expect("sig");
        let (_, msg3) = v
            .into_client_auth("alice", alice.public_key(), &sig)
            .expect("auth");
        assert_eq!(msg3.len(), message_len(3, fs));
        assert_eq!(msg3.len() % f, 0);
    }
}

#[test]
fn client_refuses_bad_licences() {
    let p = pki();
    let alice = user(1);
    let err = |pki: &Pki, cfg| {
        run(pki, cfg, &alice, &alice)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };

    // Host not in the licence.
    assert!(err(&p, client_cfg(&p, "db1")).contains("does not cover host \"db1\""));
    // Pinned root differs: licence from a foreign CA.
    let mut foreign = client_cfg(&p, "web1");
    foreign.root = (SigningKey::generate(&mut TestRng).public()).into();
    assert!(err(&p, foreign).contains("not issued by the trusted key"));
    // Expired 3 hours ago.
    let root = SigningKey::generate(&mut TestRng);
    let old = pki_with(
        &root,
        &root,
        NoiseKeypair::generate(&mut TestRng),
        NOW - 90_000,
        NOW - 3 * 3600,
    );
    assert_eq!(
        err(&old, client_cfg(&old, "web1")),
        "server licence expired 3h ago"
    );
    // Licence certifies a different Noise key than the server proves.
    let mut stolen = pki();
    stolen.noise = NoiseKeypair::generate(&mut TestRng);
    assert_eq!(
        err(&stolen, client_cfg(&stolen, "web1")),
        AuthError::KeyMismatch.to_string()
    );
}

#[test]
fn server_refuses_wrong_user_signature() {
    let pki = pki();
    let (alice, mallory) = (user(1), user(2));
    let (_, outcome) =
        run_to_outcome(&pki, client_cfg(&pki, "web1"), &alice, &mallory).expect("well-formed");
    let ClientAuth::KeyRefused {
        principal,
        user_key,
        refused,
    } = outcome
    else {
        panic!("must fail")
    };
    assert_eq!(principal, "alice");
    // The key claimed (alice's), which mallory's signature did not prove.
    let fp = alice.public_key().fingerprint(HashAlg::Sha256).to_string();
    assert_eq!(user_key, fp, "the refused key's fingerprint, for the log");
    assert_eq!(refused.ended.kind, crate::end::EndKind::UserKeyRefused);
    assert!(
        refused
            .ended
            .reason
            .starts_with("principal alice: key SHA256:")
    );
}

/// The test keys are compiled in, so the test binary runs where the
/// source tree is not (tests/cross.sh runs it under Wine in a container).
fn test_key(name: &str) -> PrivateKey {
    let text = match name {
        "ecdsa256" => include_str!("testdata/userkey/ecdsa256.key"),
        "ecdsa384" => include_str!("testdata/userkey/ecdsa384.key"),
        "ecdsa521" => include_str!("testdata/userkey/ecdsa521.key"),
        "ed25519" => include_str!("testdata/userkey/ed25519.key"),
        "rsa1024" => include_str!("testdata/userkey/rsa1024.key"),
        "rsa2048" => include_str!("testdata/userkey/rsa2048.key"),
        "rsa4096" => include_str!("testdata/userkey/rsa4096.key"),
        other => panic!("no test key {other}"),
    };
    PrivateKey::from_openssh(text).expect("test key")
}

#[test]
fn ecdsa_and_rsa_user_keys_complete_the_handshake() {
    let pki = pki();
    for name in ["ecdsa256", "ecdsa384", "ecdsa521", "rsa2048", "rsa4096"] {
        let k = test_key(name);
        let (c, s) =
            run(&pki, client_cfg(&pki, "web1"), &k, &k).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.user_key().key_data(), k.public_key().key_data(), "{name}");
        assert_eq!(s.user_sig().sk(), None);
        assert_eq!(c.handshake_hash, s.handshake_hash);
    }
}

#[test]
fn a_refused_user_key_hears_why_in_a_terminate() {
    // A 1024-bit RSA key signs the handshake correctly, and is refused for
    // its size; the client opens the refusal on its own transport.
    let pki = pki();
    let k = test_key("rsa1024");
    let (mut session, outcome) =
        run_to_outcome(&pki, client_cfg(&pki, "web1"), &k, &k).expect("well-formed");
    let ClientAuth::KeyRefused { mut refused, .. } = outcome else {
        panic!("refused")
    };
    let wire = refused.terminate_record();
    let (mut data, mut events) = (Vec::new(), Vec::new());
    session
        .transport
        .opener
        .open_all(&wire, &mut data, &mut events)
        .expect("open");
    let fp = k.public_key().fingerprint(HashAlg::Sha256);
    assert_eq!(
        events,
        vec![Event::Control(Control::Terminate {
            code: TerminateCode::NotAuthorized,
            reason: format!(
                "principal alice: key {fp}: RSA key of 1024 bits refused: ztssh accepts RSA keys of 2048 to 4096 bits"
            ),
        })]
    );
}

#[test]
fn tampering_any_handshake_message_fails() {
    let pki = pki();
    let alice = user(1);
    for (target, pos) in [
        (1, 0),
        (1, 40),
        (1, 2000),
        (2, 5),
        (2, 100),
        (2, 4000),
        (3, 3),
        (3, 500),
    ] {
        let server =
            handshake::server_start(&pki.noise, &pki.licence, FrameSize::default(), &mut TestRng)
                .expect("s");
        let (client, mut msg1) =
            handshake::client_start(client_cfg(&pki, "web1"), &mut TestRng).expect("c");
        if target == 1 {
            msg1[pos] ^= 1;
        }
        let Ok((server, mut msg2)) = server.handle_client_hello(&msg1, &mut TestRng) else {
            continue;
        };
        if target == 2 {
            msg2[pos] ^= 1;
        }
        let Ok(v) = client.handle_server_hello(&msg2, NOW, &mut TestRng) else {
            continue;
        };
        let sig = alice
            .sign(
                SSHSIG_NAMESPACE_HANDSHAKE,
                HashAlg::Sha512,
                &v.user_signed_data(),
            )
            .expect("sig");
        let (_, mut msg3) = v
            .into_client_auth("alice", alice.public_key(), &sig)
            .expect("auth");
        if target == 3 {
            msg3[pos] ^= 1;
        }
        assert!(
            !matches!(
                server.handle_client_auth(&msg3),
                Ok(ClientAuth::Authenticated(_))
            ),
            "tampered msg{target} byte {pos} accepted"
        );
    }
}

#[test]
fn wrong_lengths_and_frame_mismatch_fail() {
    let pki = pki();
    let server =
        handshake::server_start(&pki.noise, &pki.licence, FrameSize::default(), &mut TestRng)
            .expect("s");
    let (_, msg1) = handshake::client_start(client_cfg(&pki, "web1"), &mut TestRng).expect("c");
    assert!(
        server
            .handle_client_hello(&msg1[..100], &mut TestRng)
            .is_err()
    );

    let server =
        handshake::server_start(&pki.noise, &pki.licence, FrameSize::default(), &mut TestRng)
            .expect("s");
    let cfg = ClientConfig {
        frame_size: FrameSize::new(2048).expect("f"),
        ..client_cfg(&pki, "web1")
    };
    let (_, msg1) = handshake::client_start(cfg, &mut TestRng).expect("c");
    let e = server
        .handle_client_hello(&msg1, &mut TestRng)
        .expect_err("mismatch");
    assert!(e.to_string().contains("frame size 2048"), "{e}");
}

#[test]
fn records_reject_tamper_replay_and_reorder() {
    let pki = pki();
    let alice = user(1);
    let (mut c, mut s) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    let mut wire = Vec::new();
    c.transport
        .sealer
        .seal_data(b"first", &mut wire)
        .expect("seal");
    c.transport
        .sealer
        .seal_data(b"second", &mut wire)
        .expect("seal");
    let (first, second) = wire.split_at(1024);
    let (mut d, mut e) = (Vec::new(), Vec::new());

    let mut flipped = first.to_vec();
    flipped[700] ^= 0x10;
    // Reordered: the second record first.
    assert!(s.transport.opener.open_all(second, &mut d, &mut e).is_err());
    // A failed open leaves the counter alone, so the honest record still opens.
    assert!(
        s.transport
            .opener
            .open_all(&flipped, &mut d, &mut e)
            .is_err()
    );
    s.transport
        .opener
        .open_all(first, &mut d, &mut e)
        .expect("in order");
    // Replay of the first record.
    assert!(s.transport.opener.open_all(first, &mut d, &mut e).is_err());
    assert_eq!(d, b"first");
}

#[test]
fn terminate_reaches_the_client() {
    let pki = pki();
    let alice = user(1);
    let (mut c, mut s) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    let mut wire = Vec::new();
    let t = Control::Terminate {
        code: TerminateCode::NotAuthorized,
        reason: "principal alice not authorized".into(),
    };
    s.transport
        .sealer
        .seal_control(&t, &mut wire)
        .expect("seal");
    let (mut d, mut e) = (Vec::new(), Vec::new());
    c.transport
        .opener
        .open_all(&wire, &mut d, &mut e)
        .expect("open");
    assert_eq!(e, vec![Event::Control(t)]);
}

#[test]
fn nothing_after_terminate_is_opened_and_no_data_after_close() {
    let pki = pki();
    let alice = user(1);
    let (mut c, mut s) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    // Proxy to client: DATA, TERMINATE, then DATA and ACCEPT in one batch.
    let mut wire = Vec::new();
    let sealer = &mut s.transport.sealer;
    sealer.seal_data(b"before", &mut wire).expect("seal");
    let bye = Control::Terminate {
        code: TerminateCode::NotAuthorized,
        reason: "bye".into(),
    };
    sealer.seal_control(&bye, &mut wire).expect("seal");
    sealer.seal_data(b"after", &mut wire).expect("seal");
    sealer
        .seal_control(
            &Control::Accept {
                server_id: "web1".into(),
                caps: 0,
            },
            &mut wire,
        )
        .expect("seal");
    let (mut data, mut events) = (Vec::new(), Vec::new());
    let used = c
        .transport
        .opener
        .open_all(&wire, &mut data, &mut events)
        .expect("open");
    assert_eq!(used, 2 * 1024);
    assert_eq!(data, b"before");
    assert_eq!(events, vec![Event::Control(bye)]);
    assert_eq!(
        c.transport
            .opener
            .open_all(&wire[used..], &mut data, &mut events)
            .expect("still terminated"),
        0
    );

    // Client to proxy: CLOSE then DATA, even within one batch, is refused.
    let mut wire = Vec::new();
    let sealer = &mut c.transport.sealer;
    sealer.seal_data(b"last words", &mut wire).expect("seal");
    sealer.seal_close(&mut wire).expect("seal");
    sealer.seal_pad(&mut wire).expect("pad");
    sealer.seal_data(b"more", &mut wire).expect("seal");
    let (mut data, mut events) = (Vec::new(), Vec::new());
    let e = s
        .transport
        .opener
        .open_all(&wire, &mut data, &mut events)
        .expect_err("DATA after CLOSE");
    assert_eq!(
        e.to_string(),
        "peer violated the protocol: DATA after CLOSE"
    );
}

/// Hostile payloads behind valid Noise cryptography (feature `testkit`).
#[cfg(feature = "testkit")]
mod hostile {
    use super::*;
    use crate::handshake::testkit;

    fn server(pki: &Pki) -> handshake::AwaitingClientHello {
        handshake::server_start(&pki.noise, &pki.licence, FrameSize::default(), &mut TestRng)
            .expect("server")
    }

    #[test]
    fn oversized_length_fields_in_handshake_payloads_are_refused_cleanly() {
        let pki = pki();
        // body_len = 0xffff in message 1: longer than the whole message.
        let msg1 = testkit::client_hello_raw(&[0xff, 0xff, 0, 1], &mut TestRng).expect("msg1");
        assert_eq!(msg1.len(), HELLO_LEN);
        let e = server(&pki)
            .handle_client_hello(&msg1, &mut TestRng)
            .map(|_| ())
            .expect_err("oversized");
        assert_eq!(e.to_string(), "client hello is truncated");
        // A body_len shorter than the body: the rest is not zero padding.
        let mut p = testkit::honest_hello_payload(FrameSize::default(), &mut TestRng);
        p[0..2].copy_from_slice(&100u16.to_be_bytes());
        let msg1 = testkit::client_hello_raw(&p, &mut TestRng).expect("msg1");
        let e = server(&pki)
            .handle_client_hello(&msg1, &mut TestRng)
            .map(|_| ())
            .expect_err("short body");
        assert_eq!(e.to_string(), "client hello: non-zero padding");
        // The honest payload through the hook works, so the hook is faithful.
        let msg1 = testkit::client_hello_raw(
            &testkit::honest_hello_payload(FrameSize::default(), &mut TestRng),
            &mut TestRng,
        )
        .expect("msg1");
        assert!(
            server(&pki)
                .handle_client_hello(&msg1, &mut TestRng)
                .is_ok()
        );

        // Message 2 with a licence var16 claiming 0xffff bytes.
        let (client, msg1) =
            handshake::client_start(client_cfg(&pki, "web1"), &mut TestRng).expect("client");
        let mut body = vec![0, 0]; // body_len, filled below
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&[0u8; 1088]);
        body.extend_from_slice(&0xffffu16.to_be_bytes());
        let len = u16::try_from(body.len() - 2).expect("len");
        body[0..2].copy_from_slice(&len.to_be_bytes());
        let msg2 = server(&pki).server_hello_raw(&msg1, &body).expect("msg2");
        let e = client
            .handle_server_hello(&msg2, NOW, &mut TestRng)
            .map(|_| ())
            .expect_err("oversized");
        assert!(
            e.to_string()
                .contains("server hello has a field of 65535 bytes"),
            "{e}"
        );

        // Message 3 whose principal claims 200 bytes.
        let server = server(&pki);
        let (client, msg1) =
            handshake::client_start(client_cfg(&pki, "web1"), &mut TestRng).expect("client");
        let (server, msg2) = server
            .handle_client_hello(&msg1, &mut TestRng)
            .expect("msg2");
        let verified = client
            .handle_server_hello(&msg2, NOW, &mut TestRng)
            .expect("verified");
        let msg3 = verified.client_auth_raw(&[0, 1, 200]).expect("msg3");
        let e = server
            .handle_client_auth(&msg3)
            .map(|_| ())
            .expect_err("oversized");
        assert_eq!(
            e.to_string(),
            "client auth has a field of 200 bytes (at most 64 allowed)"
        );
    }

    #[test]
    fn a_client_hello_with_reserved_caps_set_is_refused() {
        let pki = pki();
        // body_len:u16, version:u16, frame_size:u16, then caps:u32.
        // Bit 0 is CAP_USER_CERT (a user certificate in message 3), bit 1
        // CAP_WORKLOAD_TOKEN (a workload token); both at once is refused.
        for caps in [1u32 << 2, 1 << 7, 1 << 31, 0b11] {
            let mut p = testkit::honest_hello_payload(FrameSize::default(), &mut TestRng);
            p[6..10].copy_from_slice(&caps.to_be_bytes());
            let msg1 = testkit::client_hello_raw(&p, &mut TestRng).expect("msg1");
            let e = server(&pki)
                .handle_client_hello(&msg1, &mut TestRng)
                .map(|_| ())
                .expect_err("caps set");
            assert_eq!(
                e.to_string(),
                "client hello: reserved caps bits set, or both a certificate and a token"
            );
        }
    }

    #[test]
    fn empty_data_records_are_refused() {
        let pki = pki();
        let alice = user(1);
        let (mut c, mut s) =
            run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
        let mut wire = Vec::new();
        c.transport
            .sealer
            .seal_data(b"before", &mut wire)
            .expect("seal");
        // type DATA, flags 0, len 0.
        c.transport
            .sealer
            .seal_plaintext_raw(&[1, 0, 0, 0], &mut wire)
            .expect("seal");
        let (mut d, mut ev) = (Vec::new(), Vec::new());
        let e = s
            .transport
            .opener
            .open_all(&wire, &mut d, &mut ev)
            .expect_err("empty DATA");
        assert_eq!(e.to_string(), "record: empty DATA");
        // An empty DATA after CLOSE is refused too.
        let (mut c, mut s) =
            run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
        let mut wire = Vec::new();
        c.transport.sealer.seal_close(&mut wire).expect("close");
        c.transport
            .sealer
            .seal_plaintext_raw(&[1, 0, 0, 0], &mut wire)
            .expect("seal");
        let e = s
            .transport
            .opener
            .open_all(&wire, &mut d, &mut ev)
            .expect_err("empty DATA after CLOSE");
        assert_eq!(e.to_string(), "record: empty DATA");
    }

    #[test]
    fn records_with_an_oversized_length_field_are_refused() {
        let pki = pki();
        let alice = user(1);
        let (mut c, mut s) =
            run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
        let f = FrameSize::default();
        // DATA with len = F (more than the record can carry).
        let mut plain = vec![1u8, 0];
        plain.extend_from_slice(&u16::try_from(f.get()).expect("f").to_be_bytes());
        let mut wire = Vec::new();
        c.transport
            .sealer
            .seal_plaintext_raw(&plain, &mut wire)
            .expect("seal");
        let (mut d, mut ev) = (Vec::new(), Vec::new());
        let e = s
            .transport
            .opener
            .open_all(&wire, &mut d, &mut ev)
            .expect_err("oversized");
        assert_eq!(
            e.to_string(),
            "record has a field of 1024 bytes (at most 1004 allowed)"
        );
        assert!(d.is_empty() && ev.is_empty());
    }
}

#[test]
fn a_licence_a_delegated_key_signed_travels_with_its_delegation_in_message_2() {
    use crate::delegation::{self, DelegationBody, Purpose};
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let noise = NoiseKeypair::generate(&mut TestRng);
    let mk = |servers: Vec<String>, nb: u64, na: u64| {
        DelegationBody {
            serial: Serial::random(&mut TestRng),
            purpose: Purpose::Licences,
            key: online.public(),
            servers,
            not_before: nb,
            not_after: na,
            issuer: root.public(),
        }
        .sign(&root)
        .expect("delegate")
    };
    // Sixteen globs (the most), which must cover the licence's server id
    // and every host name (web1, localhost).
    let mut globs = vec!["web*".to_owned(); 15];
    globs.push("localhost".into());
    let d = mk(globs, NOW - 10, NOW + 3600);
    let mut pki = pki_with(&root, &online, noise, NOW - 10, NOW + 600);
    let licence = pki.licence.licence().encoded().to_vec();
    pki.licence = delegation::verify_licence(
        &root.public().into(),
        &licence,
        Some(d.encoded()),
        None,
        NOW,
    )
    .expect("delegated licence");
    // The largest delegation fits message 2 beside a licence.
    assert!(handshake::fits_message_2(&pki.licence));
    let alice = user(1);
    let (session, _) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    assert_eq!(session.licence.delegation(), Some(&d));
    // A client refuses it when the delegation has ended.
    let old = mk(Vec::new(), NOW - 100, NOW - 1);
    pki.licence = crate::cert::LicenceVerified::assume(
        crate::cert::Licence::decode(&licence).expect("decode"),
    );
    let server_licence = {
        let mut l = delegation::verify_licence(
            &root.public().into(),
            &licence,
            Some(old.encoded()),
            None,
            NOW - 50,
        )
        .expect("valid then");
        std::mem::swap(&mut pki.licence, &mut l);
        l
    };
    drop(server_licence);
    let Err(e) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice) else {
        panic!("expired delegation: the handshake succeeded");
    };
    assert!(e.to_string().contains("delegation expired"), "{e}");
    // Without a delegation the same licence is another issuer's.
    pki.licence = crate::cert::LicenceVerified::assume(
        crate::cert::Licence::decode(&licence).expect("decode"),
    );
    let Err(e) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice) else {
        panic!("no delegation: the handshake succeeded");
    };
    assert!(
        matches!(e, ProtoError::Auth(AuthError::WrongIssuer(_))),
        "{e}"
    );
}

/// Issue 25 item 6: a hybrid root's licence is 3,379 bytes longer, so its
/// message 2 has a length of its own (fixed for every hybrid licence that
/// fits), while messages 1 and 3, and so every record after them, keep
/// the Ed25519 root's sizes.
#[test]
fn a_hybrid_root_keeps_every_message_size_fixed() {
    use crate::keys::Secret;
    use crate::rootkey::{HybridSigner, MlDsaKey, RootSigner};
    let ed = SigningKey::generate(&mut TestRng);
    let pq = MlDsaKey::from_seed(Secret::new([3; 32]));
    let hybrid = HybridSigner::new(&ed, &pq);
    let noise = NoiseKeypair::generate(&mut TestRng);
    let licence = |hosts: Vec<String>| {
        let body = LicenceBody {
            serial: Serial::random(&mut TestRng),
            server_id: "web1".into(),
            hostnames: hosts,
            subca_key: SigningKey::generate(&mut TestRng).public(),
            noise_key: noise.public(),
            not_before: NOW - 10,
            not_after: NOW + 86_400,
            issuer: ed.public(),
        };
        LicenceVerified::assume(body.sign_with(&hybrid).expect("sign"))
    };
    let short = licence(vec!["web1".into()]);
    let long = licence(
        std::iter::once("web1".to_owned())
            .chain((0..11).map(|i| format!("{i:0>240}.web1")))
            .collect(),
    );
    assert!(short.is_hybrid() && handshake::fits_message_2(&long));
    let classic = pki();
    let alice = user(1);
    for f in [1024usize, 4096, 16_384] {
        let fs = FrameSize::new(f).expect("f");
        let mut sizes = Vec::new();
        for (root, lic, noise) in [
            (hybrid.root_key(), &short, &noise),
            (hybrid.root_key(), &long, &noise),
            (
                classic.root.public().into(),
                &classic.licence,
                &classic.noise,
            ),
        ] {
            let cfg = ClientConfig {
                root,
                host: "web1".into(),
                frame_size: fs,
            };
            let server = handshake::server_start(noise, lic, fs, &mut TestRng).expect("start");
            let (client, msg1) = handshake::client_start(cfg, &mut TestRng).expect("start");
            let expected_msg2 = client.server_hello_len();
            let (_, msg2) = server
                .handle_client_hello(&msg1, &mut TestRng)
                .expect("hello");
            assert_eq!(msg2.len(), expected_msg2);
            let v = client
                .handle_server_hello(&msg2, NOW, &mut TestRng)
                .expect("server hello");
            let sig = alice
                .sign(
                    SSHSIG_NAMESPACE_HANDSHAKE,
                    HashAlg::Sha512,
                    &v.user_signed_data(),
                )
                .expect("sig");
            let (_, msg3) = v
                .into_client_auth("alice", alice.public_key(), &sig)
                .expect("auth");
            sizes.push((msg1.len(), msg2.len(), msg3.len()));
        }
        let hybrid_msg2 = handshake::server_hello_len(fs, true);
        assert_eq!(sizes[0], (HELLO_LEN, hybrid_msg2, message_len(3, fs)));
        assert_eq!(sizes[1], sizes[0], "the licence's contents show in no size");
        assert_eq!(
            sizes[2],
            (HELLO_LEN, message_len(2, fs), message_len(3, fs))
        );
        assert_eq!(hybrid_msg2, 8192usize.div_ceil(f) * f);
    }
}
