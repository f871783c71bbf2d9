//! What decides, at any moment, whether a session may go on: the proxy's
//! licence, the root's revocation list and the authorized principals. A new
//! [`Authority`] is published through a watch channel on every reload, and
//! every live session re-checks itself against it at once.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use tracing::{error, info, warn};
use ztssh_keyfile as keyfile;
use ztssh_proto::cert::LicenceVerified;
use ztssh_proto::crl::Crl;
use ztssh_proto::identity::{self, EndKind, Ended};
use ztssh_proto::keys::PublicKey;
use ztssh_proto::krl::Krl;
use ztssh_proto::labels::pem;
use ztssh_proto::time::{UnixTime, when};
use ztssh_proto::trust::{self, Checkpoint, Credential, ListUpdate, Staleness, Subject};

use crate::trust::authz::Authorized;
use crate::trust::policy::Policy;

/// A snapshot of everything that grants or withdraws trust.
#[derive(Debug)]
pub struct Authority {
    /// The proxy's licence, verified under the root when it was loaded.
    pub licence: LicenceVerified,
    /// The last good revocation list, if one is configured.
    pub crl: Option<Crl>,
    /// Who may log in with which key.
    pub authorized: Authorized,
    /// Who may connect from where and when.
    pub policy: Arc<Policy>,
    /// What an overdue revocation list means (static configuration).
    pub staleness: Staleness,
    /// The user SSH CA's KRL in force (`user_ca_krl`, `user_ca_krl_url`).
    pub krl: Option<Arc<Krl>>,
}

impl identity::Authority for Authority {
    fn check(&self, who: &Subject<'_>, at: Checkpoint<'_>, now: UnixTime) -> Result<(), Ended> {
        let server = &self.licence.body.server_id;
        trust::check_revoked(self.crl.as_ref(), who, at)?;
        trust::check_krl(self.krl.as_deref(), who)?;
        trust::check_fresh(self.crl.as_ref(), self.staleness, server, at, now)?;
        self.check_authorized(who, at)?;
        self.may_issue(now)
    }

    fn may_issue(&self, now: UnixTime) -> Result<(), Ended> {
        let server = &self.licence.body.server_id;
        trust::check_licence(&self.licence, self.crl.as_ref(), now)?;
        trust::check_fresh_to_issue(self.crl.as_ref(), self.staleness, server, now)
    }

    fn sk_policy(&self, principal: &str) -> identity::SkPolicy {
        self.policy.sk_policy(principal)
    }
}

impl Authority {
    /// Whether the credential vouches for the principal: one arm per
    /// identity source.
    fn check_authorized(&self, who: &Subject<'_>, at: Checkpoint<'_>) -> Result<(), Ended> {
        let principal = who.principal;
        match who.credential {
            Credential::UserKey(user_key) => {
                if self.authorized.allows(principal, user_key) {
                    return Ok(());
                }
                let reason = match at {
                    Checkpoint::Live(_) => {
                        format!("principal {principal} is no longer authorized with this key")
                    }
                    Checkpoint::Admit | Checkpoint::SshdLogin => {
                        let fp = user_key.fingerprint(ssh_key::HashAlg::Sha256);
                        let server = &self.licence.body.server_id;
                        format!("principal {principal} is not authorized with key {fp} on {server}")
                    }
                };
                Err(Ended::new(EndKind::NotAuthorized, reason))
            }
        }
    }

    /// Why this proxy should get no new sessions now, one line per failing
    /// check, from the trust rules the handshake applies: the licence
    /// ([`trust::check_licence`]) and the list under the staleness policy
    /// as for a new session ([`trust::check_fresh`]). Empty: ready.
    pub fn not_ready(&self, now: UnixTime) -> Vec<String> {
        let licence = trust::check_licence(&self.licence, self.crl.as_ref(), now);
        let server = &self.licence.body.server_id;
        let list = trust::check_fresh(
            self.crl.as_ref(),
            self.staleness,
            server,
            Checkpoint::Admit,
            now,
        );
        [licence, list]
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.reason))
            .collect()
    }

    /// The same authority, published again so that every live session
    /// re-checks itself (the staleness deadline passed).
    pub fn republish(&self) -> Self {
        Self {
            licence: self.licence.clone(),
            crl: self.crl.clone(),
            authorized: self.authorized.clone(),
            policy: Arc::clone(&self.policy),
            staleness: self.staleness,
            krl: self.krl.clone(),
        }
    }
}

/// The authority as it applies to one connection: everything in
/// [`Authority`] plus the policy rules for the peer's address.
pub struct AtPeer<'a> {
    authority: &'a Authority,
    peer: IpAddr,
}

impl Authority {
    /// This authority, applied to a session from `peer`.
    pub fn at(&self, peer: IpAddr) -> AtPeer<'_> {
        AtPeer {
            authority: self,
            peer,
        }
    }
}

impl identity::Authority for AtPeer<'_> {
    fn check(&self, who: &Subject<'_>, at: Checkpoint<'_>, now: UnixTime) -> Result<(), Ended> {
        self.authority.check(who, at, now)?;
        self.authority.policy.check(who.principal, self.peer, now)
    }

    fn may_issue(&self, now: UnixTime) -> Result<(), Ended> {
        self.authority.may_issue(now)
    }

    fn sk_policy(&self, principal: &str) -> identity::SkPolicy {
        self.authority.sk_policy(principal)
    }
}

