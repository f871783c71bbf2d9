//! One connection from accept to end: the handshake under a deadline,
//! authorization (decided by the core), the session cap, the upstream
//! connection, then the [`Driver`] loop. Protocol decisions are the core's;
//! this task moves bytes, keeps time, and carries out what the core returns.

pub mod driver;
mod handshake;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use getrandom::SysRng;
use rand_core::UnwrapErr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::timeout;
use tracing::{Instrument, debug, info, info_span, warn};
use ztssh_proto::conn::ServerConn;
use ztssh_proto::end::{Blame, EndKind, Ended};
use ztssh_proto::handshake::{ClientAuth, ClientAuthenticated};
use ztssh_proto::identity::{Authorized, Refused};
use ztssh_proto::keys::{hex, random_bytes};

use crate::admission;
use crate::admission::limits::{Admitted, Failure, HandshakeSlot, QueueTicket, RateToken};
use crate::ops::clock;
use crate::session::driver::{Driver, Traffic};
use crate::session::handshake::{HandshakeFail, run_handshake};
use crate::state::{LiveSession, Shared, SourcePool};

/// How long a TERMINATE may take to reach a refused client (as long as a
/// killed session's).
const TERMINATE_GRACE: Duration = Duration::from_millis(ztssh_proto::conn::TERMINATE_GRACE_MS);

/// How long an authenticated session may wait for one of the
/// `upstream_max_startups` places before the proxy gives up on sshd.
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// How long a new sshd connection counts as one sshd is still logging in,
/// at most (sooner when the session ends): sshd's `MaxStartups` counts a
/// connection until its user is authenticated, which through the proxy
/// takes a few round trips; the proxy cannot see that moment inside SSH.
const STARTUP_HOLD: Duration = Duration::from_secs(10);

/// Handles one accepted connection to the end.
pub async fn handle(
    shared: Arc<Shared>,
    mut sock: TcpStream,
    peer: SocketAddr,
    conn_permit: OwnedSemaphorePermit,
    admitted: Admitted,
) {
    let id = hex(&random_bytes::<8>(&mut UnwrapErr(SysRng)));
    let span = info_span!("session", session = %id, peer = %peer);
    async move {
        let cfg = &shared.cfg;
        let (slot, token) = match admitted {
            Admitted::Ready { slot, token, .. } => (slot, token),
            Admitted::Queued(ticket) => match wait_in_line(&shared, ticket, peer).await {
                Some(admitted) => admitted,
                None => return,
            },
        };
        let mut token = Some(token);
        info!(event = "connection_accepted", "connection accepted");
        let _ = sock.set_nodelay(true);
        // The live licence: a SIGHUP may have installed a renewed one.
        let licence = shared.authority.borrow().clone();
        // Boxed: the handshake's state (Noise, ML-KEM, the messages) is
        // freed when it ends instead of sizing every live session's task.
        let handshake = timeout(cfg.handshake_timeout, Box::pin(run_handshake(cfg, &licence.licence, &mut sock)));
        let outcome = tokio::select! {
            r = handshake => r,
            () = slot.evicted() => {
                shared.metrics.handshakes.with_label_values(&["evicted"]).inc();
                info!(event = "handshake_failed", reason = "evicted", "handshake table full; this network held the most pending handshakes, and this one, its oldest, made room for a new one");
                penalise(&shared, peer, Failure::Evicted);
                return;
            }
        };
        let authed = match outcome {
            Err(_) => {
                shared.metrics.handshakes.with_label_values(&["timeout"]).inc();
                let secs = cfg.handshake_timeout.as_secs();
                warn!(event = "handshake_failed", reason = "timeout", timeout_secs = secs, "handshake not finished within {secs}s; dropped");
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
            Ok(Ok(ClientAuth::KeyRefused { principal, user_key, refused })) => {
                // The tunnel is up: the client hears why its key was refused.
                drop(slot);
                let who = Who { principal: &principal, user_key: &user_key };
                deny(&shared, &mut sock, peer, who, refused, false, &mut token).await;
                return;
            }
            Ok(Ok(ClientAuth::Authenticated(a))) => *a,
        };
        drop(slot);
        serve_authenticated(&shared, sock, authed, peer, &id, &mut token).await;
        drop(conn_permit);
    }
    .instrument(span)
    .await;
}

/// Waits for a handshake slot (at most `queue_timeout_secs`), then takes
/// a rate token. `None`: refused (counted and logged at debug level: a
/// flood of idle sockets must not become a flood of log lines).
async fn wait_in_line(
    shared: &Shared,
    ticket: QueueTicket,
    peer: SocketAddr,
) -> Option<(HandshakeSlot, RateToken)> {
    let limits = &shared.limits;
    debug!(
        event = "connection_queued",
        "the source's handshakes are at their cap; waiting for a slot"
    );
    let refused = |why: admission::limits::Refusal| {
        shared
            .metrics
            .refused
            .with_label_values(&[why.label()])
            .inc();
        debug!(
            event = "connection_refused",
            reason = why.label(),
            "refused while waiting for a handshake slot"
        );
    };
    let Some(slot) = ticket.wait(limits.queue_timeout()).await else {
        refused(admission::limits::Refusal::QueueTimeout);
        return None;
    };
    match limits.take_token(peer.ip()) {
        Ok(token) => Some((slot, token)),
        Err(why) => {
            refused(why);
            None
        }
    }
}

/// Records a failure against the source ([`admission::penalise`]).
fn penalise(shared: &Shared, peer: SocketAddr, f: Failure) {
    admission::penalise(&shared.limits, &shared.metrics, peer, f);
}

async fn refuse(sock: &mut TcpStream, mut refused: Refused) {
    let record = refused.terminate_record();
    let _ = timeout(TERMINATE_GRACE, sock.write_all(&record)).await;
    let _ = sock.shutdown().await;
}

/// Whom a refusal refused: the principal claimed and the key's
/// fingerprint (`SHA256:…`), each a field of `authorization_denied`.
#[derive(Clone, Copy)]
struct Who<'a> {
    principal: &'a str,
    user_key: &'a str,
}

