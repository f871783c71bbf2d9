//! One reload task. SIGHUP and the revocation-list watcher only ask for a
//! reload; this task alone publishes a new [`Authority`], and it computes
//! each one from the authority in force at that moment, so one update can
//! never undo another. Files are read and decoded on the blocking pool,
//! off the runtime's workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use ztssh_proto::crl::Crl;
use ztssh_proto::trust::{self, ListUpdate};

use crate::authority::{self, Authority};
use crate::clock;
use crate::process;
use crate::session::Shared;

/// How often the revocation list file is checked for changes.
pub const CRL_POLL: Duration = Duration::from_millis(100);
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

/// Watches the loaded list's staleness deadline (next update plus grace)
/// and, the moment it passes, says what the policy now does and asks the
/// reload task to publish the authority again, so that `close-all` ends
/// live sessions at once rather than at their next challenge. Once per
/// list version; a new list re-arms it.
pub async fn watch_staleness(
    mut authority: watch::Receiver<Arc<Authority>>,
    requests: mpsc::Sender<Request>,
) {
    let mut fired: Option<u64> = None;
    loop {
        let (due, crl, staleness) = {
            let a = authority.borrow_and_update();
            (
                a.crl.as_ref().map(|c| a.staleness.due(c)),
                a.crl.as_ref().map(|c| (c.list_version, c.next_update)),
                a.staleness,
            )
        };
        let now = clock::unix();
        let wait = match (due, crl) {
            (Some(due), Some((version, _))) if now >= due && fired != Some(version) => {
                fired = Some(version);
                if let Some(c) = authority.borrow().crl.as_ref() {
                    authority::announce_stale(c, staleness, now);
                }
                if staleness.mode != ztssh_proto::trust::StaleMode::Warn
                    && requests.send(Request::Recheck).await.is_err()
                {
                    return;
                }
                None
            }
            (Some(due), Some(_)) if now < due => Some(Duration::from_secs(due - now)),
            _ => None,
        };
        let changed = match wait {
            Some(d) => tokio::select! {
                c = authority.changed() => c,
                () = tokio::time::sleep(d) => Ok(()),
            },
            None => authority.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}

/// Watches the revocation list file and asks for a reload the moment it
/// changes: inotify on its directory wakes the watcher as soon as a list is
/// written or renamed into place (a Kubernetes ConfigMap's `..data` swap
/// included), and a `stat` every [`CRL_POLL`] catches what inotify cannot
/// see (network filesystems). A change is a new inode, mtime or size; the
/// first check always asks, so a list written between the start-up load and
/// the watcher's start is not missed (the reload compares list versions, so
/// the same list again is a no-op). Every `stat` runs on the blocking pool.
pub async fn watch_crl_file(path: PathBuf, requests: mpsc::Sender<Request>) {
    watch_crl_file_every(path, requests, CRL_POLL).await;
}

async fn watch_crl_file_every(path: PathBuf, requests: mpsc::Sender<Request>, poll: Duration) {
    use std::os::unix::fs::MetadataExt;
    fn stamp(p: &Path) -> Option<(u64, i64, i64, u64)> {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
    }
    let path = Arc::new(path);
    // A `stat` that hangs (a dead network filesystem) is given up on; the
    // next tick tries again.
    let probe = |p: Arc<PathBuf>| async move {
        let work = tokio::task::spawn_blocking(move || stamp(&p));
        tokio::time::timeout(RELOAD_TIMEOUT, work)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    };
    let dir = DirWatch::new(&path);
    let mut last = None;
    let mut tick = tokio::time::interval(poll);
    loop {
        // inotify saw something: ask whatever the stamp says (a same-size
        // rewrite in place within one timestamp tick leaves it unchanged;
        // the reload compares list versions, so asking is cheap).
        let told = tokio::select! {
            _ = tick.tick() => false,
            () = dir.changed() => true,
        };
        let now = probe(Arc::clone(&path)).await;
        if now.is_none() || (now == last && !told) {
            continue;
        }
        last = now;
        if requests.send(Request::RevocationList).await.is_err() {
            return;
        }
    }
}

/// inotify on the directory that holds a file, read by a thread of its
/// own (a blocking read: no raw descriptor is handed to the runtime).
/// `changed` resolves when anything in the directory was written, created,
/// renamed or removed; without inotify (it could not be set up, or the
/// watch broke) it never resolves and the poll alone keeps watching.
struct DirWatch(Option<Arc<tokio::sync::Notify>>);

impl DirWatch {
    fn new(file: &Path) -> Self {
        use nix::sys::inotify::{AddWatchFlags as W, InitFlags, Inotify};
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let mask = W::IN_CLOSE_WRITE
            | W::IN_MOVED_TO
            | W::IN_CREATE
            | W::IN_DELETE
            | W::IN_ATTRIB
            | W::IN_DELETE_SELF
            | W::IN_MOVE_SELF;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)
            .and_then(|i| i.add_watch(&dir, mask).map(|_| i))
            .map_err(std::io::Error::from);
        let notify = Arc::new(tokio::sync::Notify::new());
        let tell = Arc::clone(&notify);
        let spawned = inotify.and_then(|i| {
            std::thread::Builder::new()
                .name("ztssh-crl-watch".into())
                // Ends when the watch breaks; `notify_one` keeps a wake-up
                // for a watcher that is busy, so none is lost.
                .spawn(move || {
                    while i.read_events().is_ok() {
                        tell.notify_one();
                    }
                })
        });
        match spawned {
            Ok(_) => Self(Some(notify)),
            Err(e) => {
                warn!(event = "revocation_watch", dir = %dir.display(), error = %e,
                    "cannot watch the revocation list's directory with inotify; checking it every {}ms instead", CRL_POLL.as_millis());
                Self(None)
            }
        }
    }

    async fn changed(&self) {
        match &self.0 {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_list_written_between_the_startup_load_and_the_first_check_is_reloaded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crl.pem");
        // The proxy loaded this at start-up...
        std::fs::write(&path, "list version 1").expect("write");
        // ...and this replaced it before the watcher first looked.
        std::fs::write(&path, "list version 2, a little longer").expect("write");
        let (tx, mut rx) = mpsc::channel(4);
        let watcher = tokio::spawn(watch_crl_file(path, tx));
        let asked = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        watcher.abort();
        assert!(matches!(
            asked.ok().flatten(),
            Some(Request::RevocationList)
        ));
    }

    #[tokio::test]
    async fn a_list_renamed_into_place_is_seen_without_waiting_for_the_poll() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crl.pem");
        std::fs::write(&path, "list version 1").expect("write");
        let (tx, mut rx) = mpsc::channel(4);
        // A poll that never comes round again: only inotify can see the change.
        let hour = Duration::from_secs(3600);
        let watcher = tokio::spawn(watch_crl_file_every(path.clone(), tx, hour));
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert!(matches!(
            first.ok().flatten(),
            Some(Request::RevocationList)
        ));
        let next = dir.path().join(".crl.pem.new");
        std::fs::write(&next, "list version 2, a little longer").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        let asked = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        watcher.abort();
        assert!(matches!(
            asked.ok().flatten(),
            Some(Request::RevocationList)
        ));
    }
}