/// Reads and verifies a revocation list file.
pub fn read_crl(path: &Path, root: &PublicKey) -> Result<Crl, String> {
    let bytes = keyfile::read_pem(path, pem::CRL)?;
    Crl::decode_verified(&bytes, root).map_err(|e| format!("{}: {e}", path.display()))
}

/// Warns loudly about a stale list; the proxy keeps enforcing it.
pub fn warn_if_stale(crl: &Crl, now: UnixTime) {
    if crl.is_stale(now) {
        warn!(
            event = "crl_stale",
            list_version = crl.list_version,
            overdue_secs = now - crl.next_update,
            "revocation list is past its next-update time, {}; still enforcing it. Publish a new one: ztssh-ca crl",
            when(crl.next_update, now)
        );
    }
}

/// Says what the staleness policy now does, once the list is past its
/// next-update time plus grace.
pub fn announce_stale(crl: &Crl, staleness: Staleness, now: UnixTime) {
    let does = match staleness.mode {
        trust::StaleMode::Warn => {
            "still enforcing it and admitting sessions (revocation_stale = \"warn\")"
        }
        trust::StaleMode::RefuseNew => {
            "refusing new sessions; live ones go on (revocation_stale = \"refuse-new\")"
        }
        trust::StaleMode::CloseAll => {
            "ending every live session and refusing new ones (revocation_stale = \"close-all\")"
        }
    };
    error!(
        event = "crl_stale",
        list_version = crl.list_version,
        overdue_secs = now.saturating_sub(crl.next_update),
        mode = staleness.mode.label(),
        "revocation list version {} is past its next-update time, {} (grace {}s); {does}. Publish a new one: ztssh-ca crl",
        crl.list_version,
        when(crl.next_update, now),
        staleness.grace_secs
    );
}

/// Says loudly that an older list was offered and refused.
pub fn refuse_rollback(loaded: u64, offered: u64) {
    error!(
        event = "crl_reload_failed",
        loaded,
        offered,
        "revocation list version {offered} is older than the loaded {loaded}; refused"
    );
}

/// Says quietly that a list was not newer than the loaded one because its
/// source lags (another source, or a faster answer, got here first): the
/// loaded list stays, and nothing failed.
pub fn note_behind(loaded: u64, offered: u64) {
    info!(
        event = "crl_behind",
        loaded,
        offered,
        "revocation list version {offered} is behind the loaded {loaded} (its source has not caught up yet); keeping version {loaded}"
    );
}

/// Announces a list that is about to be enforced.
pub fn announce(crl: &Crl, now: UnixTime) {
    warn_if_stale(crl, now);
    info!(
        event = "crl_loaded",
        list_version = crl.list_version,
        principals = crl.revoked.principals.len(),
        servers = crl.revoked.servers.len(),
        serials = crl.revoked.serials.len(),
        user_keys = crl.revoked.user_keys.len(),
        noise_keys = crl.revoked.noise_keys.len(),
        subca_keys = crl.revoked.subca_keys.len(),
        "revocation list loaded; re-checking every live session"
    );
}

/// Says loudly when a list revokes this proxy's own keys: it admits no
/// one from now on and its sessions end.
fn warn_if_own_keys(crl: &Crl, licence: &ztssh_proto::cert::Licence) {
    if let Some(which) = crl.revoked.revoked_licence_key(&licence.body) {
        error!(
            event = "licence_key_revoked",
            list_version = crl.list_version,
            key = which,
            "revocation list version {} revokes this proxy's {which} key: every session ends and \
             none is admitted; generate new keys and get them licensed (docs/OPERATOR.md)",
            crl.list_version
        );
    }
}

/// Decides whether a freshly read list replaces the current one; its
/// source's newest list so far was `source_newest` ([`trust::offer_from`]).
/// Returns the authority to publish, or `None` to keep the current one.
pub fn merge_crl(
    current: &Authority,
    new: Result<Crl, String>,
    source_newest: Option<u64>,
    now: UnixTime,
) -> Option<Authority> {
    let new = match new {
        Ok(c) => c,
        Err(e) => {
            error!(event = "crl_reload_failed", error = %e, "revocation list rejected; keeping the previous one");
            return None;
        }
    };
    match trust::offer_from(current.crl.as_ref(), &new, source_newest) {
        ListUpdate::Replace => {}
        ListUpdate::Same => return None,
        ListUpdate::Behind { loaded, offered } => {
            note_behind(loaded, offered);
            return None;
        }
        ListUpdate::Rollback { loaded, offered } => {
            refuse_rollback(loaded, offered);
            return None;
        }
    }
    announce(&new, now);
    warn_if_own_keys(&new, &current.licence);
    Some(Authority {
        licence: current.licence.clone(),
        crl: Some(new),
        authorized: current.authorized.clone(),
        policy: Arc::clone(&current.policy),
        staleness: current.staleness,
        krl: current.krl.clone(),
    })
}
