//! Every refusal of the chain root → delegation → object.

use super::*;
use crate::cert::LicenceBody;
use crate::end::EndKind;
use crate::keys::{NoiseKeypair, TestRng};
use crate::trust::{ListUpdate, check_licence, offer, verify_pem};

const NOW: u64 = 1_800_000_000;

fn delegation(
    root: &SigningKey,
    key: &SigningKey,
    purpose: Purpose,
    servers: &[&str],
) -> Delegation {
    delegation_at(root, key, purpose, servers, NOW - 10, NOW + 3600)
}

fn delegation_at(
    root: &SigningKey,
    key: &SigningKey,
    purpose: Purpose,
    servers: &[&str],
    nb: u64,
    na: u64,
) -> Delegation {
    DelegationBody {
        serial: Serial::random(&mut TestRng),
        purpose,
        key: key.public(),
        servers: servers.iter().map(|s| (*s).to_owned()).collect(),
        not_before: nb,
        not_after: na,
        issuer: root.public(),
    }
    .sign(root)
    .expect("sign delegation")
}

fn licence(signer: &SigningKey, server_id: &str) -> Licence {
    LicenceBody {
        serial: Serial::random(&mut TestRng),
        server_id: server_id.into(),
        hostnames: vec![server_id.into()],
        subca_key: SigningKey::generate(&mut TestRng).public(),
        noise_key: NoiseKeypair::generate(&mut TestRng).public(),
        not_before: NOW - 10,
        not_after: NOW + 60,
        issuer: signer.public(),
    }
    .sign(signer)
    .expect("sign licence")
}

fn list(signer: &SigningKey, version: u64, revoked: Revocations) -> Vec<u8> {
    Crl {
        list_version: version,
        issued: NOW,
        next_update: NOW + 600,
        issuer: signer.public(),
        revoked,
        delegation: None,
    }
    .sign(signer)
    .expect("sign list")
}

fn refused_because(e: &ProtoError, words: &str) -> bool {
    e.to_string().contains(words)
}

#[test]
fn a_root_signed_licence_verifies_as_before_and_a_delegated_one_with_its_delegation() {
    let root = SigningKey::generate(&mut TestRng);
    let lic = licence(&root, "web1");
    let v = verify_licence(&root.public().into(), lic.encoded(), None, None, NOW).expect("root");
    assert!(v.delegation().is_none());
    assert_eq!(v.licence().body, lic.body);

    let online = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &online, Purpose::Licences, &["web*"]);
    let lic = licence(&online, "web1");
    let v = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(d.encoded()),
        None,
        NOW,
    )
    .expect("delegated");
    assert_eq!(v.delegation(), Some(&d));
    // Without its delegation, the delegated key is just another issuer.
    let e =
        verify_licence(&root.public().into(), lic.encoded(), None, None, NOW).expect_err("alone");
    assert!(refused_because(&e, "not issued by the trusted key"), "{e}");
    // The licence's own window still holds.
    let e = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(d.encoded()),
        None,
        NOW + 61,
    )
    .expect_err("expired licence");
    assert!(refused_because(&e, "server licence expired"), "{e}");
}

#[test]
fn an_undelegated_signer_is_refused() {
    let root = SigningKey::generate(&mut TestRng);
    let other_root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    // A delegation from another root.
    let d = delegation(&other_root, &online, Purpose::Licences, &[]);
    let lic = licence(&online, "web1");
    let e = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(d.encoded()),
        None,
        NOW,
    )
    .expect_err("foreign root");
    assert!(
        refused_because(&e, "delegation was not issued by the trusted key"),
        "{e}"
    );
    // A delegated key cannot delegate: its "delegation" names it as issuer.
    let d1 = delegation(&root, &online, Purpose::Licences, &[]);
    let second = SigningKey::generate(&mut TestRng);
    let d2 = delegation(&online, &second, Purpose::Licences, &[]);
    let lic = licence(&second, "web1");
    assert!(
        verify_licence(
            &root.public().into(),
            lic.encoded(),
            Some(d2.encoded()),
            None,
            NOW
        )
        .is_err()
    );
    // A genuine delegation beside a licence another key signed.
    let e = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(d1.encoded()),
        None,
        NOW,
    )
    .expect_err("other signer");
    assert!(
        refused_because(&e, "server licence was not issued by the trusted key"),
        "{e}"
    );
    // A forged delegation: one bit of its key changed.
    let mut forged = d1.encoded().to_vec();
    forged[4 + 1 + 16 + 1] ^= 1;
    let e = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(&forged),
        None,
        NOW,
    )
    .expect_err("forged");
    assert!(
        refused_because(&e, "delegation: signature does not verify"),
        "{e}"
    );
}

