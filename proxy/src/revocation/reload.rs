//! One reload task. SIGHUP, the revocation-list watcher and the pull only
//! ask for a reload; this task alone publishes a new [`Authority`], and it
//! computes each one from the authority in force at that moment, so one
//! update can never undo another. It alone writes the pulled list's cache
//! too, in the same step that puts the list in force, so the list file it
//! watches never lags behind its own doing. Files are read, decoded and
//! written on the blocking pool, off the runtime's workers.
//!
//! A list older than the one in force is always refused. It is a failure
//! (an ERROR, and `result="failed"`) only when its own source went back
//! (the file or the URL once gave a newer one); a source that merely lags
//! behind the other, or an answer overtaken by a newer one, is noted at
//! info ([`trust::offer_from`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use ztssh_proto::crl::Crl;
use ztssh_proto::trust::{self, ListUpdate};

use crate::ops::clock;
use crate::ops::process;
use crate::revocation::access_pull;
use crate::state::{Kept, Shared};
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
    Fetched(Box<FetchedList>),
    /// The loaded list just became stale: publish the authority again so
    /// that every live session re-checks itself under the staleness policy.
    Recheck,
    /// The access list file changed, or a list was fetched from
    /// `access_list_url`.
    Access(access_pull::AccessUpdate),
    /// The licence: `None`, the `licence` file changed; `Some`, one fetched
    /// from `licence_url` and verified. A newer one for this proxy's keys
    /// replaces the one in force ([`super::licence_pull::renew`]).
    Licence(Option<Box<super::licence_pull::FetchedLicence>>),
    /// A user CA KRL read from `user_ca_krl` or fetched from
    /// `user_ca_krl_url`; it replaces the one in force only if newer.
    Krl(Box<super::krl_pull::KrlOffer>),
    /// A workload issuer's key set, pulled from its `jwks_url`.
    Jwks(Box<super::jwks_pull::JwksOffer>),
}

/// A list fetched from `revocation_url` and verified under the root.
#[derive(Debug)]
pub struct FetchedList {
    /// The list.
    pub crl: Crl,
    /// Its PEM text, kept in the cache if the list goes into force (empty:
    /// not to be kept).
    pub pem: Bytes,
    /// The newest version the URL gave before this one.
    pub source_newest: Option<u64>,
}

/// The requests one reload serves: those that queued up while the last
/// one ran are served together.
#[derive(Default)]
struct Batch {
    everything: bool,
    file: bool,
    fetched: Option<Box<FetchedList>>,
    recheck: bool,
    access: access_pull::Pending,
    licence_file: bool,
    licence_fetched: Option<Box<super::licence_pull::FetchedLicence>>,
    krl: Option<Box<super::krl_pull::KrlOffer>>,
    jwks: Vec<super::jwks_pull::JwksOffer>,
}

