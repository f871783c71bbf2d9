//! The KRL reader against hand-written KRLs (the `ssh-keygen` oracle tests
//! are in `tests/tests/krl_reader.rs`, the round trip in the `krl` fuzz
//! target).

use ssh_key::encoding::Encode;
use ssh_key::public::{Ed25519PublicKey, KeyData};

use super::write::{self, KrlWriter};
use super::*;

fn key(seed: u8) -> KeyData {
    KeyData::Ed25519(Ed25519PublicKey([seed; 32]))
}

fn blob(k: &KeyData) -> Vec<u8> {
    k.encode_vec().expect("encode")
}

fn sha256(k: &KeyData) -> [u8; 32] {
    write::sha256_of(&blob(k))
}

fn sha1(k: &KeyData) -> [u8; 20] {
    write::sha1_of(&blob(k))
}

#[test]
fn the_header_is_read_and_an_empty_krl_revokes_nothing() {
    let bytes = KrlWriter::new(42, 1_700_000_000, b"hello").finish();
    let krl = Krl::decode(&bytes).expect("decode");
    assert_eq!(
        (krl.krl_version, krl.generated, krl.comment.as_str()),
        (42, 1_700_000_000, "hello")
    );
    assert_eq!(krl.revokes_key(&key(1)), None);
    assert_eq!(krl.revokes_cert(&key(2), 5, "id", &key(1)), None);
    assert_eq!(krl.counts(), (0, 0, 0, 0));
}

#[test]
fn plain_keys_are_revoked_by_blob_and_by_either_fingerprint() {
    let bytes = KrlWriter::new(1, 0, b"")
        .keys(&[blob(&key(1))])
        .sha1(&[sha1(&key(2))])
        .sha256(&[sha256(&key(3))])
        .finish();
    let krl = Krl::decode(&bytes).expect("decode");
    assert_eq!(krl.revokes_key(&key(1)), Some(KrlHit::Key));
    assert_eq!(krl.revokes_key(&key(2)), Some(KrlHit::Sha1));
    assert_eq!(krl.revokes_key(&key(3)), Some(KrlHit::Sha256));
    assert_eq!(krl.revokes_key(&key(4)), None);
    // A certificate whose key is revoked is revoked, under any CA.
    assert_eq!(
        krl.revokes_cert(&key(9), 7, "x", &key(3)),
        Some(KrlHit::Sha256)
    );
    // So is every certificate of a CA whose key is revoked as a key.
    assert_eq!(
        krl.revokes_cert(&key(1), 7, "x", &key(5)),
        Some(KrlHit::CaKey)
    );
}

#[test]
fn certificates_are_revoked_by_serial_range_bitmap_and_key_id_under_their_ca() {
    let ca = key(10);
    let bytes = KrlWriter::new(1, 0, b"")
        .certs(
            &blob(&ca),
            &[
                write::serial_list(&[5, 3, 5]),
                write::serial_range(100, 200),
                write::serial_range(150, 250),
                write::serial_bitmap(1000, &[0, 1, 2, 9, 15]),
                write::key_ids(&[b"alice@laptop"]),
            ],
        )
        .finish();
    let krl = Krl::decode(&bytes).expect("decode");
    let k = key(1);
    let revoked = |serial, id: &str| krl.revokes_cert(&ca, serial, id, &k);
    for s in [3, 5, 100, 199, 250, 1000, 1001, 1002, 1009, 1015] {
        assert_eq!(revoked(s, "bob"), Some(KrlHit::Serial), "{s}");
    }
    for s in [1, 4, 6, 99, 251, 999, 1003, 1008, 1010, 1016, u64::MAX] {
        assert_eq!(revoked(s, "bob"), None, "{s}");
    }
    assert_eq!(revoked(77, "alice@laptop"), Some(KrlHit::KeyId));
    // Serial 0 (no serial) is never revoked by serial; its key id still is.
    assert_eq!(revoked(0, "bob"), None);
    assert_eq!(revoked(0, "alice@laptop"), Some(KrlHit::KeyId));
    // Another CA's certificates are not touched.
    assert_eq!(krl.revokes_cert(&key(11), 5, "alice@laptop", &k), None);
    // Overlapping ranges merged, bitmap runs as ranges: 3, 5, 100-250,
    // 1000-1002, 1009, 1015.
    assert_eq!(krl.counts(), (1, 6, 1, 0));
}

