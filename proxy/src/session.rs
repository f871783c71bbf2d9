//! One connection: handshake under a deadline, authorization, then the
//! upstream connection and the splice. Protocol decisions are the core's;
//! this task moves bytes and carries out what the core returns.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tracing::{Instrument, info, info_span, warn};
use ztssh_proto::ProtoError;
use ztssh_proto::frame::{Control, Event, Opener, Sealer, TerminateCode, Transport};
use ztssh_proto::handshake::{self, ClientAuthenticated, HELLO_LEN, message_len};
use ztssh_proto::keys::{hex, random_bytes};

use crate::config::Config;

/// How long the client may take to send its CLOSE after sshd has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Bytes read from a socket per batch.
const BATCH: usize = 256 * 1024;

/// How a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    /// A record failed to open or broke the protocol.
    #[error("client sent a bad record: {0}")]
    BadRecord(#[from] ProtoError),
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

/// Handles one accepted connection to the end.
pub async fn handle(
    cfg: Arc<Config>,
    mut sock: TcpStream,
    peer: SocketAddr,
    conn_permit: OwnedSemaphorePermit,
    hs_permit: OwnedSemaphorePermit,
) {
    let id = hex(&random_bytes::<8>());
    let span = info_span!("session", session = %id, peer = %peer);
    async move {
        let _ = sock.set_nodelay(true);
        let authed = match timeout(cfg.handshake_timeout, run_handshake(&cfg, &mut sock)).await {
            Err(_) => {
                warn!(event = "handshake_failed", reason = "timeout", "handshake not finished within {:?}; dropped", cfg.handshake_timeout);
                return;
            }
            Ok(Err(HandshakeFail::Closed)) => {
                info!(event = "handshake_failed", reason = "closed", "client closed the connection during the handshake");
                return;
            }
            Ok(Err(HandshakeFail::Proto(e))) => {
                warn!(event = "handshake_failed", reason = "protocol", error = %e, "handshake rejected");
                return;
            }
            Ok(Ok(a)) => a,
        };
        drop(hs_permit);
        serve_authenticated(&cfg, sock, authed).await;
        drop(conn_permit);
    }
    .instrument(span)
    .await;
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
    sock: &mut TcpStream,
) -> Result<ClientAuthenticated, HandshakeFail> {
    let state = handshake::server_start(&cfg.noise, &cfg.licence, cfg.frame_size)?;
    let msg1 = read_msg(sock, HELLO_LEN).await?;
    let (state, msg2) = state.handle_client_hello(&msg1)?;
    sock.write_all(&msg2)
        .await
        .map_err(|_| HandshakeFail::Closed)?;
    let msg3 = read_msg(sock, message_len(3, cfg.frame_size)).await?;
    Ok(state.handle_client_auth(&msg3)?)
}

async fn send_control(
    sock: &mut TcpStream,
    sealer: &mut Sealer,
    msg: &Control,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    sealer
        .seal_control(msg, &mut out)
        .map_err(std::io::Error::other)?;
    sock.write_all(&out).await
}

async fn terminate(sock: &mut TcpStream, sealer: &mut Sealer, code: TerminateCode, reason: String) {
    let _ = send_control(sock, sealer, &Control::Terminate { code, reason }).await;
    let _ = sock.shutdown().await;
}

async fn serve_authenticated(cfg: &Config, mut sock: TcpStream, authed: ClientAuthenticated) {
    let principal = authed.principal().to_owned();
    let key_fp = authed
        .user_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let server_id = cfg.licence.body.server_id.clone();
    let allowed = cfg.authorized.allows(&principal, authed.user_key());
    let mut transport: Transport = authed.transport;
    if !allowed {
        warn!(event = "authorization_denied", principal = %principal, user_key = %key_fp, "key is not authorized for this principal");
        let reason =
            format!("principal {principal} is not authorized with key {key_fp} on {server_id}");
        terminate(
            &mut sock,
            &mut transport.sealer,
            TerminateCode::NotAuthorized,
            reason,
        )
        .await;
        return;
    }
    info!(event = "authorized", principal = %principal, user_key = %key_fp, "user authenticated and authorized");
    let upstream = match timeout(cfg.upstream_timeout, TcpStream::connect(cfg.upstream)).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => return upstream_failed(&mut sock, &mut transport, cfg, e.to_string()).await,
        Err(_) => return upstream_failed(&mut sock, &mut transport, cfg, "timed out".into()).await,
    };
    let _ = upstream.set_nodelay(true);
    let local_port = upstream.local_addr().map(|a| a.port()).unwrap_or(0);
    info!(event = "upstream_connected", principal = %principal, local_port, "connected to sshd");
    if let Err(e) = send_control(
        &mut sock,
        &mut transport.sealer,
        &Control::Accept { server_id },
    )
    .await
    {
        warn!(event = "session_closed", principal = %principal, reason = "client_io", error = %e, "client left before accept");
        return;
    }
    match splice(sock, upstream, transport).await {
        Ok(()) => {
            info!(event = "session_closed", principal = %principal, reason = "normal", "session ended")
        }
        Err(e) => {
            warn!(event = "session_closed", principal = %principal, reason = end_reason(&e), error = %e, "session killed; upstream socket closed")
        }
    }
}

