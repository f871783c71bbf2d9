//! A user certificate through the handshake and the identity machine:
//! bound by the user key's signature, verified at authorization under the
//! authority's CAs, and the end of the session at its valid-before.

use ssh_key::certificate::{Builder, CertType};
use ssh_key::{HashAlg, PrivateKey};

use crate::end::{EndKind, Ended};
use crate::frame::FrameSize;
use crate::handshake::{self, ClientAuth, client_auth_len};
use crate::identity::{Authority, ServerIdentity, Timing};
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
    let authorized = authed.authorize(&trusted(), NOW).expect("authorized");
    let timing = Timing {
        interval_secs: 30,
        deadline_secs: 10,
        cert_ttl_secs: 300,
    };
    let subca = SigningKey::generate(&mut TestRng);
    let started =
        ServerIdentity::start(authorized, &subca, &trusted(), timing, NOW, 0, &mut TestRng)
            .expect("started");
    let mut id = started.identity;
    // The next wakeup is no later than the certificate's end.
    assert!(id.next_wakeup() <= 100_000);
    assert!(id.poll(NOW + 99, 99_000, [0; 32]).map(|_| ()).is_ok());
    let e = id.poll(NOW + 100, 100_000, [0; 32]).expect_err("expired");
    assert_eq!(e.kind, EndKind::UserCertExpired);
    assert!(e.reason.contains("key id \"carol@corp\", serial 9"), "{e}");
    // A recheck against the authority ends it as well once expired.
    assert!(id.recheck(&trusted(), NOW + 100).is_err());
}
