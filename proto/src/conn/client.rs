//! The sidecar's side of a tunnel: it waits for ACCEPT, answers
//! challenges, renews its certificate with the user key, and reports how
//! the session ended. Its core reads only the monotonic clock.

use super::link::{DriverRng, Link};
use super::sealed::{Fault, Hooks};
use super::{Conn, Now, Side};
use crate::control::{Control, TerminateCode};
use crate::end::Termination;
use crate::frame::{Event, Transport};
use crate::identity::{ClientEvent, ClientIdentity};
use crate::keys::CryptoRng;

#[cfg(feature = "testkit")]
use crate::frame::Sealer;

/// How long a sidecar waits for a CERT after sending RENEW.
pub const RENEW_REPLY_MS: u64 = 15_000;
/// How long a sidecar waits before retrying a failed renewal.
pub const RENEW_RETRY_MS: u64 = 5_000;
/// How long after its certificate's expiry the sidecar waits for the
/// proxy's own end of the session (an honest proxy ends it at the expiry
/// by its count, a transit time earlier) before ending it itself. Nothing
/// is signed for a renewal from the expiry on.
pub const EXPIRY_GRACE_MS: u64 = 2_000;
/// The sidecar's write bound until a challenge names the deadline.
pub const CLIENT_WRITE_BOUND_MS: u64 = 20_000;
/// Most user-key signatures the sidecar gives renewals in any hour
/// (retries included). An honest proxy at the certificate floor
/// ([`MIN_CERT_TTL`](crate::identity::MIN_CERT_TTL), 60 s) renews 90 times
/// an hour, at the default 300 s 18 times; past this many the sidecar
/// stops signing and the session ends when its certificate runs out.
pub const MAX_RENEWAL_SIGNATURES_PER_HOUR: usize = 120;
const HOUR_MS: u64 = 3_600_000;

/// Why a sidecar's session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEnd {
    /// The proxy refused the session before accepting it.
    Refused(Termination),
    /// The proxy refused the user key before accepting the session (the
    /// key is not authorized for the principal, or not acceptable at all;
    /// code [`TerminateCode::NotAuthorized`]): another key may do, on a new
    /// connection.
    KeyRefused(Termination),
    /// The proxy ended an accepted session.
    Terminated(Termination),
    /// A record failed to open or broke the protocol.
    Integrity(String),
    /// The proxy broke the continuous-identity protocol.
    Protocol(String),
    /// The connection closed without an end-of-session record.
    Lost,
    /// The proxy read nothing for longer than the write bound.
    Stalled(u64),
}

/// What happened on the sidecar's side of a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientConnEvent {
    /// The proxy accepted the session and connected to its sshd.
    Accepted,
    /// A certificate was installed.
    CertInstalled {
        /// Its serial.
        serial: crate::cert::Serial,
        /// Its lifetime in seconds.
        ttl_secs: u64,
        /// Whether it replaced an earlier one.
        renewed: bool,
    },
    /// A challenge was answered.
    Answered {
        /// Its sequence number.
        seq: u64,
    },
    /// A proof was acknowledged.
    Acked {
        /// Its sequence number.
        seq: u64,
    },
    /// A renewal failed; it will be retried.
    RenewalFailed {
        /// Why.
        error: String,
        /// Seconds the current certificate has left.
        left_secs: u64,
    },
    /// The proxy closed its direction: close ssh's input side.
    PeerClosed,
    /// A rekey completed: both directions are on new keys.
    Rekeyed {
        /// Rekeys completed on this session so far.
        count: u64,
    },
    /// A renewal is about to ask the user key for a signature (a touch,
    /// with a security key): [`ClientConn::poll_sign`] has its data.
    /// The sidecar says so before asking: a security key needs a touch.
    SigningRenewal {
        /// User-key signatures given renewals in the last hour, this one
        /// included (at most [`MAX_RENEWAL_SIGNATURES_PER_HOUR`]).
        this_hour: usize,
    },
    /// The session is over. It is the last event.
    Ended(Option<ClientEnd>),
    /// A control message left unhandled (test clients in manual mode only).
    #[doc(hidden)]
    Control(Control),
}

#[derive(Debug, PartialEq, Eq)]
enum Renewal {
    Idle,
    /// The user key is signing [`ClientConn::poll_sign`]'s data.
    Signing,
    /// RENEW sent at this time; waiting for CERT.
    Sent(u64),
    /// Retry at this time.
    RetryAt(u64),
    /// The user key has signed as much as it may for now: sign again at
    /// this time, unless the certificate runs out first (the session then
    /// ends).
    Capped(u64),
}

