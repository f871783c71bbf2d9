//! A workload's platform token during its session: the token in force, when
//! it expires, and the tokens the sidecar sends (WORKLOAD_TOKEN) before
//! each renewal. Every RENEW needs a token judged good since the last
//! CERT; the session ends at the token's expiry unless a newer one for the
//! same subject and rule came first.

use sha2::Digest;
use zeroize::Zeroizing;

use super::{Authority, Checkpoint, EndKind, Ended, Handled, ServerIdentity};
use crate::control::{MAX_TOKEN_PARTS, MAX_USER_CERT_PART};
use crate::time::UnixTime;
use crate::trust::workload::{self, MAX_TOKEN, TokenVerified};

/// New tokens (other than the one in force) a session may send per client
/// certificate, and per [`TOKEN_WINDOW_MS`] within a long one: one before
/// its renewal, one when the token in force nears its end, and two more
/// for retries. One more ends the session: each costs a signature check.
/// The token in force sent again costs a digest and is not counted.
pub const MAX_TOKENS_PER_CERT: u32 = 4;

/// The window [`MAX_TOKENS_PER_CERT`] counts in when a certificate outlives
/// it (short-lived tokens under long certificates are refreshed several
/// times per certificate).
pub const TOKEN_WINDOW_MS: u64 = 60_000;

/// The token in force for a workload session.
pub(super) struct LiveToken {
    pub(super) token: TokenVerified,
    /// SHA-256 of its bytes: the same token sent again needs no second
    /// signature check.
    digest: [u8; 32],
    /// When it expires, on the monotonic clock.
    pub(super) expiry_ms: u64,
    /// A token was judged good since the last CERT: the next RENEW may go on.
    fresh: bool,
    /// New tokens verified for the current certificate, in the window
    /// that began at `window_ms`.
    judged: u32,
    window_ms: u64,
    /// Why the last token sent was refused, for the end it leads to.
    refused: Option<String>,
    /// A token arriving in parts.
    parts: Option<Box<Parts>>,
}

impl std::fmt::Debug for LiveToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveToken")
            .field("token", &self.token)
            .field("expiry_ms", &self.expiry_ms)
            .field("fresh", &self.fresh)
            .field("judged", &self.judged)
            .finish_non_exhaustive()
    }
}

/// A value sent in parts (USER_CERT, WORKLOAD_TOKEN): in order, one value at
/// a time, never longer than its cap. Zeroized when dropped; `Debug` shows
/// only its length.
pub(super) struct Parts {
    bytes: Zeroizing<Vec<u8>>,
    next: u8,
    parts: u8,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Parts({} of {}, {} bytes)",
            self.next,
            self.parts,
            self.bytes.len()
        )
    }
}

impl Parts {
    /// Adds part `part` of `parts` to `slot`: `Ok(Some(value))` once the
    /// last part came, `Ok(None)` while more are to come, `Err` for a part
    /// out of order or a value longer than `max` (which breaks the protocol
    /// and ends the session).
    pub(super) fn push(
        slot: &mut Option<Box<Self>>,
        part: u8,
        parts: u8,
        bytes: &[u8],
        max: usize,
        what: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Ended> {
        let broken = |why: String| Ended::new(EndKind::UnexpectedControl, why);
        let acc = slot.get_or_insert_with(|| {
            Box::new(Self {
                bytes: Zeroizing::new(Vec::new()),
                next: 0,
                parts,
            })
        });
        if part != acc.next || parts != acc.parts {
            return Err(broken(format!(
                "{what} part {part} of {parts}, expected part {} of {}",
                acc.next, acc.parts
            )));
        }
        if acc.bytes.len() + bytes.len() > max {
            return Err(broken(format!("{what} longer than {max} bytes")));
        }
        acc.bytes.extend_from_slice(bytes);
        acc.next += 1;
        if acc.next < acc.parts {
            return Ok(None);
        }
        let whole = std::mem::take(&mut acc.bytes);
        *slot = None;
        Ok(Some(whole))
    }
}

/// Monotonic milliseconds at which a token expiring at `exp` (issuer time)
/// ends the session, counted from `now` on the proxy's clock.
fn expiry_ms(exp: UnixTime, now: UnixTime, mono_ms: u64) -> u64 {
    mono_ms.saturating_add(exp.saturating_sub(now).saturating_mul(1000))
}

impl LiveToken {
    /// The handshake's token; its expiry on the monotonic clock is set
    /// when the session starts ([`Self::started`]).
    pub(super) fn new(token: TokenVerified, bytes: &[u8]) -> Self {
        Self {
            expiry_ms: u64::MAX,
            digest: sha2::Sha256::digest(bytes).into(),
            token,
            fresh: false,
            judged: 0,
            window_ms: 0,
            refused: None,
            parts: None,
        }
    }

    /// The session started at `now` (`mono_ms`): the token's expiry on
    /// the monotonic clock.
    pub(super) fn started(&mut self, now: UnixTime, mono_ms: u64) {
        self.expiry_ms = expiry_ms(self.token.expires(), now, mono_ms);
    }

    /// The end of a session whose token ran out.
    pub(super) fn expired(&self, now: UnixTime) -> Ended {
        let t = &self.token;
        let mut reason = format!(
            "the workload token (issuer {}, subject {}) expired at {}",
            t.issuer(),
            t.sub(),
            crate::time::when(t.exp(), now)
        );
        match &self.refused {
            Some(why) => reason.push_str(&format!("; the newer one sent was refused: {why}")),
            None => reason
                .push_str(": no newer token came; the job's token source must give a fresh one"),
        }
        Ended::new(EndKind::WorkloadTokenExpired, reason)
    }

