//! One connection: handshake under a deadline, authorization, the first
//! client certificate, then one loop that splices bytes both ways and runs
//! the identity challenges. Protocol decisions are the core's; this task
//! moves bytes, keeps time, and carries out what the core returns.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::timeout;
use tracing::{Instrument, info, info_span, warn};
use ztssh_proto::ProtoError;
use ztssh_proto::frame::{Control, Event, Sealer, TerminateCode, Transport};
use ztssh_proto::handshake::{self, ClientAuthenticated, HELLO_LEN, message_len};
use ztssh_proto::identity::{Ended, ServerIdentity};
use ztssh_proto::keys::{hex, random_bytes};

use crate::authority::Authority;
use crate::config::Config;
use crate::limits::{self, Failure, HandshakeSlot, Limits, PrincipalSessions};

/// How long the client may take to send its CLOSE after sshd has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a TERMINATE may take to reach a client.
const TERMINATE_GRACE: Duration = Duration::from_secs(1);
/// Bytes read from a socket per batch.
const BATCH: usize = 256 * 1024;

/// Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds on a monotonic clock.
fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// How a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    /// A record failed to open or broke the protocol.
    #[error("client sent a bad record: {0}")]
    BadRecord(#[from] ProtoError),
    /// Identity checks ended it.
    #[error("{}", .0.reason)]
    Identity(Ended),
    /// The client socket failed.
    #[error("client connection lost: {0}")]
    ClientIo(std::io::Error),
    /// The client closed TCP without a CLOSE record.
    #[error("client vanished without closing the tunnel")]
    ClientVanished,
    /// The sshd socket failed.
    #[error("upstream sshd connection lost: {0}")]
    UpstreamIo(std::io::Error),
}

impl SessionEnd {
    fn kind(&self) -> &'static str {
        match self {
            Self::BadRecord(_) => "bad_record",
            Self::Identity(e) => e.kind,
            Self::ClientIo(_) => "client_io",
            Self::ClientVanished => "client_vanished",
            Self::UpstreamIo(_) => "upstream_io",
        }
    }
}

/// What every session shares.
pub struct Shared {
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Static configuration and keys.
    pub cfg: Config,
    /// The live authority; replaced on reload.
    pub authority: watch::Receiver<Arc<Authority>>,
    /// Accept-time abuse limits and penalties.
    pub limits: Limits,
    /// Live sessions per principal.
    pub sessions: PrincipalSessions,
}

/// Handles one accepted connection to the end.
pub async fn handle(
    shared: Arc<Shared>,
    mut sock: TcpStream,
    peer: SocketAddr,
    conn_permit: OwnedSemaphorePermit,
    slot: HandshakeSlot,
) {
    let id = hex(&random_bytes::<8>());
    let span = info_span!("session", session = %id, peer = %peer);
    async move {
        let cfg = &shared.cfg;
        info!(event = "connection_accepted", "connection accepted");
        let _ = sock.set_nodelay(true);
        // The live licence: a SIGHUP may have installed a renewed one.
        let licence = shared.authority.borrow().clone();
        let handshake = timeout(cfg.handshake_timeout, run_handshake(cfg, &licence.licence, &mut sock));
        let outcome = tokio::select! {
            r = handshake => r,
            () = slot.evicted() => {
                shared.metrics.handshakes.with_label_values(&["evicted"]).inc();
                info!(event = "handshake_failed", reason = "evicted", "handshake table full; this oldest pending handshake made room for a new one");
                return;
            }
        };
        let authed = match outcome {
            Err(_) => {
                shared.metrics.handshakes.with_label_values(&["timeout"]).inc();
                warn!(event = "handshake_failed", reason = "timeout", "handshake not finished within {:?}; dropped", cfg.handshake_timeout);
                penalise(&shared, peer, Failure::Timeout);
                return;
            }
            Ok(Err(HandshakeFail::Closed)) => {
                shared.metrics.handshakes.with_label_values(&["closed"]).inc();
                info!(event = "handshake_failed", reason = "closed", "client closed the connection during the handshake");
                penalise(&shared, peer, Failure::BadHandshake);
                return;
            }
            Ok(Err(HandshakeFail::Proto(e))) => {
                shared.metrics.handshakes.with_label_values(&["protocol_error"]).inc();
                warn!(event = "handshake_failed", reason = "protocol", error = %e, "handshake rejected");
                penalise(&shared, peer, Failure::BadHandshake);
                return;
            }
            Ok(Ok(a)) => a,
        };
        drop(slot);
        serve_authenticated(&shared, sock, authed, peer).await;
        drop(conn_permit);
    }
    .instrument(span)
    .await;
}

