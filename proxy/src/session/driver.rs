//! The IO loop of one established session: it moves bytes between the
//! client, sshd and the core's [`ServerConn`], and passes time and
//! authority changes in. It never awaits a write: every socket is used
//! through readiness and non-blocking `try_read`/`try_write`, so a peer
//! that stops reading blocks nothing but its own queue (bounded by the
//! core's high-water mark and write bound). When the core ends the session
//! the sshd socket is dropped on the spot, and no byte is written to sshd
//! after that: [`ServerConn::poll_local`] is empty from the decision on, and
//! the socket is gone.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use getrandom::SysRng;
use rand_core::UnwrapErr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use ztssh_proto::conn::{ServerConn, ServerEvent};
use ztssh_proto::end::{EndKind, Ended};
use ztssh_proto::identity::MAX_EARLY_RENEWALS;
use ztssh_proto::keys::{SigningKey, random_bytes};

use crate::ops::clock;
use crate::ops::metrics::SessionMetrics;
use crate::state::LiveSession;
use crate::trust::authority::Authority;

/// One session's loop: the core and what it needs besides the sockets.
pub struct Driver<'a> {
    /// The core.
    pub conn: ServerConn,
    /// The Sub-CA key that renews certificates.
    pub subca: &'a SigningKey,
    /// The live authority.
    pub authority: watch::Receiver<Arc<Authority>>,
    /// The client's address, for policy.
    pub peer: IpAddr,
    /// Counters this session updates.
    pub metrics: SessionMetrics,
    /// Called once, the moment the core ends the session (sshd's socket is
    /// already closed by then), with the bytes it carried.
    pub on_end: &'a (dyn Fn(&Ended, &ServerConn, Traffic) + Sync),
    /// The session as sshd's lookup sees it (zero standing keys): its
    /// serials are updated at each renewal.
    pub listed: Option<Arc<LiveSession>>,
    /// Payload bytes carried so far (the log's `session_closed`).
    pub traffic: Traffic,
    /// When the last client read started (to time proof checks).
    read_started: Option<Instant>,
    ended: Option<Ended>,
}

/// Payload bytes one session carried, named as `ztssh_tunnel_bytes_total`'s
/// directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client to sshd (delivered to sshd).
    pub into: u64,
    /// sshd to client (read from sshd).
    pub out: u64,
}

/// Which socket a write goes to.
#[derive(Clone, Copy)]
enum To {
    Client,
    Sshd,
}

impl<'a> Driver<'a> {
    /// A driver for `conn`.
    pub fn new(
        conn: ServerConn,
        subca: &'a SigningKey,
        authority: watch::Receiver<Arc<Authority>>,
        peer: IpAddr,
        metrics: SessionMetrics,
        on_end: &'a (dyn Fn(&Ended, &ServerConn, Traffic) + Sync),
    ) -> Self {
        Self {
            conn,
            subca,
            authority,
            peer,
            metrics,
            on_end,
            listed: None,
            traffic: Traffic::default(),
            read_started: None,
            ended: None,
        }
    }

