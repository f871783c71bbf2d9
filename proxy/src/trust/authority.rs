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
use ztssh_proto::krl::Krl;
use ztssh_proto::time::{UnixTime, when};
use ztssh_proto::trust::usercert::UserCas;
use ztssh_proto::trust::{self, Checkpoint, Credential, ListUpdate, Staleness, Subject};

use crate::trust::access::{AccessInForce, grant_allows_account};
use crate::trust::authz::Authorized;
use crate::trust::policy::Policy;
use crate::trust::workload::{TOKENS_REFUSED, WorkloadInForce};
use ztssh_proto::trust::workload::{self as wl, TokenVerified};

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
    /// The user CAs whose certificates vouch for their principals
    /// (`trusted_user_ca_keys`).
    pub user_cas: Option<Arc<UserCas>>,
    /// The signed access list: principals it grants besides `authorized`.
    pub access: AccessInForce,
    /// The user SSH CA's KRL in force (`user_ca_krl`, `user_ca_krl_url`).
    pub krl: Option<Arc<Krl>>,
    /// The platform token issuers (`[[workload_issuer]]`) and the record
    /// of tokens used.
    pub workload: Option<Arc<WorkloadInForce>>,
}

impl identity::Authority for Authority {
    fn check(&self, who: &Subject<'_>, at: Checkpoint<'_>, now: UnixTime) -> Result<(), Ended> {
        let server = &self.licence.body.server_id;
        trust::check_revoked(self.crl.as_ref(), who, at)?;
        trust::check_krl(self.krl.as_deref(), who)?;
        trust::check_fresh(self.crl.as_ref(), self.staleness, server, at, now)?;
        self.check_authorized(who, at, now)?;
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

    fn user_cas(&self) -> Option<&UserCas> {
        self.user_cas.as_deref()
    }

    fn workload_issuers(&self) -> Option<&wl::Issuers> {
        self.workload.as_deref().map(|w| &w.issuers)
    }

    fn token_refused(&self, kind: wl::RefusalKind) {
        TOKENS_REFUSED.with_label_values(&[kind.label()]).inc();
    }

    fn check_use(
        &self,
        token: &TokenVerified,
        key: &wl::KeyId,
        now: UnixTime,
    ) -> Result<(), wl::Refused> {
        match &self.workload {
            Some(w) => w.check_use(token, key, now),
            None => Ok(()),
        }
    }

    fn first_use(
        &self,
        token: &TokenVerified,
        key: &wl::KeyId,
        now: UnixTime,
    ) -> Result<(), wl::Refused> {
        match &self.workload {
            Some(w) => w.first_use(token, key, now),
            None => Err(wl::Refused {
                kind: wl::RefusalKind::Replayed,
                reason: "this server no longer trusts any workload issuer".into(),
            }),
        }
    }
}

impl Authority {
    /// Whether the credential vouches for the principal: one arm per
    /// identity source.
    /// The authorized principals file and the access list grant a union.
    fn check_authorized(
        &self,
        who: &Subject<'_>,
        at: Checkpoint<'_>,
        now: UnixTime,
    ) -> Result<(), Ended> {
        let principal = who.principal;
        match who.credential {
            Credential::UserKey(user_key) => {
                if self.authorized.allows(principal, user_key) {
                    return Ok(());
                }
                let server = &self.licence.body.server_id;
                match self.access.grant(
                    principal,
                    user_key.key_data(),
                    server,
                    at.is_new(),
                    self.crl.as_ref().map(|c| &c.revoked),
                    now,
                ) {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => {}
                    Err(stale) => return Err(Ended::new(EndKind::NotAuthorized, stale)),
                }
                let reason = match at {
                    Checkpoint::Live(_) => format!(
                        "principal {principal} is no longer authorized with this key: your access \
                         was withdrawn"
                    ),
                    Checkpoint::Admit | Checkpoint::SshdLogin(_) => {
                        let fp = user_key.fingerprint(ssh_key::HashAlg::Sha256);
                        let server = &self.licence.body.server_id;
                        format!("principal {principal} is not authorized with key {fp} on {server}")
                    }
                };
                Err(Ended::new(EndKind::NotAuthorized, reason))
            }
            // The certificate vouches for its principals (verify checked
            // this one is among them); no authorized_principals entry is
            // needed. At every later checkpoint: its CA still trusted and
            // the certificate still valid (the client's address is checked
            // where it is known, `AtPeer`).
            Credential::UserCert(cert) => match &self.user_cas {
                Some(cas) => cert.check(cas, None, now),
                None => Err(Ended::new(
                    EndKind::UserCertRefused,
                    "this server no longer trusts any user CA",
                )),
            },
            // The token vouches through its issuer's rule (verify checked
            // one names this principal). At every later checkpoint: the
            // issuer still configured, a rule still matching, the token
            // not expired.
            Credential::Workload { token, .. } => match &self.workload {
                Some(w) => token.check(&w.issuers, now),
                None => Err(Ended::new(
                    EndKind::WorkloadTokenRefused,
                    "this server no longer trusts any workload issuer",
                )),
            },
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
        self.with_access(self.access.clone())
    }

    /// The same authority with another access list in force.
    pub fn with_access(&self, access: AccessInForce) -> Self {
        Self {
            licence: self.licence.clone(),
            crl: self.crl.clone(),
            authorized: self.authorized.clone(),
            policy: Arc::clone(&self.policy),
            staleness: self.staleness,
            user_cas: self.user_cas.clone(),
            access,
            krl: self.krl.clone(),
            workload: self.workload.clone(),
        }
    }

    /// Whether `who` may log in to sshd as local `account`: the policy
    /// must allow it, and a principal only the access list authorizes (not
    /// the authorized principals file, nor a user certificate, which
    /// vouches for its principal by itself) must also have the account
    /// among its grant's accounts, when the list names any: the list
    /// narrows the policy, never widens it. A workload token may use only
    /// the accounts its rule lists.
    pub fn may_use(&self, who: &Subject<'_>, account: &str, now: UnixTime) -> bool {
        let principal = who.principal;
        if !self.policy.may_use(principal, account) {
            return false;
        }
        let key = match who.credential {
            Credential::UserCert(_) => return true,
            Credential::Workload { token, .. } => {
                return token.accounts().iter().any(|a| a == account);
            }
            Credential::UserKey(key) => key,
        };
        if self.authorized.allows(principal, key) {
            return true;
        }
        let server = &self.licence.body.server_id;
        matches!(
            self.access.grant(
                principal,
                key.key_data(),
                server,
                false,
                self.crl.as_ref().map(|c| &c.revoked),
                now
            ),
            Ok(Some(g)) if grant_allows_account(g, account)
        )
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
        // A certificate's source-address, against the client's real address
        // (sshd behind the proxy sees only loopback).
        if let (Credential::UserCert(cert), Some(cas)) = (who.credential, &self.authority.user_cas)
        {
            cert.check(cas, Some(self.peer), now)?;
        }
        self.authority.policy.check(who.principal, self.peer, now)
    }

    fn may_issue(&self, now: UnixTime) -> Result<(), Ended> {
        self.authority.may_issue(now)
    }

    fn sk_policy(&self, principal: &str) -> identity::SkPolicy {
        self.authority.sk_policy(principal)
    }

    fn user_cas(&self) -> Option<&UserCas> {
        self.authority.user_cas.as_deref()
    }

    fn workload_issuers(&self) -> Option<&wl::Issuers> {
        identity::Authority::workload_issuers(self.authority)
    }

    fn token_refused(&self, kind: wl::RefusalKind) {
        identity::Authority::token_refused(self.authority, kind);
    }

    fn check_use(
        &self,
        token: &TokenVerified,
        key: &wl::KeyId,
        now: UnixTime,
    ) -> Result<(), wl::Refused> {
        identity::Authority::check_use(self.authority, token, key, now)
    }

    fn first_use(
        &self,
        token: &TokenVerified,
        key: &wl::KeyId,
        now: UnixTime,
    ) -> Result<(), wl::Refused> {
        identity::Authority::first_use(self.authority, token, key, now)
    }
}

/// Reads `trusted_user_ca_keys`: CA keys in sshd's `TrustedUserCAKeys`
/// format; an error names FILE:LINE.
pub fn read_user_cas(path: &Path) -> Result<UserCas, String> {
    let bytes =
        keyfile::read_regular(path, 1 << 20).map_err(|e| format!("trusted_user_ca_keys: {e}"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{}: not text (UTF-8)", path.display()))?;
    UserCas::parse(&text).map_err(|(line, why)| format!("{}:{line}: {why}", path.display()))
}

/// A revocation list this machine keeps (the operator's file or the
/// pull's cache), read at start-up or on SIGHUP: as [`crl_from`], except
/// that one whose `revocations` delegation has since ended still loads
/// ([`trust::verify_pem_kept`]): a restart forgets no revocation.
pub fn read_crl_kept(
    path: &Path,
    root: &ztssh_proto::rootkey::RootKey,
    now: UnixTime,
) -> Result<Crl, String> {
    let text = keyfile::read_regular(path, keyfile::MAX_PEM_FILE)?;
    trust::verify_pem_kept(&text, root, now).map_err(|e| format!("{}: {e}", path.display()))
}

/// Verifies the revocation list text read from `path`: signed by the
/// root, or by a `revocations` delegation's key with the delegation beside
/// it, in force at `now`.
pub fn crl_from(
    path: &Path,
    text: &[u8],
    root: &ztssh_proto::rootkey::RootKey,
    now: UnixTime,
) -> Result<Crl, String> {
    trust::verify_pem(text, root, now).map_err(|e| format!("{}: {e}", path.display()))
}

/// Warns loudly about a stale list; the proxy keeps enforcing it.
pub fn warn_if_stale(crl: &Crl, now: UnixTime) {
    if crl.is_stale(now) {
        warn!(
            event = "crl_stale",
            list_version = crl.list_version,
            overdue_secs = now - crl.next_update,
            next_update = crl.next_update,
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
        next_update = crl.next_update,
        grace_secs = staleness.grace_secs,
        "revocation list version {} is past its next-update time, {} (grace {}s); {does}. Publish a new one: ztssh-ca crl",
        crl.list_version,
        when(crl.next_update, now),
        staleness.grace_secs
    );
}

/// Says loudly that an older list was offered and refused.
pub fn refuse_rollback(loaded: u64, offered: u64) {
    if offered > loaded {
        error!(
            event = "crl_reload_failed",
            loaded,
            offered,
            "revocation list version {offered}, signed by a delegated key, leaves out entries of \
             the loaded {loaded} or raises its version by more than {}; refused (only the root \
             removes entries: if its key was stolen, revoke the delegation)",
            ztssh_proto::crl::MAX_DELEGATED_VERSION_JUMP
        );
        return;
    }
    error!(
        event = "crl_reload_failed",
        loaded,
        offered,
        "revocation list version {offered} is older than the loaded {loaded}; refused"
    );
}

/// Says loudly that a list of the loaded version but other contents was
/// refused ([`ListUpdate::Forked`]), and what the operator does about it.
pub fn refuse_forked(version: u64) {
    error!(
        event = "crl_forked",
        list_version = version,
        "revocation list version {version} differs from the loaded list of the same version: two lists were \
         signed under one version (a signing mistake, or a CA directory used in two places); keeping the loaded \
         one. On the CA, issue a newer list that holds every revocation (ztssh-ca revoke ..., then ztssh-ca crl) \
         and publish it; until then proxies that loaded the other list may enforce other revocations"
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
        ListUpdate::Forked { version } => {
            refuse_forked(version);
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
        user_cas: current.user_cas.clone(),
        access: current.access.clone(),
        krl: current.krl.clone(),
        workload: current.workload.clone(),
    })
}
