//! The proxy's side of a tunnel: it issues and checks the client's
//! certificates, kills the session on a failed check (TERMINATE, then the
//! local side closes at once) and bounds how long a closing client may
//! take.

use super::link::{DriverRng, Link};
use super::sealed::{Fault, Hooks};
use super::{Conn, Now, Side};
use crate::control::Control;
use crate::end::{EndKind, Ended};
use crate::frame::Event;
use crate::identity::{Authority, Authorized, Handled, Refused, ServerIdentity, Timing};
use crate::keys::{CryptoRng, SigningKey};

/// How long the proxy waits for the client's CLOSE once its own CLOSE
/// (after sshd closed) was written.
pub const CLOSE_GRACE_MS: u64 = 2000;
/// How long, at least, a client has to read sshd's last output once sshd
/// closed (the write bound, if longer): a slow but steady reader (a mobile
/// link ending `scp` or `git clone`) gets its whole tail, a trickle cannot
/// hold the connection for ever. Identity timers keep running meanwhile.
pub const FLUSH_AFTER_CLOSE_MS: u64 = 60_000;
/// How long, from the decision, a killed session's TERMINATE has to reach
/// the client: then the connection closes, whatever its progress.
pub const TERMINATE_GRACE_MS: u64 = 1000;

/// What happened on the proxy's side of a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A proof verified.
    ProofOk {
        /// The challenge's sequence number.
        seq: u64,
    },
    /// A challenge went out.
    Challenged {
        /// Its sequence number.
        seq: u64,
    },
    /// A renewal verified and a new certificate went out.
    Renewed,
    /// A newer OpenSSH user certificate replaced the session's.
    UserCertRenewed {
        /// Its key id, serial and CA.
        described: String,
        /// Its valid-before (Unix seconds): the session's new end.
        valid_before: u64,
    },
    /// A user certificate sent during the session was refused; the session
    /// goes on under the one in force.
    UserCertRefused {
        /// Why.
        reason: String,
    },
    /// A workload token sent during the session was judged good (the next
    /// renewal may go on).
    TokenAccepted {
        /// Its `exp` (Unix seconds): the session's new end, unless a newer
        /// token comes.
        expires: u64,
    },
    /// A workload token sent during the session was refused; the next
    /// renewal, or the expiry of the one in force, ends the session.
    TokenRefused {
        /// Why.
        reason: String,
    },
    /// A rekey completed: both directions are on new keys, the old ones
    /// are gone.
    Rekeyed {
        /// Rekeys completed on this session so far.
        count: u64,
    },
    /// A renewal came too early and was ignored; the session goes on.
    RenewRefused {
        /// Why.
        reason: String,
        /// Which early renewal this is for the current certificate (1 for
        /// the first; past [`crate::identity::MAX_EARLY_RENEWALS`] the
        /// session ends instead).
        nth: u32,
    },
    /// The client half-closed its direction.
    PeerClosed,
    /// The session was killed: close the local side now. It is the last
    /// event but [`ServerEvent::Closed`].
    Terminated(Ended),
    /// Both directions closed normally, or the session was killed and its
    /// TERMINATE flushed as far as it will go: close everything.
    Closed,
}

/// The proxy's side of one tunnel after authorization.
pub type ServerConn = Conn<ServerSide>;

/// What only the proxy's side of a tunnel holds: how and when it ends.
#[derive(Debug, Default)]
pub struct ServerSide {
    ended: Option<Ended>,
    /// Once sshd closed: until when the client may take to read everything
    /// up to our CLOSE (the write bound from sshd's end, however it reads).
    flush_until: Option<u64>,
    /// Once our CLOSE (after sshd closed) was written: until when the
    /// client may still send its CLOSE.
    close_grace_until: Option<u64>,
    /// Once killed: when the connection closes, whether or not the
    /// TERMINATE has been read by then.
    terminate_until: Option<u64>,
    /// The client closed TCP (after a CLOSE, or after sshd closed).
    peer_eof: bool,
    closed: bool,
    /// sshd has sent a byte: until then, its close is a refusal.
    sshd_spoke: bool,
}

impl Side for ServerSide {
    type Event = ServerEvent;
    type Identity = ServerIdentity;
}

impl Hooks for ServerSide {
    const BOUNDS_LOCAL: bool = true;

    fn rekeyed(count: u64) -> ServerEvent {
        ServerEvent::Rekeyed { count }
    }

    fn is_over(&self) -> bool {
        self.ended.is_some()
    }

