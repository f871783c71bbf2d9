//! The KRL reader against hand-written KRLs (the `ssh-keygen` oracle tests
//! are in `tests/tests/krl_reader.rs`, the round trip in the `krl` fuzz
//! target).

use ssh_key::encoding::Encode;
use ssh_key::public::{Ed25519PublicKey, KeyData};
use ssh_key::{Fingerprint, HashAlg};

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
    // Another content under the same version that drops serial 1: refused.
    match offer(Some(&krl(3, 1)), &krl(3, 2)) {
        KrlUpdate::Changed { version, unrevokes } => {
            assert_eq!(version, 3);
            assert_eq!(unrevokes.count, 1);
            assert!(
                unrevokes.first.starts_with("serial 1 under CA SHA256:"),
                "{unrevokes}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A KRL of every kind of entry, under CA `key(10)` and under any CA.
fn full(version: u64, extra: &[KrlSection]) -> Krl {
    let ca = blob(&key(10));
    let mut w = KrlWriter::new(version, 0, b"");
    w.keys(&[blob(&key(1))])
        .sha1(&[sha1(&key(2))])
        .sha256(&[sha256(&key(3))])
        .certs(
            &ca,
            &[
                write::serial_list(&[5, 7]),
                write::serial_range(100, 200),
                write::key_ids(&[b"alice"]),
            ],
        )
        .certs(b"", &[write::serial_list(&[9]), write::key_ids(&[b"bob"])]);
    for e in extra {
        match e {
            KrlSection::Keys(k) => w.keys(k),
            KrlSection::Sha256(h) => w.sha256(h),
            KrlSection::Certs(ca, subs) => w.certs(ca, subs),
        };
    }
    Krl::decode(&w.finish()).expect("krl")
}

enum KrlSection {
    Keys(Vec<Vec<u8>>),
    Sha256(Vec<[u8; 32]>),
    Certs(Vec<u8>, Vec<write::Sub>),
}

#[test]
fn a_same_version_krl_that_only_adds_replaces_the_one_in_force() {
    let old = full(4, &[]);
    let ca = blob(&key(10));
    // ssh-keygen -k -u: each kind of entry added, the version kept.
    for extra in [
        KrlSection::Keys(vec![blob(&key(20))]),
        KrlSection::Sha256(vec![sha256(&key(21))]),
        KrlSection::Certs(ca.clone(), vec![write::serial_list(&[6])]),
        KrlSection::Certs(ca.clone(), vec![write::serial_range(201, 300)]),
        KrlSection::Certs(ca.clone(), vec![write::key_ids(&[b"carol"])]),
        KrlSection::Certs(blob(&key(11)), vec![write::serial_list(&[5])]),
        KrlSection::Certs(Vec::new(), vec![write::key_ids(&[b"dave"])]),
    ] {
        let grown = full(4, &[extra]);
        assert_eq!(offer(Some(&old), &grown), KrlUpdate::Grown);
        assert!(offer(Some(&old), &grown).replaces());
        // And the old one, replayed over it, is refused.
        let back = offer(Some(&grown), &old);
        assert!(
            matches!(back, KrlUpdate::Changed { version: 4, .. }),
            "{back:?}"
        );
    }
    // Covered another way: a key listed by blob now by its SHA-256, a
    // range split into serials and ranges, a CA's serials by revoking the
    // CA key, a CA's key id under any CA.
    let moved = |subs: Vec<write::Sub>,
                 keys: Vec<Vec<u8>>,
                 hashes: Vec<[u8; 32]>,
                 anyca: Vec<write::Sub>| {
        let mut w = KrlWriter::new(4, 0, b"");
        w.sha1(&[sha1(&key(2))]).sha256(&[sha256(&key(3))]);
        if !keys.is_empty() {
            w.keys(&keys);
        }
        if !hashes.is_empty() {
            w.sha256(&hashes);
        }
        if !subs.is_empty() {
            w.certs(&ca, &subs);
        }
        w.certs(b"", &[write::serial_list(&[9]), write::key_ids(&[b"bob"])]);
        if !anyca.is_empty() {
            w.certs(b"", &anyca);
        }
        Krl::decode(&w.finish()).expect("krl")
    };
    let by_hash = moved(
        vec![
            write::serial_list(&[5, 7, 100, 150]),
            write::serial_range(101, 149),
            write::serial_range(151, 200),
        ],
        Vec::new(),
        vec![sha256(&key(1))],
        vec![write::key_ids(&[b"alice"])],
    );
    assert_eq!(offer(Some(&old), &by_hash), KrlUpdate::Grown);
    let by_ca_key = moved(
        Vec::new(),
        vec![blob(&key(1)), ca.clone()],
        Vec::new(),
        Vec::new(),
    );
    assert_eq!(offer(Some(&old), &by_ca_key), KrlUpdate::Grown);
}

#[test]
fn a_same_version_krl_that_drops_anything_is_refused_naming_it() {
    let old = full(4, &[]);
    let ca = blob(&key(10));
    let dropped = |keys: bool, sha1s: bool, subs: Vec<write::Sub>, anyca: Vec<write::Sub>| {
        let mut w = KrlWriter::new(4, 0, b"");
        w.sha256(&[sha256(&key(3))]);
        if keys {
            w.keys(&[blob(&key(1))]);
        }
        if sha1s {
            w.sha1(&[sha1(&key(2))]);
        }
        if !subs.is_empty() {
            w.certs(&ca, &subs);
        }
        if !anyca.is_empty() {
            w.certs(b"", &anyca);
        }
        Krl::decode(&w.finish()).expect("krl")
    };
    let all_subs = || {
        vec![
            write::serial_list(&[5, 7]),
            write::serial_range(100, 200),
            write::key_ids(&[b"alice"]),
        ]
    };
    let all_any = || vec![write::serial_list(&[9]), write::key_ids(&[b"bob"])];
    let fp = |k: &KeyData| Fingerprint::new(HashAlg::Sha256, k).to_string();
    let cases: Vec<(Krl, String)> = vec![
        (
            dropped(false, true, all_subs(), all_any()),
            format!("the key {}", fp(&key(1))),
        ),
        (
            dropped(true, false, all_subs(), all_any()),
            "the key with SHA-1 fingerprint".into(),
        ),
        (
            dropped(
                true,
                true,
                vec![
                    write::serial_list(&[5]),
                    write::serial_range(100, 200),
                    write::key_ids(&[b"alice"]),
                ],
                all_any(),
            ),
            format!("serial 7 under CA {}", fp(&key(10))),
        ),
        (
            dropped(
                true,
                true,
                vec![
                    write::serial_list(&[5, 7]),
                    write::serial_range(100, 199),
                    write::key_ids(&[b"alice"]),
                ],
                all_any(),
            ),
            "serials 100-200 under CA".into(),
        ),
        (
            dropped(
                true,
                true,
                vec![write::serial_list(&[5, 7]), write::serial_range(100, 200)],
                all_any(),
            ),
            "key id \"alice\" under CA".into(),
        ),
        (
            dropped(true, true, all_subs(), vec![write::serial_list(&[9])]),
            "key id \"bob\" under any CA".into(),
        ),
        // A serial under any CA is not kept by revoking it under one CA.
        (
            dropped(
                true,
                true,
                vec![
                    write::serial_list(&[5, 7, 9]),
                    write::serial_range(100, 200),
                    write::key_ids(&[b"alice", b"bob"]),
                ],
                vec![write::key_ids(&[b"bob"])],
            ),
            "serial 9 under any CA".into(),
        ),
    ];
    for (new, expect) in cases {
        match offer(Some(&old), &new) {
            KrlUpdate::Changed { version, unrevokes } => {
                assert_eq!(version, 4);
                assert!(
                    unrevokes.first.starts_with(&expect),
                    "{unrevokes} / {expect}"
                );
            }
            other => panic!("{expect}: {other:?}"),
        }
    }
    // An empty KRL of the same version un-revokes all nine entries.
    let empty = Krl::decode(&KrlWriter::new(4, 0, b"").finish()).expect("krl");
    match offer(Some(&old), &empty) {
        KrlUpdate::Changed { unrevokes, .. } => {
            assert_eq!(unrevokes.count, 9, "{unrevokes}");
            assert!(
                unrevokes.to_string().ends_with("(and 8 more)"),
                "{unrevokes}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A same-version KRL is compared with the one in force in time linear in
/// both: the any-CA scope's serials used to be merged again for every CA
/// scope, so 200 CA scopes beside a 1 MB any-CA scope of bitmaps held the
/// reload task (which applies every revocation) for 53 s, and 100,000 CA
/// scopes (8 MB) for hours. The bound below only says it ended; it takes
/// milliseconds, against about nine minutes before.
#[test]
fn a_same_version_krl_with_many_ca_scopes_beside_a_large_any_ca_scope_is_compared_at_once() {
    let cas: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            blob(&KeyData::Ed25519(Ed25519PublicKey(k)))
        })
        .collect();
    let (mut old, mut new) = (KrlWriter::new(5, 0, b""), KrlWriter::new(5, 0, b""));
    for ca in &cas {
        old.certs(ca, &[write::serial_list(&[1])]);
        new.certs(ca, &[write::serial_list(&[1])]);
    }
    // 2048-byte bitmaps of every other bit: 8,192 single serials each,
    // 3.9 million in all, under any CA.
    let bits: Vec<u16> = (0..16_384u16).step_by(2).collect();
    let subs: Vec<_> = (0..480u64)
        .map(|j| write::serial_bitmap(10 + j * 20_000, &bits))
        .collect();
    new.certs(&[], &subs);
    let old = Krl::decode(&old.finish()).expect("old");
    let new = Krl::decode(&new.finish()).expect("new");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(offer(Some(&old), &new));
    });
    let update = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the comparison did not end within 120 s");
    assert_eq!(update, KrlUpdate::Grown);
}

/// The serials a KRL revokes under a CA may be covered by the CA's own
/// scope and the any-CA scope in turn: a range of the KRL in force is kept
/// when the two together hold all of it, and a one-serial gap is named.
#[test]
fn a_range_kept_half_under_its_ca_and_half_under_any_ca_is_kept() {
    let ca = blob(&key(7));
    let old = KrlWriter::new(3, 0, b"")
        .certs(&ca, &[write::serial_range(10, 60)])
        .finish();
    let both = KrlWriter::new(3, 0, b"")
        .certs(
            &ca,
            &[
                write::serial_range(10, 19),
                write::serial_range(30, 39),
                write::serial_range(50, 60),
            ],
        )
        .certs(
            &[],
            &[write::serial_range(20, 29), write::serial_range(40, 49)],
        )
        .finish();
    let gap = KrlWriter::new(3, 0, b"")
        .certs(
            &ca,
            &[
                write::serial_range(10, 19),
                write::serial_range(30, 39),
                write::serial_range(50, 60),
            ],
        )
        .certs(
            &[],
            &[write::serial_range(20, 29), write::serial_range(40, 48)],
        )
        .finish();
    let old = Krl::decode(&old).expect("old");
    assert_eq!(
        offer(Some(&old), &Krl::decode(&both).expect("both")),
        KrlUpdate::Grown
    );
    match offer(Some(&old), &Krl::decode(&gap).expect("gap")) {
        KrlUpdate::Changed { unrevokes, .. } => {
            assert!(
                unrevokes.first.starts_with("serials 10-60 under CA "),
                "{unrevokes}"
            );
        }
        other => panic!("{other:?}"),
    }
}
