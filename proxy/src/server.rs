//! The running proxy: bind, serve metrics, drop privileges, accept, and
//! drain on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admission::{self, limits};
use crate::config::Config;
use crate::ops::{clock, metrics, process};
use crate::revocation::reload::{self, Request};
use crate::revocation::watch::{watch_crl_file, watch_staleness};
use crate::session;
use crate::state::Shared;
use crate::trust::authority::{self, Authority};

/// How long sessions get to write their TERMINATE once the drain period
/// is over, before the process exits regardless.
const TERMINATE_FLUSH: Duration = Duration::from_secs(2);

/// Runs the proxy until SIGTERM or SIGINT, then drains.
pub async fn run(cfg: Config, initial: Authority) -> anyhow::Result<()> {
    // Installed before the proxy says it listens (and tells systemd it is
    // ready): until then SIGHUP and SIGTERM would still kill the process.
    let signals = Signals::install()?;
    // Bound first, so that it answers by the time the proxy says it listens.
    let akc_listener = match &cfg.authorized_keys {
        Some(akc) => Some(crate::sshd::akc::bind(akc)?),
        None => None,
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let licence = &initial.licence.body;
    info!(event = "listening", addr = %listener.local_addr()?, upstream = %cfg.upstream, licence_serial = %licence.serial,
        licence_not_after = licence.not_after, hostnames = %licence.hostnames.join(","), principals = initial.authorized.principals(),
        list_version = initial.crl.as_ref().map_or(0, |c| c.list_version), "{}", cfg.summary(&initial, clock::unix()));
    if cfg.settings.insecure_short_certs {
        warn!(
            event = "insecure_short_certs",
            cert_ttl_secs = cfg.timing.cert_ttl_secs,
            min_cert_ttl_secs = ztssh_proto::identity::MIN_CERT_TTL,
            "insecure_short_certs is on: client certificates may be shorter than {}s, so sidecars renew (and ask their users' keys) that often; for test rigs only",
            ztssh_proto::identity::MIN_CERT_TTL
        );
    }
    if let Some(crl) = &initial.crl {
        authority::warn_if_stale(crl, clock::unix());
    }
    let (authority_tx, authority_rx) = watch::channel(Arc::new(initial));
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(addr) = cfg.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        info!(event = "metrics_listening", addr = %addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(metrics::serve(
            l,
            Arc::clone(&metrics),
            authority_rx.clone(),
            Arc::new(metrics::UpstreamProbe::new(cfg.upstream)),
        ));
    }
    if let Some(user) = &cfg.user {
        process::drop_privileges(user).map_err(anyhow::Error::msg)?;
    }
    // Workload tokens used before a restart stay used (as this user).
    if let Some(path) = &cfg.settings.workload_token_record
        && !cfg.settings.workload_issuer.is_empty()
    {
        cfg.replay
            .keep_in(path, crate::ops::clock::unix())
            .map_err(anyhow::Error::msg)?;
    }
    let drain_grace = cfg.drain_grace;
    // Connections in line hold a connection slot each: at most half of them.
    let limit_settings = cfg
        .settings
        .limits
        .queue_bounded(cfg.settings.max_connections);
    let limits = limits::Limits::new(
        &limit_settings,
        &cfg.settings.penalties,
        cfg.penalty_exempt.clone(),
        cfg.settings.max_handshakes,
    );
    let cfg_sources = cfg.upstream_sources.map(crate::state::SourcePool::new);
    let cfg_startups = cfg.settings.upstream_max_startups;
    let shared = Arc::new(Shared {
        cfg,
        authority: authority_rx,
        metrics,
        limits,
        sessions: limits::PrincipalSessions::default(),
        sources: cfg_sources,
        live_keys: crate::state::LiveKeys::default(),
        upstream_startups: Arc::new(Semaphore::new(cfg_startups)),
        stop_sessions: CancellationToken::new(),
        krl_kept: std::sync::Mutex::default(),
    });
    if let Some(l) = akc_listener {
        tokio::spawn(crate::sshd::akc::serve(l, Arc::clone(&shared)));
    }
    tokio::spawn(housekeeping(Arc::clone(&shared)));
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let reloads = reload::spawn(Arc::clone(&shared), authority_tx);
    tokio::spawn(watch_signals(signals, shutdown.clone(), reloads.clone()));
    if let Some(path) = shared.cfg.settings.revocation_list.clone() {
        tokio::spawn(watch_crl_file(path, reloads.clone()));
    }
    tokio::spawn(crate::revocation::watch::watch_licence_file(
        shared.cfg.settings.licence.clone(),
        reloads.clone(),
    ));
    if let Some(pull) = shared.cfg.licence_pull.clone() {
        tokio::spawn(crate::revocation::licence_pull::poll(
            Arc::clone(&shared),
            pull,
            reloads.clone(),
        ));
    }
    if let Some(pull) = shared.cfg.pull.clone() {
        tokio::spawn(crate::revocation::fetch::poll(
            Arc::clone(&shared),
            pull,
            reloads.clone(),
        ));
    }
    if let Some(access) = shared.cfg.access.clone() {
        if let Some(path) = access.file.clone() {
            tokio::spawn(crate::revocation::watch::watch_access_file(
                path,
                reloads.clone(),
            ));
        }
        tokio::spawn(crate::revocation::access_pull::poll(
            Arc::clone(&shared),
            access,
            reloads.clone(),
        ));
        tokio::spawn(crate::revocation::access_pull::watch_staleness(
            shared.authority.clone(),
            reloads.clone(),
        ));
    }
    crate::revocation::krl_pull::spawn(&shared, &reloads);
    crate::revocation::jwks_pull::spawn(&shared.cfg.jwks_pulls, &reloads);
    tokio::spawn(watch_staleness(shared.authority.clone(), reloads));
    process::notify("READY=1");
    accept_loop(&shared, &listener, &shutdown, &tracker).await;
    process::notify("STOPPING=1");
    drop(listener);
    tracker.close();
    info!(
        event = "draining",
        sessions = tracker.len(),
        drain_secs = drain_grace.as_secs(),
        "stopped accepting; waiting up to {}s for sessions",
        drain_grace.as_secs()
    );
    if tokio::time::timeout(drain_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            event = "drain_timeout",
            sessions = tracker.len(),
            "drain period over; ending the remaining sessions with a TERMINATE that says so"
        );
        // Each session's driver ends it like a kill (sshd's socket first),
        // then writes the TERMINATE without waiting on the client; a
        // client that reads nothing does not hold the exit up for long.
        shared.stop_sessions.cancel();
        if tokio::time::timeout(TERMINATE_FLUSH, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                event = "drain_abandoned",
                sessions = tracker.len(),
                flush_secs = TERMINATE_FLUSH.as_secs(),
                "{} connection(s) still open {}s after the drain period (a client reading nothing, or a handshake in progress); closing their sockets",
                tracker.len(),
                TERMINATE_FLUSH.as_secs()
            );
        }
    }
    Ok(())
}