/// The sidecar's side of one tunnel after the handshake.
pub type ClientConn = Conn<ClientSide>;

/// What only the sidecar's side of a tunnel holds: acceptance, renewal
/// and how it ended.
#[derive(Debug)]
pub struct ClientSide {
    accepted: bool,
    /// ACCEPT's caps: what the proxy takes during the session.
    caps: u32,
    /// The valid-before of the last user certificate sent (or presented
    /// in the handshake): only a later one is sent.
    user_cert_sent: Option<u64>,
    /// The session began with a workload token: the proxy takes one
    /// before each renewal.
    token_session: bool,
    renewal: Renewal,
    to_sign: Option<Vec<u8>>,
    done: bool,
    /// Ended by an error: nothing more reaches ssh.
    failed: bool,
    /// Test clients: surface control messages instead of handling them.
    manual: bool,
    /// Read nothing from ssh until the proxy accepts (another key may
    /// have to be tried on a new connection, which needs ssh's first
    /// bytes).
    hold: bool,
    /// When the user key signed for renewals in the last hour, oldest
    /// first (at most [`MAX_RENEWAL_SIGNATURES_PER_HOUR`]).
    signed_ms: std::collections::VecDeque<u64>,
    /// When the last renewal (not a retry) first asked the user key.
    renewal_began_ms: Option<u64>,
}

impl Side for ClientSide {
    type Event = ClientConnEvent;
    type Identity = ClientIdentity;
}

impl Hooks for ClientSide {
    /// Only the proxy not reading ends the session (ssh may be
    /// suspended).
    const BOUNDS_LOCAL: bool = false;

    fn rekeyed(count: u64) -> ClientConnEvent {
        ClientConnEvent::Rekeyed { count }
    }

    fn is_over(&self) -> bool {
        self.done
    }

    fn reads_peer(&self) -> bool {
        !self.done
    }

    fn reads_local(&self) -> bool {
        !self.done && (self.accepted || !self.hold)
    }

    fn local_cut(&self) -> bool {
        self.failed
    }

    fn fail(conn: &mut ClientConn, fault: Fault, _now: Now) {
        let end = match fault {
            Fault::Record(e) | Fault::Open(e) => ClientEnd::Integrity(e.to_string()),
            Fault::Rekey(e) => ClientEnd::Protocol(e),
            // The local queue is not bounded on this side.
            Fault::PeerStalled | Fault::LocalStalled => {
                ClientEnd::Stalled(conn.write_bound_ms / 1000)
            }
        };
        conn.end(Some(end));
    }
}

impl Conn<ClientSide> {
    /// Starts on an established tunnel; `identity` holds the session key,
    /// `rng` is the driver's random source for the keys the connection
    /// makes (rekeys, renewal keys).
    pub fn new(
        transport: Transport,
        identity: ClientIdentity,
        rng: impl CryptoRng + Send + 'static,
    ) -> Self {
        let side = ClientSide {
            accepted: false,
            caps: 0,
            user_cert_sent: None,
            token_session: false,
            renewal: Renewal::Idle,
            to_sign: None,
            done: false,
            failed: false,
            manual: false,
            hold: false,
            signed_ms: std::collections::VecDeque::with_capacity(MAX_RENEWAL_SIGNATURES_PER_HOUR),
            renewal_began_ms: None,
        };
        Self::with(
            Link::new(transport, None, DriverRng(Box::new(rng))),
            identity,
            CLIENT_WRITE_BOUND_MS,
            side,
        )
    }

    /// Holds ssh's input until the proxy accepts the session: when the
    /// sidecar may still try another user key on a new connection, ssh's
    /// first bytes must not be spent on this one.
    pub fn hold_until_accepted(&mut self, on: bool) {
        self.side.hold = on;
    }

    /// Whether the proxy accepted the session.
    pub fn accepted(&self) -> bool {
        self.side.accepted
    }

    /// Whether the session is over.
    pub fn is_done(&self) -> bool {
        self.side.done
    }

    /// Whether the proxy takes a newer user certificate during this session
    /// (it said so in ACCEPT; only to a client that logged in with one).
    pub fn takes_user_cert(&self) -> bool {
        self.side.accepted
            && !self.side.done
            && self.side.caps & crate::control::ACCEPT_CAP_USER_CERT != 0
    }