/// Counts and logs a refusal after the handshake, penalises the source
/// where the refusal is the client's fault, and says why to the client.
/// `proven`: the user's signature verified, so the client holds the key it
/// offered and the refusal (an unauthorized or revoked key, the policy) is a
/// soft failure: a sidecar trying its agent keys in turn must not lock out
/// its source. A bad signature or an unacceptable key is a hard one.
async fn deny(
    shared: &Shared,
    sock: &mut TcpStream,
    peer: SocketAddr,
    who: Who<'_>,
    refused: Refused,
    proven: bool,
    token: &mut Option<RateToken>,
) {
    let e = &refused.ended;
    shared
        .metrics
        .handshakes
        .with_label_values(&["denied"])
        .inc();
    warn!(event = "authorization_denied", principal = who.principal, user_key = who.user_key, reason = e.kind.label(), detail = %e.reason, "{}", e.reason);
    // Not the client's fault (a full session cap, an unreachable sshd, an
    // overdue revocation list, a proxy shutting down): no penalty.
    let failure = match e.kind.blame() {
        Blame::Nobody => None,
        Blame::Identity | Blame::Conduct if proven => Some(Failure::KeyRefused),
        Blame::Identity | Blame::Conduct => Some(Failure::FailedAuth),
    };
    match failure {
        Some(f) => penalise(shared, peer, f),
        None => refund(shared, token),
    }
    refuse(sock, refused).await;
}

