//! One reload task. SIGHUP and the revocation-list watcher only ask for a
//! reload; this task alone publishes a new [`Authority`], and it computes
//! each one from the authority in force at that moment, so one update can
//! never undo another. Files are read and decoded on the blocking pool,
//! off the runtime's workers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use ztssh_proto::crl::Crl;
use ztssh_proto::trust::{self, ListUpdate};

use crate::ops::clock;
use crate::ops::process;
use crate::state::Shared;
use crate::trust::authority::{self, Authority};

/// How long one reload's file reading and decoding may take before the
/// reload task gives up on it (a hung network filesystem, say) and serves
/// the next request; the last good state stays in force.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What to reload.
#[derive(Debug)]
pub enum Request {
    /// SIGHUP: the licence, the authorized principals, the policy and the
    /// revocation list.
    Everything,
    /// The revocation list file changed.
    RevocationList,
    /// A list fetched from `revocation_url`, already verified under the
    /// root; it replaces the loaded one only if newer.
    Fetched(Box<Crl>),
    /// The loaded list just became stale: publish the authority again so
    /// that every live session re-checks itself under the staleness policy.
    Recheck,
}

/// The requests one reload serves: those that queued up while the last
/// one ran are served together.
#[derive(Default)]
struct Batch {
    everything: bool,
    file: bool,
    fetched: Option<Box<Crl>>,
    recheck: bool,
}

impl Batch {
    fn add(&mut self, req: Request) {
        match req {
            Request::Everything => self.everything = true,
            Request::RevocationList => self.file = true,
            Request::Fetched(c) => {
                // The newest of the fetched lists; an older one is still
                // offered when nothing newer came, so a rollback is reported.
                if trust::offer(self.fetched.as_deref(), &c) == ListUpdate::Replace {
                    self.fetched = Some(c);
                }
            }
            Request::Recheck => self.recheck = true,
        }
    }
}

/// What one reload came to.
struct Outcome {
    /// The authority to publish, if anything changed.
    next: Option<Authority>,
    /// The reload metric's result label, if the reload counts.
    result: Option<&'static str>,
}

impl Outcome {
    const NOTHING: Self = Self {
        next: None,
        result: None,
    };

    /// This outcome followed by `later`, which was computed from this one's
    /// authority (if any).
    fn then(self, later: Self) -> Self {
        Self {
            next: later.next.or(self.next),
            result: match (self.result, later.result) {
                (Some("failed"), _) | (_, Some("failed")) => Some("failed"),
                (a, b) => a.or(b),
            },
        }
    }
}

/// Starts the reload task; send it requests through the returned channel.
pub fn spawn(shared: Arc<Shared>, tx: watch::Sender<Arc<Authority>>) -> mpsc::Sender<Request> {
    let (req_tx, req_rx) = mpsc::channel(16);
    tokio::spawn(run(shared, tx, req_rx));
    req_tx
}

async fn run(
    shared: Arc<Shared>,
    tx: watch::Sender<Arc<Authority>>,
    mut requests: mpsc::Receiver<Request>,
) {
    while let Some(first) = requests.recv().await {
        // Requests that queued up meanwhile are served by this one reload.
        let mut batch = Batch::default();
        batch.add(first);
        while let Ok(more) = requests.try_recv() {
            batch.add(more);
        }
        let everything = batch.everything;
        if everything {
            process::notify("RELOADING=1");
        }
        let current = tx.borrow().clone();
        let worker = Arc::clone(&shared);
        let work = tokio::task::spawn_blocking(move || compute(&worker, &current, batch));
        let Ok(outcome) = tokio::time::timeout(RELOAD_TIMEOUT, work).await else {
            shared.metrics.reloads.with_label_values(&["timeout"]).inc();
            error!(
                event = "reload",
                result = "timeout",
                "reading the configuration or revocation list took more than {}s (a hung filesystem?); the last good state stays in force",
                RELOAD_TIMEOUT.as_secs()
            );
            if everything {
                process::notify("READY=1");
            }
            continue;
        };
        match outcome {
            Ok(o) => {
                if let Some(result) = o.result {
                    shared.metrics.reloads.with_label_values(&[result]).inc();
                }
                if let Some(next) = o.next {
                    tx.send_replace(Arc::new(next));
                }
            }
            Err(e) => error!(event = "reload", result = "failed", error = %e, "reload task failed"),
        }
        if everything {
            process::notify("READY=1");
        }
    }
}

/// Computes the next authority from `current`; runs on the blocking pool.
/// Each step starts from the authority the one before produced.
fn compute(shared: &Shared, current: &Authority, batch: Batch) -> Outcome {
    let now = clock::unix();
    let mut out = if batch.everything {
        everything(shared, current, now)
    } else if batch.file {
        list_file(shared, current, now)
    } else {
        Outcome::NOTHING
    };
    if let Some(crl) = batch.fetched {
        let base = out.next.as_ref().unwrap_or(current);
        let later = fetched(base, *crl, now);
        out = out.then(later);
    }
    if batch.recheck && out.next.is_none() {
        out.next = Some(current.republish());
    }
    out
}

fn everything(shared: &Shared, current: &Authority, now: u64) -> Outcome {
    match crate::config::reload_authority(&shared.cfg, now) {
        Ok(mut fresh) => {
            // Never go back to an older revocation list.
            fresh.crl = match fresh.crl.take() {
                None => current.crl.clone(),
                Some(new) => match trust::offer(current.crl.as_ref(), &new) {
                    ListUpdate::Replace => {
                        authority::announce(&new, now);
                        Some(new)
                    }
                    ListUpdate::Same => current.crl.clone(),
                    ListUpdate::Rollback { loaded, offered } => {
                        authority::refuse_rollback(loaded, offered);
                        current.crl.clone()
                    }
                },
            };
            info!(
                event = "reload",
                result = "ok",
                "licence, principals and revocation list reloaded; re-checking every live session"
            );
            Outcome {
                next: Some(fresh),
                result: Some("ok"),
            }
        }
        Err(e) => {
            warn!(event = "reload", result = "failed", error = %e, "reload failed; previous configuration stays in force");
            Outcome {
                next: None,
                result: Some("failed"),
            }
        }
    }
}

fn list_file(shared: &Shared, current: &Authority, now: u64) -> Outcome {
    let Some(path) = &shared.cfg.settings.revocation_list else {
        return Outcome::NOTHING;
    };
    merged(current, authority::read_crl(path, &shared.cfg.root), now)
}

fn fetched(current: &Authority, crl: Crl, now: u64) -> Outcome {
    merged(current, Ok(crl), now)
}

fn merged(current: &Authority, offered: Result<Crl, String>, now: u64) -> Outcome {
    let refused = match &offered {
        Err(_) => true,
        Ok(c) => matches!(
            trust::offer(current.crl.as_ref(), c),
            ListUpdate::Rollback { .. }
        ),
    };
    match authority::merge_crl(current, offered, now) {
        Some(next) => Outcome {
            next: Some(next),
            result: Some("ok"),
        },
        None => Outcome {
            next: None,
            result: refused.then_some("failed"),
        },
    }
}
