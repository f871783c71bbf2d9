use super::*;
use crate::armor;
use crate::keys::TestRng;
use crate::trust::{ListUpdate, offer};

const ED25519: &str = include_str!("../testdata/userkey/ed25519.pub");
const RSA4096: &str = include_str!("../testdata/userkey/rsa4096.pub");
const ECDSA521: &str = include_str!("../testdata/userkey/ecdsa521.pub");
const RSA1024: &str = include_str!("../testdata/userkey/rsa1024.pub");

fn key(text: &str) -> KeyData {
    ssh_key::PublicKey::from_openssh(text.trim())
        .expect("key")
        .key_data()
        .clone()
}

fn ed(n: u32) -> KeyData {
    let mut b = [7u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(b))
}

fn sample(signer: &SigningKey, version: u64) -> AccessList {
    let mut principals = BTreeMap::new();
    principals.insert(
        "carol".to_owned(),
        Grant {
            keys: vec![key(ED25519), key(RSA4096)],
            servers: ["web*".to_owned(), "db?".to_owned()].into(),
            accounts: ["carol".to_owned(), "deploy".to_owned()].into(),
        },
    );
    principals.insert(
        "dave".to_owned(),
        Grant {
            keys: vec![key(ECDSA521)],
            ..Grant::default()
        },
    );
    AccessList {
        list_version: version,
        issued: 100,
        valid_until: 200,
        issuer: signer.public(),
        principals,
        delegation: None,
    }
}

/// The list as a decode returns it: each principal's keys in the order of
/// their wire encodings.
fn canonical(mut list: AccessList) -> AccessList {
    for g in list.principals.values_mut() {
        g.keys.sort_by_key(|k| key_blob(k).expect("blob"));
        g.keys.dedup();
    }
    list
}

