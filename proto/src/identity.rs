//! Continuous identity: short-lived client certificates, the challenge loop
//! and renewal, as IO-free state machines.
//!
//! Server side ([`ServerIdentity`]), call order for one session:
//! 1. [`ServerIdentity::start`] after authorization: issues the first
//!    certificate (send the returned CERT).
//! 2. Whenever [`ServerIdentity::next_wakeup`] passes, call
//!    [`ServerIdentity::poll`] with a fresh nonce; send what it returns (a
//!    CHALLENGE), or end the session on `Err` (missed deadline, expired
//!    certificate).
//! 3. Feed every CONTROL from the client to [`ServerIdentity::handle`]; send
//!    the reply (ACK or CERT), or end the session on `Err`.
//! 4. When revocations or policy change, call [`ServerIdentity::recheck`].
//!
//! Client side ([`ClientIdentity`]): feed CONTROL messages to
//! [`ClientIdentity::handle`] and send its replies; when
//! [`ClientIdentity::renewal_due`], build a RENEW with
//! [`ClientIdentity::renewal_data`] and [`ClientIdentity::renew`].
//!
//! Times: certificate validity is in Unix seconds (`now`), timers in
//! milliseconds of a monotonic clock (`mono_ms`); both are passed in.

use crate::cert::{ClientCert, Serial};
use crate::codec::Writer;
use crate::control::{Control, TerminateCode};
use crate::keys::{PublicKey, SigningKey};
use crate::labels;
use crate::time::UnixTime;

/// Why a session must end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Coarse code for TERMINATE.
    pub code: TerminateCode,
    /// Reason for logs and for the user.
    pub reason: String,
    /// Stable machine-readable reason for logs and metrics.
    pub kind: &'static str,
}

impl Ended {
    fn identity(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code: TerminateCode::IdentityRevoked,
            reason: reason.into(),
            kind,
        }
    }

    fn protocol(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code: TerminateCode::ProtocolError,
            reason: reason.into(),
            kind,
        }
    }
}

/// Decides, at every proof, renewal and reload, whether a session may go on:
/// revocations, bans, the proxy's own licence, policy.
pub trait Authority {
    /// `Err(reason)` ends the session. `user_key` is the key that proved the
    /// user in the handshake; `serial` is the current certificate's.
    fn check(
        &self,
        principal: &str,
        user_key: &ssh_key::PublicKey,
        serial: &Serial,
        now: UnixTime,
    ) -> Result<(), Ended>;
    /// Whether the Sub-CA may issue now (its licence valid and not revoked).
    fn may_issue(&self, now: UnixTime) -> Result<(), Ended>;
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

/// The proxy's view of one session's identity.
#[derive(Debug)]
pub struct ServerIdentity {
    h: [u8; 32],
    principal: String,
    user_key: ssh_key::PublicKey,
    cert: ClientCert,
    /// The certificate before the last renewal, for a proof crossing it.
    previous: Option<ClientCert>,
    timing: Timing,
    next_seq: u64,
    pending: Option<Pending>,
    next_challenge_ms: u64,
    proofs: u64,
    renewals: u64,
    /// Set by the first failure; from then on every call returns it.
    ended: Option<Ended>,
}

/// The first certificate of a session and the state that checks it from now on.
#[derive(Debug)]
pub struct Started {
    /// The state machine.
    pub identity: ServerIdentity,
    /// CERT to send right after ACCEPT.
    pub cert: Control,
}

impl ServerIdentity {
    /// Issues the first certificate for an authenticated, authorized session.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        h: [u8; 32],
        principal: &str,
        user_key: ssh_key::PublicKey,
        session_key: PublicKey,
        subca: &SigningKey,
        authority: &dyn Authority,
        timing: Timing,
        now: UnixTime,
        mono_ms: u64,
    ) -> Result<Started, Ended> {
        authority.may_issue(now)?;
        let ttl = timing.cert_ttl_secs.clamp(1, MAX_CERT_TTL);
        let cert = ClientCert::issue(subca, principal, session_key, now, ttl)
            .map_err(|e| Ended::protocol("issue_failed", e.to_string()))?;
        // The session must be allowed before anything is issued to it.
        authority.check(principal, &user_key, &cert.serial, now)?;
        let msg = Control::Cert {
            cert: cert.encode(),
        };
        let identity = Self {
            h,
            principal: principal.to_owned(),
            user_key,
            cert,
            previous: None,
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
        };
        Ok(Started {
            identity,
            cert: msg,
        })
    }

