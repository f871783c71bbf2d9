//! User certificates written by `ssh-keygen -s` (testdata/usercert, valid
//! 2020-01-01 to 2099-12-31 unless named otherwise) against the verifier.

use super::*;

const NOW: UnixTime = 1_800_000_000;

macro_rules! data {
    ($name:expr) => {
        include_str!(concat!("../testdata/usercert/", $name))
    };
}

fn cert_bytes(text: &str) -> Vec<u8> {
    Certificate::from_openssh(text.trim())
        .expect("cert")
        .to_bytes()
        .expect("bytes")
}

fn key(text: &str) -> ssh_key::PublicKey {
    ssh_key::PublicKey::from_openssh(text.trim()).expect("key")
}

fn cas() -> UserCas {
    let text = [
        data!("ca_ed25519.pub"),
        data!("ca_ecdsa.pub"),
        data!("ca_rsa.pub"),
    ]
    .concat();
    UserCas::parse(&text).expect("cas")
}

fn user() -> ssh_key::PublicKey {
    key(data!("user.pub"))
}

fn check(name_text: &str, principal: &str) -> Result<UserCertVerified, Ended> {
    verify(&cas(), &cert_bytes(name_text), &user(), principal, NOW)
}

fn refused(name_text: &str, principal: &str) -> Ended {
    check(name_text, principal).expect_err("refused")
}

#[test]
fn certificates_from_ed25519_ecdsa_and_rsa_cas_verify() {
    for (text, serial) in [
        (data!("ed-cert.pub"), 42),
        (data!("ecdsa-cert.pub"), 43),
        (data!("rsa-cert.pub"), 44),
    ] {
        let v = check(text, "alice").expect("verifies");
        assert_eq!(v.serial(), serial);
        assert_eq!(v.key_id(), "alice@corp");
        assert_eq!(v.principals()[0], "alice");
        assert_eq!(v.valid_before(), 4_102_358_400);
        assert_eq!(v.user_key(), user().key_data());
        assert!(v.ca_fingerprint().starts_with("SHA256:"), "{v:?}");
        assert!(cas().trusts(v.ca_key()));
        assert!(
            v.check(&cas(), Some("192.0.2.1".parse().expect("ip")), NOW)
                .is_ok()
        );
    }
    // Any principal it lists.
    assert!(check(data!("ed-cert.pub"), "deploy").is_ok());
}

#[test]
fn each_refusal_says_what_to_do() {
    let e = refused(data!("ed-cert.pub"), "bob");
    assert_eq!(e.kind, EndKind::UserCertRefused);
    assert!(
        e.reason
            .contains("principal bob is not in your certificate (alice, deploy)"),
        "{e}"
    );
    let e = refused(data!("expired-cert.pub"), "alice");
    assert_eq!(e.kind, EndKind::UserCertExpired);
    assert!(
        e.reason.contains("certificate expired at 2020-01-02"),
        "{e}"
    );
    let e = refused(data!("unknown-cert.pub"), "alice");
    assert!(
        e.reason
            .contains("unknown critical option \"no-such-option@example.com\""),
        "{e}"
    );
    let e = refused(data!("noprinc-cert.pub"), "alice");
    assert!(e.reason.contains("names no principal"), "{e}");
    let e = refused(data!("host-cert.pub"), "alice");
    assert!(e.reason.contains("host certificate"), "{e}");
    let e = refused(data!("rsa-sha1-cert.pub"), "alice");
    assert!(e.reason.contains("does not verify"), "{e}");
    // Another key signed in than the one certified.
    let other = key(data!("other.pub"));
    let e = verify(
        &cas(),
        &cert_bytes(data!("ed-cert.pub")),
        &other,
        "alice",
        NOW,
    )
    .expect_err("other key");
    assert!(e.reason.contains("for another key"), "{e}");
    // Not valid yet (beyond the clock skew).
    let e = verify(
        &cas(),
        &cert_bytes(data!("ed-cert.pub")),
        &user(),
        "alice",
        1_000,
    )
    .expect_err("early");
    assert!(e.reason.contains("not valid until"), "{e}");
}

#[test]
fn an_untrusted_ca_is_named_by_its_fingerprint_and_nothing_else_is_read() {
    let only_ecdsa = UserCas::parse(data!("ca_ecdsa.pub")).expect("cas");
    let ed_ca = key(data!("ca_ed25519.pub"));
    let fp = ed_ca.fingerprint(HashAlg::Sha256).to_string();
    // Even a host certificate with no principals from an untrusted CA is
    // refused as untrusted: the CA is judged first.
    for text in [
        data!("ed-cert.pub"),
        data!("host-cert.pub"),
        data!("noprinc-cert.pub"),
    ] {
        let e = verify(&only_ecdsa, &cert_bytes(text), &user(), "alice", NOW).expect_err("ca");
        assert_eq!(e.kind, EndKind::UserCertRefused);
        assert!(
            e.reason
                .contains(&format!("certificate signed by an untrusted CA {fp}")),
            "{e}"
        );
    }
}

