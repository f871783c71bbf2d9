//! The OpenSSH user certificate verifier (`trust::usercert::verify`). The
//! input is a certificate's signed part (the seed: one `ssh-keygen -s`
//! wrote, without its signature), signed here with the trusted CA's
//! stand-in signature, or, with the first byte odd, a whole certificate
//! as it came. Invariants of an accepted certificate: it re-encodes to
//! exactly the input, its CA is the trusted one, it certifies the key that
//! signed in and names the principal asked for, it is valid now, every
//! critical option is one ztssh knows, and its live check agrees; and
//! changing any one byte of it (the one the input picks) refuses it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ztssh_proto::trust::usercert::{KNOWN_CRITICAL_OPTIONS, UserCas, standin_sign, verify};

const NOW: u64 = 1_800_000_000;

struct Fixture {
    cas: UserCas,
    ca: ssh_key::PublicKey,
    user: ssh_key::PublicKey,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca_text = include_str!("../../src/testdata/usercert/ca_ed25519.pub");
        Fixture {
            cas: UserCas::parse(ca_text).expect("ca"),
            ca: ssh_key::PublicKey::from_openssh(ca_text.trim()).expect("ca key"),
            user: ssh_key::PublicKey::from_openssh(
                include_str!("../../src/testdata/usercert/user.pub").trim(),
            )
            .expect("user key"),
        }
    })
}

fn check(bytes: &[u8], principal: &str, flip: usize) {
    let f = fixture();
    let Ok(v) = verify(&f.cas, bytes, &f.user, principal, NOW) else {
        return;
    };
    assert_eq!(
        v.encoded(),
        bytes,
        "accepted bytes are not what was verified"
    );
    assert_eq!(v.ca_key(), f.ca.key_data());
    assert_eq!(v.user_key(), f.user.key_data());
    assert!(v.principals().iter().any(|p| p == principal));
    assert!(NOW < v.valid_before());
    assert!(v.check(&f.cas, None, NOW).is_ok());
    assert!(v.check(&UserCas::default(), None, NOW).is_err());
    let mut bad = bytes.to_vec();
    let at = flip % bad.len();
    bad[at] ^= 0x80;
    assert!(
        verify(&f.cas, &bad, &f.user, principal, NOW).is_err(),
        "byte {at} changed and still accepted"
    );
    let cert = ssh_key::Certificate::from_bytes(bytes).expect("accepted, so it decodes");
    assert!(
        cert.critical_options()
            .keys()
            .all(|k| KNOWN_CRITICAL_OPTIONS.contains(&k.as_str())),
        "an unknown critical option accepted"
    );
    assert!(
        v.source_address().is_none_or(|n| !n.is_empty()),
        "an empty source-address list"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let principal = ["alice", "deploy", "bob", ""][usize::from(mode >> 1) % 4];
    let flip = usize::from(mode) * 7 + rest.len();
    if mode & 1 == 1 {
        check(rest, principal, flip);
    } else if let Some(signed) = standin_sign(rest, fixture().ca.key_data()) {
        check(&signed, principal, flip);
    }
});