    /// Records the valid-before of the certificate presented in the
    /// handshake: [`Self::send_user_cert`] sends only later ones.
    pub fn presented_user_cert(&mut self, valid_before: u64) {
        self.side.user_cert_sent = Some(valid_before);
    }

    /// Sends `cert` (an OpenSSH user certificate's binary form, valid
    /// until `valid_before`) to the proxy in USER_CERT parts, when the
    /// proxy takes one and it lasts longer than the last one sent. Returns
    /// whether it was sent. The proxy judges it; a refusal is in its log
    /// and in the TERMINATE when the certificate in force ends.
    pub fn send_user_cert(&mut self, cert: &[u8], valid_before: u64, now: Now) -> bool {
        let newer = self
            .side
            .user_cert_sent
            .is_none_or(|sent| valid_before > sent);
        if !newer || !self.resend_user_cert(cert, now) {
            return false;
        }
        self.side.user_cert_sent = Some(valid_before);
        true
    }

    /// Sends the certificate last sent once more: the proxy checks one
    /// certificate per interval and passes over one that came sooner
    /// (a delay on the way can do that), and it takes the one in force
    /// again as nothing. Returns whether it was sent.
    pub fn resend_user_cert(&mut self, cert: &[u8], now: Now) -> bool {
        let parts = cert.len().div_ceil(crate::control::MAX_USER_CERT_PART);
        if !self.takes_user_cert()
            || cert.is_empty()
            || parts > usize::from(crate::control::MAX_USER_CERT_PARTS)
        {
            return false;
        }
        self.seal_user_cert(cert, now);
        true
    }

    /// Queues `cert` in USER_CERT parts (its size already checked).
    fn seal_user_cert(&mut self, cert: &[u8], now: Now) {
        self.seal_parts(cert, now, |part, parts, chunk| Control::UserCert {
            part,
            parts,
            bytes: chunk.to_vec(),
        });
    }

    /// Queues `value` in parts of at most
    /// [`MAX_USER_CERT_PART`](crate::control::MAX_USER_CERT_PART) bytes,
    /// each the message `part` makes of (part, parts, bytes); the caller
    /// checked that the count fits its message.
    fn seal_parts(&mut self, value: &[u8], now: Now, part: impl Fn(u8, u8, &[u8]) -> Control) {
        use crate::control::MAX_USER_CERT_PART;
        let parts = value.len().div_ceil(MAX_USER_CERT_PART) as u8;
        for (n, chunk) in value.chunks(MAX_USER_CERT_PART).enumerate() {
            self.seal(&part(n as u8, parts, chunk), now);
        }
    }

    /// Records that the handshake presented a workload token: from then
    /// on [`Self::send_token`] sends the current one.
    pub fn presented_token(&mut self) {
        self.side.token_session = true;
    }

    /// Sends the workload's current token (a compact JWT) in WORKLOAD_TOKEN
    /// parts: before each renewal (the proxy renews only after a token it
    /// judged good since the last certificate), and when the one in force
    /// nears its expiry. Returns whether it was sent: only in a session
    /// that began with a token, and only a token of at most
    /// [`MAX_TOKEN`](crate::trust::workload::MAX_TOKEN) bytes.
    pub fn send_token(&mut self, token: &[u8], now: Now) -> bool {
        use crate::control::TokenPart;
        if !self.side.token_session
            || self.side.done
            || token.is_empty()
            || token.len() > crate::trust::workload::MAX_TOKEN
        {
            return false;
        }
        self.seal_parts(token, now, |part, parts, chunk| Control::WorkloadToken {
            part,
            parts,
            bytes: TokenPart(zeroize::Zeroizing::new(chunk.to_vec())),
        });
        true
    }

    /// `n` bytes of [`Self::poll_transmit`] were written.
    pub fn transmitted(&mut self, n: usize, now: Now) {
        self.link.transmitted(n, now.mono_ms);
    }

    /// `n` bytes of [`Self::poll_local`] were written.
    pub fn delivered(&mut self, n: usize, now: Now) {
        self.link.delivered(n, now.mono_ms);
    }

    /// Whether ssh's side should be closed: the proxy sent CLOSE and
    /// everything before it was delivered.
    pub fn local_finished(&self) -> bool {
        self.link.peer_closed && self.link.local.is_empty()
    }

