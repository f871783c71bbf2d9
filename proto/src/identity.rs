//! Continuous identity: short-lived client certificates, the challenge loop
//! and renewal, as IO-free state machines.
//!
//! Server side ([`ServerIdentity`]), call order for one session:
//! 1. [`ClientAuthenticated::authorize`] decides, once, whether the
//!    authenticated client may have a session; only it makes an
//!    [`Authorized`].
//! 2. [`ServerIdentity::start`] consumes the [`Authorized`] value (after the
//!    caller's session cap admitted it) and issues the first certificate
//!    (send the returned CERT).
//! 3. Whenever [`ServerIdentity::next_wakeup`] passes, call
//!    [`ServerIdentity::poll`] with a fresh nonce; send what it returns (a
//!    CHALLENGE), or end the session on `Err` (missed deadline, expired
//!    certificate).
//! 4. Feed every CONTROL from the client to [`ServerIdentity::handle`]; send
//!    the reply (ACK or CERT; none for a renewal that came too early), or
//!    end the session on `Err` (which is also what comes of more than
//!    [`MAX_EARLY_RENEWALS`] early renewals for one certificate).
//! 5. When revocations or policy change, call [`ServerIdentity::recheck`].
//!
//! Client side ([`ClientIdentity`]): feed CONTROL messages to
//! [`ClientIdentity::handle`] and send its replies; when
//! [`ClientIdentity::renewal_due`], build a RENEW with
//! [`ClientIdentity::renewal_data`] and [`ClientIdentity::renew`].
//!
//! Times: certificate validity is in Unix seconds of the *proxy's* clock
//! (`now`), timers in milliseconds of a monotonic clock (`mono_ms`); both
//! are passed in. The client never compares a certificate with its own
//! wall clock: it times renewal from the moment it received the
//! certificate, on its monotonic clock, so a client clock that is minutes
//! off changes nothing.

use crate::cert::{ClientCert, Serial};
use crate::codec::Writer;
use crate::control::Control;
use crate::keys::{PublicKey, SigningKey};
use crate::labels;
use crate::time::UnixTime;
use rand_core::CryptoRng;

pub use crate::end::{EndKind, Ended};
pub use crate::trust::{Checkpoint, Issued, Subject};

use crate::frame::Transport;
use crate::handshake::ClientAuthenticated;
use crate::trust::usercert::{self, UserCertVerified};
use crate::trust::workload::{self as wl, TokenVerified};

mod workload;
pub use workload::MAX_TOKENS_PER_CERT;
use workload::{LiveToken, Parts};

/// Decides, at every checkpoint of a session's life, whether it may go on:
/// revocations, bans, the proxy's own licence, policy.
pub trait Authority {
    /// `Err` refuses or ends the session. `who` is the principal and the
    /// credential that proved it in the handshake; `at` says which rules
    /// apply ([`Checkpoint::Admit`] before the session starts,
    /// [`Checkpoint::Live`] with every serial the session was issued after).
    fn check(&self, who: &Subject<'_>, at: Checkpoint<'_>, now: UnixTime) -> Result<(), Ended>;
    /// Whether the Sub-CA may issue now (its licence valid and not revoked).
    fn may_issue(&self, now: UnixTime) -> Result<(), Ended>;
    /// What a security key must assert for `principal`, at login and at a
    /// re-verification. The default: a touch at login, never again.
    fn sk_policy(&self, _principal: &str) -> SkPolicy {
        SkPolicy::default()
    }
    /// The user CAs whose certificates this authority accepts (proxy.toml
    /// `trusted_user_ca_keys`); `None`: a certificate is refused.
    fn user_cas(&self) -> Option<&crate::trust::usercert::UserCas> {
        None
    }
    /// The platform token issuers this authority trusts
    /// (`[[workload_issuer]]`); `None`: a token is refused.
    fn workload_issuers(&self) -> Option<&wl::Issuers> {
        None
    }
    /// A workload token was refused for `kind` (the proxy counts them by
    /// kind). The default does nothing.
    fn token_refused(&self, _kind: wl::RefusalKind) {}
    /// Refuses, at authorization and recording nothing, a token another
    /// key already used (the session would be refused when it starts
    /// anyway; this way it takes no session slot or sshd connection first).
    /// The default records nothing, so it refuses nothing here.
    fn check_use(
        &self,
        _token: &TokenVerified,
        _key: &wl::KeyId,
        _now: UnixTime,
    ) -> Result<(), wl::Refused> {
        Ok(())
    }
    /// Records the first use of a verified token on this proxy by `key`
    /// (the key that signed the handshake), and refuses a token another
    /// key used before (a replay: a token read from a log must not open
    /// another session). The default keeps no record, so it refuses every
    /// token.
    fn first_use(
        &self,
        token: &TokenVerified,
        _key: &wl::KeyId,
        _now: UnixTime,
    ) -> Result<(), wl::Refused> {
        Err(wl::Refused {
            kind: wl::RefusalKind::Replayed,
            reason: format!(
                "token from issuer {}: this server keeps no record of tokens used, so it takes none",
                token.issuer()
            ),
        })
    }
}

/// A session's OpenSSH user certificate, and when it expires on the
/// monotonic clock (boxed in the session: most sessions have none).
#[derive(Debug)]
struct LiveUserCert {
    cert: UserCertVerified,
    expiry_ms: u64,
}

/// Per-principal rules for FIDO security keys (`sk-` user keys).
///
/// A security key asks for a touch (and a PIN, with verification) for
/// every signature. The handshake always needs one; a renewal needs one
/// only once `reverify_secs` have passed since the last: until then, a
/// CERT says `user_sig_due: Some(false)` and the renewal goes without the
/// user key's signature, vouched for by the current and the new session
/// keys alone. The proxy decides whether a certificate's renewal needs the
/// user key when it issues the certificate: when the certificate would
/// outlive the interval. So no renewal without the user key ever happens
/// after the interval ran out, and a stolen session key cannot keep a
/// session past it by more than one certificate's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkPolicy {
    /// The user-presence flag (a touch) is required. Default on.
    pub presence: bool,
    /// The user-verified flag (a PIN) is required. Default off.
    pub verification: bool,
    /// Seconds after which a renewal needs the user key again (a touch);
    /// `None`: at login only.
    pub reverify_secs: Option<u64>,
}

impl Default for SkPolicy {
    fn default() -> Self {
        Self {
            presence: true,
            verification: false,
            reverify_secs: None,
        }
    }
}

impl SkPolicy {
    fn check(&self, sk: crate::userkey::SkAssertion) -> Result<(), crate::userkey::UserKeyError> {
        sk.check(self.presence, self.verification)
    }
}

/// Timing of the challenge loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Seconds between challenges (before jitter).
    pub interval_secs: u64,
    /// Seconds the client has to answer.
    pub deadline_secs: u16,
    /// Client certificate lifetime in seconds.
    pub cert_ttl_secs: u64,
}