    /// Whether the token in force, or the one it is judged for, has run out.
    pub(super) fn has_expired(&self, now: UnixTime, mono_ms: u64) -> bool {
        now >= self.token.expires() || mono_ms >= self.expiry_ms
    }

    /// A RENEW arrived: it may go on only after a token judged good since
    /// the last CERT.
    pub(super) fn renewal_allowed(&self) -> Result<(), Ended> {
        if self.fresh {
            return Ok(());
        }
        let reason = match &self.refused {
            Some(why) => format!("the renewal's workload token was refused: {why}"),
            None => "the renewal carried no workload token: the job's token command or file gave \
                     none (has the job ended?); start a new session with a fresh token"
                .to_owned(),
        };
        Err(Ended::new(EndKind::WorkloadTokenMissing, reason))
    }

    /// A new certificate was issued: the next renewal needs a token again.
    pub(super) fn renewed(&mut self) {
        self.fresh = false;
        self.judged = 0;
    }
}

impl ServerIdentity {
    /// One WORKLOAD_TOKEN part; a whole token is judged by
    /// [`Self::judge_token`]. In a session that did not begin with a token,
    /// or past [`MAX_TOKENS_PER_CERT`] for one certificate, it ends the
    /// session.
    pub(super) fn handle_token_part(
        &mut self,
        part: u8,
        parts: u8,
        bytes: &[u8],
        authority: &dyn Authority,
        now: UnixTime,
        mono_ms: u64,
    ) -> Result<Handled, Ended> {
        let Some(live) = self.workload.as_mut() else {
            return Err(Ended::new(
                EndKind::UnexpectedControl,
                "WORKLOAD_TOKEN in a session that did not begin with a workload token",
            ));
        };
        debug_assert!(usize::from(MAX_TOKEN_PARTS) * MAX_USER_CERT_PART >= MAX_TOKEN);
        let Some(whole) = Parts::push(
            &mut live.parts,
            part,
            parts,
            bytes,
            MAX_TOKEN,
            "WORKLOAD_TOKEN",
        )?
        else {
            return Ok(Handled::TokenPart);
        };
        self.judge_token(&whole, authority, now, mono_ms)
    }

    /// Judges a token sent during the session. The one in force, sent
    /// again, needs only the live checks (issuer and rule still there, not
    /// expired). Another must pass every check the handshake's did, be for
    /// the same issuer, subject and rule and issued no earlier, and be used
    /// for the first time on this proxy; it then replaces the one in force.
    /// A refusal leaves the session as it was: the next RENEW, or the
    /// expiry of the token in force, ends it with the refusal's reason.
    fn judge_token(
        &mut self,
        bytes: &[u8],
        authority: &dyn Authority,
        now: UnixTime,
        mono_ms: u64,
    ) -> Result<Handled, Ended> {
        let Some(issuers) = authority.workload_issuers() else {
            return Ok(self.refuse_token("this server no longer trusts any workload issuer".into()));
        };
        let Some(live) = self.workload.as_mut() else {
            return Ok(self.refuse_token("this session has no workload token".into()));
        };
        let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
        if digest == live.digest {
            if let Err(e) = live.token.check(issuers, now) {
                return Ok(self.refuse_token(e.reason));
            }
            return Ok(self.accept_token(None, now, mono_ms));
        }
        if mono_ms >= live.window_ms.saturating_add(TOKEN_WINDOW_MS) {
            live.judged = 0;
            live.window_ms = mono_ms;
        }
        live.judged = live.judged.saturating_add(1);
        if live.judged > MAX_TOKENS_PER_CERT {
            return Err(Ended::new(
                EndKind::WorkloadTokenRefused,
                format!(
                    "{} new workload tokens for one certificate within {}s; at most \
                     {MAX_TOKENS_PER_CERT} are checked",
                    live.judged,
                    TOKEN_WINDOW_MS / 1000
                ),
            ));
        }
        let live = &*live;
        let judged = workload::verify(issuers, bytes, &self.principal, now).and_then(|new| {
            live.token.continues(&new)?;
            if new.id() != live.token.id() {
                authority.first_use(&new, &workload::key_id(&self.user_key), now)?;
            }
            Ok(new)
        });
        let new = match judged {
            Ok(t) => t,
            Err(r) => {
                authority.token_refused(r.kind);
                return Ok(self.refuse_token(r.reason));
            }
        };
        let who = crate::trust::Subject::workload(&self.principal, &new, &self.user_key);
        if let Err(e) = authority.check(&who, Checkpoint::Live(self.issued()), now) {
            return Ok(self.refuse_token(e.reason));
        }
        Ok(self.accept_token(Some((new, digest)), now, mono_ms))
    }

    fn accept_token(
        &mut self,
        new: Option<(TokenVerified, [u8; 32])>,
        now: UnixTime,
        mono_ms: u64,
    ) -> Handled {
        let Some(live) = self.workload.as_mut() else {
            return Handled::TokenPart;
        };
        if let Some((token, digest)) = new {
            live.expiry_ms = expiry_ms(token.expires(), now, mono_ms);
            live.token = token;
            live.digest = digest;
        }
        live.fresh = true;
        live.refused = None;
        Handled::TokenAccepted {
            expires: live.token.exp(),
        }
    }

    fn refuse_token(&mut self, reason: String) -> Handled {
        if let Some(live) = self.workload.as_mut() {
            live.fresh = false;
            live.refused = Some(reason.clone());
        }
        Handled::TokenRefused { reason }
    }
}