#[test]
fn a_section_for_any_ca_revokes_under_every_ca_and_sections_of_one_ca_add_up() {
    let bytes = KrlWriter::new(1, 0, b"")
        .certs(
            b"",
            &[write::key_ids(&[b"mallory"]), write::serial_list(&[9])],
        )
        .certs(&blob(&key(10)), &[write::serial_list(&[1])])
        .certs(&blob(&key(10)), &[write::serial_list(&[2])])
        .finish();
    let krl = Krl::decode(&bytes).expect("decode");
    let k = key(1);
    for ca in [key(10), key(11)] {
        assert_eq!(
            krl.revokes_cert(&ca, 4, "mallory", &k),
            Some(KrlHit::KeyIdAnyCa)
        );
        assert_eq!(krl.revokes_cert(&ca, 9, "x", &k), Some(KrlHit::SerialAnyCa));
    }
    assert_eq!(krl.revokes_cert(&key(10), 2, "x", &k), Some(KrlHit::Serial));
    assert_eq!(krl.revokes_cert(&key(10), 1, "x", &k), Some(KrlHit::Serial));
    assert_eq!(krl.revokes_cert(&key(11), 1, "x", &k), None);
}

#[test]
fn what_openssh_refuses_is_refused() {
    let ca = blob(&key(10));
    let refused = |w: &mut KrlWriter| Krl::decode(&w.finish()).expect_err("refused");
    let base = || KrlWriter::new(1, 0, b"");
    let cases: Vec<(KrlError, &str)> = vec![
        (
            refused(base().certs(&ca, &[write::serial_list(&[0])])),
            "serial 0",
        ),
        (
            refused(base().certs(&ca, &[write::serial_range(0, 5)])),
            "0-5",
        ),
        (
            refused(base().certs(&ca, &[write::serial_range(6, 5)])),
            "6-5",
        ),
        (
            refused(base().certs(&ca, &[write::serial_bitmap(0, &[0])])),
            "serial 0",
        ),
        (
            refused(base().certs(&ca, &[write::serial_bitmap(u64::MAX, &[1])])),
            "wraps",
        ),
        (
            refused(base().certs(&ca, &[(0x24, vec![])])),
            "subsection type 0x24",
        ),
        (
            refused(base().certs(&ca, &[write::key_ids(&[b"a\0b"])])),
            "NUL",
        ),
        (refused(base().section(6, b"")), "section type 6"),
        (
            refused(base().section(3, &[0, 0, 0, 1, 7])),
            "SHA-1 fingerprint of 1 bytes",
        ),
        (refused(base().section(4, b"")), "signature"),
        (
            refused(base().section(255, &write::extension(b"x@y", true, b""))),
            "critical",
        ),
        (
            refused(base().certs(&ca, &[(0x39, write::extension(b"x@y", true, b""))])),
            "critical",
        ),
        (refused(base().certs(b"nonsense", &[])), "CA key"),
    ];
    for (e, want) in cases {
        assert!(e.to_string().contains(want), "{e} lacks {want}");
    }
    // A bitmap with its top bit set is a negative mpint.
    let mut neg = 5u64.to_be_bytes().to_vec();
    neg.extend_from_slice(&[0, 0, 0, 1, 0x80]);
    let e = Krl::decode(&base().certs(&ca, &[(0x22, neg)]).finish()).expect_err("negative");
    assert!(e.to_string().contains("negative"), "{e}");
    // Non-critical extensions are skipped, in either place.
    let ok = base()
        .section(255, &write::extension(b"x@y", false, b"zz"))
        .certs(&ca, &[(0x39, write::extension(b"x@y", false, b""))])
        .finish();
    assert!(Krl::decode(&ok).is_ok());
}

