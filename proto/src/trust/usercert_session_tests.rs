//! A user certificate through the handshake and the identity machine:
//! bound by the user key's signature, verified at authorization under the
//! authority's CAs, and the end of the session at its valid-before.

use ssh_key::certificate::{Builder, CertType};
use ssh_key::{HashAlg, PrivateKey};

use crate::control::Control;
use crate::end::{EndKind, Ended};
use crate::frame::FrameSize;
use crate::handshake::{self, ClientAuth, client_auth_len};
use crate::identity::{Authority, Handled, ServerIdentity, Timing, USER_CERT_MIN_INTERVAL_MS};
use crate::keys::{SigningKey, TestRng};
use crate::labels::SSHSIG_NAMESPACE_HANDSHAKE;
use crate::tests::{client_cfg, pki, user};
use crate::time::UnixTime;
use crate::trust::usercert::UserCas;
use crate::trust::{Checkpoint, Credential, Subject};

const NOW: u64 = 1_800_000_000;

fn ca() -> PrivateKey {
    PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[0xca; 32]))
}

fn cert_for(key: &PrivateKey, principal: &str, valid_before: u64) -> Vec<u8> {
    let mut b = Builder::new(
        [7u8; 16],
        key.public_key().key_data().clone(),
        0,
        valid_before,
    )
    .expect("builder");
    b.serial(9).expect("serial");
    b.key_id("carol@corp").expect("key id");
    b.cert_type(CertType::User).expect("type");
    b.valid_principal(principal).expect("principal");
    b.sign(&ca()).expect("sign").to_bytes().expect("bytes")
}

/// Trusts [`ca`] (or nothing) and lets every credential through; the
/// certificate's own checks are what is tested.
struct Cas(Option<UserCas>);

impl Authority for Cas {
    fn check(&self, who: &Subject<'_>, _at: Checkpoint<'_>, now: UnixTime) -> Result<(), Ended> {
        match (who.credential, &self.0) {
            (Credential::UserCert(c), Some(cas)) => c.check(cas, None, now),
            (Credential::UserCert(_), None) => Err(Ended::new(EndKind::UserCertRefused, "none")),
            (Credential::UserKey(_), _) => Ok(()),
            (Credential::Workload { .. }, _) => {
                Err(Ended::new(EndKind::WorkloadTokenRefused, "none"))
            }
        }
    }
    fn may_issue(&self, _now: UnixTime) -> Result<(), Ended> {
        Ok(())
    }
    fn user_cas(&self) -> Option<&UserCas> {
        self.0.as_ref()
    }
}

fn trusted() -> Cas {
    Cas(Some(
        UserCas::parse(&ca().public_key().to_openssh().expect("openssh")).expect("cas"),
    ))
}

/// The handshake with `sent` in message 3 while the user key signs over
/// `signed` (the same, for an honest client).
fn handshake(key: &PrivateKey, sent: Vec<u8>, signed: &[u8]) -> ClientAuth {
    let pki = pki();
    let server = handshake::server_start(
        pki.noise(),
        pki.licence(),
        FrameSize::default(),
        &mut TestRng,
    )
    .expect("server");
    let (client, msg1) = handshake::client_start_with_cert(
        client_cfg(&pki, "web1"),
        Some(sent.clone()),
        &mut TestRng,
    )
    .expect("client");
    let (server, msg2) = server
        .handle_client_hello(&msg1, &mut TestRng)
        .expect("msg2");
    assert_eq!(
        server.message3_len(),
        client_auth_len(FrameSize::default(), true)
    );
    let verified = client
        .handle_server_hello(&msg2, NOW, &mut TestRng)
        .expect("verified");
    let mut data = verified.user_signed_data();
    assert!(data.ends_with(&sent), "the user key signs the certificate");
    data.truncate(data.len() - sent.len());
    data.extend_from_slice(signed);
    let sig = key
        .sign(SSHSIG_NAMESPACE_HANDSHAKE, HashAlg::Sha512, &data)
        .expect("sign");
    let (_, msg3) = verified
        .into_client_auth("alice", key.public_key(), &sig)
        .expect("msg3");
    assert_eq!(msg3.len(), 6144);
    server.handle_client_auth(&msg3).expect("outcome")
}