    fn reads_peer(&self) -> bool {
        !self.closed && !self.peer_eof && self.ended.is_none()
    }

    fn reads_local(&self) -> bool {
        self.ended.is_none()
    }

    fn local_cut(&self) -> bool {
        self.ended.is_some() || self.closed
    }

    fn heard_local(&mut self) {
        self.sshd_spoke = true;
    }

    fn fail(conn: &mut ServerConn, fault: Fault, now: Now) {
        let secs = conn.write_bound_ms / 1000;
        let ended = match fault {
            Fault::Record(e) => Ended::new(EndKind::BadRecord, e.to_string()),
            Fault::Open(e) => {
                Ended::new(EndKind::BadRecord, format!("client sent a bad record: {e}"))
            }
            Fault::Rekey(e) => Ended::new(EndKind::BadRecord, e),
            Fault::PeerStalled => Ended::new(
                EndKind::ClientStalled,
                format!("client read nothing for {secs}s; connection closed"),
            ),
            Fault::LocalStalled => Ended::new(
                EndKind::UpstreamStalled,
                format!("sshd read nothing for {secs}s; connection closed"),
            ),
        };
        conn.end(ended, now);
    }
}

impl Conn<ServerSide> {
    /// Issues the first certificate to an authorized session and queues
    /// ACCEPT and CERT. The caller admitted the session against its cap
    /// and connected to sshd before this.
    pub fn accept(
        authorized: Authorized,
        server_id: &str,
        subca: &SigningKey,
        authority: &dyn Authority,
        timing: Timing,
        now: Now,
        rng: impl CryptoRng + Send + 'static,
    ) -> Result<Self, Refused> {
        let mut rng = DriverRng(Box::new(rng));
        let started = ServerIdentity::start(
            authorized,
            subca,
            authority,
            timing,
            now.unix,
            now.mono_ms,
            &mut *rng.0,
        )?;
        let mut conn = Self::with(
            Link::new(started.transport, Some(now.mono_ms), rng),
            started.identity,
            u64::from(timing.deadline_secs) * 1000,
            ServerSide::default(),
        );
        // A client that logged in with a user certificate may send a newer
        // one during the session.
        let caps = if conn.identity.user_cert().is_some() {
            crate::control::ACCEPT_CAP_USER_CERT
        } else {
            0
        };
        let accept = Control::Accept {
            server_id: server_id.to_owned(),
            caps,
        };
        for msg in [&accept, &started.cert] {
            if let Err(e) = conn.link.seal_control(msg, now.mono_ms) {
                conn.end(Ended::new(EndKind::IssueFailed, e.to_string()), now);
                break;
            }
        }
        Ok(conn)
    }

    /// Why the session ended, once it has.
    pub fn ended(&self) -> Option<&Ended> {
        self.side.ended.as_ref()
    }

    /// `n` bytes of [`Self::poll_transmit`] were written.
    pub fn transmitted(&mut self, n: usize, now: Now) {
        self.link.transmitted(n, now.mono_ms);
        // The client's grace to CLOSE starts once our CLOSE, and all the
        // data before it, has been written.
        if self.link.local_closed
            && self.link.tx.is_empty()
            && self.side.close_grace_until.is_none()
        {
            self.side.close_grace_until = Some(now.mono_ms.saturating_add(CLOSE_GRACE_MS));
        }
        self.check_closed();
    }

    /// `n` bytes of [`Self::poll_local`] were written.
    pub fn delivered(&mut self, n: usize, now: Now) {
        self.link.delivered(n, now.mono_ms);
        self.check_closed();
    }

    /// Whether sshd's write direction should be shut down: the client sent
    /// CLOSE and everything before it was delivered.
    pub fn local_finished(&self) -> bool {
        self.side.ended.is_none() && self.link.peer_closed && self.link.local.is_empty()
    }

    /// The client's bytes, copied into the receive buffer and handled.
    pub fn handle_peer(
        &mut self,
        bytes: &[u8],
        subca: &SigningKey,
        authority: &dyn Authority,
        now: Now,
    ) {
        self.feed_peer(bytes, |conn, n| {
            conn.handle_peer_read(n, subca, authority, now)
        });
    }