async fn serve_authenticated(
    shared: &Shared,
    mut sock: TcpStream,
    authed: ClientAuthenticated,
    peer: SocketAddr,
    id: &str,
    token: &mut Option<RateToken>,
) {
    let cfg = &shared.cfg;
    let principal = authed.principal().to_owned();
    let authed_key = authed.user_key().clone();
    let key_fp = authed
        .user_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let authority = shared.authority.borrow().clone();
    let server_id = authority.licence.body.server_id.clone();
    let who = Who {
        principal: &principal,
        user_key: &key_fp,
    };
    // Authorization is decided once, in the core, from the live authority.
    let authorized = match authed.authorize(&authority.at(peer.ip()), clock::unix()) {
        Ok(a) => a,
        Err(refused) => return deny(shared, &mut sock, peer, who, refused, true, token).await,
    };
    // The session cap admits the session before anything is issued to it.
    let (max, from) = authority
        .policy
        .session_cap(&principal, cfg.settings.max_sessions_per_principal);
    let _hold = match shared.sessions.try_hold(&principal, Some(max)) {
        Ok(h) => h,
        Err(n) => {
            let reason = format!(
                "principal {principal} already has {n} session(s) on {server_id}, the most {from} allows"
            );
            let refused = authorized.into_refused(Ended::new(EndKind::MaxSessions, reason));
            return deny(shared, &mut sock, peer, who, refused, true, token).await;
        }
    };
    let user_cert = authorized.user_cert().cloned().map(Arc::new);
    // Key id, serial and CA of the user certificate, on every session line.
    let cert_text = user_cert
        .as_ref()
        .map_or_else(String::new, |c| c.describe());
    match authorized.workload_token() {
        // A workload: the issuer, its subject, the rule that matched and
        // the claims it used, for the audit trail.
        Some(t) => {
            let claims = t
                .claims()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let accounts = t.accounts().join(",");
            info!(event = "authorized", principal = %principal, user_key = %key_fp, workload_issuer = t.issuer(), workload_subject = t.sub(),
                workload_rule_accounts = %accounts, workload_claims = %claims, workload_token_expires = t.exp(),
                "workload authenticated and authorized: {}", t.describe());
        }
        None => {
            info!(event = "authorized", principal = %principal, user_key = %key_fp, user_cert = %cert_text, "user authenticated and authorized");
        }
    }
    // Zero standing keys: this session's own source address, held until
    // the session ends.
    let lease = match shared.sources.as_ref().map(SourcePool::lease) {
        None => None,
        Some(Some(lease)) => Some(lease),
        Some(None) => {
            let why = "every address in upstream_source_range is held by a live session".to_owned();
            return deny(
                shared,
                &mut sock,
                peer,
                who,
                upstream_failed(shared, authorized, &server_id, &why),
                true,
                token,
            )
            .await;
        }
    };
    let source = lease.as_ref().map(|l| l.addr);
    // Held while sshd may still count the connection against its
    // MaxStartups: sshd is never sent more logins at once than it takes.
    let startups = Arc::clone(&shared.upstream_startups);
    let startup = tokio::select! {
        biased;
        () = shared.stop_sessions.cancelled() => None,
        p = timeout(STARTUP_WAIT, startups.acquire_owned()) => Some(p),
    };
    let startup = match startup {
        None => {
            let why = "the proxy is shutting down; reconnect once it is back";
            let refused = authorized.into_refused(Ended::new(EndKind::Shutdown, why));
            return deny(shared, &mut sock, peer, who, refused, true, token).await;
        }
        Some(Ok(Ok(p))) => p,
        Some(_) => {
            let why = format!(
                "{} logins to sshd were still in progress after {}s (upstream_max_startups)",
                cfg.settings.upstream_max_startups,
                STARTUP_WAIT.as_secs()
            );
            return deny(
                shared,
                &mut sock,
                peer,
                who,
                upstream_failed(shared, authorized, &server_id, &why),
                true,
                token,
            )
            .await;
        }
    };
    let connect = timeout(cfg.upstream_timeout, connect_upstream(cfg.upstream, source));
    // Once the drain period is over, no new session reaches sshd: a connect
    // under way then is abandoned, and the client told why.
    let connected = tokio::select! {
        biased;
        () = shared.stop_sessions.cancelled() => None,
        c = connect => Some(c),
    };
    let upstream = match connected {
        None => {
            let why = "the proxy is shutting down; reconnect once it is back";
            let refused = authorized.into_refused(Ended::new(EndKind::Shutdown, why));
            return deny(shared, &mut sock, peer, who, refused, true, token).await;
        }
        Some(Ok(Ok(u))) => u,
        Some(Ok(Err(e))) => {
            let why = e.to_string();
            return deny(
                shared,
                &mut sock,
                peer,
                who,
                upstream_failed(shared, authorized, &server_id, &why),
                true,
                token,
            )
            .await;
        }
        Some(Err(_)) => {
            let why = "timed out".to_owned();
            return deny(
                shared,
                &mut sock,
                peer,
                who,
                upstream_failed(shared, authorized, &server_id, &why),
                true,
                token,
            )
            .await;
        }
    };
    let _ = upstream.set_nodelay(true);
    let local = upstream.local_addr().ok();
    let local_port = local.map_or(0, |a| a.port());
    let source_ip = local.map(|a| a.ip());
    let authority = shared.authority.borrow().clone();
    let accepted = ServerConn::accept(
        authorized,
        &server_id,
        &cfg.subca,
        &authority.at(peer.ip()),
        cfg.timing,
        clock::now(),
        UnwrapErr(SysRng),
    );
    let mut conn = match accepted {
        Ok(c) => c,
        Err(refused) => {
            drop(upstream);
            return deny(shared, &mut sock, peer, who, refused, true, token).await;
        }
    };
    conn.set_rekey_policy(cfg.rekey, clock::now());
    conn.set_cover_traffic(cfg.cover);
    let (serial, session) = (conn.identity().serial(), conn.identity().session_serial());
    let source_text = source_ip.map_or_else(String::new, |ip| ip.to_string());
    info!(event = "upstream_connected", principal = %principal, serial = %serial, session_serial = %session, user_cert = %cert_text, source = %source_text, local_port, "connected to sshd");
    // From here until the session ends, sshd's AuthorizedKeysCommand may be
    // given this user key, bound to this session's source address.
    let listed = source.map(|addr| {
        shared.live_keys.insert(LiveSession {
            id: id.to_owned(),
            principal: principal.clone(),
            user_key: authed_key.clone(),
            peer: peer.ip(),
            source: addr,
            source_port: local_port,
            serials: crate::state::SerialLog::new(conn.identity().issued()),
            user_cert: crate::state::CertSlot::new(user_cert.clone()),
            workload: crate::state::TokenSlot::new(
                conn.identity().workload_token().cloned().map(Arc::new),
            ),
        })
    });
    let _startup = hold_startup(startup);
    let m = &shared.metrics;
    m.handshakes.with_label_values(&["ok"]).inc();
    refund(shared, token);
    m.certificates.with_label_values(&["issued"]).inc();
    info!(event = "cert_issued", principal = %principal, serial = %serial, session_serial = %session, user_cert = %cert_text, ttl_secs = cfg.timing.cert_ttl_secs, "client certificate issued");
    m.sessions_total.inc();
    m.sessions_open.inc();
    let started = Instant::now();
    let on_end = |e: &Ended, conn: &ServerConn, bytes: Traffic| {
        // sshd is told of no key for this session from the moment it ends.
        shared.live_keys.remove(id);
        let id = conn.identity();
        let (serial, proofs) = (id.serial(), id.proofs());
        // The certificate in force at the end (a renewal replaces it).
        let cert_text = id.user_cert().map_or_else(String::new, |c| c.describe());
        m.ended(e.kind);
        info!(event = "upstream_closed", principal = %principal, serial = %serial, session_serial = %session, local_port, "sshd connection closed");
        if e.kind.is_challenge_failure() {
            warn!(event = "challenge_failed", principal = %principal, serial = %serial, session_serial = %session, reason = e.kind.label(), detail = %e.reason, "{}", e.reason);
        }
        let duration_secs = started.elapsed().as_secs();
        warn!(event = "session_terminated", principal = %principal, serial = %serial, session_serial = %session, user_cert = %cert_text, reason = e.kind.label(), detail = %e.reason, proofs,
            duration_secs, bytes_in = bytes.into, bytes_out = bytes.out, "session killed, upstream sshd socket closed: {e}");
        // A bad record or a control message a client may not send is the
        // client's doing, authenticated or not (`bad_handshake_secs`); the
        // end of a live session for its identity or rights is not abuse.
        match e.kind.blame() {
            Blame::Conduct => penalise(shared, peer, Failure::BadHandshake),
            Blame::Identity | Blame::Nobody => {}
        }
    };
    let mut driver = Driver::new(
        conn,
        &cfg.subca,
        shared.authority.clone(),
        peer.ip(),
        m.session(),
        &on_end,
    );
    driver.listed = listed.as_ref().map(|l| Arc::clone(&l.session));
    let ended = driver
        .run(sock, upstream, shared.stop_sessions.child_token())
        .await;
    // Unlisted before the end is logged (a kill unlisted it already).
    shared.live_keys.remove(id);
    m.sessions_open.dec();
    if ended.is_ok() {
        let id = driver.conn.identity();
        let (serial, proofs) = (id.serial(), id.proofs());
        let cert_text = id.user_cert().map_or_else(String::new, |c| c.describe());
        info!(event = "upstream_closed", principal = %principal, serial = %serial, session_serial = %session, local_port, "sshd connection closed");
        let (duration_secs, bytes) = (started.elapsed().as_secs(), driver.traffic);
        info!(event = "session_closed", principal = %principal, serial = %serial, session_serial = %session, user_cert = %cert_text, reason = "normal", proofs,
            duration_secs, bytes_in = bytes.into, bytes_out = bytes.out, "session ended");
    }
}