    /// The session's principal.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The current certificate's serial.
    pub fn serial(&self) -> Serial {
        self.cert.serial
    }

    /// Proofs accepted so far.
    pub fn proofs(&self) -> u64 {
        self.proofs
    }

    /// Renewals accepted so far.
    pub fn renewals(&self) -> u64 {
        self.renewals
    }

    /// When [`Self::poll`] next has something to do (monotonic ms).
    pub fn next_wakeup(&self) -> u64 {
        match &self.pending {
            Some(p) => p.due_ms,
            None => self.next_challenge_ms,
        }
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
        if now >= self.cert.not_after {
            return Err(Ended::identity(
                "cert_expired",
                format!(
                    "client certificate for {} expired (renewal failed?)",
                    self.principal
                ),
            ));
        }
        if let Some(p) = &self.pending {
            if mono_ms >= p.due_ms {
                return Err(Ended::identity(
                    "proof_late",
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

    /// Handles a CONTROL from the client: PROOF gets ACK, RENEW gets CERT.
    /// After any failure the session is over: every later call fails the
    /// same way.
    pub fn handle(
        &mut self,
        msg: Control,
        subca: &SigningKey,
        authority: &dyn Authority,
        now: UnixTime,
        mono_ms: u64,
    ) -> Result<Control, Ended> {
        self.sticky(|me| match msg {
            Control::Proof { seq, cert, sig } => {
                me.handle_proof(seq, &cert, &sig, authority, now, mono_ms)
            }
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
            ),
            other => Err(Ended::protocol(
                "unexpected_control",
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
            return Err(Ended::identity(
                "proof_unsolicited",
                format!("proof for challenge {seq}, none outstanding (replayed?)"),
            ));
        };
        if seq != p.seq {
            return Err(Ended::identity(
                "proof_wrong_seq",
                format!("proof for challenge {seq}, expected {} (replayed?)", p.seq),
            ));
        }
        if mono_ms >= p.due_ms {
            return Err(Ended::identity(
                "proof_late",
                format!("proof for challenge {seq} arrived after the deadline"),
            ));
        }
        let cert = ClientCert::decode(cert)
            .map_err(|e| Ended::identity("proof_bad_cert", e.to_string()))?;
        // Only a certificate this session was issued is acceptable. It is
        // compared field by field (signature included) with the proxy's own
        // copy, so its Sub-CA signature needs no second check: one Ed25519
        // verification per proof instead of two.
        let crossed_renewal = self
            .previous
            .as_ref()
            .is_some_and(|prev| *prev == cert && prev.serial == p.cert_then);
        if cert != self.cert && !crossed_renewal {
            return Err(Ended::identity(
                "proof_wrong_cert",
                "proof carries a certificate that is not this session's current one",
            ));
        }
        cert.check_window(now)
            .map_err(|e| Ended::identity("proof_bad_cert", e.to_string()))?;
        let data = proof_data(&self.h, seq, &p.nonce, &cert.serial);
        cert.session_key
            .verify(labels::CTX_PROOF, &data, sig, "challenge proof")
            .map_err(|_| {
                Ended::identity(
                    "proof_bad_signature",
                    "proof signature invalid (relayed from another connection?)",
                )
            })?;
        authority.check(&self.principal, &self.user_key, &cert.serial, now)?;
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
    ) -> Result<Control, Ended> {
        if principal != self.principal {
            return Err(Ended::identity(
                "renew_principal_switch",
                format!(
                    "renewal tried to switch principal from {} to {principal}",
                    self.principal
                ),
            ));
        }
        // Cheap before costly: an honest client renews when a third of the
        // certificate's life is left, so a renewal within the first quarter
        // is a client burning the proxy's CPU on signature checks.
        let age = now.saturating_sub(self.cert.not_before);
        let min_age = self.timing.cert_ttl_secs / 4;
        if age < min_age {
            return Err(Ended::protocol(
                "renew_too_soon",
                format!("renewal {age}s into a certificate's life; at most one per {min_age}s"),
            ));
        }
        let data = renewal_data(&self.h, principal, &new_key, &self.cert.serial);
        let bad = |what: &str| {
            Ended::identity(
                "renew_bad_signature",
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
        verify_user_sig(&self.user_key, &data, user_sig).map_err(|()| bad("user key"))?;
        authority.check(&self.principal, &self.user_key, &self.cert.serial, now)?;
        authority.may_issue(now)?;
        let cert = ClientCert::issue(subca, principal, new_key, now, self.timing.cert_ttl_secs)
            .map_err(|e| Ended::protocol("issue_failed", e.to_string()))?;
        self.previous = Some(std::mem::replace(&mut self.cert, cert));
        self.renewals += 1;
        Ok(Control::Cert {
            cert: self.cert.encode(),
        })
    }

    /// Re-checks the session against new revocations or policy, at once.
    pub fn recheck(&mut self, authority: &dyn Authority, now: UnixTime) -> Result<(), Ended> {
        self.sticky(|me| authority.check(&me.principal, &me.user_key, &me.cert.serial, now))
    }
}

fn verify_user_sig(user_key: &ssh_key::PublicKey, data: &[u8], blob: &[u8]) -> Result<(), ()> {
    use ssh_key::encoding::Decode;
    let mut reader = blob;
    let sig = ssh_key::SshSig::decode(&mut reader).map_err(|_| ())?;
    if !reader.is_empty() || sig.public_key() != user_key.key_data() {
        return Err(());
    }
    user_key
        .verify(labels::SSHSIG_NAMESPACE_RENEW, data, &sig)
        .map_err(|_| ())
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
        /// Its expiry.
        not_after: UnixTime,
        /// Whether it replaced an earlier one.
        renewed: bool,
    },
    /// A proof was acknowledged.
    Acked(u64),
    /// Nothing to do.
    None,
}

/// The sidecar's side of continuous identity.
#[derive(Debug)]
pub struct ClientIdentity {
    h: [u8; 32],
    principal: String,
    subca_key: PublicKey,
    key: SigningKey,
    next_key: Option<SigningKey>,
    cert: Option<ClientCert>,
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
            cert: None,
        }
    }

    /// The current certificate.
    pub fn cert(&self) -> Option<&ClientCert> {
        self.cert.as_ref()
    }

    /// Handles a CONTROL message from the proxy (other than ACCEPT/TERMINATE).
    pub fn handle(&mut self, msg: &Control, now: UnixTime) -> Result<ClientEvent, String> {
        match msg {
            Control::Cert { cert } => self.install(cert, now),
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

    fn install(&mut self, bytes: &[u8], now: UnixTime) -> Result<ClientEvent, String> {
        let cert = ClientCert::decode(bytes)
            .map_err(|e| format!("bad certificate from the proxy: {e}"))?;
        cert.verify(&self.subca_key, now)
            .map_err(|e| format!("certificate from the proxy does not verify: {e}"))?;
        if cert.principal != self.principal {
            return Err(format!(
                "proxy issued a certificate for {} instead of {}",
                cert.principal, self.principal
            ));
        }
        let renewed = self.cert.is_some();
        match self.next_key.take() {
            Some(next) if next.public() == cert.session_key => self.key = next,
            Some(_) => return Err("renewed certificate is for another session key".into()),
            None if cert.session_key == self.key.public() => {}
            None => return Err("certificate is for another session key".into()),
        }
        let event = ClientEvent::CertInstalled {
            serial: cert.serial,
            not_after: cert.not_after,
            renewed,
        };
        self.cert = Some(cert);
        Ok(event)
    }

    /// Whether to renew now: a third of the lifetime (at least 1 s) is left
    /// and no renewal is in flight.
    pub fn renewal_due(&self, now: UnixTime) -> bool {
        let Some(c) = &self.cert else { return false };
        let margin = (c.not_after.saturating_sub(c.not_before) / 3).max(1);
        self.next_key.is_none() && now.saturating_add(margin) >= c.not_after
    }

    /// Starts a renewal: makes the new session key and returns the data the
    /// user key must sign (SSHSIG, namespace [`labels::SSHSIG_NAMESPACE_RENEW`]).
    pub fn renewal_data(&mut self) -> Result<Vec<u8>, String> {
        let cert = self.cert.as_ref().ok_or("no certificate to renew")?;
        let next = SigningKey::generate();
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

    /// Gives up on a renewal in flight (e.g. the agent refused to sign);
    /// the next [`Self::renewal_due`] may try again.
    pub fn abandon_renewal(&mut self) {
        self.next_key = None;
    }
}