    /// `n` bytes were read into [`Self::recv_buf`].
    pub fn handle_peer_read(
        &mut self,
        n: usize,
        subca: &SigningKey,
        authority: &dyn Authority,
        now: Now,
    ) {
        let opened = self.open_peer(n, now, |conn, ev| match ev {
            Event::Close => {
                conn.link.peer_closed = true;
                conn.events.push_back(ServerEvent::PeerClosed);
            }
            Event::Control(Control::Terminate { reason, .. }) => {
                let reason = format!("client ended the session: {reason}");
                conn.end(Ended::new(EndKind::ClientTerminated, reason), now);
            }
            Event::Control(msg) => conn.on_control(msg.clone(), subca, authority, now),
            // Handled by the link as it opens.
            Event::Rekey(_) => {}
        });
        if opened {
            self.report_rekeys();
            self.check_closed();
        }
    }

    fn on_control(
        &mut self,
        msg: Control,
        subca: &SigningKey,
        authority: &dyn Authority,
        now: Now,
    ) {
        let handled = self.identity.handle(
            msg,
            subca,
            authority,
            now.unix,
            now.mono_ms,
            &mut *self.link.rng.0,
        );
        let (reply, event) = match handled {
            Err(e) => return self.end(e, now),
            Ok(Handled::Proved(ack)) => {
                let seq = match &ack {
                    Control::Ack { seq } => *seq,
                    _ => 0,
                };
                (ack, ServerEvent::ProofOk { seq })
            }
            Ok(Handled::Renewed(cert)) => (cert, ServerEvent::Renewed),
            Ok(Handled::RenewRefused { reason, nth }) => {
                self.events
                    .push_back(ServerEvent::RenewRefused { reason, nth });
                return;
            }
            Ok(Handled::UserCertPart | Handled::TokenPart) => return,
            Ok(Handled::TokenAccepted { expires }) => {
                self.events
                    .push_back(ServerEvent::TokenAccepted { expires });
                return;
            }
            Ok(Handled::TokenRefused { reason }) => {
                self.events.push_back(ServerEvent::TokenRefused { reason });
                return;
            }
            Ok(Handled::UserCertRenewed {
                described,
                valid_before,
            }) => {
                self.events.push_back(ServerEvent::UserCertRenewed {
                    described,
                    valid_before,
                });
                return;
            }
            Ok(Handled::UserCertRefused { reason }) => {
                self.events
                    .push_back(ServerEvent::UserCertRefused { reason });
                return;
            }
        };
        self.events.push_back(event);
        self.seal(&reply, now);
    }

    /// The client closed TCP.
    pub fn handle_peer_eof(&mut self, now: Now) {
        if self.side.ended.is_some() || self.side.closed {
            return;
        }
        // ssh kills its ProxyCommand once sshd is done: after the client's
        // CLOSE, or once sshd closed, that is a normal end (once what the
        // client sent before has reached sshd).
        if self.link.peer_closed || self.link.local_closed {
            self.side.peer_eof = true;
            return self.check_closed();
        }
        self.end(
            Ended::new(
                EndKind::ClientVanished,
                "client vanished without closing the tunnel",
            ),
            now,
        );
    }

    /// sshd closed its side: CLOSE goes to the client, which has the write
    /// bound to read it (and everything before it) and then a short grace
    /// to close its side too.
    pub fn handle_local_eof(&mut self, now: Now) {
        if !self.side.sshd_spoke {
            return self.end(sshd_refused(), now);
        }
        if !self.close_local(now) {
            return;
        }
        let bound = self.write_bound_ms.max(FLUSH_AFTER_CLOSE_MS);
        self.side.flush_until = Some(now.mono_ms.saturating_add(bound));
        self.check_closed();
    }

    /// The local side failed.
    pub fn handle_local_error(&mut self, error: &str, now: Now) {
        if !self.side.sshd_spoke {
            // However the socket failed (a reset, mostly): what the user
            // needs to know is that sshd refused the login.
            return self.end(sshd_refused(), now);
        }
        let reason = format!("upstream sshd connection lost: {error}");
        self.end(Ended::new(EndKind::UpstreamIo, reason), now);
    }

    /// The client socket failed. After a kill, the TERMINATE can no longer
    /// leave: the tunnel closes.
    pub fn handle_peer_error(&mut self, error: &str, now: Now) {
        if self.side.ended.is_some() {
            self.link.tx.clear();
            return self.finish();
        }
        let reason = format!("client connection lost: {error}");
        self.end(Ended::new(EndKind::ClientIo, reason), now);
    }

    /// Ends the session from outside (e.g. shutdown).
    pub fn close(&mut self, ended: Ended, now: Now) {
        self.end(ended, now);
    }

