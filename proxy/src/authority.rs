//! What decides, at any moment, whether a session may go on: the proxy's
//! licence, the root's revocation list and the authorized principals. A new
//! [`Authority`] is published through a watch channel on every reload, and
//! every live session re-checks itself against it at once.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use tracing::{error, info, warn};
use ztssh_proto::cert::{Licence, Serial};
use ztssh_proto::control::TerminateCode;
use ztssh_proto::crl::Crl;
use ztssh_proto::identity::{self, Ended};
use ztssh_proto::keyfile;
use ztssh_proto::keys::PublicKey;
use ztssh_proto::labels::pem;
use ztssh_proto::time::{UnixTime, human};

use crate::authz::Authorized;
use crate::policy::Policy;

/// A snapshot of everything that grants or withdraws trust.
#[derive(Debug)]
pub struct Authority {
    /// The proxy's licence.
    pub licence: Licence,
    /// The last good revocation list, if one is configured.
    pub crl: Option<Crl>,
    /// Who may log in with which key.
    pub authorized: Authorized,
    /// Who may connect from where and when.
    pub policy: Arc<Policy>,
}

fn revoked(kind: &'static str, reason: String) -> Ended {
    Ended {
        code: TerminateCode::IdentityRevoked,
        reason,
        kind,
    }
}

impl identity::Authority for Authority {
    fn check(
        &self,
        principal: &str,
        user_key: &ssh_key::PublicKey,
        serial: &Serial,
        now: UnixTime,
    ) -> Result<(), Ended> {
        if let Some(crl) = &self.crl {
            if crl.revoked.principals.contains(principal) {
                return Err(revoked(
                    "principal_banned",
                    format!("principal {principal} banned"),
                ));
            }
            if crl.revoked.serials.contains(serial) {
                return Err(revoked(
                    "serial_revoked",
                    format!("certificate {serial} revoked"),
                ));
            }
        }
        if !self.authorized.allows(principal, user_key) {
            return Err(revoked(
                "not_authorized",
                format!("principal {principal} is no longer authorized with this key"),
            ));
        }
        self.may_issue(now)
    }

    fn may_issue(&self, now: UnixTime) -> Result<(), Ended> {
        let b = &self.licence.body;
        if let Some(crl) = &self.crl
            && (crl.revoked.servers.contains(&b.server_id)
                || crl.revoked.serials.contains(&b.serial))
        {
            return Err(revoked(
                "licence_revoked",
                format!("server licence for {} revoked", b.server_id),
            ));
        }
        if now >= b.not_after {
            return Err(revoked(
                "licence_expired",
                format!(
                    "server licence for {} expired {} ago",
                    b.server_id,
                    human(now - b.not_after)
                ),
            ));
        }
        if now.saturating_add(ztssh_proto::time::CLOCK_SKEW) < b.not_before {
            return Err(revoked(
                "licence_not_yet_valid",
                format!("server licence for {} is not valid yet", b.server_id),
            ));
        }
        Ok(())
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
    fn check(
        &self,
        principal: &str,
        user_key: &ssh_key::PublicKey,
        serial: &Serial,
        now: UnixTime,
    ) -> Result<(), Ended> {
        self.authority.check(principal, user_key, serial, now)?;
        self.authority
            .policy
            .check(principal, self.peer, now)
            .map_err(|reason| Ended {
                code: TerminateCode::PolicyDenied,
                reason,
                kind: "policy_denied",
            })
    }

    fn may_issue(&self, now: UnixTime) -> Result<(), Ended> {
        self.authority.may_issue(now)
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
            "revocation list is past its next-update time by {}; still enforcing it. Publish a new one: ztssh-ca crl",
            human(now - crl.next_update)
        );
    }
}

/// Whether an offered list may replace the loaded one: only a newer version
/// may; an older one is refused loudly (a rollback would resurrect revoked
/// identities).
pub fn is_newer(current: Option<&Crl>, offered: &Crl) -> bool {
    let Some(cur) = current else { return true };
    if offered.list_version < cur.list_version {
        error!(
            event = "crl_reload_failed",
            loaded = cur.list_version,
            offered = offered.list_version,
            "revocation list version {} is older than the loaded {}; refused",
            offered.list_version,
            cur.list_version
        );
    }
    offered.list_version > cur.list_version
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
        "revocation list loaded; re-checking every live session"
    );
}

/// Decides whether a freshly read list replaces the current one.
/// Returns the authority to publish, or `None` to keep the current one.
pub fn merge_crl(
    current: &Authority,
    new: Result<Crl, String>,
    now: UnixTime,
) -> Option<Arc<Authority>> {
    let new = match new {
        Ok(c) => c,
        Err(e) => {
            error!(event = "crl_reload_failed", error = %e, "revocation list rejected; keeping the previous one");
            return None;
        }
    };
    if !is_newer(current.crl.as_ref(), &new) {
        return None;
    }
    announce(&new, now);
    Some(Arc::new(Authority {
        licence: current.licence.clone(),
        crl: Some(new),
        authorized: current.authorized.clone(),
        policy: Arc::clone(&current.policy),
    }))
}