    /// The proxy's bytes, copied into the receive buffer and handled.
    pub fn handle_peer(&mut self, bytes: &[u8], now: Now) {
        self.feed_peer(bytes, |conn, n| conn.handle_peer_read(n, now));
    }

    /// `n` bytes were read into [`Self::recv_buf`].
    pub fn handle_peer_read(&mut self, n: usize, now: Now) {
        let opened = self.open_peer(n, now, |conn, ev| conn.on_event(ev, now));
        if opened && !self.side.done {
            self.report_rekeys();
        }
    }

    fn on_event(&mut self, ev: &Event, now: Now) {
        if let (true, Event::Control(msg)) = (self.side.manual, ev) {
            self.events.push_back(ClientConnEvent::Control(msg.clone()));
            // ACCEPT and TERMINATE still change the state: after a
            // TERMINATE nothing more is opened, so the session is over.
            if !matches!(msg, Control::Accept { .. } | Control::Terminate { .. }) {
                return;
            }
        }
        match ev {
            Event::Close => {
                self.link.peer_closed = true;
                self.events.push_back(ClientConnEvent::PeerClosed);
            }
            Event::Control(Control::Accept { caps, .. }) => {
                self.side.accepted = true;
                self.side.caps = *caps;
                if !self.side.manual {
                    self.events.push_back(ClientConnEvent::Accepted);
                }
            }
            Event::Control(Control::Terminate { code, reason }) => {
                // Nothing after TERMINATE reaches ssh.
                self.link.local.clear();
                let told = Termination::new(*code, reason.clone());
                let end = if self.side.accepted {
                    ClientEnd::Terminated(told)
                } else if *code == TerminateCode::NotAuthorized {
                    ClientEnd::KeyRefused(told)
                } else {
                    ClientEnd::Refused(told)
                };
                self.end(Some(end));
            }
            Event::Control(msg) => self.on_control(msg, now),
            // Handled by the link as it opens.
            Event::Rekey(_) => {}
        }
    }

    fn on_control(&mut self, msg: &Control, now: Now) {
        if let Control::Challenge { deadline_secs, .. } = msg {
            self.write_bound_ms =
                (u64::from(*deadline_secs) * 1000).clamp(1000, CLIENT_WRITE_BOUND_MS);
        }
        match self.identity.handle(msg, now.mono_ms) {
            Err(e) => self.end(Some(ClientEnd::Protocol(e))),
            Ok(ClientEvent::Reply(reply)) => {
                if let Control::Proof { seq, .. } = &reply {
                    self.events
                        .push_back(ClientConnEvent::Answered { seq: *seq });
                }
                self.seal(&reply, now);
            }
            Ok(ClientEvent::CertInstalled {
                serial,
                ttl_secs,
                renewed,
            }) => {
                self.side.renewal = Renewal::Idle;
                self.events.push_back(ClientConnEvent::CertInstalled {
                    serial,
                    ttl_secs,
                    renewed,
                });
            }
            Ok(ClientEvent::Acked(seq)) => self.events.push_back(ClientConnEvent::Acked { seq }),
        }
    }

    /// The proxy closed TCP. After its CLOSE, that is a normal end.
    pub fn handle_peer_eof(&mut self, _now: Now) {
        let end = (!self.link.peer_closed).then_some(ClientEnd::Lost);
        self.end(end);
    }

    /// ssh's input ended (or ssh is going away): CLOSE goes to the proxy.
    pub fn handle_local_eof(&mut self, now: Now) {
        self.close_local(now);
    }

    /// Queues any control message (tests and tools that misbehave on
    /// purpose use this; the sidecar never does).
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn queue_control_raw(&mut self, msg: &Control, now: Now) {
        self.seal(msg, now);
    }

    /// Test clients: surface every control message as
    /// [`ClientConnEvent::Control`] instead of handling it, so a test can
    /// answer, replay or forge by hand through [`Self::identity_mut`].
    #[cfg(any(test, feature = "testkit"))]
    #[doc(hidden)]
    pub fn set_manual(&mut self, on: bool) {
        self.side.manual = on;
    }

