use super::*;
use crate::ProtoError;
use crate::cert::{Licence, LicenceBody, Serial};
use crate::crl::{Crl, Revocations};
use crate::delegation::{DelegationBody, Purpose};
use crate::keys::{Secret, SignerFailed, SigningKey, TestRng};

struct Hybrid {
    ed: SigningKey,
    pq: MlDsaKey,
}

impl Hybrid {
    fn new(seed: u8) -> Self {
        Self {
            ed: SigningKey::from_seed(&Secret::new([seed; 32])),
            pq: MlDsaKey::from_seed(Secret::new([seed ^ 0x5a; 32])),
        }
    }

    fn signer(&self) -> HybridSigner<'_> {
        HybridSigner::new(&self.ed, &self.pq)
    }

    fn root(&self) -> RootKey {
        self.signer().root_key()
    }
}

fn body(issuer: PublicKey, server: &str) -> LicenceBody {
    LicenceBody {
        serial: Serial([7; 16]),
        server_id: server.into(),
        hostnames: vec!["web1.example".into()],
        subca_key: SigningKey::generate(&mut TestRng).public(),
        noise_key: [9; 32],
        not_before: 100,
        not_after: 10_000,
        issuer,
    }
}

fn hybrid_licence(h: &Hybrid, server: &str) -> Vec<u8> {
    body(h.ed.public(), server)
        .sign_with(&h.signer())
        .expect("sign")
        .encoded()
        .to_vec()
}

/// The object's hybrid block, and the bytes before it.
fn split(bytes: &[u8]) -> (&[u8], &[u8]) {
    bytes.split_at(bytes.len() - HYBRID_SIG_LEN)
}

fn licence_err(bytes: &[u8], root: &RootKey) -> ProtoError {
    Licence::decode_verified(bytes, root, 200).expect_err("must be refused")
}

#[test]
fn a_hybrid_licence_verifies_under_its_root_and_round_trips() {
    let h = Hybrid::new(1);
    let bytes = hybrid_licence(&h, "web1");
    let (_, block) = split(&bytes);
    assert_eq!(&block[..6], b"ZTSG\x01\x02");
    let verified = Licence::decode_verified(&bytes, &h.root(), 200).expect("verifies");
    assert_eq!(verified.body.server_id, "web1");
    assert_eq!(
        verified.verify(&h.root(), 200).expect("again").encoded(),
        bytes
    );
    assert_eq!(Licence::decode(&bytes).expect("parse").encoded(), bytes);
}

#[test]
fn a_hybrid_pin_refuses_an_ed25519_only_object_from_the_same_key() {
    let h = Hybrid::new(2);
    let classic = body(h.ed.public(), "web1").sign(&h.ed).expect("sign");
    let e = licence_err(classic.encoded(), &h.root());
    assert!(
        matches!(e, ProtoError::Auth(AuthError::NotHybrid(_))),
        "{e}"
    );
    assert!(e.to_string().contains("requires both halves"), "{e}");
    assert!(classic.verify(&h.root(), 200).is_err());
}

#[test]
fn a_hybrid_pin_refuses_an_object_stripped_of_its_ml_dsa_half() {
    let h = Hybrid::new(3);
    let bytes = hybrid_licence(&h, "web1");
    let (tbs, block) = split(&bytes);
    // What an attacker can make: the body and the Ed25519 half alone.
    let stripped = [tbs, &block[6..70]].concat();
    let e = licence_err(&stripped, &h.root());
    assert!(
        matches!(e, ProtoError::Auth(AuthError::NotHybrid(_))),
        "{e}"
    );
    // The Ed25519 half alone is no Ed25519 signature of that key either:
    // it signed the hybrid context.
    let e = licence_err(&stripped, &RootKey::Ed25519(h.ed.public()));
    assert!(
        matches!(e, ProtoError::Auth(AuthError::BadSignature(_))),
        "{e}"
    );
    // Nor does a block with the ML-DSA half cut off parse.
    assert!(
        licence_err(&bytes[..bytes.len() - MLDSA65_SIG_LEN], &h.root())
            .to_string()
            .contains("hybrid")
    );
}

#[test]
fn a_hybrid_pin_refuses_a_corrupted_ml_dsa_half() {
    let h = Hybrid::new(4);
    let bytes = hybrid_licence(&h, "web1");
    for at in [
        bytes.len() - MLDSA65_SIG_LEN,
        bytes.len() - 1000,
        bytes.len() - 1,
    ] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let e = licence_err(&bad, &h.root());
        assert!(
            matches!(e, ProtoError::Auth(AuthError::BadPqSignature(_))),
            "byte {at}: {e}"
        );
        assert!(e.to_string().contains("ML-DSA-65"), "{e}");
    }
}

