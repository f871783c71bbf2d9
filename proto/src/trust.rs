//! The trust rules, written once: who a session is and what vouches for it
//! ([`Subject`], [`Credential`]), where in its life it is judged
//! ([`Checkpoint`]), what a revocation list withdraws, when a licence may
//! be used, and which list may replace the loaded one ([`offer`],
//! [`verify_pem`]). The proxy applies them at the handshake, at every proof
//! and renewal, at sshd's key lookup and on every reload; a sidecar applies
//! the same rules to a server. Every refusal is an [`Ended`], whose
//! [`EndKind`] row says what the client hears and whom it counts against.
//!
//! # Adding an identity source
//!
//! An OpenSSH user certificate from a user CA, an entry in a signed access
//! list or a platform token is one new [`Credential`] variant and one
//! verifier:
//! 1. The verifier, in its own file under `trust/`, turns the bytes the
//!    client sent (message 3) into a verified value, checking signatures
//!    under the trusted keys the caller passes in (a user CA, the list's
//!    signer, a platform's key set) and the validity window against `now`,
//!    before anything it signs is parsed. Only it makes that value (a
//!    proof token, like [`crate::handshake::ClientAuthenticated`]).
//! 2. The variant, `Credential::UserCert(&'a UserCertVerified)` say,
//!    carries that value. [`Credential`] is deliberately not
//!    `non_exhaustive` and nothing matches it with a wildcard, so the
//!    compiler lists every decision the new source needs: what a revocation
//!    list withdraws for it ([`check_revoked`]), and, in the proxy's
//!    authority, which principals it vouches for.
//! 3. Its refusals reuse the [`EndKind`]s above (`NotAuthorized`,
//!    `UserKeyRevoked`, ...) or add a row to the table in [`crate::end`].
//!
//! The [`Checkpoint`]s stay as they are: a new source is judged at the same
//! moments as a user key.

use crate::cert::Licence;
use crate::crl::Crl;
use crate::end::{EndKind, Ended};
use crate::time::{CLOCK_SKEW, UnixTime, human};

mod krl;
mod list;
mod renewal;
mod subject;
pub mod usercert;
pub mod workload;

pub use krl::{check_krl, check_krl_cert};
pub use list::{
    ListError, ListUpdate, MAX_DELEGATED_VERSION, Versioned, offer, offer_from, verify_pem,
    verify_pem_kept,
};
pub use renewal::{LicenceUpdate, offer_licence};
pub use subject::{Checkpoint, Credential, Issued, Subject};

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

/// Applies the staleness policy at checkpoint `at`: `Err` refuses a new
/// session ([`Checkpoint::Admit`]) under `refuse-new`, and every session
/// under `close-all`. No list at all is not stale.
pub fn check_fresh(
    crl: Option<&Crl>,
    policy: Staleness,
    server_id: &str,
    at: Checkpoint<'_>,
    now: UnixTime,
) -> Result<(), Ended> {
    fresh(crl, policy, server_id, at.is_new(), now)
}

/// The staleness policy as it applies to issuing a certificate, once a
/// checkpoint has judged the session: only `close-all` refuses.
pub fn check_fresh_to_issue(
    crl: Option<&Crl>,
    policy: Staleness,
    server_id: &str,
    now: UnixTime,
) -> Result<(), Ended> {
    fresh(crl, policy, server_id, false, now)
}

fn fresh(
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
            "the revocation list on {server_id} (version {}) is {} past its next update, due {}; {what} \
             until its operator publishes a newer one",
            crl.list_version,
            human(now.saturating_sub(crl.next_update)),
            crate::time::date(crl.next_update)
        ),
    ))
}

/// Refuses a banned principal, a revoked credential or, for a live
/// session, any serial it was ever issued (its session serial, its current
/// certificate's, or an earlier one's).
pub fn check_revoked(
    crl: Option<&Crl>,
    who: &Subject<'_>,
    at: Checkpoint<'_>,
) -> Result<(), Ended> {
    let Some(crl) = crl else { return Ok(()) };
    let principal = who.principal;
    if crl.revoked.principals.contains(principal) {
        return Err(Ended::new(
            EndKind::PrincipalBanned,
            format!("principal {principal} banned"),
        ));
    }
    let revoked_key = |key: &ssh_key::PublicKey, what: &str| {
        if crl.revoked.revokes_user_key(key) {
            Err(Ended::new(
                EndKind::UserKeyRevoked,
                format!(
                    "{what} {} revoked",
                    key.fingerprint(ssh_key::HashAlg::Sha256)
                ),
            ))
        } else {
            Ok(())
        }
    };
    match who.credential {
        Credential::UserKey(user_key) => revoked_key(user_key, "user key")?,
        // The ztssh list revokes a certificate by its user key, or every
        // certificate of a user CA by the CA key's fingerprint.
        Credential::UserCert(cert) => {
            revoked_key(
                &ssh_key::PublicKey::new(cert.user_key().clone(), ""),
                "user key",
            )?;
            revoked_key(
                &ssh_key::PublicKey::new(cert.ca_key().clone(), ""),
                "user CA key",
            )?;
        }
    }
    if let Some(issued) = at.issued()
        && !crl.revoked.serials.is_empty()
        && let Some(serial) = issued.all().find(|s| crl.revoked.serials.contains(s))
    {
        let session = issued.session;
        let which = if serial != session {
            format!("certificate {serial} of session {session} revoked")
        } else if serial == issued.current {
            format!("certificate {serial} revoked")
        } else {
            format!("session {session} revoked")
        };
        return Err(Ended::new(EndKind::SerialRevoked, which));
    }
    Ok(())
}