#[test]
fn an_expired_or_not_yet_valid_delegation_is_refused() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let lic = licence(&online, "web1");
    let old = delegation_at(&root, &online, Purpose::Licences, &[], NOW - 100, NOW - 1);
    let e = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(old.encoded()),
        None,
        NOW,
    )
    .expect_err("expired");
    assert!(refused_because(&e, "delegation expired"), "{e}");
    let later = delegation_at(
        &root,
        &online,
        Purpose::Licences,
        &[],
        NOW + 3600,
        NOW + 7200,
    );
    let e = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(later.encoded()),
        None,
        NOW,
    )
    .expect_err("not yet");
    assert!(refused_because(&e, "delegation is not valid"), "{e}");
}

#[test]
fn a_delegation_signs_only_its_purpose() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    // A host CA's certification (purpose host-ca) signs neither.
    for purpose in [Purpose::Access, Purpose::Revocations, Purpose::HostCa] {
        let d = delegation(&root, &online, purpose, &[]);
        let lic = licence(&online, "web1");
        let e = verify_licence(
            &root.public().into(),
            lic.encoded(),
            Some(d.encoded()),
            None,
            NOW,
        )
        .expect_err("wrong purpose");
        assert!(refused_because(&e, "not licences"), "{purpose}: {e}");
    }
    for purpose in [Purpose::Access, Purpose::Licences, Purpose::HostCa] {
        let d = delegation(&root, &online, purpose, &[]);
        let bytes = list(&online, 5, Revocations::default());
        let e =
            verify_list(&root.public().into(), &bytes, Some(d.encoded()), NOW).expect_err("wrong");
        assert!(refused_because(&e, "not revocations"), "{purpose}: {e}");
    }
    let d = delegation(&root, &online, Purpose::Revocations, &[]);
    let bytes = list(&online, 5, Revocations::default());
    let crl =
        verify_list(&root.public().into(), &bytes, Some(d.encoded()), NOW).expect("revocations");
    assert_eq!(crl.delegation, Some(d));
    // A revocations delegation names no servers (a list is for every
    // server; licences and access delegations may, since issue 21's
    // access delegations).
    let body = DelegationBody {
        servers: vec!["web*".into()],
        ..delegation(&root, &online, Purpose::Revocations, &[]).body
    };
    assert!(body.sign(&root).is_err());
}

#[test]
fn a_key_delegated_for_web_servers_cannot_license_db1() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &online, Purpose::Licences, &["web*", "edge-?"]);
    for ok in ["web1", "web", "webserver.eu", "edge-1"] {
        let lic = licence(&online, ok);
        assert!(
            verify_licence(
                &root.public().into(),
                lic.encoded(),
                Some(d.encoded()),
                None,
                NOW
            )
            .is_ok(),
            "{ok}"
        );
    }
    for no in ["db1", "aweb1", "edge-12", "edge-"] {
        let lic = licence(&online, no);
        let e = verify_licence(
            &root.public().into(),
            lic.encoded(),
            Some(d.encoded()),
            None,
            NOW,
        )
        .expect_err(no);
        assert!(refused_because(&e, &format!("not {no}")), "{no}: {e}");
    }
}