/// Records a failure against the source and says so when it now serves a
/// penalty.
pub fn penalise(shared: &Shared, peer: SocketAddr, f: Failure) {
    if let Some(p) = shared.limits.fail(peer.ip(), f) {
        shared.metrics.penalties.inc();
        warn!(
            event = "source_penalised",
            source = %limits::source_key(peer.ip()),
            secs = p.secs,
            "source refused for the next {}s after repeated failures",
            p.secs
        );
    }
}

enum HandshakeFail {
    Closed,
    Proto(ProtoError),
}

impl From<ProtoError> for HandshakeFail {
    fn from(e: ProtoError) -> Self {
        Self::Proto(e)
    }
}

async fn read_msg(sock: &mut TcpStream, len: usize) -> Result<Vec<u8>, HandshakeFail> {
    let mut buf = vec![0u8; len];
    sock.read_exact(&mut buf)
        .await
        .map_err(|_| HandshakeFail::Closed)?;
    Ok(buf)
}

async fn run_handshake(
    cfg: &Config,
    licence: &ztssh_proto::cert::Licence,
    sock: &mut TcpStream,
) -> Result<ClientAuthenticated, HandshakeFail> {
    let state = handshake::server_start(&cfg.noise, licence, cfg.frame_size)?;
    let msg1 = read_msg(sock, HELLO_LEN).await?;
    let (state, msg2) = state.handle_client_hello(&msg1)?;
    sock.write_all(&msg2)
        .await
        .map_err(|_| HandshakeFail::Closed)?;
    let msg3 = read_msg(sock, message_len(3, cfg.frame_size)).await?;
    Ok(state.handle_client_auth(&msg3)?)
}

async fn send_controls<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    sealer: &mut Sealer,
    msgs: &[Control],
) -> std::io::Result<()> {
    let mut out = Vec::new();
    for m in msgs {
        sealer
            .seal_control(m, &mut out)
            .map_err(std::io::Error::other)?;
    }
    w.write_all(&out).await
}

async fn refuse(sock: &mut TcpStream, sealer: &mut Sealer, code: TerminateCode, reason: String) {
    let _ = timeout(
        TERMINATE_GRACE,
        send_controls(sock, sealer, &[Control::Terminate { code, reason }]),
    )
    .await;
    let _ = sock.shutdown().await;
}