/// Hard cap on a client certificate's lifetime.
pub const MAX_CERT_TTL: u64 = 3600;

/// Floor on a client certificate's lifetime. A sidecar renews with a
/// third of the lifetime left and every renewal asks the user key for a
/// signature (a touch, a confirmation dialog), so a proxy handing out
/// short certificates would make the user sign without end: the sidecar
/// refuses a shorter certificate and the proxy's config a shorter
/// `cert_ttl_secs`. At the floor a session renews every 40 s.
pub const MIN_CERT_TTL: u64 = 60;

/// The floor when both sides were told to allow short certificates
/// (`insecure_short_certs`, for test rigs that must see renewals within
/// seconds; each side says so loudly).
pub const INSECURE_MIN_CERT_TTL: u64 = 2;

/// Early renewals (within the first quarter of a certificate's life)
/// ignored per certificate; one more ends the session. An honest sidecar
/// never sends one (it renews with a third left, timed on its monotonic
/// clock from the certificate's arrival); a few allow for retries of a
/// renewal the proxy answered late.
pub const MAX_EARLY_RENEWALS: u32 = 3;

/// Most serials of earlier certificates a session keeps to be judged by
/// (16 bytes each). Past it the oldest are dropped; the session serial,
/// which every certificate carries, always ends the session. At the
/// default 300 s certificate (a renewal every ~200 s) this covers over
/// nine days, at the 60 s floor about 45 hours.
pub const MAX_SERIAL_HISTORY: usize = 4096;

/// What the session key signs to answer a challenge.
pub fn proof_data(h: &[u8; 32], seq: u64, nonce: &[u8; 32], serial: &Serial) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(h).u64(seq).bytes(nonce).bytes(&serial.0);
    w.into_vec()
}

/// What the old key, the new key and the user key sign in a renewal.
pub fn renewal_data(
    h: &[u8; 32],
    principal: &str,
    new_key: &PublicKey,
    serial: &Serial,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(h)
        .str8(principal)
        .bytes(&new_key.0)
        .bytes(&serial.0);
    w.into_vec()
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    nonce: [u8; 32],
    due_ms: u64,
    /// The certificate current when the challenge went out: a renewal may
    /// cross the challenge on the wire, so a proof may carry either.
    cert_then: Serial,
}

/// What a CONTROL from the client came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// The proof verified: send this ACK.
    Proved(Control),
    /// The renewal verified: send this CERT.
    Renewed(Control),
    /// A renewal came too early: nothing is sent and nothing changes but
    /// the count; the session goes on under its current certificate.
    RenewRefused {
        /// Why.
        reason: String,
        /// Which early renewal this is for the current certificate (1 for
        /// the first), at most [`MAX_EARLY_RENEWALS`].
        nth: u32,
    },
    /// A part of a newer user certificate arrived; more are to come.
    UserCertPart,
    /// A newer OpenSSH user certificate replaced the session's: the session
    /// now lives until its valid-before. Nothing is sent.
    UserCertRenewed {
        /// The new certificate's key id, serial and CA.
        described: String,
        /// Its valid-before (Unix seconds).
        valid_before: UnixTime,
    },
    /// A certificate sent during the session was refused; the session goes
    /// on under the one it has, and ends at its valid-before.
    UserCertRefused {
        /// Why, for the log and for the TERMINATE at the old one's end.
        reason: String,
    },
    /// A part of a workload token arrived, or the one in force came again
    /// while a token was already judged: nothing is sent.
    TokenPart,
    /// A workload token was judged good: the next renewal may go on, and
    /// the session lives until it expires.
    TokenAccepted {
        /// The token's `exp` (Unix seconds, issuer time).
        expires: UnixTime,
    },
    /// A workload token sent during the session was refused; the session
    /// goes on until the next renewal or the expiry of the one in force.
    TokenRefused {
        /// Why, for the log and the end it leads to.
        reason: String,
    },
}

/// The shortest time between two user certificates a session takes: each
/// one costs a signature check, and a real CA renews far less often.
pub const USER_CERT_MIN_INTERVAL_MS: u64 = 10_000;

/// The proxy's view of one session's identity.
#[derive(Debug)]
pub struct ServerIdentity {
    h: [u8; 32],
    principal: String,
    user_key: ssh_key::PublicKey,
    cert: ClientCert,
    /// When the current certificate was issued, on the monotonic clock.
    cert_issued_ms: u64,
    /// When the current certificate expires, on the monotonic clock.
    cert_expiry_ms: u64,
    /// Renewals refused as too early for the current certificate.
    early_renewals: u32,
    /// The certificate before the last renewal, for a proof crossing it.
    previous: Option<ClientCert>,
    /// The serials of the certificates between the first (the session
    /// serial) and the current one, oldest first, at most
    /// [`MAX_SERIAL_HISTORY`]: revoking any of them ends the session.
    earlier: Vec<Serial>,
    timing: Timing,
    next_seq: u64,
    pending: Option<Pending>,
    next_challenge_ms: u64,
    proofs: u64,
    renewals: u64,
    /// Set by the first failure; from then on every call returns it.
    ended: Option<Ended>,
    /// The user key is a security key ([`SkPolicy`] applies).
    sk: bool,
    /// When the user key last signed (login, or a renewal with its
    /// signature), on the monotonic clock.
    verified_ms: u64,
    /// Whether the current certificate's renewal must carry the user
    /// key's signature (always, for keys other than security keys).
    user_sig_due: bool,
    /// The OpenSSH user certificate that vouches for the principal, if
    /// the client presented one; the session ends at its valid-before.
    user_cert: Option<Box<LiveUserCert>>,
    /// A newer user certificate being received, part by part.
    user_cert_parts: Option<Box<Parts>>,
    /// When the last whole user certificate arrived (monotonic ms).
    user_cert_last_ms: Option<u64>,
    /// Why the last certificate sent during the session was refused, for
    /// the TERMINATE when the one in force expires.
    user_cert_refused: Option<String>,
    /// The workload token that vouches for the principal, if the session
    /// began with one; the session ends at its expiry.
    workload: Option<Box<LiveToken>>,
}

/// A client that authenticated in the handshake and that the authority
/// allowed: its principal, key, policy and the proxy's licence all passed.
/// Only [`ClientAuthenticated::authorize`] makes one, and
/// [`ServerIdentity::start`] consumes it.
#[derive(Debug)]
pub struct Authorized {
    h: [u8; 32],
    principal: String,
    user_key: ssh_key::PublicKey,
    /// The user key is a security key.
    sk: bool,
    session_key: PublicKey,
    transport: Transport,
    user_cert: Option<Box<UserCertVerified>>,
    /// The verified workload token and its bytes' digest.
    token: Option<Box<LiveToken>>,
}