#[test]
fn a_certificate_travels_bound_and_vouches_once_verified() {
    let key = user(3);
    let cert = cert_for(&key, "alice", NOW + 3600);
    let authed = handshake(&key, cert.clone(), &cert)
        .authenticated()
        .expect("authenticated");
    assert_eq!(authed.user_cert(), Some(&cert[..]));
    let authorized = authed.authorize(&trusted(), NOW).expect("authorized");
    let c = authorized.user_cert().expect("verified certificate");
    assert_eq!((c.serial(), c.key_id()), (9, "carol@corp"));
    assert!(matches!(
        authorized.subject().credential,
        Credential::UserCert(_)
    ));
}

#[test]
fn a_certificate_swapped_after_signing_is_refused() {
    let key = user(3);
    let signed = cert_for(&key, "alice", NOW + 3600);
    let other = cert_for(&key, "alice", NOW + 7200);
    match handshake(&key, other, &signed) {
        ClientAuth::KeyRefused { refused, .. } => {
            assert_eq!(refused.ended.kind, EndKind::UserKeyRefused);
            assert!(
                refused.ended.reason.contains("does not verify"),
                "{:?}",
                refused.ended
            );
        }
        ClientAuth::Authenticated(_) => panic!("a swapped certificate was accepted"),
    }
}

#[test]
fn without_trusted_cas_or_for_another_key_a_certificate_is_refused() {
    let key = user(3);
    let cert = cert_for(&key, "alice", NOW + 3600);
    let authed = handshake(&key, cert.clone(), &cert)
        .authenticated()
        .expect("authed");
    let e = authed.authorize(&Cas(None), NOW).expect_err("no cas");
    assert_eq!(e.ended.kind, EndKind::UserCertRefused);
    assert!(
        e.ended.reason.contains("trusts no user CA"),
        "{:?}",
        e.ended
    );
    // A certificate of another key, presented by a key that signs for it.
    let theirs = cert_for(&user(4), "alice", NOW + 3600);
    let authed = handshake(&key, theirs.clone(), &theirs)
        .authenticated()
        .expect("authed");
    let e = authed.authorize(&trusted(), NOW).expect_err("another key");
    assert!(e.ended.reason.contains("for another key"), "{:?}", e.ended);
}

#[test]
fn an_empty_certificate_is_refused_before_sending() {
    let pki = pki();
    assert!(
        handshake::client_start_with_cert(client_cfg(&pki, "web1"), Some(Vec::new()), &mut TestRng)
            .is_err()
    );
}

#[test]
fn the_session_ends_at_valid_before_and_says_why() {
    let key = user(3);
    let cert = cert_for(&key, "alice", NOW + 100);
    let authed = handshake(&key, cert.clone(), &cert)
        .authenticated()
        .expect("authed");
    let mut id = started(authed.authorize(&trusted(), NOW).expect("authorized"));
    // The next wakeup is no later than the certificate's end.
    assert!(id.next_wakeup() <= 100_000);
    assert!(id.poll(NOW + 99, 99_000, [0; 32]).map(|_| ()).is_ok());
    let e = id.poll(NOW + 100, 100_000, [0; 32]).expect_err("expired");
    assert_eq!(e.kind, EndKind::UserCertExpired);
    assert!(e.reason.contains("key id \"carol@corp\", serial 9"), "{e}");
    // A recheck against the authority ends it as well once expired.
    assert!(id.recheck(&trusted(), NOW + 100).is_err());
}

/// A certificate like [`cert_for`], with `serial`, `critical` options and
/// the session key's principal.
fn cert_with(
    key: &PrivateKey,
    principal: &str,
    valid_before: u64,
    serial: u64,
    critical: &[(&str, &str)],
) -> Vec<u8> {
    let mut b = Builder::new(
        [serial as u8; 16],
        key.public_key().key_data().clone(),
        0,
        valid_before,
    )
    .expect("builder");
    b.serial(serial).expect("serial");
    b.key_id("carol@corp").expect("key id");
    b.cert_type(CertType::User).expect("type");
    b.valid_principal(principal).expect("principal");
    for (k, v) in critical {
        match k.strip_prefix("ext:") {
            Some(ext) => b.extension(ext, *v).expect("extension"),
            None => b.critical_option(*k, *v).expect("option"),
        };
    }
    b.sign(&ca()).expect("sign").to_bytes().expect("bytes")
}