#[test]
fn the_header_must_be_a_krl_of_format_1() {
    assert_eq!(Krl::decode(b"SSHKRL"), Err(KrlError::NotKrl));
    assert_eq!(Krl::decode(b"-----BEGIN"), Err(KrlError::NotKrl));
    let mut v2 = KrlWriter::new(1, 0, b"").finish();
    v2[11] = 2;
    assert!(matches!(Krl::decode(&v2), Err(KrlError::Invalid(_))));
    let big = vec![0u8; MAX_KRL_BYTES + 1];
    assert_eq!(
        Krl::decode(&big),
        Err(KrlError::TooLarge(MAX_KRL_BYTES + 1))
    );
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let ca = blob(&key(10));
    let bytes = KrlWriter::new(3, 4, b"c")
        .certs(
            &ca,
            &[
                write::serial_list(&[5]),
                write::serial_bitmap(9, &[3]),
                write::key_ids(&[b"k"]),
            ],
        )
        .keys(&[blob(&key(1))])
        .sha1(&[sha1(&key(2))])
        .sha256(&[sha256(&key(3))])
        .finish();
    assert!(Krl::decode(&bytes).is_ok());
    for n in 0..bytes.len() {
        let cut = bytes.get(..n).expect("prefix");
        // A cut between sections is a valid, shorter KRL; anywhere else an error.
        let _ = Krl::decode(cut);
    }
    // A serial list that is not a whole number of serials.
    let e = Krl::decode(
        &KrlWriter::new(1, 0, b"")
            .certs(&ca, &[(0x20, vec![0; 9])])
            .finish(),
    );
    assert!(matches!(e, Err(KrlError::Malformed(_))), "{e:?}");
}

#[test]
fn a_bitmap_that_expands_past_the_cap_is_refused() {
    // Every other bit set: 8,192 entries per bitmap; enough bitmaps pass the cap.
    let alternate: Vec<u16> = (0..16_384).step_by(2).collect();
    let sub = write::serial_bitmap(1, &alternate);
    let per = MAX_SERIAL_ENTRIES / alternate.len() + 1;
    let subs = vec![sub; per];
    let bytes = KrlWriter::new(1, 0, b"")
        .certs(&blob(&key(10)), &subs)
        .finish();
    let e = Krl::decode(&bytes).expect_err("too many");
    assert!(e.to_string().contains("serial entries"), "{e}");
}

#[test]
fn only_a_newer_krl_replaces_the_one_in_force() {
    let ca = blob(&key(10));
    let krl = |version, serial| {
        Krl::decode(
            &KrlWriter::new(version, version * 10, b"")
                .certs(&ca, &[write::serial_list(&[serial])])
                .finish(),
        )
        .expect("krl")
    };
    assert_eq!(offer(None, &krl(0, 1)), KrlUpdate::Replace);
    assert_eq!(offer(Some(&krl(3, 1)), &krl(4, 1)), KrlUpdate::Replace);
    assert_eq!(
        offer(Some(&krl(3, 1)), &krl(2, 9)),
        KrlUpdate::Rollback {
            loaded: 3,
            offered: 2
        }
    );
    // Regenerated with the same content: nothing to do.
    let mut again = krl(3, 1);
    again.generated += 5;
    assert_eq!(offer(Some(&krl(3, 1)), &again), KrlUpdate::Same);
    // Another content under the same version: refused.
    assert_eq!(
        offer(Some(&krl(3, 1)), &krl(3, 2)),
        KrlUpdate::Changed { version: 3 }
    );
}