    /// Runs the session to its end: `Ok` for a normal close, the reason
    /// for a kill. Once `stop` is cancelled (a shutdown whose drain period
    /// ran out) the session is ended like a kill, with a TERMINATE that
    /// tells the client why.
    pub async fn run(
        &mut self,
        mut client: TcpStream,
        upstream: TcpStream,
        stop: CancellationToken,
    ) -> Result<(), Ended> {
        // Pinned once, on this session's own child token: polled on every
        // wake-up, it takes only that token's uncontended lock.
        let stop = stop.cancelled_owned();
        tokio::pin!(stop);
        let mut stopping = false;
        let mut up = Some(upstream);
        let mut up_write_shut = false;
        let sleep = tokio::time::sleep_until(clock::instant_at(clock::mono_ms()));
        tokio::pin!(sleep);
        let mut armed: Option<u64> = None;
        let mut authority_open = true;
        loop {
            self.catch_up();
            if self.conn.ended().is_some() {
                // The decision is made: sshd's socket goes now, before the
                // TERMINATE is written or anything is logged.
                kill_upstream(&mut up);
            }
            self.flush(&client, To::Client);
            if let Some(u) = up.as_ref() {
                self.flush(u, To::Sshd);
            }
            if self.drain_events(&mut up) {
                let _ = client.shutdown().await;
                return self.ended.take().map_or(Ok(()), Err);
            }
            if !up_write_shut
                && self.conn.local_finished()
                && let Some(u) = up.as_mut()
            {
                up_write_shut = true;
                let _ = u.shutdown().await;
            }
            let deadline = self.conn.poll_timeout();
            if deadline != armed {
                armed = deadline;
                if let Some(t) = deadline {
                    sleep.as_mut().reset(clock::instant_at(t));
                }
            }
            let want_peer = self.conn.wants_peer();
            let want_tx = !self.conn.poll_transmit().is_empty();
            let want_local = up.is_some() && self.conn.wants_local();
            let want_deliver = up.is_some() && !self.conn.poll_local().is_empty();
            let upr = up.as_ref();
            // Decisions first: a ban or a passed deadline is acted on before
            // any byte read in the same wake-up can be delivered.
            tokio::select! {
                biased;
                () = &mut stop, if !stopping => {
                    stopping = true;
                    let why = "the proxy is shutting down and this session was still open when its drain period ran out; reconnect once it is back";
                    self.conn.close(Ended::new(EndKind::Shutdown, why), clock::now());
                }
                changed = self.authority.changed(), if authority_open => {
                    match changed {
                        Ok(()) => {
                            let authority = self.authority.borrow_and_update().clone();
                            self.conn.recheck(&authority.at(self.peer), clock::now());
                        }
                        // The reload task is gone (shutdown): the last
                        // authority stays in force; stop polling a closed channel.
                        Err(_) => authority_open = false,
                    }
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.conn.handle_timeout(clock::now(), random_bytes(&mut UnwrapErr(SysRng)));
                }
                r = client.readable(), if want_peer => match r {
                    Ok(()) => self.read_client(&client),
                    Err(e) => self.conn.handle_peer_error(&e.to_string(), clock::now()),
                },
                r = client.writable(), if want_tx => if let Err(e) = r {
                    self.conn.handle_peer_error(&e.to_string(), clock::now());
                },
                r = readable(upr), if want_local => match r {
                    Ok(()) => self.read_upstream(upr),
                    Err(e) => self.conn.handle_local_error(&e.to_string(), clock::now()),
                },
                r = writable(upr), if want_deliver => if let Err(e) = r {
                    self.conn.handle_local_error(&e.to_string(), clock::now());
                },
            }
        }
    }