impl Authorized {
    /// The authorized principal.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The verified user certificate that vouched for the principal.
    pub fn user_cert(&self) -> Option<&UserCertVerified> {
        self.user_cert.as_deref()
    }

    /// The verified workload token that vouched for the principal.
    pub fn workload_token(&self) -> Option<&TokenVerified> {
        self.token.as_ref().map(|t| &t.token)
    }

    /// The principal and what proved it.
    pub fn subject(&self) -> Subject<'_> {
        subject(
            &self.principal,
            &self.user_key,
            self.user_cert.as_deref(),
            self.workload_token(),
        )
    }

    /// The user key that signed the handshake.
    pub fn user_key(&self) -> &ssh_key::PublicKey {
        &self.user_key
    }

    /// Records the first use of the workload token, if the session has one,
    /// by the key that signed the handshake: a token another key used
    /// before is a replay.
    fn record_token(&self, authority: &dyn Authority, now: UnixTime) -> Result<(), Ended> {
        let Some(t) = &self.token else {
            return Ok(());
        };
        authority
            .first_use(&t.token, &wl::key_id(&self.user_key), now)
            .map_err(|r| {
                authority.token_refused(r.kind);
                r.ended()
            })
    }

    /// Gives up on the session before it starts (e.g. the session cap is
    /// full): the record layer, to send TERMINATE with.
    pub fn into_refused(self, ended: Ended) -> Refused {
        Refused {
            ended,
            transport: Box::new(self.transport),
        }
    }
}

/// A session refused after the handshake: why, and the record layer to say
/// so with.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub ended: Ended,
    /// The tunnel's record layer (boxed: refusals are rare, results small).
    pub transport: Box<Transport>,
}

impl Refused {
    /// The sealed TERMINATE to send the client before closing.
    pub fn terminate_record(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let msg = Control::Terminate {
            code: self.ended.code(),
            reason: self.ended.reason.clone(),
        };
        // Sealing fails only on nonce exhaustion, impossible this early.
        let _ = self.transport.sealer.seal_control(&msg, &mut out);
        out
    }
}

impl ClientAuthenticated {
    /// Decides, once, whether this client may have a session: bans,
    /// authorization of principal and key, policy and the proxy's licence,
    /// all through `authority`.
    pub fn authorize(
        self,
        authority: &dyn Authority,
        now: UnixTime,
    ) -> Result<Authorized, Refused> {
        let principal = self.principal().to_owned();
        let user_key = self.user_key().clone();
        let session_key = self.session_key();
        let sk = self.user_sig().sk();
        let credentials = self.verify_user_cert(authority, now).and_then(|cert| {
            let token = self.verify_token(authority, now)?;
            Ok((cert, token))
        });
        let (user_cert, token) = match credentials {
            Ok(c) => c,
            Err(ended) => {
                return Err(Refused {
                    ended,
                    transport: Box::new(self.transport),
                });
            }
        };
        let verdict = authority
            .check(
                &subject(
                    &principal,
                    &user_key,
                    user_cert.as_deref(),
                    token.as_ref().map(|t| &t.token),
                ),
                Checkpoint::Admit,
                now,
            )
            .and_then(|()| match sk {
                Some(a) => authority.sk_policy(&principal).check(a).map_err(|why| {
                    let fp = user_key.fingerprint(ssh_key::HashAlg::Sha256);
                    Ended::new(
                        EndKind::UserKeyRefused,
                        format!("principal {principal}: key {fp}: {why}"),
                    )
                }),
                None => Ok(()),
            })
            .and_then(|()| authority.may_issue(now));
        match verdict {
            Ok(()) => Ok(Authorized {
                h: self.handshake_hash,
                principal,
                user_key,
                sk: sk.is_some(),
                session_key,
                transport: self.transport,
                user_cert,
                token: token.map(Box::new),
            }),
            Err(ended) => Err(Refused {
                ended,
                transport: Box::new(self.transport),
            }),
        }
    }
}

impl ClientAuthenticated {
    /// Verifies the user certificate message 3 carried, if any, under the
    /// authority's user CAs: only then may it vouch for the principal. A
    /// `verify-required` certificate needs a security key's signature with
    /// user verification (a PIN), as sshd requires.
    fn verify_user_cert(
        &self,
        authority: &dyn Authority,
        now: UnixTime,
    ) -> Result<Option<Box<UserCertVerified>>, Ended> {
        let Some(bytes) = self.user_cert() else {
            return Ok(None);
        };
        let Some(cas) = authority.user_cas() else {
            return Err(Ended::new(
                EndKind::UserCertRefused,
                "this server trusts no user CA: connect without the certificate \
                 (move KEY-cert.pub aside) or ask its operator to set trusted_user_ca_keys",
            ));
        };
        let cert = usercert::verify(cas, bytes, self.user_key(), self.principal(), now)?;
        if cert.verify_required() && !self.user_sig().sk().is_some_and(|a| a.verification()) {
            return Err(Ended::new(
                EndKind::UserCertRefused,
                "your certificate has verify-required: sign in with a security key and its PIN",
            ));
        }
        Ok(Some(Box::new(cert)))
    }

    /// Verifies the workload token message 3 carried, if any, under the
    /// authority's issuers for the claimed principal. Its first use is
    /// recorded by [`ServerIdentity::start`], once the caller's session cap
    /// admitted the session: a session refused before it starts records
    /// nothing (the second review's F2).
    fn verify_token(
        &self,
        authority: &dyn Authority,
        now: UnixTime,
    ) -> Result<Option<LiveToken>, Ended> {
        let Some(bytes) = self.workload_token() else {
            return Ok(None);
        };
        let Some(issuers) = authority.workload_issuers() else {
            return Err(Ended::new(
                EndKind::WorkloadTokenRefused,
                "this server trusts no workload issuer: its operator must add a \
                 [[workload_issuer]] table for your platform",
            ));
        };
        let refused = |r: wl::Refused| {
            authority.token_refused(r.kind);
            r.ended()
        };
        let token = wl::verify(issuers, bytes, self.principal(), now).map_err(refused)?;
        authority
            .check_use(&token, &wl::key_id(self.user_key()), now)
            .map_err(refused)?;
        Ok(Some(LiveToken::new(token, bytes)))
    }
}

/// The subject of a session: the certificate or the token vouches when
/// there is one (never both: message 1 announces one at most).
fn subject<'a>(
    principal: &'a str,
    user_key: &'a ssh_key::PublicKey,
    cert: Option<&'a UserCertVerified>,
    token: Option<&'a TokenVerified>,
) -> Subject<'a> {
    match (cert, token) {
        (Some(c), _) => Subject::user_cert(principal, c),
        (None, Some(t)) => Subject::workload(principal, t, user_key),
        (None, None) => Subject::user_key(principal, user_key),
    }
}