/// A session of alice's key 3 that logged in with `first`.
fn session_with(first: &[u8]) -> ServerIdentity {
    let key = user(3);
    let authed = handshake(&key, first.to_vec(), first)
        .authenticated()
        .expect("authed");
    started(authed.authorize(&trusted(), NOW).expect("authorized"))
}

/// The identity machine of an authorized session: 30 s challenges, 300 s
/// client certificates, started at [`NOW`].
fn started(authorized: crate::identity::Authorized) -> ServerIdentity {
    let timing = Timing {
        interval_secs: 30,
        deadline_secs: 10,
        cert_ttl_secs: 300,
    };
    let subca = SigningKey::generate(&mut TestRng);
    ServerIdentity::start(authorized, &subca, &trusted(), timing, NOW, 0, &mut TestRng)
        .expect("started")
        .identity
}

/// `cert` in USER_CERT parts of at most `size` bytes, handed to `id`.
fn send(
    id: &mut ServerIdentity,
    cert: &[u8],
    size: usize,
    now: u64,
    mono_ms: u64,
) -> Result<Handled, Ended> {
    let parts = cert.len().div_ceil(size) as u8;
    let subca = SigningKey::generate(&mut TestRng);
    let mut last = Ok(Handled::UserCertPart);
    for (part, bytes) in cert.chunks(size).enumerate() {
        last = id.handle(
            Control::UserCert {
                part: part as u8,
                parts,
                bytes: bytes.to_vec(),
            },
            &subca,
            &trusted(),
            now,
            mono_ms,
            &mut TestRng,
        );
    }
    last
}

#[test]
fn a_newer_certificate_sent_in_parts_extends_the_session() {
    let key = user(3);
    let mut id = session_with(&cert_for(&key, "alice", NOW + 100));
    let newer = cert_with(&key, "alice", NOW + 400, 10, &[]);
    match send(&mut id, &newer, 100, NOW + 50, 50_000).expect("handled") {
        Handled::UserCertRenewed {
            described,
            valid_before,
        } => {
            assert_eq!(valid_before, NOW + 400);
            assert!(described.contains("serial 10"), "{described}");
        }
        other => panic!("not renewed: {other:?}"),
    }
    assert_eq!(id.user_cert().map(|c| c.serial()), Some(10));
    // Past the first certificate's end the session lives on, until the
    // new one's.
    assert!(id.poll(NOW + 150, 150_000, [0; 32]).is_ok());
    assert!(id.recheck(&trusted(), NOW + 150).is_ok());
    let e = id.poll(NOW + 400, 400_000, [0; 32]).expect_err("expired");
    assert_eq!(e.kind, EndKind::UserCertExpired);
    assert!(e.reason.contains("serial 10"), "{e}");
}

#[test]
fn a_certificate_that_is_no_newer_or_for_another_key_or_principal_or_options_is_refused() {
    let key = user(3);
    let first = cert_with(
        &key,
        "alice",
        NOW + 100,
        9,
        &[("force-command", "echo forced")],
    );
    let mut id = session_with(&first);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            cert_with(
                &key,
                "alice",
                NOW + 100,
                10,
                &[("force-command", "echo forced")],
            ),
            "no later than the one in force",
        ),
        (
            cert_with(
                &user(4),
                "alice",
                NOW + 400,
                10,
                &[("force-command", "echo forced")],
            ),
            "for another key",
        ),
        (
            cert_with(
                &key,
                "bob",
                NOW + 400,
                10,
                &[("force-command", "echo forced")],
            ),
            "principal alice",
        ),
        (
            cert_with(&key, "alice", NOW + 400, 10, &[]),
            "critical options",
        ),
        (
            cert_with(
                &key,
                "alice",
                NOW + 400,
                10,
                &[
                    ("force-command", "echo forced"),
                    ("ext:permit-port-forwarding", ""),
                ],
            ),
            "extensions",
        ),
        (
            cert_with(
                &key,
                "alice",
                NOW + 400,
                10,
                &[
                    ("force-command", "echo forced"),
                    ("source-address", "10.0.0.0/8"),
                ],
            ),
            "critical options",
        ),
        (vec![0xde; 300], "malformed"),
    ];
    for (i, (cert, why)) in cases.iter().enumerate() {
        // Ten seconds apart: each is judged (none is too soon).
        let mono = 20_000 * (i as u64 + 1);
        match send(&mut id, cert, 640, NOW + 10, mono).expect("the session goes on") {
            Handled::UserCertRefused { reason } => {
                assert!(reason.contains(why), "case {i}: {reason}");
            }
            other => panic!("case {i} ({why}) was not refused: {other:?}"),
        }
        assert_eq!(id.user_cert().map(|c| c.serial()), Some(9), "case {i}");
    }
    // The session still ends at the first certificate's end, and says
    // which newer one was refused.
    let e = id.poll(NOW + 100, 200_000, [0; 32]).expect_err("expired");
    assert_eq!(e.kind, EndKind::UserCertExpired);
    assert!(
        e.reason
            .contains("the newer one sent was refused: malformed"),
        "{e}"
    );
}