#[test]
fn globs_match_as_documented() {
    for (g, n, m) in [
        ("*", "", true),
        ("*", "x", true),
        ("web*", "web", true),
        ("w*1", "web1", true),
        ("w*1", "web12", false),
        ("*b*", "web1", true),
        ("?", "", false),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXbY", false),
        ("web1", "WEB1", false),
    ] {
        assert_eq!(glob_matches(g, n), m, "{g} {n}");
    }
    // Linear even for the worst patterns.
    let name = "a".repeat(64);
    assert!(!glob_matches("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", &name));
    assert!(check_glob("web*").is_ok());
    assert!(check_glob("web[1]").is_err() && check_glob("").is_err());
}

#[test]
fn a_revoked_delegation_is_refused_by_key_or_serial() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &online, Purpose::Licences, &[]);
    let lic = licence(&online, "web1");
    let mut by_key = Revocations::default();
    by_key.delegated_keys.insert(online.public().0);
    let mut by_serial = Revocations::default();
    by_serial.serials.insert(d.body.serial);
    for (how, r) in [("key", &by_key), ("serial", &by_serial)] {
        let e = verify_licence(
            &root.public().into(),
            lic.encoded(),
            Some(d.encoded()),
            Some(r),
            NOW,
        )
        .expect_err(how);
        assert!(
            refused_because(
                &e,
                &format!(
                    "its {} is revoked",
                    if how == "key" {
                        "delegated key"
                    } else {
                        "serial"
                    }
                )
            ),
            "{how}: {e}"
        );
    }
    // A licence in use ends when a list revoking its delegation lands.
    let v = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(d.encoded()),
        None,
        NOW,
    )
    .expect("before");
    let crl =
        Crl::decode_verified(&list(&root, 2, by_key.clone()), &root.public().into()).expect("list");
    let e = check_licence(v.licence(), Some(&crl), NOW).expect_err("revoked");
    assert_eq!(e.kind, EndKind::LicenceRevoked);
    assert!(e.reason.contains("delegation"), "{e}");
    // ... and when its delegation ends, even if the licence would go on.
    let short = delegation_at(&root, &online, Purpose::Licences, &[], NOW - 10, NOW + 30);
    let v = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(short.encoded()),
        None,
        NOW,
    )
    .expect("short");
    assert!(check_licence(v.licence(), None, NOW + 29).is_ok());
    let e = check_licence(v.licence(), None, NOW + 30).expect_err("delegation over");
    assert_eq!(e.kind, EndKind::LicenceExpired);
    assert_eq!(v.licence().usable_until(), NOW + 30);
    // The root's own licences are untouched by delegation revocations.
    let rl = verify_licence(
        &root.public().into(),
        licence(&root, "web1").encoded(),
        None,
        Some(&by_key),
        NOW,
    )
    .expect("root licence");
    assert!(check_licence(rl.licence(), Some(&crl), NOW).is_ok());
}