impl Batch {
    fn add(&mut self, req: Request) {
        match req {
            Request::Everything => self.everything = true,
            Request::RevocationList => self.file = true,
            Request::Fetched(c) => {
                // The newest of the fetched lists; an older one is still
                // offered when nothing newer came, so a rollback is reported.
                if trust::offer(self.fetched.as_ref().map(|f| &f.crl), &c.crl)
                    == ListUpdate::Replace
                {
                    self.fetched = Some(c);
                }
            }
            Request::Recheck => self.recheck = true,
            Request::Access(update) => self.access.add(update),
            Request::Licence(None) => self.licence_file = true,
            Request::Licence(Some(l)) => {
                // The latest fetched; the licence step judges it.
                self.licence_fetched = Some(l);
            }
            Request::Krl(k) => super::krl_pull::keep_newest(&mut self.krl, k),
            Request::Jwks(j) => self.jwks.push(*j),
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

    fn new(next: Option<Authority>, result: Option<&'static str>) -> Self {
        Self { next, result }
    }

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

/// What the reload task remembers between reloads.
#[derive(Clone, Default)]
struct Memory {
    /// The newest list version read from `revocation_list` so far.
    file_newest: Option<u64>,
    /// The newest access list version read from `access_list` so far.
    access_file_newest: Option<u64>,
    /// The revocation list last written to the cache.
    crl_kept: Kept,
    /// The access list last written to its cache.
    access_kept: Kept,
    /// The KRL last written to its cache; shared with the KRL's file
    /// watch ([`Shared::krl_kept`]) only once the authority it went into
    /// is published, so a reload that is given up (a timeout) never
    /// leaves the watch skipping a KRL that is not in force.
    krl_kept: Kept,
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
    let mut memory = Memory::default();
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
        let remembered = memory.clone();
        let work =
            tokio::task::spawn_blocking(move || compute(&worker, &current, batch, remembered));
        let Ok(outcome) = tokio::time::timeout(RELOAD_TIMEOUT, work).await else {
            shared.metrics.reloads.with_label_values(&["timeout"]).inc();
            error!(
                event = "reload",
                result = "timeout",
                timeout_secs = RELOAD_TIMEOUT.as_secs(),
                "reading the configuration or revocation list took more than {}s (a hung filesystem?); the last good state stays in force",
                RELOAD_TIMEOUT.as_secs()
            );
            if everything {
                process::notify("READY=1");
            }
            continue;
        };
        match outcome {
            Ok((o, remembered)) => {
                memory = remembered;
                if let Some(result) = o.result {
                    shared.metrics.reloads.with_label_values(&[result]).inc();
                }
                if let Some(next) = o.next {
                    tx.send_replace(Arc::new(next));
                }
                *shared
                    .krl_kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = memory.krl_kept.clone();
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
fn compute(
    shared: &Shared,
    current: &Authority,
    batch: Batch,
    mut memory: Memory,
) -> (Outcome, Memory) {
    let now = clock::unix();
    let mut out = if batch.everything {
        everything(shared, current, &memory, now)
    } else if batch.file {
        list_file(shared, current, &mut memory, now)
    } else {
        Outcome::NOTHING
    };
    if let Some(list) = batch.fetched {
        let base = out.next.as_ref().unwrap_or(current);
        let later = fetched(shared, base, *list, &mut memory.crl_kept, now);
        out = out.then(later);
    }
    if batch.access.any() {
        let base = out.next.as_ref().unwrap_or(current);
        let (next, failed) = access_pull::apply(
            shared,
            base,
            batch.access,
            &mut memory.access_file_newest,
            &mut memory.access_kept,
            now,
        );
        let result = if failed {
            Some("failed")
        } else {
            next.as_ref().map(|_| "ok")
        };
        out = out.then(Outcome::new(next, result));
    }
    if batch.licence_file || batch.licence_fetched.is_some() {
        let base = out.next.as_ref().unwrap_or(current);
        let (next, refused) = super::licence_pull::renew(
            shared,
            base,
            batch.licence_file,
            batch.licence_fetched,
            now,
        );
        let result = match (&next, refused) {
            (_, true) => Some("failed"),
            (Some(_), false) => Some("ok"),
            (None, false) => None,
        };
        out = out.then(Outcome::new(next, result));
    }
    if let Some(offer) = batch.krl {
        let base = out.next.as_ref().unwrap_or(current);
        if let Some(next) = super::krl_pull::apply(shared, base, *offer, &mut memory.krl_kept) {
            out.next = Some(next);
        }
    }
    for offer in batch.jwks {
        let base = out.next.as_ref().unwrap_or(current);
        if let Some(next) = super::jwks_pull::apply(base, offer) {
            out.next = Some(next);
        }
    }
    if batch.recheck && out.next.is_none() {
        out.next = Some(current.republish());
    }
    (out, memory)
}

fn everything(shared: &Shared, current: &Authority, memory: &Memory, now: u64) -> Outcome {
    match crate::config::reload_authority(&shared.cfg, now) {
        Ok(mut fresh) => {
            crate::ops::logging::set_server_id(&fresh.licence.body.server_id);
            // Never go back to an older revocation list.
            fresh.crl = match fresh.crl.take() {
                None => current.crl.clone(),
                Some(new) => {
                    match trust::offer_from(current.crl.as_ref(), &new, memory.file_newest) {
                        ListUpdate::Replace => {
                            authority::announce(&new, now);
                            Some(new)
                        }
                        ListUpdate::Same => current.crl.clone(),
                        ListUpdate::Behind { loaded, offered } => {
                            authority::note_behind(loaded, offered);
                            current.crl.clone()
                        }
                        ListUpdate::Rollback { loaded, offered } => {
                            authority::refuse_rollback(loaded, offered);
                            current.crl.clone()
                        }
                        ListUpdate::Forked { version } => {
                            authority::refuse_forked(version);
                            shared.metrics.crl_forked.inc();
                            current.crl.clone()
                        }
                    }
                }
            };
            // Nor to an older access list.
            let server = fresh.licence.body.server_id.clone();
            let access = std::mem::take(&mut fresh.access);
            fresh.access = access_pull::keep_newer(
                &current.access,
                access,
                memory.access_file_newest,
                &server,
                now,
            );
            fresh.krl = super::krl_pull::on_reload(shared, current, fresh.krl.take());
            // Key sets pulled from a URL stay until the next pull.
            if let (Some(fresh_w), Some(current_w)) = (fresh.workload.as_mut(), &current.workload) {
                std::sync::Arc::make_mut(fresh_w).keep_pulled_keys(current_w);
            }
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

fn list_file(shared: &Shared, current: &Authority, memory: &mut Memory, now: u64) -> Outcome {
    let Some(path) = &shared.cfg.settings.revocation_list else {
        return Outcome::NOTHING;
    };
    let text = match ztssh_keyfile::read_regular(path, ztssh_keyfile::MAX_PEM_FILE) {
        Ok(t) => t,
        Err(e) => return merged(shared, current, Err(e), memory.file_newest, now),
    };
    if let Some(v) = memory.crl_kept.version_of(&text) {
        // What this task just wrote there: in force, or overtaken since.
        memory.file_newest = memory.file_newest.max(Some(v));
        return Outcome::NOTHING;
    }
    let read = authority::crl_from(path, &text, &shared.cfg.root, now);
    let newest = memory.file_newest;
    if let Ok(c) = &read {
        memory.file_newest = newest.max(Some(c.list_version));
    }
    merged(shared, current, read, newest, now)
}

/// A fetched list; one that goes into force is kept in the cache.
fn fetched(
    shared: &Shared,
    current: &Authority,
    list: FetchedList,
    kept: &mut Kept,
    now: u64,
) -> Outcome {
    let version = list.crl.list_version;
    let out = merged(shared, current, Ok(list.crl), list.source_newest, now);
    if out.next.is_some() {
        let cache = shared.cfg.pull.as_ref().and_then(|p| p.cache.as_deref());
        if let Some(path) = cache {
            keep(Cache::Crl, path, &list.pem, version, kept, |text| {
                authority::crl_from(path, text, &shared.cfg.root, clock::unix())
                    .ok()
                    .map(|c| c.list_version)
            });
        }
    }
    out
}

fn merged(
    shared: &Shared,
    current: &Authority,
    offered: Result<Crl, String>,
    source_newest: Option<u64>,
    now: u64,
) -> Outcome {
    let update = offered
        .as_ref()
        .ok()
        .map(|c| trust::offer_from(current.crl.as_ref(), c, source_newest));
    if let Some(ListUpdate::Forked { .. }) = update {
        shared.metrics.crl_forked.inc();
    }
    let refused = matches!(
        update,
        None | Some(ListUpdate::Rollback { .. } | ListUpdate::Forked { .. })
    );
    match authority::merge_crl(current, offered, source_newest, now) {
        Some(next) => Outcome::new(Some(next), Some("ok")),
        None => Outcome::new(None, refused.then_some("failed")),
    }
}

/// Which cache [`keep`] writes, for its events and words.
#[derive(Clone, Copy)]
pub enum Cache {
    /// `revocation_cache` (or `revocation_list`).
    Crl,
    /// `access_list_cache` (or `access_list`).
    Access,
}

impl Cache {
    fn events(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Crl => ("crl_cached", "crl_cache_failed", "revocation list"),
            Self::Access => ("access_cached", "access_cache_failed", "access list"),
        }
    }
}

/// Keeps a list that just went into force in its cache file, so that a
/// restart starts from it; never over a list there that is as new or
/// newer (one the operator just wrote, say). What the cache holds is known
/// without verifying it again when it is what this task wrote last
/// (`kept`); otherwise `version_there` verifies it.
pub fn keep(
    cache: Cache,
    path: &Path,
    pem: &Bytes,
    version: u64,
    kept: &mut Kept,
    version_there: impl FnOnce(&[u8]) -> Option<u64>,
) {
    if pem.is_empty() {
        return;
    }
    let (cached, failed, what) = cache.events();
    let shown = path.display();
    if path.exists()
        && let Ok(there) = ztssh_keyfile::read_regular(path, ztssh_keyfile::MAX_PEM_FILE)
        && let Some(v) = kept.version_of(&there).or_else(|| version_there(&there))
        && v >= version
    {
        debug!(event = cached, path = %shown, list_version = v,
            "the cache already holds {what} version {v}, as new as {version} or newer");
        return;
    }
    match ztssh_keyfile::write_atomic(path, pem, 0o644, ztssh_keyfile::Existing::Replace) {
        Ok(()) => {
            kept.wrote(pem, version);
            debug!(event = cached, path = %shown, list_version = version, "{what} kept on disk");
        }
        Err(e) => warn!(event = failed, path = %shown, error = %e,
            "cannot keep the fetched {what} in {shown}: {e}; a restart starts from the older list there"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_cache_this_task_wrote_is_known_again_without_verifying_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.pem");
        let mut kept = Kept::default();
        // A stand-in for verifying a list: its text is its version.
        let verified = std::cell::Cell::new(0);
        let verify = |text: &[u8]| {
            verified.set(verified.get() + 1);
            std::str::from_utf8(text).ok()?.parse::<u64>().ok()
        };
        let pem = |t: &'static str| Bytes::from_static(t.as_bytes());
        keep(Cache::Crl, &path, &pem("1"), 1, &mut kept, verify);
        assert_eq!(std::fs::read(&path).unwrap(), b"1");
        // What it wrote last is known by its bytes: not verified again.
        keep(Cache::Crl, &path, &pem("2"), 2, &mut kept, verify);
        assert_eq!(std::fs::read(&path).unwrap(), b"2");
        keep(Cache::Crl, &path, &pem("2"), 2, &mut kept, verify);
        assert_eq!(verified.get(), 0);
        assert_eq!(kept.version_of(b"2"), Some(2));
        assert_eq!(kept.version_of(b"2 "), None);
        // Anything else there is verified: a newer list the operator wrote
        // stays; an older or unreadable one is replaced.
        std::fs::write(&path, "5").unwrap();
        keep(Cache::Crl, &path, &pem("3"), 3, &mut kept, verify);
        assert_eq!(
            (verified.get(), std::fs::read(&path).unwrap()),
            (1, b"5".to_vec())
        );
        std::fs::write(&path, "garbage").unwrap();
        keep(Cache::Access, &path, &pem("4"), 4, &mut kept, verify);
        assert_eq!(
            (verified.get(), std::fs::read(&path).unwrap()),
            (2, b"4".to_vec())
        );
        // An empty text is a list not to be kept.
        keep(Cache::Crl, &path, &Bytes::new(), 9, &mut kept, verify);
        assert_eq!(std::fs::read(&path).unwrap(), b"4");
    }
}