#[test]
fn a_tampered_or_padded_certificate_is_refused() {
    let good = cert_bytes(data!("ed-cert.pub"));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(verify(&cas(), &trailing, &user(), "alice", NOW).is_err());
    // Flip one byte in each position of the signed part: never accepted
    // (decode error, untrusted CA or bad signature).
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        assert!(
            verify(&cas(), &bad, &user(), "alice", NOW).is_err(),
            "byte {i} flipped was accepted"
        );
    }
    assert!(verify(&cas(), &[], &user(), "alice", NOW).is_err());
    assert!(verify(&cas(), &vec![0; MAX_USER_CERT + 1], &user(), "alice", NOW).is_err());
}

#[test]
fn critical_options_are_exposed_and_source_address_is_enforced() {
    let v = check(data!("opts-cert.pub"), "alice").expect("verifies");
    assert_eq!(v.force_command(), Some("echo forced"));
    assert!(v.permits("permit-pty"));
    assert!(!v.permits("permit-port-forwarding"));
    assert!(!v.verify_required());
    let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
    assert!(v.check(&cas(), ip("10.1.2.3"), NOW).is_ok());
    assert!(v.check(&cas(), ip("127.0.0.1"), NOW).is_ok());
    assert!(v.check(&cas(), ip("::ffff:10.9.9.9"), NOW).is_ok());
    let e = v.check(&cas(), ip("127.0.0.2"), NOW).expect_err("outside");
    assert_eq!(e.kind, EndKind::UserCertRefused);
    assert!(
        e.reason.contains("your address 127.0.0.2 is not in the certificate's source-address (10.0.0.0/8,127.0.0.1/32)"),
        "{e}"
    );
    assert!(v.check(&cas(), ip("2001:db8::1"), NOW).is_err());
    assert!(
        check(data!("verify-cert.pub"), "alice")
            .expect("ok")
            .verify_required()
    );
}

#[test]
fn a_live_certificate_ends_at_valid_before_and_when_its_ca_goes() {
    let v = check(data!("ed-cert.pub"), "alice").expect("verifies");
    assert!(v.check(&cas(), None, v.valid_before() - 1).is_ok());
    let e = v
        .check(&cas(), None, v.valid_before())
        .expect_err("expired");
    assert_eq!(e.kind, EndKind::UserCertExpired);
    assert!(
        e.reason
            .contains("certificate expired at 2099-12-31 00:00 UTC"),
        "{e}"
    );
    let others = UserCas::parse(data!("ca_rsa.pub")).expect("cas");
    assert_eq!(
        v.check(&others, None, NOW).map_err(|e| e.kind),
        Err(EndKind::UserCertRefused)
    );
}

#[test]
fn source_networks_parse_as_sshd_writes_them() {
    let ok = |s: &str| SourceNet::parse(s).expect(s);
    assert_eq!(ok("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(ok("::1").to_string(), "::1/128");
    assert!(ok("0.0.0.0/0").contains("203.0.113.9".parse().expect("ip")));
    assert!(ok("2001:db8::/32").contains("2001:db8:1::5".parse().expect("ip")));
    for bad in [
        "",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "host.example",
        "10.0.0.0/8/8",
    ] {
        assert!(SourceNet::parse(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn the_trusted_ca_file_is_read_like_sshds() {
    assert_eq!(cas().len(), 3);
    let e = UserCas::parse("# nothing\n\n").expect_err("empty");
    assert!(e.1.contains("no CA key"), "{e:?}");
    let e =
        UserCas::parse(&format!("# ca\n{}garbage\n", data!("ca_ed25519.pub"))).expect_err("bad");
    assert_eq!(e.0, 3);
    let e = UserCas::parse(&format!("cert-authority {}", data!("ca_ed25519.pub")))
        .expect_err("options");
    assert_eq!(e.0, 1);
}

#[test]
fn revoking_the_user_key_or_the_ca_key_in_the_ztssh_list_ends_it() {
    use crate::crl::{Crl, Revocations};
    use crate::keys::PublicKey;
    use crate::trust::{Checkpoint, Subject, check_revoked};
    let v = check(data!("ed-cert.pub"), "alice").expect("verifies");
    let hash = |k: &KeyData| k.fingerprint(HashAlg::Sha256).sha256().expect("sha256");
    for revoked in [hash(v.user_key()), hash(v.ca_key())] {
        let mut r = Revocations::default();
        r.user_keys.insert(revoked);
        let crl = Crl {
            list_version: 1,
            issued: 0,
            next_update: 10,
            issuer: PublicKey([1; 32]),
            revoked: r,
            delegation: None,
        };
        let e = check_revoked(
            Some(&crl),
            &Subject::user_cert("alice", &v),
            Checkpoint::Admit,
        )
        .expect_err("revoked");
        assert_eq!(e.kind, EndKind::UserKeyRevoked);
    }
}