#[test]
fn a_delegated_list_cannot_revoke_its_signer_out_nor_drop_an_entry() {
    let root = SigningKey::generate(&mut TestRng);
    let oncall = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &oncall, Purpose::Revocations, &[]);
    // The root's list in force bans mallory and revokes the on-call key.
    let mut in_force = Revocations::default();
    in_force.principals.insert("mallory".into());
    let current = Crl::decode_verified(&list(&root, 5, in_force.clone()), &root.public().into())
        .expect("root list");
    // On-call adds a ban: accepted, replaces.
    let mut more = in_force.clone();
    more.principals.insert("eve".into());
    let pem = encode_pem(pem::CRL, &list(&oncall, 6, more.clone()), Some(&d)).expect("armour");
    let offered = verify_pem(pem.as_bytes(), &root.public().into(), NOW).expect("on-call list");
    assert_eq!(offer(Some(&current), &offered), ListUpdate::Replace);
    // On-call drops mallory's ban: refused as a rollback.
    let mut fewer = Revocations::default();
    fewer.principals.insert("eve".into());
    let pem = encode_pem(pem::CRL, &list(&oncall, 7, fewer), Some(&d)).expect("armour");
    let offered = verify_pem(pem.as_bytes(), &root.public().into(), NOW).expect("verifies");
    assert!(matches!(
        offer(Some(&current), &offered),
        ListUpdate::Rollback { .. }
    ));
    // The root may drop it.
    let root_list = Crl::decode_verified(
        &list(&root, 7, Revocations::default()),
        &root.public().into(),
    )
    .expect("root");
    assert_eq!(offer(Some(&current), &root_list), ListUpdate::Replace);
    // Once the root revokes the on-call delegation, its lists are refused:
    // one that keeps the revocation names its own signer, one that drops
    // it is not a superset of the list in force.
    let mut revoking = in_force.clone();
    revoking.delegated_keys.insert(oncall.public().0);
    let current = Crl::decode_verified(&list(&root, 8, revoking.clone()), &root.public().into())
        .expect("root revokes on-call");
    let mut keeps = revoking.clone();
    keeps.principals.insert("eve".into());
    let pem = encode_pem(pem::CRL, &list(&oncall, 9, keeps), Some(&d)).expect("armour");
    let e = verify_pem(pem.as_bytes(), &root.public().into(), NOW).expect_err("names itself");
    assert!(e.to_string().contains("own signer is revoked"), "{e}");
    let pem = encode_pem(pem::CRL, &list(&oncall, 9, more), Some(&d)).expect("armour");
    let offered = verify_pem(pem.as_bytes(), &root.public().into(), NOW).expect("verifies alone");
    assert!(matches!(
        offer(Some(&current), &offered),
        ListUpdate::Rollback { .. }
    ));
    // Revoking by serial works the same way.
    let mut by_serial = Revocations::default();
    by_serial.serials.insert(d.body.serial);
    let pem = encode_pem(pem::CRL, &list(&oncall, 9, by_serial), Some(&d)).expect("armour");
    assert!(verify_pem(pem.as_bytes(), &root.public().into(), NOW).is_err());
    // Naming the root among revoked delegations revokes nothing the root
    // signs: the root is not a delegation.
    let mut root_named = Revocations::default();
    root_named.delegated_keys.insert(root.public().0);
    let pem =
        encode_pem(pem::CRL, &list(&oncall, 10, root_named.clone()), Some(&d)).expect("armour");
    let crl = verify_pem(pem.as_bytes(), &root.public().into(), NOW).expect("verifies");
    let rl = licence(&root, "web1");
    let rl = verify_licence(
        &root.public().into(),
        rl.encoded(),
        None,
        Some(&root_named),
        NOW,
    )
    .expect("root licence");
    assert!(check_licence(rl.licence(), Some(&crl), NOW).is_ok());
    let root_list = list(&root, 11, Revocations::default());
    assert!(verify_list(&root.public().into(), &root_list, None, NOW).is_ok());
}

#[test]
fn pem_files_carry_a_delegation_beside_the_object_and_nothing_else() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &online, Purpose::Licences, &[]);
    let lic = licence(&online, "web1");
    let text = encode_pem(pem::LICENCE, lic.encoded(), Some(&d)).expect("armour");
    let (obj, del) = split_pem(text.as_bytes(), pem::LICENCE).expect("split");
    assert_eq!(obj, lic.encoded());
    assert_eq!(del.as_deref(), Some(d.encoded()));
    // Delegation first works too; old single-block files are unchanged.
    let swapped = format!(
        "{}{}",
        armor::encode(pem::DELEGATION, d.encoded()).expect("armour"),
        armor::encode(pem::LICENCE, lic.encoded()).expect("armour")
    );
    assert!(split_pem(swapped.as_bytes(), pem::LICENCE).is_ok());
    let single = armor::encode(pem::LICENCE, lic.encoded()).expect("armour");
    assert_eq!(
        split_pem(single.as_bytes(), pem::LICENCE).expect("single"),
        (lic.encoded().to_vec(), None)
    );
    // Two licences, two delegations, a third block, a foreign label, no
    // object: refused.
    let twice = format!("{single}{single}");
    let two_d = format!(
        "{text}{}",
        armor::encode(pem::DELEGATION, d.encoded()).expect("armour")
    );
    let foreign = format!("{single}{}", armor::encode(pem::CRL, b"x").expect("armour"));
    let only_d = armor::encode(pem::DELEGATION, d.encoded()).expect("armour");
    for bad in [twice, two_d, foreign, only_d, format!("{text}trailing")] {
        assert!(split_pem(bad.as_bytes(), pem::LICENCE).is_err(), "{bad}");
    }
}

