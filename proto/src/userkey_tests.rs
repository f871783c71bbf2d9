//! Known-answer tests: keys and SSHSIGs made by OpenSSH's own ssh-keygen
//! (`ssh-keygen -Y sign -n handshake-v1@ztssh`, in testdata/userkey), a
//! SHA-1 `ssh-rsa` signature made by openssl over the same signed data,
//! and security key signatures made here the way PROTOCOL.u2f specifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::Signer;
use sha2::Digest;

use super::*;
use crate::labels::{SSHSIG_NAMESPACE_HANDSHAKE, SSHSIG_NAMESPACE_RENEW};

const MSG: &[u8] = include_bytes!("testdata/userkey/msg");

fn key(text: &str) -> ssh_key::PublicKey {
    ssh_key::PublicKey::from_openssh(text.trim()).unwrap()
}

fn sig_blob(pem: &str) -> Vec<u8> {
    SshSig::from_pem(pem).unwrap().encode_vec().unwrap()
}

macro_rules! vector {
    ($name:literal) => {
        (
            key(include_str!(concat!("testdata/userkey/", $name, ".pub"))),
            sig_blob(include_str!(concat!("testdata/userkey/", $name, ".sig"))),
        )
    };
}

#[test]
fn openssh_signatures_of_every_accepted_key_verify_in_both_wire_forms() {
    for (name, (k, blob)) in [
        ("ed25519", vector!("ed25519")),
        ("ecdsa256", vector!("ecdsa256")),
        ("ecdsa384", vector!("ecdsa384")),
        ("ecdsa521", vector!("ecdsa521")),
        ("rsa2048", vector!("rsa2048")),
        ("rsa4096", vector!("rsa4096")),
    ] {
        let v = verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &blob)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.sk(), None);
        // The bare form: the signature alone stands for the SSHSIG.
        let sig = SshSig::decode(&mut blob.as_slice()).unwrap();
        let bare = encode_sig(&sig, 0).unwrap();
        assert!(
            !bare.starts_with(b"SSHSIG") && bare.len() < blob.len(),
            "{name}"
        );
        verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &bare)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            encode_sig(&sig, blob.len()).unwrap(),
            blob,
            "{name} fits: SSHSIG"
        );
        // Another message, namespace or key fails.
        assert_eq!(
            verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, b"other", &blob),
            Err(UserKeyError::BadSignature),
            "{name}"
        );
        assert!(
            verify(&k, SSHSIG_NAMESPACE_RENEW, MSG, &blob).is_err(),
            "{name}"
        );
        assert_eq!(
            verify(&k, SSHSIG_NAMESPACE_RENEW, MSG, &bare),
            Err(UserKeyError::BadSignature),
            "{name}"
        );
        let (other, _) = vector!("ed25519");
        if name != "ed25519" {
            assert!(verify(&other, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &blob).is_err());
            assert!(verify(&other, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &bare).is_err());
        }
    }
}

#[test]
fn every_accepted_user_signature_fits_the_wire() {
    // RSA-4096 is the largest: its bare signature fits a RENEW, its key and
    // bare signature fit message 3.
    let (k, blob) = vector!("rsa4096");
    let sig = SshSig::decode(&mut blob.as_slice()).unwrap();
    let renew = encode_sig(&sig, crate::control::MAX_SSHSIG).unwrap();
    assert!(renew.len() <= crate::control::MAX_SSHSIG);
    let hs = encode_sig(&sig, crate::handshake::MAX_SSH_BLOB).unwrap();
    assert!(hs.len() <= crate::handshake::MAX_SSH_BLOB);
    assert!(k.to_bytes().unwrap().len() <= crate::handshake::MAX_SSH_BLOB);
}

#[test]
fn rsa_keys_outside_2048_to_4096_bits_are_refused_with_their_size() {
    let (k, blob) = vector!("rsa1024");
    let e = verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &blob).unwrap_err();
    assert_eq!(e, UserKeyError::RsaSize { bits: 1024 });
    assert_eq!(
        e.to_string(),
        "RSA key of 1024 bits refused: ztssh accepts RSA keys of 2048 to 4096 bits"
    );
    assert_eq!(
        check_key(k.key_data()),
        Err(UserKeyError::RsaSize { bits: 1024 })
    );
    let (k, blob) = vector!("rsa8192");
    assert_eq!(
        verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &blob),
        Err(UserKeyError::RsaSize { bits: 8192 })
    );
    assert_eq!(check_key(vector!("rsa2048").0.key_data()), Ok(()));
    assert_eq!(check_key(vector!("rsa4096").0.key_data()), Ok(()));
}

