//! The access list in force (`access_list`, `access_list_url`): what it
//! grants on this server, and what its staleness policy leaves of that.
//! It only ever adds principals to the `authorized_principals` file's; its
//! accounts narrow the policy's. A list a delegated key signed grants only
//! while its delegation is in force (proto's `AccessList::check_signer`).

use std::sync::Arc;

use ztssh_proto::access::{AccessList, Grant};
use ztssh_proto::crl::Revocations;
use ztssh_proto::time::{UnixTime, date, human};
use ztssh_proto::trust::{StaleMode, Staleness};

/// The access list in force, if one is configured and loaded, and what its
/// staleness means (static configuration).
#[derive(Clone, Debug, Default)]
pub struct AccessInForce {
    /// The last good list (shared: a reload copies the authority).
    pub list: Option<Arc<AccessList>>,
    /// What an overdue list means: `access_list_stale` and its grace.
    pub staleness: Staleness,
}

impl AccessInForce {
    /// When the loaded list counts as stale under the policy.
    pub fn due(&self) -> Option<UnixTime> {
        self.list
            .as_ref()
            .map(|l| l.valid_until.saturating_add(self.staleness.grace_secs))
    }

    /// When the delegation that signed the loaded list ends, if a
    /// delegated key signed it: from then on the list grants nothing.
    pub fn delegation_ends(&self) -> Option<UnixTime> {
        self.list
            .as_ref()?
            .delegation
            .as_ref()
            .map(|d| d.body.not_after)
    }

    /// The grant for `principal` with `key` on server `server`, for a new
    /// session (`new_session`) or a live one. `Err` says why a grant the
    /// list holds is not honoured now: the list is stale under
    /// `refuse-new` for a new session, or under `close-all`; or a
    /// delegated key signed it and its delegation is no longer in force
    /// (revoked by `revocations`, the revocation list in force, or past
    /// its end), which withdraws the whole list.
    pub fn grant(
        &self,
        principal: &str,
        key: &ssh_key::public::KeyData,
        server: &str,
        new_session: bool,
        revocations: Option<&Revocations>,
        now: UnixTime,
    ) -> Result<Option<&Grant>, String> {
        let Some(list) = &self.list else {
            return Ok(None);
        };
        let Some(grant) = list.grant(principal, key, server) else {
            return Ok(None);
        };
        if let Err(e) = list.check_signer(revocations, now) {
            return Err(format!(
                "the access list on {server} (version {}) no longer grants anything: {e}; its \
                 operator must publish a list signed by the root or by an access delegation in \
                 force (ztssh-ca access)",
                list.list_version
            ));
        }
        let due = list.valid_until.saturating_add(self.staleness.grace_secs);
        let refused = match self.staleness.mode {
            _ if now < due => None,
            StaleMode::Warn => None,
            StaleMode::RefuseNew if !new_session => None,
            StaleMode::RefuseNew => Some("new sessions it grants are refused"),
            StaleMode::CloseAll => Some("every session it grants is refused"),
        };
        match refused {
            None => Ok(Some(grant)),
            Some(what) => Err(format!(
                "the access list on {server} (version {}) is {} past its valid-until, {}; {what} \
                 until its operator publishes a newer one",
                list.list_version,
                human(now.saturating_sub(list.valid_until)),
                date(list.valid_until)
            )),
        }
    }

    /// Principals the list names (whatever servers they are for).
    pub fn principals(&self) -> usize {
        self.list.as_ref().map_or(0, |l| l.principals.len())
    }

    /// How many of them this server's id is among the servers of.
    pub fn principals_here(&self, server: &str) -> usize {
        self.list.as_ref().map_or(0, |l| {
            l.principals.values().filter(|g| g.covers(server)).count()
        })
    }
}

/// Whether a grant lets its principal log in as `account`, which the
/// policy already allows: the list's accounts narrow the policy's, never
/// widen them (no accounts in the list: the policy's alone).
pub fn grant_allows_account(grant: &Grant, account: &str) -> bool {
    grant.accounts.is_empty() || grant.accounts.contains(account)
}