/// Whether a server may act under `licence` now: not revoked by server id,
/// serial, Noise static key or Sub-CA key, and inside its validity window (judged on the server's clock,
/// with [`CLOCK_SKEW`] allowed before `not_before`).
pub fn check_licence(licence: &Licence, crl: Option<&Crl>, now: UnixTime) -> Result<(), Ended> {
    let b = &licence.body;
    if let Some(crl) = crl {
        let r = &crl.revoked;
        let delegation = licence
            .delegation()
            .and_then(|d| r.revoked_delegation(&d.body).map(|why| (d, why)));
        let why = if let Some((d, why)) = delegation {
            Some(format!(
                "the delegation {} that let its signer license it is revoked ({why})",
                d.body.serial
            ))
        } else if r.servers.contains(&b.server_id) {
            Some(format!("server id {} revoked", b.server_id))
        } else if r.serials.contains(&b.serial) {
            Some(format!("licence serial {} revoked", b.serial))
        } else {
            r.revoked_licence_key(b).map(|k| {
                format!("its {k} key is revoked (the server's keys were stolen or retired)")
            })
        };
        if let Some(why) = why {
            return Err(Ended::new(
                EndKind::LicenceRevoked,
                format!("server licence for {} revoked: {why}", b.server_id),
            ));
        }
    }
    if let Some(d) = licence.delegation()
        && now >= d.body.not_after
    {
        return Err(Ended::new(
            EndKind::LicenceExpired,
            format!(
                "the delegation that signed the server licence for {} expired {}: the server's \
                 operator must renew the licence (ztssh-ca authorize-server) under a current one, \
                 nothing on your side",
                b.server_id,
                crate::time::when(d.body.not_after, now)
            ),
        ));
    }
    if now >= b.not_after {
        return Err(Ended::new(
            EndKind::LicenceExpired,
            format!(
                "server licence for {} expired {}: the server's operator must renew it \
                 (ztssh-ca licence), nothing on your side",
                b.server_id,
                crate::time::when(b.not_after, now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::Serial;
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
            delegation: None,
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
            check_revoked(
                Some(&c),
                &Subject::user_key("mallory", &k),
                Checkpoint::Admit
            )
            .map_err(|e| e.kind)
            .err(),
            Some(EndKind::PrincipalBanned)
        );
        assert_eq!(
            check_revoked(
                Some(&c),
                &Subject::user_key("alice", &k),
                Checkpoint::Live(Issued::first(&Serial([7; 16])))
            )
            .map_err(|e| e.kind)
            .err(),
            Some(EndKind::SerialRevoked)
        );
        assert!(
            check_revoked(
                Some(&c),
                &Subject::user_key("alice", &k),
                Checkpoint::Live(Issued::first(&Serial([0; 16])))
            )
            .is_ok()
        );
        assert!(
            check_revoked(
                None,
                &Subject::user_key("mallory", &k),
                Checkpoint::Live(Issued::first(&Serial([7; 16])))
            )
            .is_ok()
        );
    }

    #[test]
    fn any_serial_a_session_was_issued_ends_it_and_no_other_does() {
        let (session, current) = (Serial([1; 16]), Serial([4; 16]));
        let earlier = [Serial([2; 16]), Serial([3; 16])];
        let issued = Issued {
            session: &session,
            current: &current,
            earlier: &earlier,
        };
        let k = user_key(1);
        let who = Subject::user_key("alice", &k);
        // At the session's own checks, and at sshd's key lookup for it
        // (which may come before the session's recheck of a new list).
        for at in [Checkpoint::Live(issued), Checkpoint::SshdLogin(issued)] {
            for revoked in [session, earlier[0], earlier[1], current] {
                let mut c = crl(1);
                c.revoked.serials = [revoked].into_iter().collect();
                let e = check_revoked(Some(&c), &who, at).expect_err("revoked");
                assert_eq!(e.kind, EndKind::SerialRevoked);
                assert!(e.reason.contains(&session.to_string()), "{e}");
            }
            // Another session's serial ends nothing.
            let c = crl(1); // revokes [7; 16]
            assert!(check_revoked(Some(&c), &who, at).is_ok());
        }
    }

    #[test]
    fn a_licence_is_revoked_by_its_noise_or_sub_ca_key() {
        use crate::cert::{Licence, LicenceBody};
        use crate::keys::{SigningKey, TestRng};
        let root = SigningKey::generate(&mut TestRng);
        let subca = SigningKey::generate(&mut TestRng);
        let lic: Licence = LicenceBody {
            serial: Serial([5; 16]),
            server_id: "web1".into(),
            hostnames: vec!["web1".into()],
            subca_key: subca.public(),
            noise_key: [9; 32],
            not_before: 0,
            not_after: 100,
            issuer: root.public(),
        }
        .sign(&root)
        .expect("sign");
        let mut c = crl(1);
        assert!(check_licence(&lic, Some(&c), 10).is_ok());
        c.revoked.noise_keys.insert([9; 32]);
        let e = check_licence(&lic, Some(&c), 10).expect_err("noise key");
        assert_eq!(e.kind, EndKind::LicenceRevoked);
        assert!(e.reason.contains("Noise key"), "{e}");
        c.revoked.noise_keys.clear();
        c.revoked.subca_keys.insert(subca.public().0);
        let e = check_licence(&lic, Some(&c), 10).expect_err("sub-ca key");
        assert!(e.reason.contains("Sub-CA key"), "{e}");
        // Another server's keys revoke nothing here.
        c.revoked.subca_keys = [[3; 32]].into_iter().collect();
        c.revoked.noise_keys = [[4; 32]].into_iter().collect();
        assert!(check_licence(&lic, Some(&c), 10).is_ok());
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
        let good = user_key(3);
        for at in [
            Checkpoint::Admit,
            Checkpoint::Live(Issued::first(&Serial([0; 16]))),
            Checkpoint::SshdLogin(Issued::first(&Serial([0; 16]))),
        ] {
            let e = check_revoked(Some(&c), &Subject::user_key("alice", &bad), at)
                .expect_err("revoked");
            assert_eq!(e.kind, EndKind::UserKeyRevoked);
            assert!(e.reason.contains("SHA256:"), "{e}");
            assert!(check_revoked(Some(&c), &Subject::user_key("alice", &good), at).is_ok());
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
            assert!(check_fresh(Some(&c), p(mode), "web1", Checkpoint::Admit, 24).is_ok());
            assert!(check_fresh(None, p(mode), "web1", Checkpoint::Admit, 1000).is_ok());
        }
        let live = Serial([0; 16]);
        let kind = |mode, new| {
            let at = if new {
                Checkpoint::Admit
            } else {
                Checkpoint::Live(Issued::first(&live))
            };
            check_fresh(Some(&c), p(mode), "web1", at, 25)
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
        let e = check_fresh(
            Some(&c),
            p(StaleMode::RefuseNew),
            "web1",
            Checkpoint::Admit,
            25,
        )
        .expect_err("stale");
        assert!(
            e.reason.contains("web1") && e.reason.contains("version 1"),
            "{e}"
        );
        // sshd's key lookup for a live session is judged as live: an
        // overdue list under refuse-new lets it log in, close-all does not.
        let sshd = |mode| {
            let at = Checkpoint::SshdLogin(Issued::first(&live));
            check_fresh(Some(&c), p(mode), "web1", at, 25)
                .map_err(|e| e.kind)
                .err()
        };
        assert_eq!(sshd(StaleMode::RefuseNew), None);
        assert_eq!(
            sshd(StaleMode::CloseAll),
            Some(EndKind::RevocationListStale)
        );
        // Issuing after a checkpoint: only close-all refuses.
        let issue = |mode| check_fresh_to_issue(Some(&c), p(mode), "web1", 25).is_ok();
        assert!(issue(StaleMode::RefuseNew));
        assert!(!issue(StaleMode::CloseAll));
        assert_eq!(StaleMode::parse("close-all"), Some(StaleMode::CloseAll));
        assert_eq!(StaleMode::parse("fail-closed"), None);
    }

    #[test]
    fn only_a_newer_list_replaces_the_loaded_one() {
        assert_eq!(offer(None, &crl(1)), ListUpdate::Replace);
        assert_eq!(offer(Some(&crl(1)), &crl(2)), ListUpdate::Replace);
        assert_eq!(offer(Some(&crl(2)), &crl(2)), ListUpdate::Same);
        assert_eq!(
            offer(Some(&crl(3)), &crl(2)),
            ListUpdate::Rollback {
                loaded: 3,
                offered: 2
            }
        );
    }
}