/// The first certificate of a session and the state that checks it from now on.
#[derive(Debug)]
pub struct Started {
    /// The state machine.
    pub identity: ServerIdentity,
    /// CERT to send right after ACCEPT.
    pub cert: Control,
    /// The tunnel's record layer.
    pub transport: Transport,
}

impl ServerIdentity {
    /// Issues the first certificate to an authorized session. The
    /// authority is asked again (a reload may have landed since the
    /// authorization), and nothing is issued if it now refuses.
    pub fn start(
        authorized: Authorized,
        subca: &SigningKey,
        authority: &dyn Authority,
        timing: Timing,
        now: UnixTime,
        mono_ms: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Started, Refused> {
        let issued = authority
            .check(&authorized.subject(), Checkpoint::Admit, now)
            .and_then(|()| authority.may_issue(now))
            .and_then(|()| authorized.record_token(authority, now))
            .and_then(|()| {
                let ttl = timing.cert_ttl_secs.clamp(1, MAX_CERT_TTL);
                ClientCert::issue(
                    subca,
                    &authorized.principal,
                    None,
                    authorized.session_key,
                    now,
                    ttl,
                    rng,
                )
                .map_err(|e| Ended::new(EndKind::IssueFailed, e.to_string()))
            });
        let cert = match issued {
            Ok(c) => c,
            Err(ended) => return Err(authorized.into_refused(ended)),
        };
        let ttl = cert.not_after - cert.not_before;
        let sk = authorized.sk;
        let user_sig_due = sk_due(
            sk,
            &authority.sk_policy(&authorized.principal),
            mono_ms,
            mono_ms,
            ttl,
        );
        let msg = Control::Cert {
            cert: cert.encode(),
            user_sig_due: sk.then_some(user_sig_due),
        };
        let identity = Self {
            h: authorized.h,
            principal: authorized.principal,
            user_key: authorized.user_key,
            cert_issued_ms: mono_ms,
            cert_expiry_ms: mono_ms.saturating_add(ttl.saturating_mul(1000)),
            early_renewals: 0,
            cert,
            previous: None,
            earlier: Vec::new(),
            timing: Timing {
                cert_ttl_secs: ttl,
                ..timing
            },
            next_seq: 1,
            pending: None,
            next_challenge_ms: mono_ms.saturating_add(timing.interval_secs.saturating_mul(1000)),
            proofs: 0,
            renewals: 0,
            ended: None,
            sk,
            verified_ms: mono_ms,
            user_sig_due,
            user_cert: authorized.user_cert.map(|cert| {
                let left = cert.valid_before().saturating_sub(now);
                Box::new(LiveUserCert {
                    expiry_ms: mono_ms.saturating_add(left.saturating_mul(1000)),
                    cert: *cert,
                })
            }),
            user_cert_parts: None,
            user_cert_last_ms: None,
            user_cert_refused: None,
            workload: authorized.token.map(|mut t| {
                t.started(now, mono_ms);
                t
            }),
        };
        Ok(Started {
            identity,
            cert: msg,
            transport: authorized.transport,
        })
    }

    /// The session's principal.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The session's principal and what proved it.
    pub fn subject(&self) -> Subject<'_> {
        subject(
            &self.principal,
            &self.user_key,
            self.user_cert.as_ref().map(|c| &c.cert),
            self.workload_token(),
        )
    }

    /// The workload token that vouches for the session, if any.
    pub fn workload_token(&self) -> Option<&TokenVerified> {
        self.workload.as_ref().map(|t| &t.token)
    }

    /// The OpenSSH user certificate that vouches for the session, if any.
    pub fn user_cert(&self) -> Option<&UserCertVerified> {
        self.user_cert.as_ref().map(|c| &c.cert)
    }

    /// The current certificate's serial.
    pub fn serial(&self) -> Serial {
        self.cert.serial
    }

    /// The session serial: its first certificate's, carried by every
    /// certificate it is issued. The one to revoke to end the session.
    pub fn session_serial(&self) -> Serial {
        self.cert.session
    }