/// An RSA public key whose odd modulus is exactly `bits` long.
fn rsa_of_bits(bits: usize) -> KeyData {
    let mut n = vec![0xA5u8; bits.div_ceil(8)];
    let top = (bits - 1) % 8;
    // The top bit is bit `top` of the first byte; nothing above it.
    n[0] = (1u8 << top) | (0xA5 & ((1u8 << top) - 1));
    *n.last_mut().unwrap() |= 1;
    let n = ssh_key::Mpint::from_positive_bytes(&n);
    let e = ssh_key::Mpint::from_positive_bytes(&[1, 0, 1]);
    KeyData::Rsa(ssh_key::public::RsaPublicKey::new(e, n).unwrap())
}

#[test]
fn rsa_size_is_counted_in_bits_not_bytes() {
    // ssh-key counts whole bytes: a 2047-bit modulus reads as 2048 there.
    for bits in [2041, 2046, 2047] {
        let k = rsa_of_bits(bits);
        let KeyData::Rsa(rsa) = &k else {
            unreachable!()
        };
        assert_eq!(rsa.key_size(), 2048);
        assert_eq!(rsa_bits(rsa), u32::try_from(bits).unwrap());
        assert_eq!(
            check_key(&k),
            Err(UserKeyError::RsaSize {
                bits: u32::try_from(bits).unwrap()
            })
        );
    }
    for bits in [2048, 3071, 4096] {
        let k = rsa_of_bits(bits);
        let KeyData::Rsa(rsa) = &k else {
            unreachable!()
        };
        assert_eq!(rsa_bits(rsa), u32::try_from(bits).unwrap());
        assert_eq!(check_key(&k), Ok(()), "{bits} bits");
    }
    // Above the ceiling by one bit (4097 bits is 513 bytes).
    assert_eq!(
        check_key(&rsa_of_bits(4097)),
        Err(UserKeyError::RsaSize { bits: 4097 })
    );
    let pk = ssh_key::PublicKey::new(rsa_of_bits(2047), "odd");
    assert!(
        describe(&pk).contains("(RSA-2047, odd)"),
        "{}",
        describe(&pk)
    );
}

#[test]
fn security_keys_need_an_ssh_application() {
    let pk = ssh_key::public::Ed25519PublicKey([7; 32]);
    let ok = KeyData::SkEd25519(ssh_key::public::SkEd25519::new(pk, "ssh:"));
    assert_eq!(check_key(&ok), Ok(()));
    let named = KeyData::SkEd25519(ssh_key::public::SkEd25519::new(pk, "ssh:work"));
    assert_eq!(check_key(&named), Ok(()));
    let web = KeyData::SkEd25519(ssh_key::public::SkEd25519::new(pk, "https://example.com"));
    let e = check_key(&web).unwrap_err();
    assert_eq!(e, UserKeyError::SkApplication("https://example.com".into()));
    assert!(e.to_string().contains("beginning with \"ssh:\""), "{e}");
    // The ECDSA kind is held to the same rule.
    let ec = vector!("ecdsa256").0;
    let ssh_key::public::KeyData::Ecdsa(ssh_key::public::EcdsaPublicKey::NistP256(point)) =
        ec.key_data().clone()
    else {
        panic!("a P-256 key")
    };
    let sk = ssh_key::public::SkEcdsaSha2NistP256::new(point, "webauthn");
    assert_eq!(
        check_key(&KeyData::SkEcdsaSha2NistP256(sk)),
        Err(UserKeyError::SkApplication("webauthn".into()))
    );
    // verify refuses such a key before any signature work.
    let soft = SoftSk {
        key: ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        application: "web:".into(),
    };
    let blob = soft
        .sign(SSHSIG_NAMESPACE_HANDSHAKE, MSG, 0x01, 1)
        .encode_vec()
        .unwrap();
    assert_eq!(
        verify(&soft.public(), SSHSIG_NAMESPACE_HANDSHAKE, MSG, &blob),
        Err(UserKeyError::SkApplication("web:".into()))
    );
}

#[test]
fn sha1_rsa_signatures_are_refused_before_any_crypto() {
    let (k, _) = vector!("rsa2048");
    let hex = include_str!("testdata/userkey/rsa2048-sha1.sig.hex").trim();
    let bare: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let e = verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &bare).unwrap_err();
    assert_eq!(e, UserKeyError::Sha1);
    assert_eq!(
        e.to_string(),
        "ssh-rsa (SHA-1) signature refused: RSA keys must sign with rsa-sha2-256 or rsa-sha2-512"
    );
    // The same in an SSHSIG.
    let sig = decode_sig(k.key_data(), SSHSIG_NAMESPACE_HANDSHAKE, &bare).unwrap();
    let whole = sig.encode_vec().unwrap();
    assert_eq!(
        verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &whole),
        Err(UserKeyError::Sha1)
    );
}