/// Connects to sshd, from `source` when zero standing keys give the
/// session an address of its own.
async fn connect_upstream(
    upstream: SocketAddr,
    source: Option<std::net::Ipv4Addr>,
) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(upstream).await;
    };
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    sock.connect(upstream).await
}

/// sshd cannot be reached: said in the log, then refused like any other
/// refusal after the handshake (the caller's `deny`: `handshakes{denied}`,
/// no penalty).
fn upstream_failed(shared: &Shared, authorized: Authorized, server_id: &str, why: &str) -> Refused {
    warn!(event = "upstream_failed", upstream = %shared.cfg.upstream, error = %why, "cannot reach sshd");
    let reason = format!("{server_id} cannot reach its sshd");
    authorized.into_refused(Ended::new(EndKind::UpstreamUnavailable, reason))
}

/// Gives the connection's rate token back: it ended without a failure.
fn refund(shared: &Shared, token: &mut Option<RateToken>) {
    if let Some(t) = token.take() {
        shared.limits.refund(t);
    }
}

/// Keeps `startup` until the session ends or [`STARTUP_HOLD`] has passed,
/// whichever is first; the returned sender is dropped when it ends.
fn hold_startup(startup: OwnedSemaphorePermit) -> oneshot::Sender<()> {
    let (ended, on_end) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = timeout(STARTUP_HOLD, on_end).await;
        drop(startup);
    });
    ended
}