async fn serve_authenticated(
    shared: &Shared,
    mut sock: TcpStream,
    authed: ClientAuthenticated,
    peer: SocketAddr,
) {
    let cfg = &shared.cfg;
    let principal = authed.principal().to_owned();
    let key_fp = authed
        .user_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let authority = shared.authority.borrow().clone();
    let server_id = authority.licence.body.server_id.clone();
    let allowed = authority.authorized.allows(&principal, authed.user_key());
    let (user_key, session_key, h) = (
        authed.user_key().clone(),
        authed.session_key(),
        authed.handshake_hash,
    );
    let mut transport: Transport = authed.transport;
    if !allowed {
        shared
            .metrics
            .handshakes
            .with_label_values(&["denied"])
            .inc();
        warn!(event = "authorization_denied", principal = %principal, user_key = %key_fp, "key is not authorized for this principal");
        penalise(shared, peer, Failure::FailedAuth);
        let reason =
            format!("principal {principal} is not authorized with key {key_fp} on {server_id}");
        return refuse(
            &mut sock,
            &mut transport.sealer,
            TerminateCode::NotAuthorized,
            reason,
        )
        .await;
    }
    let started = ServerIdentity::start(
        h,
        &principal,
        user_key,
        session_key,
        &cfg.subca,
        &authority.at(peer.ip()),
        cfg.timing,
        now(),
        mono_ms(),
    );
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            shared
                .metrics
                .handshakes
                .with_label_values(&["denied"])
                .inc();
            warn!(event = "authorization_denied", principal = %principal, reason = e.kind, "{}", e.reason);
            penalise(shared, peer, Failure::FailedAuth);
            return refuse(&mut sock, &mut transport.sealer, e.code, e.reason).await;
        }
    };
    let max = authority.policy.max_sessions(&principal);
    let _hold = match shared.sessions.try_hold(&principal, max) {
        Ok(h) => h,
        Err(n) => {
            shared
                .metrics
                .handshakes
                .with_label_values(&["denied"])
                .inc();
            let reason = format!(
                "principal {principal} already has {n} session(s) on {server_id}, the most the policy allows"
            );
            warn!(event = "authorization_denied", principal = %principal, reason = "max_sessions", "{reason}");
            return refuse(
                &mut sock,
                &mut transport.sealer,
                TerminateCode::PolicyDenied,
                reason,
            )
            .await;
        }
    };
    let serial = started.identity.serial();
    info!(event = "authorized", principal = %principal, user_key = %key_fp, serial = %serial, "user authenticated and authorized");
    let upstream = match timeout(cfg.upstream_timeout, TcpStream::connect(cfg.upstream)).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            return upstream_failed(&mut sock, &mut transport, cfg, &server_id, e.to_string())
                .await;
        }
        Err(_) => {
            return upstream_failed(
                &mut sock,
                &mut transport,
                cfg,
                &server_id,
                "timed out".into(),
            )
            .await;
        }
    };
    let _ = upstream.set_nodelay(true);
    let local_port = upstream.local_addr().map(|a| a.port()).unwrap_or(0);
    info!(event = "upstream_connected", principal = %principal, serial = %serial, local_port, "connected to sshd");
    shared.metrics.handshakes.with_label_values(&["ok"]).inc();
    shared
        .metrics
        .certificates
        .with_label_values(&["issued"])
        .inc();
    info!(event = "cert_issued", principal = %principal, serial = %serial, ttl_secs = cfg.timing.cert_ttl_secs, "client certificate issued");
    let first = [Control::Accept { server_id }, started.cert];
    if let Err(e) = send_controls(&mut sock, &mut transport.sealer, &first).await {
        warn!(event = "session_closed", principal = %principal, reason = "client_io", error = %e, "client left before accept");
        return;
    }
    let mut session = Session {
        shared,
        identity: started.identity,
        authority: shared.authority.clone(),
        transport,
        peer: peer.ip(),
    };
    let m = &shared.metrics;
    m.sessions_total.inc();
    m.sessions_open.inc();
    let ended = session.run(sock, upstream).await;
    m.sessions_open.dec();
    if let Err(e) = &ended {
        m.terminations.with_label_values(&[e.kind()]).inc();
        if let SessionEnd::Identity(i) = e
            && i.kind.starts_with("proof_")
        {
            m.challenges.with_label_values(&["failed"]).inc();
        }
    }
    let serial = session.identity.serial();
    let proofs = session.identity.proofs();
    info!(event = "upstream_closed", principal = %principal, serial = %serial, local_port, "sshd connection closed");
    match ended {
        Ok(()) => {
            info!(event = "session_closed", principal = %principal, serial = %serial, reason = "normal", proofs, "session ended")
        }
        Err(e) => {
            if let SessionEnd::Identity(i) = &e
                && i.kind.starts_with("proof_")
            {
                warn!(event = "challenge_failed", principal = %principal, serial = %serial, reason = i.kind, "{}", i.reason);
            }
            warn!(
                event = "session_terminated",
                principal = %principal,
                serial = %serial,
                reason = e.kind(),
                proofs,
                "session killed, upstream sshd socket closed: {e}"
            )
        }
    }
}

async fn upstream_failed(
    sock: &mut TcpStream,
    t: &mut Transport,
    cfg: &Config,
    server_id: &str,
    why: String,
) {
    warn!(event = "upstream_failed", upstream = %cfg.upstream, error = %why, "cannot reach sshd");
    let reason = format!("{server_id} cannot reach its sshd");
    refuse(
        sock,
        &mut t.sealer,
        TerminateCode::UpstreamUnavailable,
        reason,
    )
    .await;
}

struct Session<'a> {
    shared: &'a Shared,
    identity: ServerIdentity,
    authority: watch::Receiver<Arc<Authority>>,
    transport: Transport,
    peer: std::net::IpAddr,
}

