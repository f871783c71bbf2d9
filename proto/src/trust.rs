//! The trust rules, written once: what a revocation list withdraws, when a
//! licence may be used, and which list may replace the loaded one. The
//! proxy applies them at the handshake, at every proof and renewal, and on
//! every reload; a sidecar can apply the same rules to a server.

use crate::cert::{Licence, Serial};
use crate::crl::Crl;
use crate::end::{EndKind, Ended};
use crate::time::{CLOCK_SKEW, UnixTime, human};

/// What a proxy does once its revocation list is past its next-update time
/// plus a grace period (the operator's choice; see `docs/OPERATOR.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StaleMode {
    /// Keep enforcing the old list and say so loudly.
    #[default]
    Warn,
    /// Refuse new sessions; live ones go on.
    RefuseNew,
    /// Refuse new sessions and end live ones.
    CloseAll,
}

impl StaleMode {
    /// Parses the configuration value (`warn`, `refuse-new`, `close-all`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "warn" => Some(Self::Warn),
            "refuse-new" => Some(Self::RefuseNew),
            "close-all" => Some(Self::CloseAll),
            _ => None,
        }
    }

    /// The configuration value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::RefuseNew => "refuse-new",
            Self::CloseAll => "close-all",
        }
    }
}

/// The staleness policy: the mode and the grace period after next-update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Staleness {
    /// What to do once the list is overdue.
    pub mode: StaleMode,
    /// Seconds past the list's next-update time before the mode applies.
    pub grace_secs: u64,
}

impl Staleness {
    /// When `crl` counts as stale under this policy.
    pub fn due(&self, crl: &Crl) -> UnixTime {
        crl.next_update.saturating_add(self.grace_secs)
    }
}

/// Applies the staleness policy: `Err` refuses a new session
/// (`new_session`) or ends a live one. No list at all is not stale.
pub fn check_fresh(
    crl: Option<&Crl>,
    policy: Staleness,
    server_id: &str,
    new_session: bool,
    now: UnixTime,
) -> Result<(), Ended> {
    let Some(crl) = crl else { return Ok(()) };
    if now < policy.due(crl) {
        return Ok(());
    }
    let what = match policy.mode {
        StaleMode::Warn => return Ok(()),
        StaleMode::RefuseNew if !new_session => return Ok(()),
        StaleMode::RefuseNew => "new sessions are refused",
        StaleMode::CloseAll => "every session is refused",
    };
    Err(Ended::new(
        EndKind::RevocationListStale,
        format!(
            "the revocation list on {server_id} (version {}) is {} past its next update; {what} \
             until its operator publishes a newer one",
            crl.list_version,
            human(now.saturating_sub(crl.next_update))
        ),
    ))
}

/// Refuses a banned principal, a revoked user key or a revoked
/// certificate serial (none yet while the session is being authorized).
pub fn check_session(
    crl: Option<&Crl>,
    principal: &str,
    user_key: &ssh_key::PublicKey,
    serial: Option<&Serial>,
) -> Result<(), Ended> {
    let Some(crl) = crl else { return Ok(()) };
    if crl.revoked.principals.contains(principal) {
        return Err(Ended::new(
            EndKind::PrincipalBanned,
            format!("principal {principal} banned"),
        ));
    }
    if crl.revoked.revokes_user_key(user_key) {
        return Err(Ended::new(
            EndKind::UserKeyRevoked,
            format!(
                "user key {} revoked",
                user_key.fingerprint(ssh_key::HashAlg::Sha256)
            ),
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

    fn user_key(seed: u8) -> ssh_key::PublicKey {
        ssh_key::PublicKey::from(ssh_key::public::Ed25519PublicKey([seed; 32]))
    }

    #[test]
    fn bans_and_revoked_serials_end_sessions() {
        let c = crl(1);
        let k = user_key(1);
        assert_eq!(
            check_session(Some(&c), "mallory", &k, None)
                .map_err(|e| e.kind)
                .err(),
            Some(EndKind::PrincipalBanned)
        );
        assert_eq!(
            check_session(Some(&c), "alice", &k, Some(&Serial([7; 16])))
                .map_err(|e| e.kind)
                .err(),
            Some(EndKind::SerialRevoked)
        );
        assert!(check_session(Some(&c), "alice", &k, Some(&Serial([0; 16]))).is_ok());
        assert!(check_session(None, "mallory", &k, Some(&Serial([7; 16]))).is_ok());
    }

    #[test]
    fn a_revoked_user_key_is_refused_at_the_handshake_and_every_challenge() {
        let mut c = crl(1);
        let bad = user_key(2);
        let hash = bad
            .fingerprint(ssh_key::HashAlg::Sha256)
            .sha256()
            .expect("sha256");
        c.revoked.user_keys.insert(hash);
        for serial in [None, Some(&Serial([0; 16]))] {
            let e = check_session(Some(&c), "alice", &bad, serial).expect_err("revoked");
            assert_eq!(e.kind, EndKind::UserKeyRevoked);
            assert!(e.reason.contains("SHA256:"), "{e}");
            assert!(check_session(Some(&c), "alice", &user_key(3), serial).is_ok());
        }
    }

    #[test]
    fn each_staleness_mode_does_what_it_says() {
        let c = crl(1); // next update at 20
        let p = |mode| Staleness {
            mode,
            grace_secs: 5,
        };
        for mode in [StaleMode::Warn, StaleMode::RefuseNew, StaleMode::CloseAll] {
            // Inside the grace period nothing is refused.
            assert!(check_fresh(Some(&c), p(mode), "web1", true, 24).is_ok());
            assert!(check_fresh(None, p(mode), "web1", true, 1000).is_ok());
        }
        let kind = |mode, new| {
            check_fresh(Some(&c), p(mode), "web1", new, 25)
                .map_err(|e| e.kind)
                .err()
        };
        assert_eq!(kind(StaleMode::Warn, true), None);
        assert_eq!(kind(StaleMode::Warn, false), None);
        assert_eq!(
            kind(StaleMode::RefuseNew, true),
            Some(EndKind::RevocationListStale)
        );
        assert_eq!(kind(StaleMode::RefuseNew, false), None);
        assert_eq!(
            kind(StaleMode::CloseAll, false),
            Some(EndKind::RevocationListStale)
        );
        let e =
            check_fresh(Some(&c), p(StaleMode::RefuseNew), "web1", true, 25).expect_err("stale");
        assert!(
            e.reason.contains("web1") && e.reason.contains("version 1"),
            "{e}"
        );
        assert_eq!(StaleMode::parse("close-all"), Some(StaleMode::CloseAll));
        assert_eq!(StaleMode::parse("fail-closed"), None);
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