#[test]
fn a_delegation_round_trips_and_garbage_is_refused() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &online, Purpose::Licences, &["web*"]);
    assert_eq!(Delegation::decode(d.encoded()).expect("decode"), d);
    assert_eq!(
        Delegation::decode_verified(d.encoded(), &root.public().into()).expect("verify"),
        d
    );
    for cut in 0..d.encoded().len() {
        assert!(Delegation::decode_verified(&d.encoded()[..cut], &root.public().into()).is_err());
        assert!(Delegation::decode(&d.encoded()[..cut]).is_err());
    }
    // A body the parser refuses (too many globs), behind a random
    // signature: the signature's error is reported, the parser never ran.
    let mut many = d.encoded().to_vec();
    many[4 + 1 + 16 + 1 + 32] = 200;
    let n = many.len();
    many[n - 64..].copy_from_slice(&crate::keys::random_bytes::<64>(&mut TestRng));
    let e = Delegation::decode_verified(&many, &root.public().into()).expect_err("forged");
    assert!(refused_because(&e, "signature does not verify"), "{e}");
    // The root cannot be delegated to itself; an inverted window is refused.
    let body = DelegationBody {
        key: root.public(),
        ..d.body.clone()
    };
    assert!(body.sign(&root).is_err());
    let body = DelegationBody {
        not_after: d.body.not_before,
        ..d.body.clone()
    };
    assert!(body.sign(&root).is_err());
    let too_long = vec![0; MAX_DELEGATION_LEN + 1];
    assert!(Delegation::decode_verified(&too_long, &root.public().into()).is_err());
}

#[test]
fn a_delegated_list_cannot_move_the_version_out_of_the_roots_reach() {
    let root = SigningKey::generate(&mut TestRng);
    let oncall = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &oncall, Purpose::Revocations, &[]);
    let mut in_force = Revocations::default();
    in_force.principals.insert("mallory".into());
    let current = Crl::decode_verified(&list(&root, 5, in_force.clone()), &root.public().into())
        .expect("root list");
    let offered = |version| {
        let pem = encode_pem(
            pem::CRL,
            &list(&oncall, version, in_force.clone()),
            Some(&d),
        )
        .expect("armour");
        verify_pem(pem.as_bytes(), &root.public().into(), NOW).expect("on-call list")
    };
    // A stolen on-call key keeps every entry but takes the version to the
    // end of u64: had it loaded, no list the root signs could ever be newer,
    // so the one revoking the stolen key would never load.
    for version in [u64::MAX, 5 + crate::crl::MAX_DELEGATED_VERSION_JUMP + 1] {
        assert!(
            matches!(
                offer(Some(&current), &offered(version)),
                ListUpdate::Rollback { .. }
            ),
            "{version}"
        );
    }
    // Within the CA tool's own bound on its counter, it replaces.
    for version in [6, 5 + crate::crl::MAX_DELEGATED_VERSION_JUMP] {
        assert_eq!(
            offer(Some(&current), &offered(version)),
            ListUpdate::Replace,
            "{version}"
        );
    }
    // The root's own lists are not bound (only the root removes entries
    // or moves the version as it likes).
    let root_far = Crl::decode_verified(&list(&root, u64::MAX, in_force), &root.public().into())
        .expect("root");
    assert_eq!(offer(Some(&current), &root_far), ListUpdate::Replace);
}

