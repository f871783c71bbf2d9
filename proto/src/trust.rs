//! The trust rules, written once: what a revocation list withdraws, when a
//! licence may be used, and which list may replace the loaded one. The
//! proxy applies them at the handshake, at every proof and renewal, and on
//! every reload; a sidecar can apply the same rules to a server.

use crate::cert::{Licence, Serial};
use crate::crl::Crl;
use crate::end::{EndKind, Ended};
use crate::time::{CLOCK_SKEW, UnixTime, human};

/// Refuses a banned principal or a revoked certificate serial (none yet
/// while the session is being authorized).
pub fn check_session(
    crl: Option<&Crl>,
    principal: &str,
    serial: Option<&Serial>,
) -> Result<(), Ended> {
    let Some(crl) = crl else { return Ok(()) };
    if crl.revoked.principals.contains(principal) {
        return Err(Ended::new(
            EndKind::PrincipalBanned,
            format!("principal {principal} banned"),
        ));
    }
    if let Some(serial) = serial
        && crl.revoked.serials.contains(serial)
    {
        return Err(Ended::new(
            EndKind::SerialRevoked,
            format!("certificate {serial} revoked"),
        ));
    }
    Ok(())
}

/// Whether a server may act under `licence` now: not revoked by server id
/// or serial, and inside its validity window (judged on the server's clock,
/// with [`CLOCK_SKEW`] allowed before `not_before`).
pub fn check_licence(licence: &Licence, crl: Option<&Crl>, now: UnixTime) -> Result<(), Ended> {
    let b = &licence.body;
    if let Some(crl) = crl
        && (crl.revoked.servers.contains(&b.server_id) || crl.revoked.serials.contains(&b.serial))
    {
        return Err(Ended::new(
            EndKind::LicenceRevoked,
            format!("server licence for {} revoked", b.server_id),
        ));
    }
    if now >= b.not_after {
        return Err(Ended::new(
            EndKind::LicenceExpired,
            format!(
                "server licence for {} expired {} ago",
                b.server_id,
                human(now - b.not_after)
            ),
        ));
    }
    if now.saturating_add(CLOCK_SKEW) < b.not_before {
        return Err(Ended::new(
            EndKind::LicenceNotYetValid,
            format!("server licence for {} is not valid yet", b.server_id),
        ));
    }
    Ok(())
}

/// What to do with a revocation list offered to replace the loaded one.
#[derive(Debug, PartialEq, Eq)]
pub enum ListUpdate {
    /// Newer: it replaces the loaded list.
    Replace,
    /// The same version: nothing changes.
    Same,
    /// Older: refused, since a rollback would resurrect revoked identities.
    Rollback {
        /// The version in force.
        loaded: u64,
        /// The version offered.
        offered: u64,
    },
}

/// Only a newer list replaces the loaded one.
pub fn list_update(current: Option<&Crl>, offered: &Crl) -> ListUpdate {
    let Some(cur) = current else {
        return ListUpdate::Replace;
    };
    match offered.list_version.cmp(&cur.list_version) {
        std::cmp::Ordering::Greater => ListUpdate::Replace,
        std::cmp::Ordering::Equal => ListUpdate::Same,
        std::cmp::Ordering::Less => ListUpdate::Rollback {
            loaded: cur.list_version,
            offered: offered.list_version,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crl::Revocations;
    use crate::keys::PublicKey;

    fn crl(version: u64) -> Crl {
        let mut revoked = Revocations::default();
        revoked.principals.insert("mallory".into());
        revoked.serials.insert(Serial([7; 16]));
        Crl {
            list_version: version,
            issued: 10,
            next_update: 20,
            issuer: PublicKey([1; 32]),
            revoked,
        }
    }

    #[test]
    fn bans_and_revoked_serials_end_sessions() {
        let c = crl(1);
        assert_eq!(
            check_session(Some(&c), "mallory", None)
                .map_err(|e| e.kind)
                .err(),
            Some(EndKind::PrincipalBanned)
        );
        assert_eq!(
            check_session(Some(&c), "alice", Some(&Serial([7; 16])))
                .map_err(|e| e.kind)
                .err(),
            Some(EndKind::SerialRevoked)
        );
        assert!(check_session(Some(&c), "alice", Some(&Serial([0; 16]))).is_ok());
        assert!(check_session(None, "mallory", Some(&Serial([7; 16]))).is_ok());
    }

    #[test]
    fn only_a_newer_list_replaces_the_loaded_one() {
        assert_eq!(list_update(None, &crl(1)), ListUpdate::Replace);
        assert_eq!(list_update(Some(&crl(1)), &crl(2)), ListUpdate::Replace);
        assert_eq!(list_update(Some(&crl(2)), &crl(2)), ListUpdate::Same);
        assert_eq!(
            list_update(Some(&crl(3)), &crl(2)),
            ListUpdate::Rollback {
                loaded: 3,
                offered: 2
            }
        );
    }
}
