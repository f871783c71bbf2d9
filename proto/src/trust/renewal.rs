//! Which licence may replace the one a proxy runs under: a licence pulled
//! from `licence_url` or read from the watched `licence` file, already
//! verified ([`crate::delegation::verify_licence`]).

use crate::cert::Licence;
use crate::crl::Crl;
use crate::time::UnixTime;

/// What to do with a licence offered to replace the one in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LicenceUpdate {
    /// Newer, for this proxy's own keys and server id, not revoked, valid
    /// now: it replaces the one in force.
    Replace,
    /// The licence in force (same serial): nothing changes.
    Same,
    /// Refused, with why (logged; the licence in force stays).
    Refuse(String),
}

/// Whether `offered` replaces `current`: only a licence for the same Noise
/// key, Sub-CA key and server id (a licence for other keys is some other
/// proxy's, or a stolen key's), issued later than the one in force (an
/// older one would be a rollback), valid and not revoked by `crl` at `now`.
pub fn offer_licence(
    current: &Licence,
    offered: &Licence,
    crl: Option<&Crl>,
    now: UnixTime,
) -> LicenceUpdate {
    let (cur, new) = (&current.body, &offered.body);
    if new.serial == cur.serial {
        return LicenceUpdate::Same;
    }
    if new.noise_key != cur.noise_key || new.subca_key != cur.subca_key {
        return LicenceUpdate::Refuse(format!(
            "licence {} is for other keys than this proxy's (Noise {}, Sub-CA {}); \
             sign one for this proxy's licence-request.pem",
            new.serial,
            crate::keys::hex(&cur.noise_key),
            cur.subca_key.fingerprint()
        ));
    }
    if new.server_id != cur.server_id {
        return LicenceUpdate::Refuse(format!(
            "licence {} names server id {}, this proxy is {}",
            new.serial, new.server_id, cur.server_id
        ));
    }
    let newer = (new.not_before, new.not_after) > (cur.not_before, cur.not_after);
    if !newer {
        return LicenceUpdate::Refuse(format!(
            "licence {} (valid until {}) is not newer than the one in force ({}, until {})",
            new.serial,
            crate::time::date(new.not_after),
            cur.serial,
            crate::time::date(cur.not_after)
        ));
    }
    match super::check_licence(offered, crl, now) {
        Ok(()) => LicenceUpdate::Replace,
        Err(e) => LicenceUpdate::Refuse(e.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{LicenceBody, Serial};
    use crate::crl::Revocations;
    use crate::keys::{SigningKey, TestRng};

    fn body(root: &SigningKey, subca: &SigningKey, nb: u64, na: u64) -> LicenceBody {
        LicenceBody {
            serial: Serial::random(&mut TestRng),
            server_id: "web1".into(),
            hostnames: vec!["web1".into()],
            subca_key: subca.public(),
            noise_key: [9; 32],
            not_before: nb,
            not_after: na,
            issuer: root.public(),
        }
    }

    #[test]
    fn only_a_newer_valid_licence_for_the_same_keys_replaces_the_one_in_force() {
        let root = SigningKey::generate(&mut TestRng);
        let subca = SigningKey::generate(&mut TestRng);
        let cur = body(&root, &subca, 100, 160).sign(&root).expect("sign");
        let next = body(&root, &subca, 140, 200).sign(&root).expect("sign");
        assert_eq!(
            offer_licence(&cur, &next, None, 150),
            LicenceUpdate::Replace
        );
        assert_eq!(
            offer_licence(&cur, &cur.clone(), None, 150),
            LicenceUpdate::Same
        );
        // Older: a rollback.
        let older = body(&root, &subca, 90, 150).sign(&root).expect("sign");
        assert!(
            matches!(offer_licence(&cur, &older, None, 150), LicenceUpdate::Refuse(w) if w.contains("not newer"))
        );
        // Another proxy's keys, or another server id.
        let other = SigningKey::generate(&mut TestRng);
        let foreign = body(&root, &other, 140, 200).sign(&root).expect("sign");
        assert!(
            matches!(offer_licence(&cur, &foreign, None, 150), LicenceUpdate::Refuse(w) if w.contains("other keys"))
        );
        let mut b = body(&root, &subca, 140, 200);
        b.noise_key = [8; 32];
        let foreign = b.sign(&root).expect("sign");
        assert!(
            matches!(offer_licence(&cur, &foreign, None, 150), LicenceUpdate::Refuse(w) if w.contains("other keys"))
        );
        let mut b = body(&root, &subca, 140, 200);
        b.server_id = "db1".into();
        let renamed = b.sign(&root).expect("sign");
        assert!(
            matches!(offer_licence(&cur, &renamed, None, 150), LicenceUpdate::Refuse(w) if w.contains("db1"))
        );
        // Revoked, or not valid yet.
        let crl = Crl {
            list_version: 1,
            issued: 0,
            next_update: 1000,
            issuer: root.public(),
            revoked: Revocations {
                serials: [next.body.serial].into_iter().collect(),
                ..Default::default()
            },
            delegation: None,
        };
        assert!(
            matches!(offer_licence(&cur, &next, Some(&crl), 150), LicenceUpdate::Refuse(w) if w.contains("revoked"))
        );
        let later = body(&root, &subca, 10_000, 20_000)
            .sign(&root)
            .expect("sign");
        assert!(matches!(
            offer_licence(&cur, &later, None, 150),
            LicenceUpdate::Refuse(_)
        ));
    }
}
