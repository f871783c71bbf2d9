//! ztssh-proxy: terminates the hybrid tunnel beside a stock sshd and splices
//! authorized sessions to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use ztssh_proto::cert::LicenceRequest;
use ztssh_proto::keys::{NoiseKeypair, SigningKey};
use ztssh_proto::labels::pem;
use ztssh_proto::{armor, keyfile};

mod authority;
mod authz;
mod config;
mod limits;
mod metrics;
mod policy;
mod process;
mod session;

use authority::Authority;
use config::{Config, ConfigError, Overrides};
use session::{Shared, now};
use tokio::sync::watch;

/// Exit code for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// How often the revocation list file is checked for changes.
const CRL_POLL: Duration = Duration::from_millis(100);

#[derive(Parser)]
#[command(
    name = "ztssh-proxy",
    version,
    about = "ztssh proxy: zero-trust tunnel in front of a stock sshd"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the Sub-CA and Noise keys in DIR and write the licence request.
    Keygen {
        /// State directory (created with mode 0700).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Validate the configuration, like `sshd -t`.
    Check {
        /// Config file (TOML).
        #[arg(long, env = "ZTSSH_CONFIG")]
        config: PathBuf,
    },
    /// Run the proxy.
    Run {
        /// Config file (TOML).
        #[arg(long, env = "ZTSSH_CONFIG")]
        config: PathBuf,
        /// Override `listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Override `upstream`.
        #[arg(long)]
        upstream: Option<String>,
        /// Override `log_format` (text or json).
        #[arg(long)]
        log_format: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Keygen { dir } => report(keygen(&dir)),
        Cmd::Check { config } => match load(&config, &Overrides::default()) {
            Ok((cfg, authority)) => {
                println!(
                    "{}: OK\n{}",
                    config.display(),
                    cfg.summary(&authority, now())
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Cmd::Run {
            config,
            listen,
            upstream,
            log_format,
        } => {
            let (cfg, authority) = match load(
                &config,
                &Overrides {
                    listen,
                    upstream,
                    log_format,
                },
            ) {
                Ok(loaded) => loaded,
                Err(e) => return config_error(&e),
            };
            init_logging(&cfg.settings.log_format);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return report(Err(e.into())),
            };
            report(rt.block_on(run(cfg, authority)))
        }
    }
}

fn load(path: &Path, overrides: &Overrides) -> Result<(Config, Authority), ConfigError> {
    config::load(config::settings(path, overrides)?, now())
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("ztssh-proxy: config error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztssh-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.with_target(false).init();
    }
}

fn keygen(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let subca = SigningKey::generate();
    let noise = NoiseKeypair::generate();
    keyfile::write_secret(
        &dir.join(config::SUBCA_KEY_FILE),
        pem::SUBCA_KEY,
        &subca.to_seed(),
    )?;
    keyfile::write_secret(
        &dir.join(config::NOISE_KEY_FILE),
        pem::NOISE_KEY,
        noise.private(),
    )?;
    let request = LicenceRequest::new(&subca, noise.public(), now());
    let req_path = dir.join(config::REQUEST_FILE);
    keyfile::write_atomic(
        &req_path,
        armor::encode(pem::REQUEST, &request.encode()).as_bytes(),
        0o644,
        true,
    )?;
    println!("keys written to {} (mode 0600)", dir.display());
    println!("licence request: {}", req_path.display());
    println!("next, on the offline CA machine:");
    println!(
        "  ztssh-ca authorize-server --dir CA --request {} --server-id NAME --hostname HOST --out licence.pem",
        req_path.display()
    );
    Ok(())
}

async fn run(cfg: Config, initial: Authority) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    info!(event = "listening", addr = %listener.local_addr()?, "{}", cfg.summary(&initial, now()));
    if let Some(crl) = &initial.crl {
        authority::warn_if_stale(crl, now());
    }
    let (authority_tx, authority_rx) = watch::channel(Arc::new(initial));
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(addr) = cfg.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        info!(event = "metrics_listening", addr = %addr, "serving /metrics and /healthz");
        tokio::spawn(metrics::serve(
            l,
            Arc::clone(&metrics),
            authority_rx.clone(),
        ));
    }
    if let Some(user) = &cfg.user {
        process::drop_privileges(user).map_err(anyhow::Error::msg)?;
    }
    let drain_grace = cfg.drain_grace;
    let limits = limits::Limits::new(
        &cfg.settings.limits,
        &cfg.settings.penalties,
        cfg.penalty_exempt.clone(),
        cfg.settings.max_handshakes,
    );
    let shared = Arc::new(Shared {
        cfg,
        authority: authority_rx,
        metrics,
        limits,
        sessions: limits::PrincipalSessions::default(),
    });
    tokio::spawn(housekeeping(Arc::clone(&shared)));
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::spawn(watch_signals(
        shutdown.clone(),
        Arc::clone(&shared),
        authority_tx.clone(),
    ));
    if let Some(path) = shared.cfg.settings.revocation_list.clone() {
        tokio::spawn(watch_crl_file(path, Arc::clone(&shared), authority_tx));
    }
    process::notify("READY=1");
    accept_loop(&shared, &listener, &shutdown, &tracker).await;
    process::notify("STOPPING=1");
    drop(listener);
    tracker.close();
    info!(
        event = "draining",
        sessions = tracker.len(),
        "stopped accepting; waiting up to {:?} for sessions",
        drain_grace
    );
    if tokio::time::timeout(drain_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            event = "drain_timeout",
            sessions = tracker.len(),
            "closing remaining sessions"
        );
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
        // Cheap checks before any cryptography, cheapest first. Refused
        // sockets are closed at once; nothing is read from them.
        let refuse = |reason: &str| shared.metrics.refused.with_label_values(&[reason]).inc();
        let Ok(conn) = Arc::clone(&conns).try_acquire_owned() else {
            refuse("max_connections");
            warn!(event = "connection_refused", peer = %peer, reason = "max_connections", "too many connections");
            continue;
        };
        if let Some(secs) = shared.limits.penalised(peer.ip()) {
            refuse(limits::Refusal::Penalised.label());
            // Debug only: a flood must not become a log flood; the metric
            // and the source_penalised event tell the story.
            debug!(event = "connection_refused", peer = %peer, reason = "penalised", penalty_secs = secs, "source is serving a penalty");
            continue;
        }
        if let Err(why) = shared.authority.borrow().policy.admit_source(peer.ip()) {
            refuse("policy_source");
            info!(event = "connection_refused", peer = %peer, reason = "policy_source", "{why}");
            session::penalise(shared, peer, limits::Failure::FailedAuth);
            continue;
        }
        let admitted = match shared.limits.admit(peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                refuse(why.label());
                debug!(event = "connection_refused", peer = %peer, reason = why.label(), "refused before the handshake");
                continue;
            }
        };
        if admitted.evicted_other {
            debug!(
                event = "handshake_evicted",
                "handshake table full; evicted the oldest pending handshake"
            );
        }
        tracker.spawn(session::handle(
            Arc::clone(shared),
            sock,
            peer,
            conn,
            admitted.slot,
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
        let (penalised, rate) = shared.limits.tracked();
        let m = &shared.metrics;
        m.penalised_sources
            .set(i64::try_from(penalised).unwrap_or(i64::MAX));
        m.rate_limited_sources
            .set(i64::try_from(rate).unwrap_or(i64::MAX));
        m.handshakes_in_progress
            .set(i64::try_from(shared.limits.half_open()).unwrap_or(i64::MAX));
    }
}