fn end_reason(e: &SessionEnd) -> &'static str {
    match e {
        SessionEnd::BadRecord(_) => "bad_record",
        SessionEnd::ClientIo(_) => "client_io",
        SessionEnd::ClientVanished => "client_vanished",
        SessionEnd::UpstreamIo(_) => "upstream_io",
    }
}

async fn upstream_failed(sock: &mut TcpStream, t: &mut Transport, cfg: &Config, why: String) {
    warn!(event = "upstream_failed", upstream = %cfg.upstream, error = %why, "cannot reach sshd");
    let reason = format!("{} cannot reach its sshd", cfg.licence.body.server_id);
    terminate(
        sock,
        &mut t.sealer,
        TerminateCode::UpstreamUnavailable,
        reason,
    )
    .await;
}

/// Moves bytes both ways until both directions have closed, or kills the
/// session (dropping both sockets at once) on the first error.
async fn splice(client: TcpStream, upstream: TcpStream, t: Transport) -> Result<(), SessionEnd> {
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let mut up = pin!(uplink(cr, uw, t.opener));
    let mut down = pin!(downlink(ur, cw, t.sealer));
    tokio::select! {
        r = &mut up => {
            r?;
            down.await
        }
        r = &mut down => {
            r?;
            // sshd has finished; ssh usually kills its ProxyCommand right
            // after, so a client that vanishes now has done nothing wrong.
            match timeout(CLOSE_GRACE, up).await {
                Ok(Err(SessionEnd::ClientVanished)) | Err(_) => Ok(()),
                Ok(r) => r,
            }
        }
    }
}

/// Client → sshd: open records, forward DATA, honour CLOSE.
async fn uplink(
    mut cr: OwnedReadHalf,
    mut uw: OwnedWriteHalf,
    mut opener: Opener,
) -> Result<(), SessionEnd> {
    let f = opener.frame_size().get();
    let mut buf = vec![0u8; (BATCH / f).max(2) * f];
    let mut filled = 0;
    let mut data = Vec::with_capacity(BATCH);
    let mut events = Vec::new();
    loop {
        let n = cr
            .read(&mut buf[filled..])
            .await
            .map_err(SessionEnd::ClientIo)?;
        if n == 0 {
            return Err(SessionEnd::ClientVanished);
        }
        filled += n;
        let used = opener.open_all(&buf[..filled], &mut data, &mut events)?;
        buf.copy_within(used..filled, 0);
        filled -= used;
        if !data.is_empty() {
            uw.write_all(&data).await.map_err(SessionEnd::UpstreamIo)?;
            data.clear();
        }
        // Every event ends this direction: CLOSE normally, CONTROL as a violation.
        match events.first() {
            Some(Event::Close) => {
                let _ = uw.shutdown().await;
                return Ok(());
            }
            Some(Event::Control(_)) => {
                return Err(
                    ProtoError::PeerMisbehaved("unexpected control message from client").into(),
                );
            }
            None => {}
        }
    }
}

/// sshd → client: seal full records, one write per batch.
async fn downlink(
    mut ur: OwnedReadHalf,
    mut cw: OwnedWriteHalf,
    mut sealer: Sealer,
) -> Result<(), SessionEnd> {
    let max = sealer.frame_size().max_data();
    let mut buf = vec![0u8; (BATCH / max).max(1) * max];
    let mut out = Vec::with_capacity(BATCH + BATCH / 8);
    loop {
        let n = ur.read(&mut buf).await.map_err(SessionEnd::UpstreamIo)?;
        out.clear();
        if n == 0 {
            sealer.seal_close(&mut out)?;
            cw.write_all(&out).await.map_err(SessionEnd::ClientIo)?;
            return Ok(());
        }
        sealer.seal_data(&buf[..n], &mut out)?;
        cw.write_all(&out).await.map_err(SessionEnd::ClientIo)?;
    }
}