    /// Every serial the session was issued, as the authority judges them.
    pub fn issued(&self) -> Issued<'_> {
        Issued {
            session: &self.cert.session,
            current: &self.cert.serial,
            earlier: &self.earlier,
        }
    }

    /// Proofs accepted so far.
    pub fn proofs(&self) -> u64 {
        self.proofs
    }

    /// Renewals accepted so far.
    pub fn renewals(&self) -> u64 {
        self.renewals
    }

    /// When [`Self::poll`] next has something to do (monotonic ms): the
    /// next challenge or the outstanding one's deadline, and never later
    /// than the certificate's expiry.
    pub fn next_wakeup(&self) -> u64 {
        let timer = match &self.pending {
            Some(p) => p.due_ms,
            None => self.next_challenge_ms,
        };
        let user_cert = self.user_cert.as_ref().map_or(u64::MAX, |c| c.expiry_ms);
        let token = self.workload.as_ref().map_or(u64::MAX, |t| t.expiry_ms);
        timer.min(self.cert_expiry_ms).min(user_cert).min(token)
    }

    /// Drives the timers: a missed deadline or an expired certificate ends
    /// the session; otherwise a CHALLENGE may be due. `nonce` must be fresh
    /// random bytes; it also jitters the next interval.
    pub fn poll(
        &mut self,
        now: UnixTime,
        mono_ms: u64,
        nonce: [u8; 32],
    ) -> Result<Option<Control>, Ended> {
        self.sticky(|me| me.poll_inner(now, mono_ms, nonce))
    }

    /// Runs `f` unless the session already ended; remembers a failure, so
    /// an ended session never acknowledges or issues anything again.
    fn sticky<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Ended>) -> Result<T, Ended> {
        if let Some(e) = &self.ended {
            return Err(e.clone());
        }
        let r = f(self);
        if let Err(e) = &r {
            self.ended = Some(e.clone());
        }
        r
    }

    fn poll_inner(
        &mut self,
        now: UnixTime,
        mono_ms: u64,
        nonce: [u8; 32],
    ) -> Result<Option<Control>, Ended> {
        // A session lives only while its user certificate does.
        if let Some(c) = &self.user_cert
            && (now >= c.cert.valid_before() || mono_ms >= c.expiry_ms)
        {
            return Err(match &self.user_cert_refused {
                // The TERMINATE's reason is short: the refusal first.
                Some(why) => Ended::new(
                    EndKind::UserCertExpired,
                    format!(
                        "your certificate expired at {}; the newer one sent was refused: {why}",
                        crate::time::when(c.cert.valid_before(), now)
                    ),
                ),
                None => expired(&c.cert, now),
            });
        }
        // And while its workload token does.
        if let Some(t) = &self.workload
            && t.has_expired(now, mono_ms)
        {
            return Err(t.expired(now));
        }
        if now >= self.cert.not_after || mono_ms >= self.cert_expiry_ms {
            return Err(Ended::new(
                EndKind::CertExpired,
                format!(
                    "client certificate for {} expired (renewal failed?)",
                    self.principal
                ),
            ));
        }
        if let Some(p) = &self.pending {
            if mono_ms >= p.due_ms {
                return Err(Ended::new(
                    EndKind::ProofLate,
                    format!(
                        "no proof for challenge {} within {}s",
                        p.seq, self.timing.deadline_secs
                    ),
                ));
            }
            return Ok(None);
        }
        if mono_ms < self.next_challenge_ms {
            return Ok(None);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let due_ms = mono_ms.saturating_add(u64::from(self.timing.deadline_secs) * 1000);
        self.pending = Some(Pending {
            seq,
            nonce,
            due_ms,
            cert_then: self.cert.serial,
        });
        Ok(Some(Control::Challenge {
            seq,
            nonce,
            deadline_secs: self.timing.deadline_secs,
        }))
    }

    fn schedule_next(&mut self, mono_ms: u64, nonce: &[u8; 32]) {
        // ±10 % jitter from the challenge nonce, so sessions do not line up.
        let interval = self.timing.interval_secs.saturating_mul(1000);
        let spread = interval / 5;
        let r = u64::from(u16::from_be_bytes([nonce[0], nonce[1]]));
        let jitter = if spread == 0 { 0 } else { r % spread };
        self.next_challenge_ms = mono_ms.saturating_add(interval - interval / 10 + jitter);
    }

    /// Handles a CONTROL from the client: PROOF gets ACK, RENEW gets CERT,
    /// a renewal that comes too early gets nothing and changes nothing.
    /// After any failure the session is over: every later call fails the
    /// same way.
    pub fn handle(
        &mut self,
        msg: Control,
        subca: &SigningKey,
        authority: &dyn Authority,
        now: UnixTime,
        mono_ms: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Handled, Ended> {
        self.sticky(|me| match msg {
            Control::Proof { seq, cert, sig } => me
                .handle_proof(seq, &cert, &sig, authority, now, mono_ms)
                .map(Handled::Proved),
            Control::Renew {
                principal,
                new_key,
                new_sig,
                old_sig,
                user_sig,
            } => me.handle_renew(
                &principal,
                PublicKey(new_key),
                &new_sig,
                &old_sig,
                &user_sig,
                subca,
                authority,
                now,
                mono_ms,
                rng,
            ),
            Control::UserCert { part, parts, bytes } => {
                me.handle_user_cert_part(part, parts, &bytes, authority, now, mono_ms)
            }
            Control::WorkloadToken { part, parts, bytes } => {
                me.handle_token_part(part, parts, &bytes.0, authority, now, mono_ms)
            }
            other => Err(Ended::new(
                EndKind::UnexpectedControl,
                format!("unexpected {} from client", other.name()),
            )),
        })
    }

    fn handle_proof(
        &mut self,
        seq: u64,
        cert: &[u8],
        sig: &[u8; 64],
        authority: &dyn Authority,
        now: UnixTime,
        mono_ms: u64,
    ) -> Result<Control, Ended> {
        let Some(p) = self.pending.take() else {
            return Err(Ended::new(
                EndKind::ProofUnsolicited,
                format!("proof for challenge {seq}, none outstanding (replayed?)"),
            ));
        };
        if seq != p.seq {
            return Err(Ended::new(
                EndKind::ProofWrongSeq,
                format!("proof for challenge {seq}, expected {} (replayed?)", p.seq),
            ));
        }
        if mono_ms >= p.due_ms {
            return Err(Ended::new(
                EndKind::ProofLate,
                format!("proof for challenge {seq} arrived after the deadline"),
            ));
        }
        let cert = ClientCert::decode(cert)
            .map_err(|e| Ended::new(EndKind::ProofBadCert, e.to_string()))?;
        // Only a certificate this session was issued is acceptable. It is
        // compared field by field (signature included) with the proxy's own
        // copy, so its Sub-CA signature needs no second check: one Ed25519
        // verification per proof instead of two.
        let crossed_renewal = self
            .previous
            .as_ref()
            .is_some_and(|prev| *prev == cert && prev.serial == p.cert_then);
        if cert != self.cert && !crossed_renewal {
            return Err(Ended::new(
                EndKind::ProofWrongCert,
                "proof carries a certificate that is not this session's current one",
            ));
        }
        cert.check_window(now)
            .map_err(|e| Ended::new(EndKind::ProofBadCert, e.to_string()))?;
        let data = proof_data(&self.h, seq, &p.nonce, &cert.serial);
        cert.session_key
            .verify(labels::CTX_PROOF, &data, sig, "challenge proof")
            .map_err(|_| {
                Ended::new(
                    EndKind::ProofBadSignature,
                    "proof signature invalid (relayed from another connection?)",
                )
            })?;
        authority.check(&self.subject(), Checkpoint::Live(self.issued()), now)?;
        self.proofs += 1;
        self.schedule_next(mono_ms, &p.nonce);
        Ok(Control::Ack { seq })
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_renew(
        &mut self,
        principal: &str,
        new_key: PublicKey,
        new_sig: &[u8; 64],
        old_sig: &[u8; 64],
        user_sig: &[u8],
        subca: &SigningKey,
        authority: &dyn Authority,
        now: UnixTime,
        mono_ms: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Handled, Ended> {
        if principal != self.principal {
            return Err(Ended::new(
                EndKind::RenewPrincipalSwitch,
                format!(
                    "renewal tried to switch principal from {} to {principal}",
                    self.principal
                ),
            ));
        }
        // Cheap before costly: an honest client renews when a third of the
        // certificate's life is left, so a renewal within the first quarter
        // would only burn the proxy's CPU on signature checks. It is
        // refused before any of them, and the session goes on, up to a few
        // times per certificate. The age is on the monotonic clock, like
        // the client's renewal timer, so a wall clock that steps back
        // cannot make an honest renewal look early.
        let age_ms = mono_ms.saturating_sub(self.cert_issued_ms);
        let min_age = (self.timing.cert_ttl_secs / 4).max(1);
        if age_ms < min_age.saturating_mul(1000) {
            return self.refuse_early_renewal(age_ms / 1000, min_age);
        }
        if let Some(t) = &self.workload {
            t.renewal_allowed()?;
        }
        let data = renewal_data(&self.h, principal, &new_key, &self.cert.serial);
        let bad = |what: &str| {
            Ended::new(
                EndKind::RenewBadSignature,
                format!("renewal refused: {what} signature invalid"),
            )
        };
        self.cert
            .session_key
            .verify(labels::CTX_RENEW, &data, old_sig, "renewal")
            .map_err(|_| bad("current session key"))?;
        new_key
            .verify(labels::CTX_RENEW, &data, new_sig, "renewal")
            .map_err(|_| bad("new session key"))?;
        let reverified = self.check_renewal_user_sig(&data, user_sig, authority)?;
        if reverified {
            self.verified_ms = mono_ms;
        }
        authority.check(&self.subject(), Checkpoint::Live(self.issued()), now)?;
        authority.may_issue(now)?;
        let ttl = self.timing.cert_ttl_secs;
        let session = Some(self.cert.session);
        let cert = ClientCert::issue(subca, principal, session, new_key, now, ttl, rng)
            .map_err(|e| Ended::new(EndKind::IssueFailed, e.to_string()))?;
        let old = std::mem::replace(&mut self.cert, cert);
        if old.serial != old.session {
            if self.earlier.len() >= MAX_SERIAL_HISTORY {
                self.earlier.remove(0);
            }
            self.earlier.push(old.serial);
        }
        self.previous = Some(old);
        self.cert_issued_ms = mono_ms;
        self.cert_expiry_ms = mono_ms.saturating_add(ttl.saturating_mul(1000));
        self.early_renewals = 0;
        self.renewals += 1;
        if let Some(t) = self.workload.as_mut() {
            t.renewed();
        }
        let policy = authority.sk_policy(&self.principal);
        self.user_sig_due = sk_due(self.sk, &policy, self.verified_ms, mono_ms, ttl);
        Ok(Handled::Renewed(Control::Cert {
            cert: self.cert.encode(),
            user_sig_due: self.sk.then_some(self.user_sig_due),
        }))
    }

    /// The user key's part of a renewal: its signature, verified, or none
    /// where the certificate's CERT said none was due (a security key
    /// within its re-verification interval). Returns whether the user key
    /// signed (a re-verification).
    fn check_renewal_user_sig(
        &self,
        data: &[u8],
        user_sig: &[u8],
        authority: &dyn Authority,
    ) -> Result<bool, Ended> {
        let refuse = |why: String| {
            Ended::new(
                EndKind::RenewBadSignature,
                format!("renewal refused: user key: {why}"),
            )
        };
        if user_sig.is_empty() {
            return if self.sk && !self.user_sig_due {
                Ok(false)
            } else {
                Err(refuse(
                    "signature missing (required for this renewal)".into(),
                ))
            };
        }
        let v = crate::userkey::verify(
            &self.user_key,
            labels::SSHSIG_NAMESPACE_RENEW,
            data,
            user_sig,
        )
        .map_err(|why| refuse(why.to_string()))?;
        if let Some(a) = v.sk() {
            authority
                .sk_policy(&self.principal)
                .check(a)
                .map_err(|why| refuse(why.to_string()))?;
        }
        // A verify-required certificate: every signature of the user key
        // the proxy accepts carries user verification, not only the login's.
        if self
            .user_cert()
            .is_some_and(UserCertVerified::verify_required)
            && !v.sk().is_some_and(|a| a.verification())
        {
            return Err(refuse(
                "your certificate has verify-required and this signature carries no user \
                 verification: renew with the security key and its PIN"
                    .into(),
            ));
        }
        Ok(true)
    }

    /// Counts an early renewal: ignored up to [`MAX_EARLY_RENEWALS`] per
    /// certificate, then the end of the session.
    fn refuse_early_renewal(&mut self, age: u64, min_age: u64) -> Result<Handled, Ended> {
        self.early_renewals = self.early_renewals.saturating_add(1);
        if self.early_renewals > MAX_EARLY_RENEWALS {
            return Err(Ended::new(
                EndKind::RenewTooEarly,
                format!(
                    "{} renewals within the first {min_age}s of certificate {}; at most {MAX_EARLY_RENEWALS} are ignored",
                    self.early_renewals, self.cert.serial
                ),
            ));
        }
        Ok(Handled::RenewRefused {
            reason: format!("renewal {age}s into a certificate's life; at most one per {min_age}s"),
            nth: self.early_renewals,
        })
    }

    /// Re-checks the session against new revocations or policy, at once.
    pub fn recheck(&mut self, authority: &dyn Authority, now: UnixTime) -> Result<(), Ended> {
        self.sticky(|me| authority.check(&me.subject(), Checkpoint::Live(me.issued()), now))
    }

    /// One USER_CERT part. Parts come in order, one certificate at a time;
    /// a session without a user certificate, a part out of order or a
    /// certificate larger than any the handshake takes breaks the protocol
    /// and ends the session. A whole certificate is judged by
    /// [`Self::replace_user_cert`].
    fn handle_user_cert_part(
        &mut self,
        part: u8,
        parts: u8,
        bytes: &[u8],
        authority: &dyn Authority,
        now: UnixTime,
        mono_ms: u64,
    ) -> Result<Handled, Ended> {
        if self.user_cert.is_none() {
            return Err(Ended::new(
                EndKind::UnexpectedControl,
                "USER_CERT in a session that started without a user certificate",
            ));
        }
        let Some(whole) = Parts::push(
            &mut self.user_cert_parts,
            part,
            parts,
            bytes,
            usercert::MAX_USER_CERT,
            "USER_CERT",
        )?
        else {
            return Ok(Handled::UserCertPart);
        };
        // The one in force, sent again (the sidecar sends each once more,
        // in case the first came too soon): nothing to do or to check.
        if self
            .user_cert
            .as_ref()
            .is_some_and(|c| c.cert.encoded() == whole.as_slice())
        {
            return Ok(Handled::UserCertPart);
        }
        let too_soon = self
            .user_cert_last_ms
            .is_some_and(|last| mono_ms < last.saturating_add(USER_CERT_MIN_INTERVAL_MS));
        if too_soon {
            return Ok(self.refuse_user_cert(format!(
                "a certificate came less than {}s after the last one; not checked",
                USER_CERT_MIN_INTERVAL_MS / 1000
            )));
        }
        // Only a certificate that is checked starts the interval: one sent
        // too soon costs nothing and may come again.
        self.user_cert_last_ms = Some(mono_ms);
        Ok(self.replace_user_cert(&whole, authority, now, mono_ms))
    }

    /// Judges a newer user certificate sent during the session. It replaces
    /// the session's only when it passes every check the handshake's did
    /// (trusted CA, canonical, the session's key and principal, valid now,
    /// signature), every live check (revocations, the CA's KRL, policy,
    /// `source-address` against the client's address), lasts longer than
    /// the one in force, and carries the same critical options: sshd
    /// applied the first certificate's options to this connection at login,
    /// so a certificate with others takes effect only on a new connection.
    /// A refusal leaves the session as it was.
    fn replace_user_cert(
        &mut self,
        bytes: &[u8],
        authority: &dyn Authority,
        now: UnixTime,
        mono_ms: u64,
    ) -> Handled {
        let Some(live) = self.user_cert.as_ref() else {
            return self.refuse_user_cert("this session has no user certificate".into());
        };
        let Some(cas) = authority.user_cas() else {
            return self.refuse_user_cert("this server no longer trusts any user CA".into());
        };
        let new = match usercert::verify(cas, bytes, &self.user_key, &self.principal, now) {
            Ok(c) => c,
            Err(e) => return self.refuse_user_cert(e.reason),
        };
        let old = &live.cert;
        if new.valid_before() <= old.valid_before() {
            return self.refuse_user_cert(format!(
                "the certificate sent is valid until {}, no later than the one in force ({})",
                crate::time::date(new.valid_before()),
                crate::time::date(old.valid_before())
            ));
        }
        if !new.same_terms(old) {
            return self.refuse_user_cert(
                "its critical options or extensions (force-command, source-address, \
                 verify-required, permit-*) differ from the certificate this session logged in \
                 with: sshd applied those at login, so reconnect to use the new certificate"
                    .into(),
            );
        }
        let who = subject(&self.principal, &self.user_key, Some(&new), None);
        if let Err(e) = authority.check(&who, Checkpoint::Live(self.issued()), now) {
            return self.refuse_user_cert(e.reason);
        }
        let valid_before = new.valid_before();
        let described = new.describe();
        let left = valid_before.saturating_sub(now);
        self.user_cert = Some(Box::new(LiveUserCert {
            expiry_ms: mono_ms.saturating_add(left.saturating_mul(1000)),
            cert: new,
        }));
        self.user_cert_refused = None;
        Handled::UserCertRenewed {
            described,
            valid_before,
        }
    }

    fn refuse_user_cert(&mut self, reason: String) -> Handled {
        self.user_cert_refused = Some(reason.clone());
        Handled::UserCertRefused { reason }
    }
}

/// Whether the renewal of a certificate issued at `issued_ms` for `ttl`
/// seconds must carry the user key's signature: always for keys other than
/// security keys; for a security key, when the certificate would outlive
/// the principal's re-verification interval counted from `verified_ms`.
fn sk_due(sk: bool, policy: &SkPolicy, verified_ms: u64, issued_ms: u64, ttl: u64) -> bool {
    if !sk {
        return true;
    }
    policy.reverify_secs.is_some_and(|iv| {
        let expiry = issued_ms.saturating_add(ttl.saturating_mul(1000));
        expiry >= verified_ms.saturating_add(iv.saturating_mul(1000))
    })
}

/// What the client learned from a CONTROL message.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Send this reply.
    Reply(Control),
    /// A certificate was installed (first or renewed).
    CertInstalled {
        /// Its serial.
        serial: Serial,
        /// Its lifetime in seconds (on the proxy's clock).
        ttl_secs: u64,
        /// Whether it replaced an earlier one.
        renewed: bool,
    },
    /// A proof was acknowledged.
    Acked(u64),
}

/// Renewal keys a sidecar keeps after giving up on their renewals. The
/// proxy renews a certificate at most once, so a late CERT is for one of
/// the renewals given up on since the current certificate arrived; with a
/// retry every 20 s, four cover a proxy that answers over a minute late.
pub const MAX_ABANDONED: usize = 4;

/// The sidecar's side of continuous identity.
#[derive(Debug)]
pub struct ClientIdentity {
    h: [u8; 32],
    principal: String,
    subca_key: PublicKey,
    key: SigningKey,
    next_key: Option<SigningKey>,
    /// The keys of the last renewals given up on, oldest first, at most
    /// [`MAX_ABANDONED`]: a CERT for any of them may still arrive late, and
    /// is then as good as any. Dropped (and zeroized) once a certificate
    /// is installed.
    abandoned: std::collections::VecDeque<SigningKey>,
    cert: Option<ClientCert>,
    /// When the current certificate arrived, on the monotonic clock.
    received_ms: u64,
    /// What the current certificate's CERT said about its renewal.
    user_sig_due: Option<bool>,
    /// The shortest certificate lifetime accepted ([`MIN_CERT_TTL`]).
    min_ttl_secs: u64,
}

impl ClientIdentity {
    /// Starts with the session key from the handshake and the licence's Sub-CA key.
    pub fn new(
        h: [u8; 32],
        principal: &str,
        session_key: SigningKey,
        subca_key: PublicKey,
    ) -> Self {
        Self {
            h,
            principal: principal.to_owned(),
            subca_key,
            key: session_key,
            next_key: None,
            // Full size at once: no reallocation leaves key copies behind.
            abandoned: std::collections::VecDeque::with_capacity(MAX_ABANDONED),
            cert: None,
            received_ms: 0,
            user_sig_due: None,
            min_ttl_secs: MIN_CERT_TTL,
        }
    }

    /// Accepts certificates down to [`INSECURE_MIN_CERT_TTL`] instead of
    /// [`MIN_CERT_TTL`]: for test rigs only (the caller says so loudly).
    /// The caps on user-key signatures still hold.
    pub fn allow_short_certs(&mut self) {
        self.min_ttl_secs = INSECURE_MIN_CERT_TTL;
    }

    /// The shortest certificate lifetime this side accepts.
    pub fn min_ttl_secs(&self) -> u64 {
        self.min_ttl_secs
    }

    /// The current certificate.
    pub fn cert(&self) -> Option<&ClientCert> {
        self.cert.as_ref()
    }

    /// Handles a CONTROL message from the proxy (other than ACCEPT/TERMINATE)
    /// that arrived at `mono_ms`.
    pub fn handle(&mut self, msg: &Control, mono_ms: u64) -> Result<ClientEvent, String> {
        match msg {
            Control::Cert { cert, user_sig_due } => self.install(cert, *user_sig_due, mono_ms),
            Control::Challenge { seq, nonce, .. } => {
                let cert = self
                    .cert
                    .as_ref()
                    .ok_or("challenge before any certificate")?;
                let sig = self.key.sign(
                    labels::CTX_PROOF,
                    &proof_data(&self.h, *seq, nonce, &cert.serial),
                );
                Ok(ClientEvent::Reply(Control::Proof {
                    seq: *seq,
                    cert: cert.encode(),
                    sig,
                }))
            }
            Control::Ack { seq } => Ok(ClientEvent::Acked(*seq)),
            other => Err(format!("unexpected {} from the proxy", other.name())),
        }
    }

    /// Installs a certificate. Its window is the proxy's (it was issued
    /// just now, on the proxy's clock), so it is never compared with this
    /// machine's wall clock: only the signature, the issuer, the principal
    /// and the session key are checked, and its lifetime is timed from now
    /// on the monotonic clock.
    fn install(
        &mut self,
        bytes: &[u8],
        user_sig_due: Option<bool>,
        mono_ms: u64,
    ) -> Result<ClientEvent, String> {
        // Verified before it is parsed.
        let cert = ClientCert::decode_verified(bytes, &self.subca_key).map_err(|e| match e {
            crate::ProtoError::Malformed(e) => format!("bad certificate from the proxy: {e}"),
            e => format!("certificate from the proxy does not verify: {e}"),
        })?;
        // Decoding refuses not_after <= not_before.
        let ttl_secs = cert.not_after.saturating_sub(cert.not_before);
        if ttl_secs > MAX_CERT_TTL {
            return Err(format!(
                "certificate from the proxy is valid for {ttl_secs}s, more than {MAX_CERT_TTL}s"
            ));
        }
        if ttl_secs < self.min_ttl_secs {
            let min = self.min_ttl_secs;
            return Err(format!(
                "the proxy issued a certificate valid for {ttl_secs}s, less than the {min}s minimum \
                 (each renewal asks your key for a signature); its operator must set \
                 cert_ttl_secs to {MIN_CERT_TTL} or more"
            ));
        }
        if cert.principal != self.principal {
            return Err(format!(
                "proxy issued a certificate for {} instead of {}",
                cert.principal, self.principal
            ));
        }
        // A proxy that predates session serials (format 1) issues every
        // certificate as its own session; one that knows them never
        // changes a session's serial, nor its certificate format.
        if let Some(prev) = &self.cert {
            if prev.carries_session() != cert.carries_session() {
                return Err(format!(
                    "the proxy renewed session {} with a certificate of another format",
                    prev.session
                ));
            }
            if cert.carries_session() && prev.session != cert.session {
                return Err(format!(
                    "the proxy renewed session {} with a certificate of session {}",
                    prev.session, cert.session
                ));
            }
        }
        let renewed = self.cert.is_some();
        let late = self
            .abandoned
            .iter()
            .position(|k| k.public() == cert.session_key)
            .and_then(|i| self.abandoned.remove(i));
        match (self.next_key.take(), late) {
            (_, Some(late)) => self.key = late,
            (Some(next), None) if next.public() == cert.session_key => self.key = next,
            (Some(_), None) => return Err("renewed certificate is for another session key".into()),
            // The first certificate, for the handshake's session key.
            (None, None) if self.cert.is_none() && cert.session_key == self.key.public() => {}
            (None, None) if self.cert.is_none() => {
                return Err("certificate is for another session key".into());
            }
            // After the first, a CERT answers a RENEW of this sidecar's
            // (in flight or given up on): anything else would let the
            // proxy restart the renewal timer at will.
            (None, None) => {
                return Err(format!(
                    "the proxy sent certificate {} that no renewal asked for",
                    cert.serial
                ));
            }
        }
        // No CERT can come for the other abandoned renewals any more: they
        // were signed over the certificate just replaced.
        self.abandoned.clear();
        let event = ClientEvent::CertInstalled {
            serial: cert.serial,
            ttl_secs,
            renewed,
        };
        self.cert = Some(cert);
        self.received_ms = mono_ms;
        self.user_sig_due = user_sig_due;
        Ok(event)
    }

    /// Whether the next renewal needs the user key's signature: always,
    /// unless the proxy said it does not (a security key within its
    /// re-verification interval, [`SkPolicy`]).
    pub fn user_sig_needed(&self) -> bool {
        self.user_sig_due != Some(false)
    }

    /// The current certificate's lifetime in seconds.
    pub fn ttl_secs(&self) -> Option<u64> {
        let c = self.cert.as_ref()?;
        Some(c.not_after.saturating_sub(c.not_before))
    }

    /// When the current certificate should be renewed (monotonic ms): when
    /// a third of its lifetime (at least 1 s) is left, counted from its
    /// arrival.
    pub fn renew_at(&self) -> Option<u64> {
        let c = self.cert.as_ref()?;
        let ttl = c.not_after - c.not_before;
        let margin = (ttl / 3).max(1);
        Some(
            self.received_ms
                .saturating_add(ttl.saturating_sub(margin).saturating_mul(1000)),
        )
    }

    /// When the current certificate expires (monotonic ms, counted from its
    /// arrival; the proxy's own count ends a little earlier, by the transit
    /// time).
    pub fn expires_at(&self) -> Option<u64> {
        let c = self.cert.as_ref()?;
        Some(
            self.received_ms
                .saturating_add((c.not_after - c.not_before).saturating_mul(1000)),
        )
    }

    /// Whether to renew now: the renewal time has come and no renewal is
    /// in flight.
    pub fn renewal_due(&self, mono_ms: u64) -> bool {
        self.next_key.is_none() && self.renew_at().is_some_and(|at| mono_ms >= at)
    }

    /// Starts a renewal: makes the new session key and returns the data the
    /// user key must sign (SSHSIG, namespace [`labels::SSHSIG_NAMESPACE_RENEW`]).
    pub fn renewal_data(&mut self, rng: &mut (impl CryptoRng + ?Sized)) -> Result<Vec<u8>, String> {
        let cert = self.cert.as_ref().ok_or("no certificate to renew")?;
        let next = SigningKey::generate(rng);
        let data = renewal_data(&self.h, &self.principal, &next.public(), &cert.serial);
        self.next_key = Some(next);
        Ok(data)
    }

    /// Finishes the renewal with the user's SSHSIG over [`Self::renewal_data`].
    pub fn renew(&self, user_sig: Vec<u8>) -> Result<Control, String> {
        let (cert, next) = self
            .cert
            .as_ref()
            .zip(self.next_key.as_ref())
            .ok_or("no renewal in progress")?;
        let data = renewal_data(&self.h, &self.principal, &next.public(), &cert.serial);
        Ok(Control::Renew {
            principal: self.principal.clone(),
            new_key: next.public().0,
            new_sig: next.sign(labels::CTX_RENEW, &data),
            old_sig: self.key.sign(labels::CTX_RENEW, &data),
            user_sig,
        })
    }

    /// The new session key of the renewal in flight (tests).
    #[cfg(test)]
    pub(crate) fn pending_key(&self) -> Option<PublicKey> {
        self.next_key.as_ref().map(SigningKey::public)
    }

    /// Gives up on a renewal in flight (the agent refused to sign, or the
    /// proxy did not answer); a later [`Self::renewal_due`] may try again.
    /// Its key is kept, with those of the last [`MAX_ABANDONED`] renewals
    /// given up on, in case its CERT arrives late.
    pub fn abandon_renewal(&mut self) {
        if let Some(k) = self.next_key.take() {
            if self.abandoned.len() == MAX_ABANDONED {
                self.abandoned.pop_front();
            }
            self.abandoned.push_back(k);
        }
    }
}

/// The end of a session whose user certificate ran out.
fn expired(cert: &UserCertVerified, now: UnixTime) -> Ended {
    Ended::new(
        EndKind::UserCertExpired,
        format!(
            "your certificate ({}) expired at {}: get a new one from your SSH CA and reconnect",
            cert.describe(),
            crate::time::when(cert.valid_before(), now)
        ),
    )
}