    /// Acts on a new authority or a passed deadline before anything else:
    /// no client byte is handled, and none delivered to sshd, under a
    /// decision that is already due.
    fn catch_up(&mut self) {
        if self.authority.has_changed().unwrap_or(false) {
            let authority = self.authority.borrow_and_update().clone();
            self.conn.recheck(&authority.at(self.peer), clock::now());
        }
        let now = clock::now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now.mono_ms) {
            self.conn
                .handle_timeout(now, random_bytes(&mut UnwrapErr(SysRng)));
        }
    }

    fn read_client(&mut self, client: &TcpStream) {
        self.catch_up();
        if !self.conn.wants_peer() {
            return;
        }
        self.read_started = Some(Instant::now());
        match client.try_read(self.conn.recv_buf()) {
            Ok(0) => self.conn.handle_peer_eof(clock::now()),
            Ok(n) => {
                let authority = self.authority.borrow().clone();
                let at = authority.at(self.peer);
                self.conn.handle_peer_read(n, self.subca, &at, clock::now());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => self.conn.handle_peer_error(&e.to_string(), clock::now()),
        }
    }

    fn read_upstream(&mut self, up: Option<&TcpStream>) {
        let Some(u) = up else { return };
        match u.try_read(self.conn.local_buf()) {
            Ok(0) => self.conn.handle_local_eof(clock::now()),
            Ok(n) => {
                self.metrics.bytes_out.inc_by(n as u64);
                self.traffic.out = self.traffic.out.saturating_add(n as u64);
                self.conn.handle_local_read(n, clock::now());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => self.conn.handle_local_error(&e.to_string(), clock::now()),
        }
    }

    /// Writes what the socket takes now, without waiting. Checked right
    /// before each write: once the session is ended nothing goes to sshd
    /// (the core's local queue is then empty, and the socket already gone).
    fn flush(&mut self, sock: &TcpStream, to: To) {
        loop {
            let bytes = match to {
                To::Client => self.conn.poll_transmit(),
                To::Sshd if self.conn.ended().is_some() => return,
                To::Sshd => self.conn.poll_local(),
            };
            if bytes.is_empty() {
                return;
            }
            let now = clock::now;
            match sock.try_write(bytes) {
                Ok(n) => match to {
                    To::Client => self.conn.transmitted(n, now()),
                    To::Sshd => {
                        self.metrics.bytes_in.inc_by(n as u64);
                        self.traffic.into = self.traffic.into.saturating_add(n as u64);
                        self.conn.delivered(n, now());
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    let e = e.to_string();
                    return match to {
                        To::Client => self.conn.handle_peer_error(&e, now()),
                        To::Sshd => self.conn.handle_local_error(&e, now()),
                    };
                }
            }
        }
    }

    /// Acts on the core's events; `true` once the session is over.
    fn drain_events(&mut self, up: &mut Option<TcpStream>) -> bool {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                ServerEvent::Terminated(ended) => {
                    // sshd's socket is already gone (`run` drops it the
                    // moment the core decides); this is the backstop.
                    kill_upstream(up);
                    (self.on_end)(&ended, &self.conn, self.traffic);
                    self.ended = Some(ended);
                }
                ServerEvent::Closed => {
                    drop(up.take());
                    return true;
                }
                other => self.observe(&other),
            }
        }
        false
    }

    fn observe(&self, ev: &ServerEvent) {
        let id = self.conn.identity();
        let (principal, serial, session) = (id.principal(), id.serial(), id.session_serial());
        match ev {
            ServerEvent::ProofOk { seq } => {
                let took = self.read_started.map(|t| t.elapsed()).unwrap_or_default();
                self.metrics.challenges_ok.inc();
                self.metrics.proof_seconds.observe(took.as_secs_f64());
                info!(event = "challenge_ok", principal, serial = %serial, session_serial = %session, seq, verify_us = took.as_micros() as u64, "identity proof {seq} verified");
            }
            ServerEvent::Renewed => {
                if let Some(l) = &self.listed {
                    l.serials.set(id.issued());
                }
                self.metrics.renewed.inc();
                info!(event = "cert_renewed", principal, serial = %serial, session_serial = %session, "client certificate renewed");
            }
            ServerEvent::RenewRefused { reason, nth } => {
                // One line per certificate: the core ends a client that
                // keeps trying, and the counter has the rest.
                if *nth == 1 {
                    warn!(event = "renew_refused", principal, serial = %serial, session_serial = %session, detail = %reason, max_early_renewals = MAX_EARLY_RENEWALS, "renewal refused, session goes on: {reason} (more for this certificate are only counted; over {MAX_EARLY_RENEWALS} end the session)");
                }
                self.metrics.renewals_refused.inc();
            }
            ServerEvent::UserCertRenewed {
                described,
                valid_before,
            } => {
                if let Some(l) = &self.listed {
                    l.user_cert
                        .set(id.user_cert().cloned().map(std::sync::Arc::new));
                }
                let until = ztssh_proto::time::date(*valid_before);
                info!(event = "user_cert_renewed", principal, serial = %serial, session_serial = %session, user_cert = %described, valid_before = *valid_before, "a newer user certificate ({described}) extends the session to {until}");
            }
            ServerEvent::UserCertRefused { reason } => {
                warn!(event = "user_cert_refused", principal, serial = %serial, session_serial = %session, detail = %reason, "a user certificate sent during the session was refused, session goes on under the one it has: {reason}");
            }
            ServerEvent::TokenAccepted { expires } => {
                if let Some(l) = &self.listed {
                    l.workload
                        .set(id.workload_token().cloned().map(std::sync::Arc::new));
                }
                let until = ztssh_proto::time::date(*expires);
                debug!(event = "workload_token_accepted", principal, serial = %serial, session_serial = %session, expires = *expires, "a fresh workload token was accepted; the session may renew, and lives until {until} unless a newer one comes");
            }
            ServerEvent::TokenRefused { reason } => {
                warn!(event = "workload_token_refused", principal, serial = %serial, session_serial = %session, detail = %reason, "a workload token sent during the session was refused; its next renewal, or the expiry of the token in force, ends it: {reason}");
            }
            ServerEvent::Rekeyed { count } => {
                self.metrics.rekeys.inc();
                info!(event = "rekeyed", principal, serial = %serial, session_serial = %session, count, "tunnel keys replaced (rekey {count})");
            }
            ServerEvent::Challenged { .. }
            | ServerEvent::PeerClosed
            | ServerEvent::Terminated(_)
            | ServerEvent::Closed => {}
        }
    }
}

/// Closes sshd's socket for a kill: with a zero linger, so the kernel
/// discards whatever it still holds for sshd (bytes handed to it before
/// the decision, which sshd has not read) and resets the connection,
/// instead of delivering them after the decision. What already sits in
/// sshd's own receive buffer cannot be recalled.
fn kill_upstream(up: &mut Option<TcpStream>) {
    if let Some(u) = up.take() {
        let _ = u.set_zero_linger();
        drop(u);
    }
}

async fn readable(s: Option<&TcpStream>) -> std::io::Result<()> {
    match s {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

async fn writable(s: Option<&TcpStream>) -> std::io::Result<()> {
    match s {
        Some(s) => s.writable().await,
        None => std::future::pending().await,
    }
}