#[test]
fn round_trip_grants_and_forgery() {
    let root = SigningKey::generate(&mut TestRng);
    let list = sample(&root, 3);
    let bytes = list.sign(&root).expect("sign");
    let back = AccessList::decode_verified(&bytes, &root.public().into()).expect("verify");
    assert_eq!(back, canonical(list.clone()));
    assert!(back.grant("carol", &key(ED25519), "web1").is_some());
    assert!(back.grant("carol", &key(RSA4096), "db1").is_some());
    assert!(back.grant("carol", &key(ED25519), "db12").is_none());
    assert!(back.grant("carol", &key(ED25519), "mail").is_none());
    assert!(back.grant("carol", &key(ECDSA521), "web1").is_none());
    assert!(back.grant("dave", &key(ECDSA521), "anything").is_some());
    assert!(back.grant("erin", &key(ECDSA521), "web1").is_none());
    assert!(!back.is_stale(199) && back.is_stale(200));
    assert_eq!(back.keys(), 3);

    let other = SigningKey::generate(&mut TestRng);
    let e = AccessList::decode_verified(&bytes, &other.public().into()).expect_err("foreign");
    assert!(
        e.to_string().contains("not issued by the trusted key"),
        "{e}"
    );
    let forged = sample(&other, 3).sign(&other).expect("sign");
    assert!(AccessList::decode_verified(&forged, &root.public().into()).is_err());
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 1;
        assert!(
            AccessList::decode_verified(&flipped, &root.public().into()).is_err(),
            "byte {i}"
        );
    }
    for cut in 0..bytes.len() {
        assert!(
            AccessList::decode_verified(&bytes[..cut], &root.public().into()).is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn a_revocation_list_signature_does_not_make_an_access_list() {
    // The same bytes signed under the revocation list's context: refused.
    let root = SigningKey::generate(&mut TestRng);
    let bytes = sample(&root, 1).sign(&root).expect("sign");
    let tbs = &bytes[..bytes.len() - 64];
    let mut other_ctx = tbs.to_vec();
    other_ctx.extend_from_slice(&root.sign(labels::CTX_CRL, tbs));
    let e = AccessList::decode_verified(&other_ctx, &root.public().into()).expect_err("ctx");
    assert!(e.to_string().contains("signature does not verify"), "{e}");
}

#[test]
fn only_a_newer_list_replaces_the_loaded_one() {
    let root = SigningKey::generate(&mut TestRng);
    let (v3, v4) = (sample(&root, 3), sample(&root, 4));
    assert_eq!(offer(Some(&v3), &v4), ListUpdate::Replace);
    assert_eq!(offer(Some(&v3), &v3), ListUpdate::Same);
    assert_eq!(
        offer(Some(&v4), &v3),
        ListUpdate::Rollback {
            loaded: 4,
            offered: 3
        }
    );
    assert_eq!(offer(None, &v3), ListUpdate::Replace);
}

#[test]
fn sign_refuses_what_decode_would() {
    let root = SigningKey::generate(&mut TestRng);
    type Spoil = Box<dyn Fn(&mut AccessList)>;
    let bad: Vec<(&str, Spoil)> = vec![
        (
            "no key",
            Box::new(|l| l.principals.get_mut("dave").expect("dave").keys.clear()),
        ),
        (
            "weak key",
            Box::new(|l| {
                l.principals.get_mut("dave").expect("dave").keys = vec![key(RSA1024)];
            }),
        ),
        (
            "bad glob",
            Box::new(|l| {
                l.principals
                    .get_mut("dave")
                    .expect("dave")
                    .servers
                    .insert("web/1".into());
            }),
        ),
        (
            "bad account",
            Box::new(|l| {
                l.principals
                    .get_mut("dave")
                    .expect("dave")
                    .accounts
                    .insert("-rf".into());
            }),
        ),
        (
            "bad principal",
            Box::new(|l| {
                let g = l.principals.remove("dave").expect("dave");
                l.principals.insert("da ve".into(), g);
            }),
        ),
        (
            "too many keys",
            Box::new(|l| {
                l.principals.get_mut("dave").expect("dave").keys = (0..33).map(ed).collect();
            }),
        ),
    ];
    for (what, spoil) in bad {
        let mut l = sample(&root, 1);
        spoil(&mut l);
        assert!(l.sign(&root).is_err(), "{what}");
    }
    let other = SigningKey::generate(&mut TestRng);
    assert!(sample(&root, 1).sign(&other).is_err(), "issuer");
}

/// Signs `body` as the root would, whatever it holds.
fn signed(root: &SigningKey, body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&root.sign(labels::CTX_ACCESS, body));
    out
}

#[test]
fn signed_but_not_canonical_or_over_the_caps_is_refused() {
    let root = SigningKey::generate(&mut TestRng);
    let header = |count: u32| {
        let mut w = Writer::new();
        w.bytes(magic::ACCESS)
            .u8(VERSION)
            .u64(1)
            .u64(2)
            .u64(3)
            .bytes(&root.public().0)
            .u32(count);
        w.into_vec()
    };
    let entry = |name: &str, blobs: &[Vec<u8>], servers: &[&str], accounts: &[&str]| {
        let mut w = Writer::new();
        w.str8(name).u8(u8::try_from(blobs.len()).expect("n"));
        for b in blobs {
            w.var16(b);
        }
        for set in [servers, accounts] {
            w.u8(u8::try_from(set.len()).expect("n"));
            for s in set {
                w.str8(s);
            }
        }
        w.into_vec()
    };
    let a = key_blob(&ed(1)).expect("blob");
    let b = key_blob(&ed(2)).expect("blob");
    let list = |count: u32, entries: &[Vec<u8>]| {
        let mut body = header(count);
        for e in entries {
            body.extend_from_slice(e);
        }
        signed(&root, &body)
    };
    // A good one first, so the cases below fail for what they change.
    let good = list(
        2,
        &[
            entry("alice", &[a.clone(), b.clone()], &["web*"], &["deploy"]),
            entry("bob", std::slice::from_ref(&a), &[], &[]),
        ],
    );
    let l = AccessList::decode_verified(&good, &root.public().into()).expect("good");
    assert_eq!(l.principals.len(), 2);
    let cases = [
        list(
            2,
            &[
                entry("bob", std::slice::from_ref(&a), &[], &[]),
                entry("alice", std::slice::from_ref(&a), &[], &[]),
            ],
        ),
        list(
            2,
            &[
                entry("bob", std::slice::from_ref(&a), &[], &[]),
                entry("bob", std::slice::from_ref(&b), &[], &[]),
            ],
        ),
        list(1, &[entry("bob", &[b.clone(), a.clone()], &[], &[])]),
        list(1, &[entry("bob", &[a.clone(), a.clone()], &[], &[])]),
        list(1, &[entry("bob", &[], &[], &[])]),
        list(
            1,
            &[entry("bob", std::slice::from_ref(&a), &["web", "db"], &[])],
        ),
        list(
            1,
            &[entry("bob", std::slice::from_ref(&a), &[], &["x", "x"])],
        ),
        list(1, &[entry("bob", std::slice::from_ref(&a), &["we b"], &[])]),
        list(1, &[entry("bob", std::slice::from_ref(&a), &[], &["-rf"])]),
        list(1, &[entry("b ob", std::slice::from_ref(&a), &[], &[])]),
        list(1, &[entry("bob", &[vec![0, 0, 0, 1, b'x']], &[], &[])]),
        list(1, &[entry("bob", &[a[..a.len() - 1].to_vec()], &[], &[])]),
        list(
            1,
            &[entry(
                "bob",
                &[key_blob(&key(RSA1024)).expect("blob")],
                &[],
                &[],
            )],
        ),
        list(
            1,
            &[entry("bob", std::slice::from_ref(&a), &[], &[]), vec![0]],
        ),
        list(2, &[entry("bob", std::slice::from_ref(&a), &[], &[])]),
        list(
            u32::MAX,
            &[entry("bob", std::slice::from_ref(&a), &[], &[])],
        ),
        list(
            1,
            &[entry(
                "bob",
                &(0..33)
                    .map(|i| key_blob(&ed(i)).expect("b"))
                    .collect::<Vec<_>>(),
                &[],
                &[],
            )],
        ),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let e = AccessList::decode_verified(bytes, &root.public().into()).expect_err("refused");
        assert!(
            !e.to_string().contains("signature") && !e.to_string().contains("not issued"),
            "case {i}: {e}"
        );
    }
    // Another format version, signed: refused as such.
    let mut v2 = header(0);
    v2[4] = 2;
    let e =
        AccessList::decode_verified(&signed(&root, &v2), &root.public().into()).expect_err("v2");
    assert!(e.to_string().contains("unsupported version 2"), "{e}");
}

#[test]
fn ten_thousand_principals_fit() {
    let root = SigningKey::generate(&mut TestRng);
    let mut list = sample(&root, 1);
    list.principals = (0..10_000u32)
        .map(|i| {
            (
                format!("user{i:05}"),
                Grant {
                    keys: vec![ed(i)],
                    servers: ["web*".to_owned()].into(),
                    accounts: BTreeSet::new(),
                },
            )
        })
        .collect();
    let bytes = list.sign(&root).expect("sign");
    assert!(bytes.len() < crate::access::MAX_PRINCIPALS * 100);
    let back = AccessList::decode_verified(&bytes, &root.public().into()).expect("verify");
    assert_eq!(back, list);
}

#[test]
fn globs() {
    for (g, n, want) in [
        ("web*", "web1", true),
        ("web*", "web", true),
        ("web*", "db1", false),
        ("*", "anything", true),
        ("db?", "db1", true),
        ("db?", "db12", false),
        ("*-prod-*", "eu-prod-web3", true),
        ("*-prod-*", "eu-staging-web3", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("web1", "web1", true),
        ("web1", "web10", false),
        ("", "", true),
        ("**", "", true),
    ] {
        assert_eq!(glob_matches(g, n), want, "{g} {n}");
    }
    // Linear enough on a hostile pattern.
    let long = "a".repeat(64);
    assert!(!glob_matches(&"*a".repeat(30), &format!("{long}b")));
    assert!(check_server_glob("web*").is_ok());
    assert!(check_server_glob("").is_err());
    assert!(check_server_glob("web 1").is_err());
    assert!(check_server_glob(&"w".repeat(65)).is_err());
}

#[test]
fn a_list_is_verified_from_its_pem() {
    let root = SigningKey::generate(&mut TestRng);
    let list = sample(&root, 2);
    let text = armor::encode(pem::ACCESS, &list.sign(&root).expect("sign")).expect("armour");
    assert_eq!(
        verify_pem(text.as_bytes(), &root.public().into(), None, 0).expect("verify"),
        canonical(list)
    );
    let crl = armor::encode(pem::CRL, b"x").expect("armour");
    let e = verify_pem(crl.as_bytes(), &root.public().into(), None, 0).expect_err("kind");
    assert!(e.to_string().starts_with("not an access list: "), "{e}");
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The bench of docs/BENCHMARKS.md: a list of 10,000 principals, each with
/// one Ed25519 key, a server glob and an account, loaded (verified and
/// parsed) from its PEM text; time and peak memory. Run alone:
/// `cargo test --release -p ztssh-proto --lib access::tests::bench_ten_thousand_principals -- --ignored --nocapture`
#[test]
#[ignore = "a bench: run it alone, as above"]
fn bench_ten_thousand_principals() {
    let root = SigningKey::generate(&mut TestRng);
    let list = AccessList {
        list_version: 1,
        issued: 0,
        valid_until: 1,
        issuer: root.public(),
        principals: (0..10_000u32)
            .map(|i| {
                (
                    format!("user{i:05}"),
                    Grant {
                        keys: vec![ed(i)],
                        servers: ["web*".to_owned()].into(),
                        accounts: ["deploy".to_owned()].into(),
                    },
                )
            })
            .collect(),
        delegation: None,
    };
    let text = armor::encode(pem::ACCESS, &list.sign(&root).expect("sign")).expect("armour");
    let before = peak_kib();
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let l = verify_pem(text.as_bytes(), &root.public().into(), None, 0).expect("verify");
        times.push(start.elapsed());
        assert_eq!(l.principals.len(), 10_000);
    }
    let grew = peak_kib().saturating_sub(before);
    times.sort();
    println!(
        "access list: 10000 principals, PEM {} KiB; load (verify+parse) min {:?} median {:?} max {:?}; peak memory grew by {grew} KiB",
        text.len() / 1024,
        times[0],
        times[2],
        times[4]
    );
}

mod delegated {
    //! Access lists a delegated key signs: `verify_access` through the chain.
    use super::*;
    use crate::cert::Serial;
    use crate::delegation::{DelegationBody, encode_pem};

    const NOW: u64 = 1_800_000_000;

    fn delegate(
        root: &SigningKey,
        key: &SigningKey,
        purpose: Purpose,
        globs: &[&str],
    ) -> Delegation {
        DelegationBody {
            serial: Serial::random(&mut TestRng),
            purpose,
            key: key.public(),
            servers: globs.iter().map(|g| (*g).to_owned()).collect(),
            not_before: NOW - 10,
            not_after: NOW + 3600,
            issuer: root.public(),
        }
        .sign(root)
        .expect("delegate")
    }

    fn signed(key: &SigningKey, version: u64, servers: &[&str]) -> Vec<u8> {
        let mut list = sample(key, version);
        for g in list.principals.values_mut() {
            g.servers = servers.iter().map(|s| (*s).to_owned()).collect();
        }
        list.sign(key).expect("sign")
    }

    fn pem_of(bytes: &[u8], d: &Delegation) -> String {
        encode_pem(pem::ACCESS, bytes, Some(d)).expect("armour")
    }

    #[test]
    fn a_list_an_access_delegation_signed_verifies_with_its_delegation() {
        let root = SigningKey::generate(&mut TestRng);
        let online = SigningKey::generate(&mut TestRng);
        let d = delegate(&root, &online, Purpose::Access, &["web*"]);
        let bytes = signed(&online, 3, &["web1", "web-*"]);
        let list = verify_pem(
            pem_of(&bytes, &d).as_bytes(),
            &root.public().into(),
            None,
            NOW,
        )
        .expect("delegated list");
        assert_eq!(list.delegation, Some(d.clone()));
        assert!(list.check_signer(None, NOW).is_ok());
        // Without its delegation it is a list under a key that is not the root.
        let alone = armor::encode(pem::ACCESS, &bytes).expect("armour");
        assert!(verify_pem(alone.as_bytes(), &root.public().into(), None, NOW).is_err());
        // The root's own lists are not bound by any glob.
        let rooted = armor::encode(pem::ACCESS, &signed(&root, 4, &[])).expect("armour");
        let l = verify_pem(rooted.as_bytes(), &root.public().into(), None, NOW).expect("root");
        assert!(l.delegation.is_none());
    }

    #[test]
    fn a_delegated_list_cannot_grant_beyond_its_globs() {
        let root = SigningKey::generate(&mut TestRng);
        let online = SigningKey::generate(&mut TestRng);
        let d = delegate(&root, &online, Purpose::Access, &["web*"]);
        for (servers, words) in [
            (&["db1"][..], "servers db1"),
            (&["web1", "db1"], "servers db1"),
            (&["w*"], "servers w*"),
            (&["*"], "servers *"),
            (&[], "every server"),
        ] {
            let bytes = signed(&online, 3, servers);
            let e = verify_pem(
                pem_of(&bytes, &d).as_bytes(),
                &root.public().into(),
                None,
                NOW,
            )
            .expect_err("beyond");
            assert!(
                matches!(e, AccessError::NotDelegated(_)),
                "{servers:?}: {e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains(words) && text.contains("web*"),
                "{servers:?}: {text}"
            );
            assert!(text.contains("ztssh-ca access"), "{text}");
        }
        // Without globs, a delegation covers every server.
        let any = delegate(&root, &online, Purpose::Access, &[]);
        let bytes = signed(&online, 3, &[]);
        assert!(
            verify_pem(
                pem_of(&bytes, &any).as_bytes(),
                &root.public().into(),
                None,
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn only_an_access_delegation_in_force_signs_a_list() {
        let root = SigningKey::generate(&mut TestRng);
        let online = SigningKey::generate(&mut TestRng);
        let bytes = signed(&online, 3, &["web1"]);
        for purpose in [Purpose::Licences, Purpose::Revocations] {
            let d = delegate(&root, &online, purpose, &[]);
            let e = verify_pem(
                pem_of(&bytes, &d).as_bytes(),
                &root.public().into(),
                None,
                NOW,
            )
            .expect_err("purpose");
            assert!(e.to_string().contains("not access"), "{purpose}: {e}");
        }
        let d = delegate(&root, &online, Purpose::Access, &[]);
        // Revoked by the list in force, by key or by serial.
        let mut by_key = Revocations::default();
        by_key.delegated_keys.insert(online.public().0);
        let mut by_serial = Revocations::default();
        by_serial.serials.insert(d.body.serial);
        for revoked in [by_key, by_serial] {
            let e = verify_pem(
                pem_of(&bytes, &d).as_bytes(),
                &root.public().into(),
                Some(&revoked),
                NOW,
            )
            .expect_err("revoked");
            let text = e.to_string();
            assert!(
                text.contains("revoked") && text.contains("ztssh-ca access"),
                "{text}"
            );
            // A list already in force stops granting once the list revoking
            // its delegation is in force.
            let l = verify_pem(
                pem_of(&bytes, &d).as_bytes(),
                &root.public().into(),
                None,
                NOW,
            )
            .expect("before the revocation");
            assert!(l.check_signer(Some(&revoked), NOW).is_err());
        }
        // Expired: refused, and one in force stops granting at the end.
        let l = verify_pem(
            pem_of(&bytes, &d).as_bytes(),
            &root.public().into(),
            None,
            NOW,
        )
        .expect("ok");
        assert!(l.check_signer(None, NOW + 3600).is_err());
        assert!(
            verify_pem(
                pem_of(&bytes, &d).as_bytes(),
                &root.public().into(),
                None,
                NOW + 3600
            )
            .is_err()
        );
        // Another root's delegation.
        let other = SigningKey::generate(&mut TestRng);
        let foreign = delegate(&other, &online, Purpose::Access, &[]);
        assert!(
            verify_pem(
                pem_of(&bytes, &foreign).as_bytes(),
                &root.public().into(),
                None,
                NOW
            )
            .is_err()
        );
    }

    #[test]
    fn a_kept_list_whose_delegation_ended_loads_withdrawn_and_bounds_the_version() {
        let root = SigningKey::generate(&mut TestRng);
        let online = SigningKey::generate(&mut TestRng);
        let d = delegate(&root, &online, Purpose::Access, &[]);
        let text = pem_of(&signed(&online, 7, &["web1"]), &d);
        let after = d.body.not_after + 86_400;
        // Fetched, it is refused; kept on this machine, it loads, grants
        // nothing, and an older root list cannot replace it.
        assert!(verify_pem(text.as_bytes(), &root.public().into(), None, after).is_err());
        let kept = verify_pem_kept(text.as_bytes(), &root.public().into(), after).expect("kept");
        assert_eq!(kept.list_version, 7);
        assert!(kept.check_signer(None, after).is_err());
        let older = AccessList::decode_verified(&signed(&root, 6, &[]), &root.public().into())
            .expect("root");
        assert!(matches!(
            crate::trust::offer(Some(&kept), &older),
            crate::trust::ListUpdate::Rollback {
                loaded: 7,
                offered: 6
            }
        ));
        // Inside its window it reads exactly as a fetched list does.
        let now = verify_pem_kept(text.as_bytes(), &root.public().into(), NOW).expect("in force");
        assert!(now.check_signer(None, NOW).is_ok());
        // Every signature still counts: another root's delegation, a list
        // the delegated key did not sign, one beyond its globs.
        let other = SigningKey::generate(&mut TestRng);
        let foreign = pem_of(
            &signed(&online, 7, &["web1"]),
            &delegate(&other, &online, Purpose::Access, &[]),
        );
        assert!(verify_pem_kept(foreign.as_bytes(), &root.public().into(), after).is_err());
        let stranger = SigningKey::generate(&mut TestRng);
        let forged = pem_of(&signed(&stranger, 7, &["web1"]), &d);
        assert!(verify_pem_kept(forged.as_bytes(), &root.public().into(), after).is_err());
        let narrow = delegate(&root, &online, Purpose::Access, &["db*"]);
        let beyond = pem_of(&signed(&online, 7, &["web1"]), &narrow);
        assert!(verify_pem_kept(beyond.as_bytes(), &root.public().into(), after).is_err());
        // A delegation that has not begun is refused as ever.
        assert!(
            verify_pem_kept(
                text.as_bytes(),
                &root.public().into(),
                d.body.not_before - 3600
            )
            .is_err()
        );
    }

    #[test]
    fn a_delegated_list_cannot_take_the_version_out_of_the_roots_reach() {
        let root = SigningKey::generate(&mut TestRng);
        let online = SigningKey::generate(&mut TestRng);
        let d = delegate(&root, &online, Purpose::Access, &[]);
        let current = AccessList::decode_verified(&signed(&root, 5, &[]), &root.public().into())
            .expect("root list");
        let offered = |v| {
            verify_pem(
                pem_of(&signed(&online, v, &[]), &d).as_bytes(),
                &root.public().into(),
                None,
                NOW,
            )
            .expect("delegated")
        };
        for v in [u64::MAX, 5 + crate::crl::MAX_DELEGATED_VERSION_JUMP + 1] {
            assert!(
                matches!(
                    offer(Some(&current), &offered(v)),
                    ListUpdate::Rollback { .. }
                ),
                "{v}"
            );
        }
        assert_eq!(offer(Some(&current), &offered(6)), ListUpdate::Replace);
        // The root's own list may go anywhere up.
        let far = AccessList::decode_verified(&signed(&root, u64::MAX, &[]), &root.public().into())
            .expect("root");
        assert_eq!(offer(Some(&current), &far), ListUpdate::Replace);
    }

    /// With no list in force (a new proxy, its first fetch) there is no
    /// version to measure a jump against: a stolen access key's list at
    /// the end of u64 loaded, and then no list the root signs, not even
    /// one after the delegation is revoked, could ever be newer.
    #[test]
    fn a_delegated_list_cannot_take_the_version_out_of_reach_where_none_is_in_force() {
        use crate::trust::MAX_DELEGATED_VERSION;
        let root = SigningKey::generate(&mut TestRng);
        let online = SigningKey::generate(&mut TestRng);
        let d = delegate(&root, &online, Purpose::Access, &[]);
        let offered = |v| {
            verify_pem(
                pem_of(&signed(&online, v, &[]), &d).as_bytes(),
                &root.public().into(),
                None,
                NOW,
            )
            .expect("delegated")
        };
        for v in [u64::MAX, MAX_DELEGATED_VERSION + 1] {
            assert!(
                matches!(
                    offer(None, &offered(v)),
                    ListUpdate::Rollback { loaded: 0, offered } if offered == v
                ),
                "{v}"
            );
            assert!(
                matches!(
                    crate::trust::offer_from(None, &offered(v), None),
                    ListUpdate::Rollback { .. }
                ),
                "{v}"
            );
        }
        assert_eq!(
            offer(None, &offered(MAX_DELEGATED_VERSION)),
            ListUpdate::Replace
        );
        // So the root can always go above a delegated list, and may itself
        // use the top versions.
        let far = AccessList::decode_verified(&signed(&root, u64::MAX, &[]), &root.public().into())
            .expect("root");
        assert_eq!(offer(None, &far), ListUpdate::Replace);
        assert_eq!(
            offer(Some(&offered(MAX_DELEGATED_VERSION)), &far),
            ListUpdate::Replace
        );
    }
}