#[test]
fn halves_from_two_objects_do_not_recombine() {
    let h = Hybrid::new(5);
    let a = hybrid_licence(&h, "web1");
    let b = hybrid_licence(&h, "web2");
    let (a_tbs, a_block) = split(&a);
    let (_, b_block) = split(&b);
    // a's body and Ed25519 half with b's ML-DSA half.
    let mixed = [a_tbs, &a_block[..70], &b_block[70..]].concat();
    let e = licence_err(&mixed, &h.root());
    assert!(
        matches!(e, ProtoError::Auth(AuthError::BadPqSignature(_))),
        "{e}"
    );
    // a's body and ML-DSA half with b's Ed25519 half.
    let mixed = [a_tbs, &b_block[..70], &a_block[70..]].concat();
    let e = licence_err(&mixed, &h.root());
    assert!(
        matches!(e, ProtoError::Auth(AuthError::BadSignature(_))),
        "{e}"
    );
}

#[test]
fn a_hybrid_pin_refuses_another_hybrid_root_with_the_same_ed25519_half() {
    let h = Hybrid::new(6);
    let other = Hybrid {
        ed: SigningKey::from_seed(&Secret::new([6; 32])),
        pq: MlDsaKey::from_seed(Secret::new([0xee; 32])),
    };
    let bytes = hybrid_licence(&other, "web1");
    let e = licence_err(&bytes, &h.root());
    assert!(
        matches!(e, ProtoError::Auth(AuthError::BadPqSignature(_))),
        "{e}"
    );
}

#[test]
fn an_ed25519_pin_accepts_old_objects_byte_for_byte_and_refuses_hybrids() {
    let root = SigningKey::from_seed(&Secret::new([8; 32]));
    let b = body(root.public(), "web1");
    let lic = b.clone().sign(&root).expect("sign");
    // Today's form exactly: the body, then Ed25519 over context || body.
    let n = lic.encoded().len() - 64;
    let tbs = &lic.encoded()[..n];
    assert_eq!(
        &lic.encoded()[n..],
        &root.sign(labels::CTX_LICENCE, tbs)[..]
    );
    let pinned = RootKey::Ed25519(root.public());
    Licence::decode_verified(lic.encoded(), &pinned, 200).expect("old licence");
    let h = Hybrid::new(8);
    assert_eq!(h.ed.public(), root.public());
    let hybrid = hybrid_licence(&h, "web1");
    assert!(Licence::decode_verified(&hybrid, &pinned, 200).is_err());
    let parsed = Licence::decode(&hybrid).expect("parse");
    let e = parsed.verify(&pinned, 200).expect_err("refused");
    assert_eq!(e, AuthError::UnexpectedHybrid("server licence"));
}

#[test]
fn lists_and_delegations_from_a_hybrid_root_are_hybrid() {
    let h = Hybrid::new(9);
    let mut revoked = Revocations::default();
    revoked.principals.insert("mallory".into());
    let crl = Crl {
        list_version: 3,
        issued: 100,
        next_update: 200,
        issuer: h.ed.public(),
        revoked,
        delegation: None,
    };
    let bytes = crl.sign_with(&h.signer()).expect("sign");
    let back = Crl::decode_verified(&bytes, &h.root()).expect("verify");
    assert_eq!(back.list_version, 3);
    let classic = crl.sign(&h.ed).expect("sign");
    let e = Crl::decode_verified(&classic, &h.root()).expect_err("classic");
    assert!(
        matches!(e, ProtoError::Auth(AuthError::NotHybrid(_))),
        "{e}"
    );
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let e = Crl::decode_verified(&bad, &h.root()).expect_err("corrupt");
    assert!(
        matches!(e, ProtoError::Auth(AuthError::BadPqSignature(_))),
        "{e}"
    );

    let d = DelegationBody {
        serial: Serial([1; 16]),
        purpose: Purpose::Licences,
        key: SigningKey::generate(&mut TestRng).public(),
        servers: vec!["web*".into()],
        not_before: 0,
        not_after: 1000,
        issuer: h.ed.public(),
    }
    .sign_with(&h.signer())
    .expect("sign");
    let back =
        crate::delegation::Delegation::decode_verified(d.encoded(), &h.root()).expect("verify");
    assert_eq!(back.encoded(), d.encoded());
    assert!(crate::delegation::Delegation::decode(d.encoded()).is_ok());
}

#[test]
fn a_hybrid_root_refuses_objects_signed_by_a_delegated_ed25519_key() {
    let h = Hybrid::new(10);
    let delegated = SigningKey::generate(&mut TestRng);
    let d = DelegationBody {
        serial: Serial([2; 16]),
        purpose: Purpose::Licences,
        key: delegated.public(),
        servers: vec!["web*".into()],
        not_before: 0,
        not_after: 1000,
        issuer: h.ed.public(),
    }
    .sign_with(&h.signer())
    .expect("sign");
    let lic = body(delegated.public(), "web1")
        .sign(&delegated)
        .expect("sign");
    let e =
        crate::delegation::verify_licence(&h.root(), lic.encoded(), Some(d.encoded()), None, 200)
            .expect_err("refused");
    assert!(
        e.to_string().contains("sign it with the root itself"),
        "{e}"
    );
}