    /// The identity machine, for test clients in manual mode.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn identity_mut(&mut self) -> &mut ClientIdentity {
        &mut self.identity
    }

    /// Seals with the next nonce but hands the bytes back instead of
    /// queueing them, so a test can alter them before sending.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn seal_detached(&mut self, f: impl FnOnce(&mut Sealer, &mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut self.link.sealer, &mut out);
        out
    }

    /// Queues an arbitrary record plaintext (see
    /// [`Sealer::seal_plaintext_raw`](crate::frame::Sealer::seal_plaintext_raw)).
    #[cfg(any(test, feature = "testkit"))]
    #[doc(hidden)]
    pub fn queue_plaintext_raw(&mut self, plain: &[u8], now: Now) {
        self.link.note_tx(now.mono_ms);
        let _ = self
            .link
            .sealer
            .seal_plaintext_raw(plain, &mut self.link.tx.buf);
    }

    /// The data the user key must sign for a renewal that is due now.
    /// Call [`Self::handle_signature`] with the result.
    pub fn poll_sign(&mut self) -> Option<Vec<u8>> {
        self.side.to_sign.take()
    }

    /// The user key's SSHSIG over [`Self::poll_sign`]'s data, or why there
    /// is none.
    pub fn handle_signature(&mut self, sig: Result<Vec<u8>, String>, now: Now) {
        if self.side.done || self.side.renewal != Renewal::Signing {
            return;
        }
        if self.identity.expires_at().is_some_and(|e| now.mono_ms >= e) {
            // Signed too late: the session ends at expiry, and this
            // signature is never sent.
            return;
        }
        match sig.and_then(|s| self.identity.renew(s)) {
            Ok(renew) => {
                self.side.renewal = Renewal::Sent(now.mono_ms);
                self.seal(&renew, now);
            }
            Err(error) => self.renewal_failed(error, now.mono_ms),
        }
    }

    fn renewal_failed(&mut self, error: String, mono_ms: u64) {
        self.identity.abandon_renewal();
        self.side.renewal = Renewal::RetryAt(mono_ms.saturating_add(RENEW_RETRY_MS));
        let left_secs = self
            .identity
            .expires_at()
            .map_or(0, |at| at.saturating_sub(mono_ms) / 1000);
        self.events
            .push_back(ClientConnEvent::RenewalFailed { error, left_secs });
    }

    /// When [`Self::handle_timeout`] must next be called (monotonic ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.side.done {
            return None;
        }
        let renewal = match self.side.renewal {
            Renewal::Idle if self.side.accepted => self.identity.renew_at(),
            Renewal::Idle | Renewal::Signing => None,
            Renewal::Sent(at) => Some(at.saturating_add(RENEW_REPLY_MS)),
            Renewal::RetryAt(at) => Some(at.max(self.identity.renew_at().unwrap_or(at))),
            Renewal::Capped(at) => Some(at),
        };
        // From the certificate's expiry on, no renewal timer: the session
        // ends a grace after it, in every state.
        let expiry = self.identity.expires_at();
        renewal
            .filter(|&at| expiry.is_none_or(|e| at < e))
            .into_iter()
            .chain(expiry.map(|e| e.saturating_add(EXPIRY_GRACE_MS)))
            .chain(self.link_timeout())
            .min()
    }

    /// Drives the timers: renewal, its retry, and the write bound.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.side.done || !self.handle_link_timeout(now) {
            return;
        }
        let mono_ms = now.mono_ms;
        let expiry = self.identity.expires_at();
        let over = expiry.is_some_and(|e| mono_ms >= e.saturating_add(EXPIRY_GRACE_MS));
        match self.side.renewal {
            Renewal::Capped(_) if over => {
                return self.end(Some(ClientEnd::Protocol(format!(
                    "the certificate ran out: the proxy asked for more renewal signatures \
                     than the sidecar gives (at most one per quarter of a certificate's life \
                     and {MAX_RENEWAL_SIGNATURES_PER_HOUR} an hour); reconnect, and tell the \
                     server's operator if it happens again"
                ))));
            }
            _ if over => {
                return self.end(Some(ClientEnd::Protocol(format!(
                    "the certificate ran out with no renewal from the proxy ({}); the session \
                     ends at its expiry and the user key signs nothing more for it; reconnect, \
                     and tell the server's operator if it happens again",
                    match self.side.renewal {
                        Renewal::Signing => {
                            "the user key's signature for the renewal did not come before it"
                        }
                        Renewal::Sent(_) => "the proxy did not answer the last RENEW",
                        Renewal::RetryAt(_) => "the last renewal failed",
                        _ => "the proxy never asked for one to be answered in time",
                    }
                ))));
            }
            // Expired: no renewal any more; the proxy has the grace to
            // end the session itself.
            _ if expiry.is_some_and(|e| mono_ms >= e) => return,
            Renewal::Sent(at) if mono_ms >= at.saturating_add(RENEW_REPLY_MS) => {
                let secs = RENEW_REPLY_MS / 1000;
                return self
                    .renewal_failed(format!("the proxy did not answer within {secs}s"), mono_ms);
            }
            Renewal::RetryAt(at) | Renewal::Capped(at) if mono_ms < at => return,
            Renewal::Idle | Renewal::RetryAt(_) | Renewal::Capped(_) => {}
            Renewal::Signing | Renewal::Sent(_) => return,
        }
        if !self.side.accepted || !self.identity.renewal_due(mono_ms) {
            return;
        }
        // A security key within its re-verification interval: the session
        // keys alone vouch for the renewal, no touch, nothing to cap.
        let needs_user = self.identity.user_sig_needed();
        let fresh = self.side.renewal == Renewal::Idle;
        if needs_user {
            let at = self.sign_allowed_at(fresh, mono_ms);
            if at > mono_ms {
                return self.capped(at, mono_ms);
            }
        }
        match self.identity.renewal_data(&mut *self.link.rng.0) {
            Ok(_) if !needs_user => {
                self.side.renewal = Renewal::Signing;
                self.handle_signature(Ok(Vec::new()), now);
            }
            Ok(data) => {
                if fresh {
                    self.side.renewal_began_ms = Some(mono_ms);
                }
                if self.side.signed_ms.len() == MAX_RENEWAL_SIGNATURES_PER_HOUR {
                    self.side.signed_ms.pop_front();
                }
                self.side.signed_ms.push_back(mono_ms);
                self.events.push_back(ClientConnEvent::SigningRenewal {
                    this_hour: self.side.signed_ms.len(),
                });
                self.side.to_sign = Some(data);
                self.side.renewal = Renewal::Signing;
            }
            Err(e) => self.renewal_failed(e, mono_ms),
        }
    }

    /// When the user key may next sign for a renewal: at most
    /// [`MAX_RENEWAL_SIGNATURES_PER_HOUR`] in any hour, and a new renewal
    /// (not a retry, which follows this side's own fixed timers) no sooner
    /// than a quarter of the current certificate's life after the last
    /// one began.
    fn sign_allowed_at(&mut self, fresh: bool, mono_ms: u64) -> u64 {
        let hour_ago = mono_ms.saturating_sub(HOUR_MS);
        while self
            .side
            .signed_ms
            .front()
            .is_some_and(|&t| t <= hour_ago && mono_ms >= HOUR_MS)
        {
            self.side.signed_ms.pop_front();
        }
        let mut at = mono_ms;
        if self.side.signed_ms.len() >= MAX_RENEWAL_SIGNATURES_PER_HOUR
            && let Some(&oldest) = self.side.signed_ms.front()
        {
            at = at.max(oldest.saturating_add(HOUR_MS));
        }
        if let (true, Some(began), Some(ttl_ms)) = (
            fresh,
            self.side.renewal_began_ms,
            self.identity.ttl_secs().map(|t| t.saturating_mul(1000)),
        ) {
            at = at.max(began.saturating_add(ttl_ms / 4));
        }
        at
    }

    /// The signature cap holds a renewal back until `at`; said once.
    fn capped(&mut self, at: u64, mono_ms: u64) {
        if !matches!(self.side.renewal, Renewal::Capped(_)) {
            let left_secs = self
                .identity
                .expires_at()
                .map_or(0, |e| e.saturating_sub(mono_ms) / 1000);
            let wait = at.saturating_sub(mono_ms).div_ceil(1000);
            self.events.push_back(ClientConnEvent::RenewalFailed {
                error: format!(
                    "the proxy asks for renewal signatures faster than the sidecar gives them \
                     (at most one per quarter of a certificate's life and \
                     {MAX_RENEWAL_SIGNATURES_PER_HOUR} an hour); not signing for {wait}s"
                ),
                left_secs,
            });
        }
        self.side.renewal = Renewal::Capped(at);
    }

    fn end(&mut self, end: Option<ClientEnd>) {
        if self.side.done {
            return;
        }
        self.side.done = true;
        self.side.failed = end.is_some();
        self.events.push_back(ClientConnEvent::Ended(end));
    }
}