#[test]
fn certificates_closer_than_the_interval_are_not_checked() {
    let key = user(3);
    let mut id = session_with(&cert_for(&key, "alice", NOW + 100));
    let a = cert_with(&key, "alice", NOW + 200, 10, &[]);
    let b = cert_with(&key, "alice", NOW + 300, 11, &[]);
    assert!(matches!(
        send(&mut id, &a, 640, NOW, 1_000),
        Ok(Handled::UserCertRenewed { .. })
    ));
    // The one in force, sent again: nothing, and no refusal.
    assert!(matches!(
        send(&mut id, &a, 640, NOW, 2_000),
        Ok(Handled::UserCertPart)
    ));
    match send(&mut id, &b, 640, NOW, 1_000 + USER_CERT_MIN_INTERVAL_MS - 1) {
        Ok(Handled::UserCertRefused { reason }) => {
            assert!(reason.contains("less than"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // One passed over as too soon does not start the interval again: the
    // same one, sent again once it is over, is checked.
    assert!(matches!(
        send(&mut id, &b, 640, NOW, 1_000 + USER_CERT_MIN_INTERVAL_MS),
        Ok(Handled::UserCertRenewed { .. })
    ));
}

#[test]
fn user_cert_parts_out_of_order_or_without_a_certificate_end_the_session() {
    let key = user(3);
    let subca = SigningKey::generate(&mut TestRng);
    let part = |id: &mut ServerIdentity, part: u8, parts: u8| {
        id.handle(
            Control::UserCert {
                part,
                parts,
                bytes: vec![1; 10],
            },
            &subca,
            &trusted(),
            NOW,
            1_000,
            &mut TestRng,
        )
    };
    let first = cert_for(&key, "alice", NOW + 100);
    let mut id = session_with(&first);
    let e = part(&mut id, 1, 3).expect_err("part 1 first");
    assert_eq!(e.kind, EndKind::UnexpectedControl);
    let mut id = session_with(&first);
    assert!(matches!(part(&mut id, 0, 3), Ok(Handled::UserCertPart)));
    assert!(part(&mut id, 1, 4).is_err(), "the count changed");
    // A session that logged in with a plain key takes none.
    let mut id = started(
        handshake_plain(&key)
            .authorize(&trusted(), NOW)
            .expect("authorized"),
    );
    let e = part(&mut id, 0, 1).expect_err("no certificate in force");
    assert!(e.reason.contains("without a user certificate"), "{e}");
}

/// The handshake of `key` with no certificate.
fn handshake_plain(key: &PrivateKey) -> handshake::ClientAuthenticated {
    let pki = pki();
    let server = handshake::server_start(
        pki.noise(),
        pki.licence(),
        FrameSize::default(),
        &mut TestRng,
    )
    .expect("server");
    let (client, msg1) =
        handshake::client_start(client_cfg(&pki, "web1"), &mut TestRng).expect("client");
    let (server, msg2) = server
        .handle_client_hello(&msg1, &mut TestRng)
        .expect("msg2");
    let verified = client
        .handle_server_hello(&msg2, NOW, &mut TestRng)
        .expect("verified");
    let sig = key
        .sign(
            SSHSIG_NAMESPACE_HANDSHAKE,
            HashAlg::Sha512,
            &verified.user_signed_data(),
        )
        .expect("sign");
    let (_, msg3) = verified
        .into_client_auth("alice", key.public_key(), &sig)
        .expect("msg3");
    server
        .handle_client_auth(&msg3)
        .expect("outcome")
        .authenticated()
        .expect("authenticated")
}