/// The same bound where no list is in force yet (a sidecar or proxy
/// starting from nothing): the top versions stay the root's.
#[test]
fn a_delegated_list_cannot_move_the_version_out_of_reach_where_none_is_in_force() {
    let root = SigningKey::generate(&mut TestRng);
    let oncall = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &oncall, Purpose::Revocations, &[]);
    let offered = |version| {
        let pem = encode_pem(
            pem::CRL,
            &list(&oncall, version, Revocations::default()),
            Some(&d),
        )
        .expect("armour");
        verify_pem(pem.as_bytes(), &root.public().into(), NOW).expect("on-call list")
    };
    assert!(matches!(
        offer(None, &offered(u64::MAX)),
        ListUpdate::Rollback { loaded: 0, .. }
    ));
    assert_eq!(
        offer(None, &offered(crate::trust::MAX_DELEGATED_VERSION)),
        ListUpdate::Replace
    );
    let root_far = Crl::decode_verified(
        &list(&root, u64::MAX, Revocations::default()),
        &root.public().into(),
    )
    .expect("root");
    assert_eq!(offer(None, &root_far), ListUpdate::Replace);
}

#[test]
fn a_key_delegated_for_web_servers_cannot_license_db1_by_host_name() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &online, Purpose::Licences, &["web*"]);
    // A server id the globs match, and the host name clients dial for db1.
    let mut body = licence(&online, "web9").body;
    body.hostnames = vec!["db1.example.com".into()];
    let lic = body.sign(&online).expect("sign licence");
    // What the sidecar does with message 2: verify the chain, then check
    // the host it dials is covered.
    let verdict = verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(d.encoded()),
        None,
        NOW,
    )
    .map(|v| v.licence().covers("db1.example.com"));
    assert!(
        !matches!(verdict, Ok(true)),
        "a web* delegation licensed a key for the host db1.example.com"
    );
}

#[test]
fn a_delegated_list_that_overreaches_is_never_taken_for_one_merely_behind() {
    let root = SigningKey::generate(&mut TestRng);
    let oncall = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &oncall, Purpose::Revocations, &[]);
    let mut in_force = Revocations::default();
    in_force.principals.insert("mallory".into());
    let current = Crl::decode_verified(&list(&root, 5, in_force.clone()), &root.public().into())
        .expect("root list");
    // An unban (mallory left out) and a version out of the root's reach,
    // each from a source that served version 5 before or nothing yet: both
    // refused loudly as a rollback, not quietly as a lagging source.
    let offered = |version, revoked| {
        let pem = encode_pem(pem::CRL, &list(&oncall, version, revoked), Some(&d)).expect("armour");
        verify_pem(pem.as_bytes(), &root.public().into(), NOW).expect("on-call list")
    };
    for crl in [
        offered(6, Revocations::default()),
        offered(u64::MAX, in_force.clone()),
    ] {
        for newest in [None, Some(5), Some(6)] {
            assert!(
                matches!(
                    crate::trust::offer_from(Some(&current), &crl, newest),
                    ListUpdate::Rollback { .. }
                ),
                "{} {newest:?}",
                crl.list_version
            );
        }
    }
    // A list merely older than the one in force is still only behind.
    let older = offered(4, in_force);
    assert!(matches!(
        crate::trust::offer_from(Some(&current), &older, Some(4)),
        ListUpdate::Behind { .. }
    ));
}

/// A licence signed under `d`'s key for `server_id` and `hosts`, through
/// the chain: `Ok` if every verifier would take it.
fn chain_with_names(
    root: &SigningKey,
    online: &SigningKey,
    d: &Delegation,
    server_id: &str,
    hosts: &[&str],
) -> Result<LicenceVerified, ProtoError> {
    let mut body = licence(online, server_id).body;
    body.hostnames = hosts.iter().map(|h| (*h).to_owned()).collect();
    let lic = body.sign(online).expect("sign licence");
    verify_licence(
        &root.public().into(),
        lic.encoded(),
        Some(d.encoded()),
        None,
        NOW,
    )
}