    /// When [`Self::handle_timeout`] must next be called (monotonic ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.side.closed {
            return None;
        }
        if self.side.ended.is_some() {
            return self
                .side
                .terminate_until
                .filter(|_| !self.link.tx.is_empty());
        }
        let id = Some(self.identity.next_wakeup());
        [
            id,
            self.link_timeout(),
            self.flush_deadline(),
            self.side.close_grace_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drives the timers: challenges, proof deadlines, certificate expiry,
    /// the write bound, the flush after sshd closed, the close grace and
    /// the TERMINATE's grace. `nonce` must be fresh random bytes.
    pub fn handle_timeout(&mut self, now: Now, nonce: [u8; 32]) {
        if self.side.closed {
            return;
        }
        if self.side.ended.is_some() {
            // The TERMINATE gets a short grace from the decision, not from
            // the last write progress: a client that reads a byte now and
            // then cannot hold the connection.
            if self.side.terminate_until.is_some_and(|t| now.mono_ms >= t) {
                self.link.tx.clear();
                self.finish();
            }
            return;
        }
        if self.flush_deadline().is_some_and(|t| now.mono_ms >= t) {
            let reason = format!(
                "client did not read sshd's last output within {}s of sshd closing; connection closed",
                self.write_bound_ms.max(FLUSH_AFTER_CLOSE_MS) / 1000
            );
            return self.end(Ended::new(EndKind::ClientStalled, reason), now);
        }
        if !self.handle_link_timeout(now) {
            return;
        }
        match self.identity.poll(now.unix, now.mono_ms, nonce) {
            Err(e) => return self.end(e, now),
            Ok(Some(challenge)) => {
                if let Control::Challenge { seq, .. } = &challenge {
                    self.events.push_back(ServerEvent::Challenged { seq: *seq });
                }
                self.seal(&challenge, now);
            }
            Ok(None) => {}
        }
        if self
            .side
            .close_grace_until
            .is_some_and(|t| now.mono_ms >= t)
        {
            // The client did not CLOSE in time after sshd did: end normally.
            self.link.tx.clear();
            self.finish();
        }
    }

    /// Until when the client may still be reading what came before our
    /// CLOSE: only while that CLOSE is unwritten and the client is there.
    fn flush_deadline(&self) -> Option<u64> {
        let flushing = self.side.close_grace_until.is_none() && !self.side.peer_eof;
        self.side.flush_until.filter(|_| flushing)
    }

    /// Re-checks the session against a new authority (revocation list,
    /// principals, policy), at once.
    pub fn recheck(&mut self, authority: &dyn Authority, now: Now) {
        if self.side.ended.is_some() || self.side.closed {
            return;
        }
        if let Err(e) = self.identity.recheck(authority, now.unix) {
            self.end(e, now);
        }
    }

    fn end(&mut self, ended: Ended, now: Now) {
        if self.side.ended.is_some() || self.side.closed {
            return;
        }
        let terminate = ended.kind.tells_client().then(|| Control::Terminate {
            code: ended.code(),
            reason: ended.reason.clone(),
        });
        self.link.cut(terminate.as_ref(), now.mono_ms);
        if terminate.is_none() {
            self.link.tx.clear();
        }
        self.side.terminate_until = Some(now.mono_ms.saturating_add(TERMINATE_GRACE_MS));
        self.events
            .push_back(ServerEvent::Terminated(ended.clone()));
        self.side.ended = Some(ended);
        self.check_closed();
    }

    fn check_closed(&mut self) {
        if self.side.closed {
            return;
        }
        let l = &self.link;
        let delivered = l.local.is_empty();
        let done = if self.side.ended.is_some() {
            l.tx.is_empty()
        } else if self.side.peer_eof {
            delivered
        } else {
            l.peer_closed && l.local_closed && delivered && l.tx.is_empty()
        };
        if done {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if !self.side.closed {
            self.side.closed = true;
            self.events.push_back(ServerEvent::Closed);
        }
    }
}

/// sshd closed a new connection before its first byte: it refused the
/// login. OpenSSH does that, without a word, to connections past its
/// `MaxStartups` (and `PerSourceMaxStartups`, `PerSourcePenalties`).
fn sshd_refused() -> Ended {
    // At most MAX_REASON (200) bytes: the user reads all of it.
    Ended::new(
        EndKind::UpstreamRefused,
        "sshd refused this login before it began: it drops new connections past its MaxStartups \
         in a burst of logins; try again in a few seconds",
    )
}