async fn accept_loop(
    shared: &Arc<Shared>,
    listener: &TcpListener,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    let conns = Arc::new(Semaphore::new(shared.cfg.settings.max_connections));
    loop {
        let (sock, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(event = "accept_failed", error = %e, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(admission) = admission::admit(
            &shared.limits,
            &shared.metrics,
            &shared.authority,
            &conns,
            peer,
        ) else {
            continue;
        };
        tracker.spawn(session::handle(
            Arc::clone(shared),
            sock,
            peer,
            admission.permit,
            admission.admitted,
        ));
    }
}

/// Forgets expired penalties and idle rate-limit state, and refreshes the
/// gauges that describe them.
async fn housekeeping(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        shared.limits.housekeep();
        // The workload token record, written whole again when due (only a
        // proxy with workload issuers keeps one).
        if !shared.cfg.settings.workload_issuer.is_empty() {
            let replay = Arc::clone(&shared.cfg.replay);
            let _ = tokio::task::spawn_blocking(move || replay.compact(crate::ops::clock::unix()))
                .await;
        }
        let (penalised, rate) = shared.limits.tracked();
        let m = &shared.metrics;
        m.penalised_sources
            .set(i64::try_from(penalised).unwrap_or(i64::MAX));
        m.rate_limited_sources
            .set(i64::try_from(rate).unwrap_or(i64::MAX));
        m.handshakes_in_progress
            .set(i64::try_from(shared.limits.half_open()).unwrap_or(i64::MAX));
        let dropped = crate::ops::logging::dropped_lines();
        let seen = m.log_lines_dropped.get();
        if dropped > seen {
            m.log_lines_dropped.inc_by(dropped - seen);
            warn!(
                event = "log_lines_dropped",
                lines = dropped - seen,
                "stderr did not take the log in time; {} line(s) dropped so that enforcement never waits on it",
                dropped - seen
            );
        }
    }
}

/// The signals the proxy handles, installed once.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let cannot = "cannot install the SIGTERM, SIGINT and SIGHUP handlers";
        Ok(Self {
            term: signal(SignalKind::terminate()).context(cannot)?,
            int: signal(SignalKind::interrupt()).context(cannot)?,
            hup: signal(SignalKind::hangup()).context(cannot)?,
        })
    }
}

async fn watch_signals(
    signals: Signals,
    shutdown: CancellationToken,
    reloads: mpsc::Sender<Request>,
) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => { info!(event = "signal", signal = "SIGTERM", "shutting down"); break; }
            _ = int.recv() => { info!(event = "signal", signal = "SIGINT", "shutting down"); break; }
            // Never awaited: a reload that is stuck must not stop SIGTERM.
            // A full queue already holds a reload that will read everything.
            _ = hup.recv() => { let _ = reloads.try_send(Request::Everything); }
        }
    }
    shutdown.cancel();
}