#[test]
fn keys_and_signatures_round_trip_and_bad_encodings_are_refused() {
    let h = Hybrid::new(11);
    let root = h.root();
    let enc = root.encode();
    assert_eq!(enc.len(), HYBRID_PUBLIC_LEN);
    assert_eq!(RootKey::decode(&enc).expect("decode"), root);
    let ed = RootKey::Ed25519(h.ed.public());
    assert_eq!(ed.encode(), h.ed.public().0.to_vec());
    assert_eq!(RootKey::decode(&ed.encode()).expect("decode"), ed);
    assert_ne!(root.fingerprint(), ed.fingerprint());
    for bad in [
        &enc[..enc.len() - 1],
        &enc[..40],
        &[0u8; 33][..],
        b"ZTRK\x02\x02",
    ] {
        assert!(RootKey::decode(bad).is_err());
    }
    let mut wrong_alg = enc.clone();
    wrong_alg[5] = 3;
    assert!(RootKey::decode(&wrong_alg).is_err());

    let sig = h.signer().try_sign_root(b"ctx", b"msg").expect("sign");
    let mut out = Vec::new();
    sig.encode_into(&mut out);
    assert_eq!(out.len(), HYBRID_SIG_LEN);
    assert_eq!(RootSignature::from_tail(&out, "t").expect("parse"), sig);
    root.verify(b"ctx", b"msg", &sig, "t").expect("verifies");
    assert!(root.verify(b"ctx2", b"msg", &sig, "t").is_err());
    assert!(root.verify(b"ctx", b"msg2", &sig, "t").is_err());
    assert!(format!("{:?}", h.pq).contains("<secret>"));
    assert!(!format!("{:?}", h.pq).contains(&hex(h.pq.seed().expose())));
}

/// A FIDO authenticator in software: signs PROTOCOL.u2f's message with
/// the flags it is given.
struct SoftSk {
    key: SigningKey,
    flags: u8,
}

impl RootSigner for SoftSk {
    fn root_key(&self) -> RootKey {
        RootKey::SkEd25519 {
            key: self.key.public(),
            application: Arc::from("ssh:"),
        }
    }

    fn try_sign_root(&self, context: &[u8], msg: &[u8]) -> Result<RootSignature, SignerFailed> {
        let counter = 7;
        let m = sk_message("ssh:", self.flags, counter, context, msg);
        Ok(RootSignature::SkEd25519 {
            ed25519: self.key.sign(b"", &m),
            flags: self.flags,
            counter,
        })
    }
}

#[test]
fn a_security_key_root_requires_its_flags_counter_and_a_touch() {
    let sk = SoftSk {
        key: SigningKey::from_seed(&Secret::new([12; 32])),
        flags: SK_USER_PRESENT,
    };
    let root = sk.root_key();
    assert_eq!(RootKey::decode(&root.encode()).expect("decode"), root);
    let lic = body(sk.key.public(), "web1").sign_with(&sk).expect("sign");
    let bytes = lic.encoded().to_vec();
    assert_eq!(&bytes[bytes.len() - SK_SIG_LEN..][..6], b"ZTSG\x01\x03");
    Licence::decode_verified(&bytes, &root, 200).expect("verifies");
    assert_eq!(Licence::decode(&bytes).expect("parse").encoded(), bytes);
    // The flags and counter stripped: today's 64-byte form.
    let n = bytes.len();
    let stripped = [&bytes[..n - SK_SIG_LEN], &bytes[n - 69..n - 5]].concat();
    let e = licence_err(&stripped, &root);
    assert!(
        matches!(e, ProtoError::Auth(AuthError::WrongAlgorithm { .. })),
        "{e}"
    );
    // The counter changed: the signature covers it.
    let mut bad = bytes.clone();
    bad[n - 1] ^= 1;
    let e = licence_err(&bad, &root);
    assert!(
        matches!(e, ProtoError::Auth(AuthError::BadSignature(_))),
        "{e}"
    );
    // Not touched: refused, whatever else verifies.
    let untouched = SoftSk {
        key: SigningKey::from_seed(&Secret::new([12; 32])),
        flags: 0x04,
    };
    let lic = body(sk.key.public(), "web1")
        .sign_with(&untouched)
        .expect("sign");
    let e = licence_err(lic.encoded(), &root);
    assert!(
        matches!(e, ProtoError::Auth(AuthError::NoUserPresence(_))),
        "{e}"
    );
    assert!(e.to_string().contains("nobody touched it"), "{e}");
    // An Ed25519 pin of the same key refuses the sk form, and the sk pin
    // refuses a plain Ed25519 signature by the same key.
    let e = licence_err(&bytes, &RootKey::Ed25519(sk.key.public()));
    assert!(matches!(e, ProtoError::Auth(_)), "{e}");
    let plain = body(sk.key.public(), "web1").sign(&sk.key).expect("sign");
    assert!(Licence::decode_verified(plain.encoded(), &root, 200).is_err());
}