#[test]
fn a_delegated_licence_names_only_hosts_its_globs_cover() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &online, Purpose::Licences, &["web*", "10.0.0.*"]);
    let ok = |id: &str, hosts: &[&str]| chain_with_names(&root, &online, &d, id, hosts).is_ok();
    // Within: the id and every name, in any case, with or without the
    // trailing dot of an absolute name, and IPv4 addresses in the
    // canonical dotted quad the 10.0.0.* glob names.
    assert!(ok(
        "web7",
        &["web7", "WEB7.example.com", "web7.example.com.", "10.0.0.7"]
    ));
    // Every name must be within: one outside is enough to refuse.
    for hosts in [
        &["web7", "db1"][..],
        &["db1.example.com."],
        &["DB1"],
        &["127.0.0.1"],
        &["localhost"],
        // The same address as 10.0.0.7 spelled as inet_aton reads it:
        // refused, not matched against the glob.
        &["10.0.0.07"],
        &["10.0.7"],
        &["0x0a.0.0.7"],
        &["167772167"],
    ] {
        let e = chain_with_names(&root, &online, &d, "web7", hosts).expect_err("outside");
        assert!(refused_because(&e, "not the host name"), "{hosts:?}: {e}");
    }
    // A glob that matches the id but not a name, and the reverse.
    let e = chain_with_names(&root, &online, &d, "web7", &["db7"]).expect_err("name");
    assert!(refused_because(&e, "not the host name db7"), "{e}");
    let e = chain_with_names(&root, &online, &d, "db7", &["web7"]).expect_err("id");
    assert!(refused_because(&e, "not db7"), "{e}");
    // The server id is matched as it is: no case folding.
    let e = chain_with_names(&root, &online, &d, "WEB7", &["web7"]).expect_err("id case");
    assert!(refused_because(&e, "not WEB7"), "{e}");
    // A trailing dot in the glob names the same host as without.
    let dotted = delegation(
        &root,
        &online,
        Purpose::Licences,
        &["web1", "web1.example.com."],
    );
    for host in ["web1.example.com", "WEB1.example.com."] {
        assert!(
            chain_with_names(&root, &online, &dotted, "web1", &[host]).is_ok(),
            "{host}"
        );
    }
    // A delegation without globs covers any name, as before.
    let any = delegation(&root, &online, Purpose::Licences, &[]);
    assert!(chain_with_names(&root, &online, &any, "db1", &["db1", "127.1"]).is_ok());
    // The root's own licences are not bound by any glob.
    let mut body = licence(&root, "db1").body;
    body.hostnames = vec!["127.1".into()];
    let lic = body.sign(&root).expect("root licence");
    assert!(verify_licence(&root.public().into(), lic.encoded(), None, None, NOW).is_ok());
}

#[test]
fn the_names_check_is_the_one_the_ca_tool_asks_before_signing() {
    let root = SigningKey::generate(&mut TestRng);
    let online = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &online, Purpose::Licences, &["web*"]);
    let names = |h: &[&str]| h.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(d.check_licence_names("web1", &names(&["web1"])).is_ok());
    let why = d
        .check_licence_names("web1", &names(&["web1", "127.0.0.1"]))
        .expect_err("localhost address");
    assert!(why.contains("not the host name 127.0.0.1"), "{why}");
    let why = d
        .check_licence_names("web1", &names(&["2130706433"]))
        .expect_err("odd spelling");
    assert!(why.contains("dotted quad"), "{why}");
}