impl Session<'_> {
    /// Runs until both directions closed (Ok) or the session is killed. On a
    /// kill the sshd socket is closed first, then TERMINATE goes to the client.
    async fn run(&mut self, client: TcpStream, upstream: TcpStream) -> Result<(), SessionEnd> {
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let result = self.pump(&mut cr, &mut cw, &mut ur, &mut uw).await;
        // Close sshd's socket at once, whatever happened.
        drop(ur);
        drop(uw);
        if let Err(SessionEnd::Identity(e)) = &result {
            let msg = Control::Terminate {
                code: e.code,
                reason: e.reason.clone(),
            };
            let _ = timeout(
                TERMINATE_GRACE,
                send_controls(&mut cw, &mut self.transport.sealer, &[msg]),
            )
            .await;
        }
        let _ = cw.shutdown().await;
        result
    }

    async fn pump(
        &mut self,
        cr: &mut tokio::net::tcp::OwnedReadHalf,
        cw: &mut OwnedWriteHalf,
        ur: &mut tokio::net::tcp::OwnedReadHalf,
        uw: &mut OwnedWriteHalf,
    ) -> Result<(), SessionEnd> {
        let f = self.transport.opener.frame_size().get();
        let max = self.transport.sealer.frame_size().max_data();
        let mut cbuf = vec![0u8; (BATCH / f).max(2) * f];
        let mut filled = 0;
        let mut ubuf = vec![0u8; (BATCH / max).max(1) * max];
        let mut out = Vec::with_capacity(BATCH + BATCH / 8);
        let mut data = Vec::with_capacity(BATCH);
        let mut events = Vec::new();
        let (mut up_closed, mut down_closed) = (false, false);
        let mut grace_until: Option<tokio::time::Instant> = None;
        loop {
            let wake = self.identity.next_wakeup().saturating_sub(mono_ms());
            tokio::select! {
                r = cr.read(&mut cbuf[filled..]) => {
                    let n = r.map_err(SessionEnd::ClientIo)?;
                    if n == 0 {
                        // ssh usually kills its ProxyCommand once sshd is done.
                        // After its CLOSE, or once sshd is done, a client that
                        // goes away (ssh kills its ProxyCommand) ends normally.
                        return if down_closed || up_closed { Ok(()) } else { Err(SessionEnd::ClientVanished) };
                    }
                    filled += n;
                    let used = self.transport.opener.open_all(&cbuf[..filled], &mut data, &mut events)?;
                    cbuf.copy_within(used..filled, 0);
                    filled -= used;
                    // The opener refuses DATA after CLOSE and stops at TERMINATE.
                    if !data.is_empty() {
                        uw.write_all(&data).await.map_err(SessionEnd::UpstreamIo)?;
                        self.shared.metrics.bytes.with_label_values(&["in"]).inc_by(data.len() as u64);
                        data.clear();
                    }
                    for ev in std::mem::take(&mut events) {
                        match ev {
                            Event::Close => {
                                up_closed = true;
                                let _ = uw.shutdown().await;
                            }
                            Event::Control(msg) => self.on_control(msg, cw, &mut out).await?,
                        }
                    }
                }
                r = ur.read(&mut ubuf), if !down_closed => {
                    let n = r.map_err(SessionEnd::UpstreamIo)?;
                    out.clear();
                    if n == 0 {
                        down_closed = true;
                        grace_until = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                        self.transport.sealer.seal_close(&mut out)?;
                    } else {
                        self.transport.sealer.seal_data(&ubuf[..n], &mut out)?;
                        self.shared.metrics.bytes.with_label_values(&["out"]).inc_by(n as u64);
                    }
                    cw.write_all(&out).await.map_err(SessionEnd::ClientIo)?;
                }
                () = tokio::time::sleep(Duration::from_millis(wake)) => {
                    let polled = self.identity.poll(now(), mono_ms(), random_bytes()).map_err(SessionEnd::Identity)?;
                    if let Some(challenge) = polled {
                        send_controls(cw, &mut self.transport.sealer, &[challenge]).await.map_err(SessionEnd::ClientIo)?;
                    }
                }
                changed = self.authority.changed() => {
                    if changed.is_ok() {
                        let authority = self.authority.borrow_and_update().clone();
                        self.identity.recheck(&authority.at(self.peer), now()).map_err(SessionEnd::Identity)?;
                    }
                }
                () = sleep_until_opt(grace_until) => return Ok(()),
            }
            if up_closed && down_closed {
                return Ok(());
            }
        }
    }

    async fn on_control(
        &mut self,
        msg: Control,
        cw: &mut OwnedWriteHalf,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionEnd> {
        let authority = self.authority.borrow().clone();
        let started = Instant::now();
        let what = msg.name();
        let reply = self
            .identity
            .handle(
                msg,
                &self.shared.cfg.subca,
                &authority.at(self.peer),
                now(),
                mono_ms(),
            )
            .map_err(SessionEnd::Identity)?;
        let principal = self.identity.principal();
        let serial = self.identity.serial();
        match &reply {
            Control::Ack { seq } => {
                let m = &self.shared.metrics;
                m.challenges.with_label_values(&["ok"]).inc();
                m.proof_seconds.observe(started.elapsed().as_secs_f64());
                info!(
                event = "challenge_ok",
                principal = %principal,
                serial = %serial,
                seq,
                verify_us = started.elapsed().as_micros() as u64,
                "identity proof {seq} verified"
                );
            }
            Control::Cert { .. } => {
                self.shared
                    .metrics
                    .certificates
                    .with_label_values(&["renewed"])
                    .inc();
                info!(event = "cert_renewed", principal, serial = %serial, "client certificate renewed")
            }
            _ => warn!(event = "unexpected_reply", what, "unexpected reply"),
        }
        out.clear();
        self.transport.sealer.seal_control(&reply, out)?;
        cw.write_all(out).await.map_err(SessionEnd::ClientIo)
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