async fn watch_signals(
    shutdown: CancellationToken,
    shared: Arc<Shared>,
    tx: watch::Sender<Arc<Authority>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!(event = "signal", signal = "SIGTERM", "shutting down"); break; }
            _ = int.recv() => { info!(event = "signal", signal = "SIGINT", "shutting down"); break; }
            _ = hup.recv() => reload(&shared, &tx),
        }
    }
    shutdown.cancel();
}

/// SIGHUP: reload licence, authorized principals and revocation list. On
/// any error the previous state stays in force.
fn reload(shared: &Shared, tx: &watch::Sender<Arc<Authority>>) {
    process::notify("RELOADING=1");
    reload_inner(shared, tx);
    process::notify("READY=1");
}

fn reload_inner(shared: &Shared, tx: &watch::Sender<Arc<Authority>>) {
    let t = now();
    match config::reload_authority(&shared.cfg, t) {
        Ok(mut fresh) => {
            let current = tx.borrow().clone();
            // Never go back to an older revocation list.
            match (&current.crl, fresh.crl.take()) {
                (_, Some(new)) if authority::is_newer(current.crl.as_ref(), &new) => {
                    authority::announce(&new, t);
                    fresh.crl = Some(new);
                }
                (old, _) => fresh.crl = old.clone(),
            }
            shared.metrics.reloads.with_label_values(&["ok"]).inc();
            info!(
                event = "reload",
                result = "ok",
                "licence, principals and revocation list reloaded; re-checking every live session"
            );
            tx.send_replace(Arc::new(fresh));
        }
        Err(e) => {
            shared.metrics.reloads.with_label_values(&["failed"]).inc();
            warn!(event = "reload", result = "failed", error = %e, "reload failed; previous configuration stays in force")
        }
    }
}

/// Polls the revocation list file and loads it the moment it changes.
async fn watch_crl_file(path: PathBuf, shared: Arc<Shared>, tx: watch::Sender<Arc<Authority>>) {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
    };
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(CRL_POLL);
    loop {
        tick.tick().await;
        let now_stamp = stamp(&path);
        if now_stamp == last || now_stamp.is_none() {
            continue;
        }
        last = now_stamp;
        let current = tx.borrow().clone();
        let offered = authority::read_crl(&path, &shared.cfg.root);
        let refused = match &offered {
            Err(_) => true,
            Ok(c) => current
                .crl
                .as_ref()
                .is_some_and(|cur| c.list_version < cur.list_version),
        };
        match authority::merge_crl(&current, offered, now()) {
            Some(next) => {
                shared.metrics.reloads.with_label_values(&["ok"]).inc();
                tx.send_replace(next);
            }
            None if refused => shared.metrics.reloads.with_label_values(&["failed"]).inc(),
            None => {}
        }
    }
}