#[test]
fn glob_within_is_sound() {
    for (inner, outer) in [
        ("web1", "web*"),
        ("web-*", "web*"),
        ("web??", "web*"),
        ("web?", "web?"),
        ("web1", "web?"),
        ("*", "*"),
        ("a*b", "a*"),
    ] {
        assert!(glob_within(inner, outer), "{inner} within {outer}");
    }
    for (inner, outer) in [
        ("w*", "web*"),
        ("web*", "web?"),
        ("web?", "web1"),
        ("*", "web*"),
        ("db1", "web*"),
        ("web*", "web"),
        ("we?1", "web1"),
    ] {
        assert!(!glob_within(inner, outer), "{inner} not within {outer}");
    }
    // Brute force on a small alphabet: whenever glob_within says yes,
    // every name the inner glob matches, the outer one matches too.
    let alphabet = ["a", "b", "*", "?"];
    let mut globs = vec![String::new()];
    for _ in 0..3 {
        let next: Vec<String> = globs
            .iter()
            .flat_map(|g| alphabet.iter().map(move |c| format!("{g}{c}")))
            .collect();
        globs.extend(next);
    }
    globs.sort();
    globs.dedup();
    let mut names = vec![String::new()];
    for _ in 0..4 {
        let next: Vec<String> = names
            .iter()
            .flat_map(|n| ["a", "b"].iter().map(move |c| format!("{n}{c}")))
            .collect();
        names.extend(next);
    }
    names.sort();
    names.dedup();
    for inner in &globs {
        for outer in &globs {
            if glob_within(inner, outer) {
                for n in &names {
                    assert!(
                        !glob_matches(inner, n) || glob_matches(outer, n),
                        "{inner} within {outer}, yet {n} escapes"
                    );
                }
            }
        }
    }
}

#[test]
fn a_revocations_delegation_names_no_servers_but_an_access_one_may() {
    let root = SigningKey::generate(&mut TestRng);
    let key = SigningKey::generate(&mut TestRng);
    let body = |purpose| DelegationBody {
        serial: Serial::random(&mut TestRng),
        purpose,
        key: key.public(),
        servers: vec!["web*".into()],
        not_before: NOW,
        not_after: NOW + 60,
        issuer: root.public(),
    };
    assert!(body(Purpose::Revocations).sign(&root).is_err());
    assert!(body(Purpose::Access).sign(&root).is_ok());
    assert!(body(Purpose::Licences).sign(&root).is_ok());
}

#[test]
fn a_host_ca_certification_round_trips_under_the_root() {
    let root = SigningKey::generate(&mut TestRng);
    let host_ca = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &host_ca, Purpose::HostCa, &[]);
    let back = Delegation::decode_verified(d.encoded(), &root.public().into()).expect("verifies");
    assert_eq!(back.body.purpose, Purpose::HostCa);
    assert_eq!(back.body.key, host_ca.public());
    assert_eq!(Purpose::parse("host-ca"), Some(Purpose::HostCa));
}

/// Issue 21 review: a revocation list an on-call key signed, kept on the
/// proxy, still loads after its delegation ends (a restart must not forget
/// a ban), with every signature checked; fetched, it is refused.
#[test]
fn a_kept_revocation_list_outlives_its_delegation_but_not_its_signatures() {
    let root = SigningKey::generate(&mut TestRng);
    let oncall = SigningKey::generate(&mut TestRng);
    let d = delegation(&root, &oncall, Purpose::Revocations, &[]);
    let mut banned = Revocations::default();
    banned.principals.insert("eve".into());
    let pem = encode_pem(pem::CRL, &list(&oncall, 6, banned.clone()), Some(&d)).expect("armour");
    let after = NOW + 7200;
    assert!(verify_pem(pem.as_bytes(), &root.public().into(), after).is_err());
    let kept =
        crate::trust::verify_pem_kept(pem.as_bytes(), &root.public().into(), after).expect("kept");
    assert_eq!((kept.list_version, kept.revoked.principals.len()), (6, 1));
    // Another root's delegation, or a list the on-call key did not sign.
    let other = SigningKey::generate(&mut TestRng);
    let foreign = delegation(&other, &oncall, Purpose::Revocations, &[]);
    let pem2 =
        encode_pem(pem::CRL, &list(&oncall, 6, banned.clone()), Some(&foreign)).expect("armour");
    assert!(crate::trust::verify_pem_kept(pem2.as_bytes(), &root.public().into(), after).is_err());
    let stranger = SigningKey::generate(&mut TestRng);
    let pem3 = encode_pem(pem::CRL, &list(&stranger, 6, banned), Some(&d)).expect("armour");
    assert!(crate::trust::verify_pem_kept(pem3.as_bytes(), &root.public().into(), after).is_err());
}