#[test]
fn malformed_and_mismatched_signatures_are_refused() {
    let (k, blob) = vector!("ecdsa256");
    let mut long = blob.clone();
    long.push(0);
    assert!(matches!(
        verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &long),
        Err(UserKeyError::Malformed(_))
    ));
    for cut in [0, 1, 6, blob.len() / 2, blob.len() - 1] {
        assert!(verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &blob[..cut]).is_err());
    }
    // An Ed25519 signature presented for an ECDSA key.
    let (_, ed_blob) = vector!("ed25519");
    let ed = SshSig::decode(&mut ed_blob.as_slice()).unwrap();
    let bare = ed.signature().encode_vec().unwrap();
    assert_eq!(
        verify(&k, SSHSIG_NAMESPACE_HANDSHAKE, MSG, &bare),
        Err(UserKeyError::AlgorithmMismatch {
            sig: "ssh-ed25519".into(),
            key: "ecdsa-sha2-nistp256".into()
        })
    );
}

/// A software authenticator: an Ed25519 key under an application string,
/// signing the way PROTOCOL.u2f says, with the flags and counter asked for.
pub(crate) struct SoftSk {
    key: ed25519_dalek::SigningKey,
    application: String,
}

impl SoftSk {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
            application: "ssh:".into(),
        }
    }

    pub(crate) fn public(&self) -> ssh_key::PublicKey {
        let pk = ssh_key::public::Ed25519PublicKey(self.key.verifying_key().to_bytes());
        let sk = ssh_key::public::SkEd25519::new(pk, self.application.clone());
        ssh_key::PublicKey::new(KeyData::SkEd25519(sk), "soft-sk")
    }

    /// The SSHSIG over `msg` in `namespace` with these flags and counter.
    pub(crate) fn sign(&self, namespace: &str, msg: &[u8], flags: u8, counter: u32) -> SshSig {
        let data = SshSig::signed_data(namespace, HashAlg::Sha512, msg).unwrap();
        let mut signed = Vec::new();
        signed.extend_from_slice(&sha2::Sha256::digest(self.application.as_bytes()));
        signed.push(flags);
        signed.extend_from_slice(&counter.to_be_bytes());
        signed.extend_from_slice(&sha2::Sha256::digest(&data));
        let mut raw = self.key.sign(&signed).to_bytes().to_vec();
        raw.push(flags);
        raw.extend_from_slice(&counter.to_be_bytes());
        let sig = ssh_key::Signature::new(Algorithm::SkEd25519, raw).unwrap();
        SshSig::new(
            self.public().key_data().clone(),
            namespace,
            HashAlg::Sha512,
            sig,
        )
        .unwrap()
    }
}

#[test]
fn security_key_signatures_carry_verified_flags_and_counter() {
    let sk = SoftSk::new([9; 32]);
    let k = sk.public();
    let ns = SSHSIG_NAMESPACE_HANDSHAKE;
    for (flags, counter) in [(0x05, 7), (0x01, 0), (0x00, u32::MAX)] {
        let blob = sk.sign(ns, MSG, flags, counter).encode_vec().unwrap();
        let v = verify(&k, ns, MSG, &blob).unwrap();
        assert_eq!(v.sk(), Some(SkAssertion { flags, counter }));
    }
    let a = |flags| SkAssertion { flags, counter: 1 };
    assert_eq!(a(0x05).check(true, true), Ok(()));
    assert_eq!(a(0x01).check(true, false), Ok(()));
    assert_eq!(a(0x01).check(true, true), Err(UserKeyError::NoVerification));
    assert_eq!(a(0x04).check(true, true), Err(UserKeyError::NoPresence));
    assert_eq!(a(0x00).check(false, false), Ok(()));
    // The flags are signed: a presence bit set after signing fails.
    let mut blob = sk.sign(ns, MSG, 0x00, 3).encode_vec().unwrap();
    let at = blob.len() - 5;
    blob[at] = 0x01;
    assert_eq!(verify(&k, ns, MSG, &blob), Err(UserKeyError::BadSignature));
    // So is the counter.
    let mut blob = sk.sign(ns, MSG, 0x01, 3).encode_vec().unwrap();
    let last = blob.len() - 1;
    blob[last] = 4;
    assert_eq!(verify(&k, ns, MSG, &blob), Err(UserKeyError::BadSignature));
}

#[test]
fn keys_are_described_for_people() {
    let (k, _) = vector!("rsa2048");
    let d = describe(&k);
    assert!(
        d.starts_with("SHA256:") && d.ends_with(" (RSA-2048, rsa2048@test)"),
        "{d}"
    );
    let (k, _) = vector!("ecdsa384");
    assert!(
        describe(&k).ends_with(" (ECDSA-P384, ecdsa384@test)"),
        "{}",
        describe(&k)
    );
    assert!(describe(&SoftSk::new([1; 32]).public()).ends_with("(ED25519-SK, soft-sk)"));
}
