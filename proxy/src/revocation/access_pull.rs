//! Keeping the access list current, as the revocation list is kept: the
//! `access_list` file is watched ([`super::watch`]), `access_list_url` is
//! pulled with a conditional GET, backoff and a cache of the last good copy
//! ([`poll`]), and both only ask the one reload task, which alone puts a
//! list in force ([`apply`]) under [`trust::offer_from`]'s rules (only a
//! newer version; a source that went back is refused loudly). A principal
//! or key taken out of the list ends its live sessions at once: every
//! session re-checks itself against the new authority
//! (`Checkpoint::Live`), as for a ban. A watcher on the list's valid-until
//! and on the end of the delegation that signed it ([`watch_staleness`])
//! republishes the authority when either passes, so `close-all`, or a
//! delegation's end, ends what the list granted at once.

use std::sync::Arc;

use hyper::body::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};
use ztssh_fetch::{Fetched, Fetcher};
use ztssh_proto::access::{self, AccessList};
use ztssh_proto::time::{UnixTime, when};
use ztssh_proto::trust::{self, ListUpdate, StaleMode};

use crate::config::access::{AccessSettings, access_from, read_access_kept};
use crate::ops::clock;
use crate::revocation::fetch::{next_delay, retry_secs};
use crate::revocation::reload::{Cache, Request, keep};
use crate::state::Kept;
use crate::state::Shared;
use crate::trust::access::AccessInForce;
use crate::trust::authority::Authority;

/// What asks the reload task about the access list.
#[derive(Debug)]
pub enum AccessUpdate {
    /// The `access_list` file changed.
    File,
    /// A list fetched from `access_list_url`, verified under the root.
    Fetched(Box<FetchedAccess>),
}

/// A list fetched from `access_list_url` and verified.
#[derive(Debug)]
pub struct FetchedAccess {
    /// The list.
    pub list: AccessList,
    /// Its PEM text, kept in the cache if it goes into force (empty: not
    /// to be kept).
    pub pem: Bytes,
    /// The newest version the URL gave before this one.
    pub source_newest: Option<u64>,
}

/// The access-list requests one reload serves.
#[derive(Debug, Default)]
pub struct Pending {
    file: bool,
    fetched: Option<Box<FetchedAccess>>,
}

impl Pending {
    /// Adds a request; of several fetched lists the newest is kept.
    pub fn add(&mut self, update: AccessUpdate) {
        match update {
            AccessUpdate::File => self.file = true,
            AccessUpdate::Fetched(f) => {
                if trust::offer(self.fetched.as_ref().map(|x| &x.list), &f.list)
                    == ListUpdate::Replace
                {
                    self.fetched = Some(f);
                }
            }
        }
    }

    /// Whether anything was asked.
    pub fn any(&self) -> bool {
        self.file || self.fetched.is_some()
    }
}

/// Says a list is in force, and how much it grants here.
fn announce(list: &AccessList, server: &str, now: UnixTime) {
    let here = list
        .principals
        .values()
        .filter(|g| g.covers(server))
        .count();
    if list.is_stale(now) {
        warn!(
            event = "access_stale",
            list_version = list.list_version,
            "access list version {} is past its valid-until, {}; publish a newer one: ztssh-ca access",
            list.list_version,
            when(list.valid_until, now)
        );
    }
    info!(
        event = "access_loaded",
        list_version = list.list_version,
        principals = list.principals.len(),
        principals_here = here,
        keys = list.keys(),
        "access list version {} loaded ({} principals, {here} for this server); re-checking every live session",
        list.list_version,
        list.principals.len()
    );
}

/// Offers `new` (from a source whose newest so far was `source_newest`)
/// to replace the list in `current`: the next access state, or `None` to
/// keep it; and whether the offer failed (unreadable, or a rollback).
pub fn merge(
    current: &AccessInForce,
    new: Result<AccessList, String>,
    source_newest: Option<u64>,
    server: &str,
    now: UnixTime,
) -> (Option<AccessInForce>, bool) {
    let new = match new {
        Ok(l) => l,
        Err(e) => {
            error!(event = "access_reload_failed", error = %e,
                "access list rejected: {e}; keeping the previous one");
            return (None, true);
        }
    };
    match trust::offer_from(current.list.as_deref(), &new, source_newest) {
        ListUpdate::Replace => {}
        ListUpdate::Same => return (None, false),
        ListUpdate::Behind { loaded, offered } => {
            info!(
                event = "access_behind",
                loaded,
                offered,
                "access list version {offered} is behind the loaded {loaded}; keeping version {loaded}"
            );
            return (None, false);
        }
        ListUpdate::Rollback { loaded, offered } if offered > loaded => {
            error!(
                event = "access_reload_failed",
                loaded,
                offered,
                "access list version {offered}, signed by a delegated key, raises the version by \
                 more than {} over the loaded {loaded} or above {} (out of the root's reach); \
                 refused (if its key was stolen, revoke the delegation)",
                ztssh_proto::crl::MAX_DELEGATED_VERSION_JUMP,
                trust::MAX_DELEGATED_VERSION
            );
            return (None, true);
        }
        ListUpdate::Rollback { loaded, offered } => {
            error!(
                event = "access_reload_failed",
                loaded,
                offered,
                "access list version {offered} is older than the loaded {loaded}; refused"
            );
            return (None, true);
        }
        ListUpdate::Forked { version } => {
            error!(
                event = "access_forked",
                list_version = version,
                "access list version {version} differs from the loaded list of the same version; \
                 refused, keeping the loaded one: sign a newer list (ztssh-ca access) and publish it"
            );
            return (None, true);
        }
    }
    announce(&new, server, now);
    (
        Some(AccessInForce {
            list: Some(Arc::new(new)),
            staleness: current.staleness,
        }),
        false,
    )
}

/// On SIGHUP: the list just read from the files replaces the one in force
/// only if newer (`file_newest`: the newest the file gave before).
pub fn keep_newer(
    current: &AccessInForce,
    fresh: AccessInForce,
    file_newest: Option<u64>,
    server: &str,
    now: UnixTime,
) -> AccessInForce {
    let Some(list) = fresh.list else {
        return AccessInForce {
            list: current.list.clone(),
            staleness: fresh.staleness,
        };
    };
    let new = Arc::try_unwrap(list).unwrap_or_else(|l| (*l).clone());
    match merge(current, Ok(new), file_newest, server, now) {
        (Some(next), _) => next,
        (None, _) => current.clone(),
    }
}

/// Serves the access-list requests of one reload, from `current` (the
/// authority the earlier steps of this reload produced): the next
/// authority, if the list changed, and whether anything failed.
pub fn apply(
    shared: &Shared,
    current: &Authority,
    pending: Pending,
    file_newest: &mut Option<u64>,
    kept: &mut Kept,
    now: UnixTime,
) -> (Option<Authority>, bool) {
    let Some(settings) = &shared.cfg.access else {
        return (None, false);
    };
    let server = current.licence.body.server_id.clone();
    let mut access = current.access.clone();
    let mut changed = false;
    let mut failed = false;
    if pending.file
        && let Some(path) = &settings.file
        && path.exists()
    {
        let read = ztssh_keyfile::read_regular(path, ztssh_keyfile::MAX_PEM_FILE);
        // What this task just wrote there (the file is the pull's cache):
        // in force, or overtaken since; not verified again.
        let known = read.as_ref().ok().and_then(|t| kept.version_of(t));
        let read = match (known, read) {
            (Some(v), _) => {
                *file_newest = (*file_newest).max(Some(v));
                None
            }
            (None, Ok(text)) => Some(access_from(
                path,
                &text,
                &shared.cfg.root,
                current.crl.as_ref().map(|c| &c.revoked),
            )),
            (None, Err(e)) => Some(Err(e)),
        };
        if let Some(read) = read {
            let before = *file_newest;
            if let Ok(l) = &read {
                *file_newest = before.max(Some(l.list_version));
            }
            let (next, bad) = merge(&access, read, before, &server, now);
            failed |= bad;
            if let Some(next) = next {
                access = next;
                changed = true;
            }
        }
    }
    if let Some(f) = pending.fetched {
        let version = f.list.list_version;
        let (next, bad) = merge(&access, Ok(f.list), f.source_newest, &server, now);
        failed |= bad;
        if let Some(next) = next {
            access = next;
            changed = true;
            if let Some(cache) = settings.pull.as_ref().and_then(|p| p.cache.as_deref()) {
                let root = shared.cfg.root.clone();
                keep(Cache::Access, cache, &f.pem, version, kept, |text| {
                    access::verify_pem_kept(text, &root, clock::unix())
                        .ok()
                        .map(|l| l.list_version)
                });
            }
        }
    }
    (changed.then(|| current.with_access(access)), failed)
}

/// Pulls the access list until the reload task is gone.
pub async fn poll(
    shared: Arc<Shared>,
    settings: Arc<AccessSettings>,
    requests: mpsc::Sender<Request>,
) {
    let Some(pull) = settings.pull.as_ref() else {
        return;
    };
    let url = pull.url.to_string();
    let mut fetcher = Fetcher::new(Arc::clone(&pull.target));
    let mut failures: u32 = 0;
    let mut reported: Option<u64> = None;
    // The newest version this URL gave: at least what the cache holds
    // (only when it is a cache of its own, not the operator's file).
    let mut newest: Option<u64> = match (&shared.cfg.settings.access_list_cache, &pull.cache) {
        (Some(c), Some(_)) if c.exists() => {
            let (c, root) = (c.clone(), shared.cfg.root.clone());
            tokio::task::spawn_blocking(move || read_access_kept(&c, &root).ok())
                .await
                .ok()
                .flatten()
                .map(|l| l.list_version)
        }
        _ => None,
    };
    info!(event = "access_pull", url = %url, poll_secs = pull.poll.as_secs(), "pulling the access list");
    loop {
        let outcome: Result<Option<FetchedAccess>, String> = match fetcher.fetch().await {
            Ok(Fetched::NotModified) => {
                debug!(event = "access_fetch", result = "not_modified", url = %url, "access list unchanged");
                Ok(None)
            }
            Ok(Fetched::Body(body)) => {
                let root = shared.cfg.root.clone();
                // Checked against the revocation list in force: a list
                // from a revoked delegation is refused here, and says so.
                let revocations = shared
                    .authority
                    .borrow()
                    .crl
                    .as_ref()
                    .map(|c| c.revoked.clone());
                let verified = tokio::task::spawn_blocking(move || {
                    access::verify_pem(&body, &root, revocations.as_ref(), clock::unix())
                        .map(|l| (l, body))
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
                verified.map(|(list, body)| {
                    let v = list.list_version;
                    let update = trust::offer_from(
                        shared.authority.borrow().access.list.as_deref(),
                        &list,
                        newest,
                    );
                    info!(event = "access_fetch", result = "ok", url = %url, list_version = v, "access list fetched");
                    let source_newest = newest;
                    newest = newest.max(Some(v));
                    let offered = |pem| FetchedAccess {
                        list,
                        pem,
                        source_newest,
                    };
                    match update {
                        ListUpdate::Same | ListUpdate::Behind { .. } => None,
                        ListUpdate::Rollback { .. } | ListUpdate::Forked { .. }
                            if reported == Some(v) =>
                        {
                            None
                        }
                        ListUpdate::Rollback { .. } | ListUpdate::Forked { .. } => {
                            reported = Some(v);
                            Some(offered(Bytes::new()))
                        }
                        ListUpdate::Replace => Some(offered(body)),
                    }
                })
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(offered) => {
                failures = 0;
                if let Some(f) = offered
                    && requests
                        .send(Request::Access(AccessUpdate::Fetched(Box::new(f))))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let loaded = shared
                    .authority
                    .borrow()
                    .access
                    .list
                    .as_ref()
                    .map_or(0, |l| l.list_version);
                let delay = next_delay(pull.poll);
                error!(event = "access_fetch_failed", url = %url, error = %e, failures, list_version = loaded,
                    retry_secs = retry_secs(delay),
                    "access list fetch from {url} failed: {e}; the last good list (version {loaded}) stays in force; retrying in {}s",
                    retry_secs(delay));
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        if requests.is_closed() {
            return;
        }
        tokio::time::sleep(next_delay(pull.poll)).await;
    }
}

/// Watches the loaded access list's two deadlines, once per list version
/// each:
/// - the end of the delegation that signed it, if a delegated key did:
///   from then on the list grants nothing ([`AccessInForce::grant`]), so
///   the authority is published again at once and every session only the
///   list granted ends, whatever `access_list_stale` says;
/// - its valid-until plus grace: says what `access_list_stale` now does
///   and, unless it only warns, publishes the authority again likewise.
pub async fn watch_staleness(
    mut authority: watch::Receiver<Arc<Authority>>,
    requests: mpsc::Sender<Request>,
) {
    let mut fired: Option<u64> = None;
    let mut ended: Option<u64> = None;
    loop {
        let (due, ends, version, mode) = {
            let a = authority.borrow_and_update();
            (
                a.access.due(),
                a.access.delegation_ends(),
                a.access.list.as_ref().map(|l| l.list_version),
                a.access.staleness.mode,
            )
        };
        let now = clock::unix();
        let mut wake: Option<UnixTime> = None;
        let mut recheck = false;
        if let (Some(ends), Some(v)) = (ends, version) {
            if now < ends {
                wake = Some(ends);
            } else if ended != Some(v) {
                ended = Some(v);
                error!(
                    event = "access_delegation_ended",
                    list_version = v,
                    not_after = ends,
                    "access list version {v} was signed under an access delegation that ended {}; it grants nothing now, and every session only it granted ends. Publish a list signed by the root or by an access delegation in force: ztssh-ca access",
                    when(ends, now)
                );
                recheck = true;
            }
        }
        if let (Some(due), Some(v)) = (due, version) {
            if now < due {
                wake = Some(wake.map_or(due, |w| w.min(due)));
            } else if fired != Some(v) {
                fired = Some(v);
                let does = match mode {
                    StaleMode::Warn => {
                        "still granting what it lists (access_list_stale = \"warn\")"
                    }
                    StaleMode::RefuseNew => {
                        "refusing new sessions it grants; live ones go on (access_list_stale = \"refuse-new\")"
                    }
                    StaleMode::CloseAll => {
                        "ending every session only it grants (access_list_stale = \"close-all\")"
                    }
                };
                error!(
                    event = "access_stale",
                    list_version = v,
                    mode = mode.label(),
                    "access list version {v} is past its valid-until plus grace; {does}. Publish a newer one: ztssh-ca access"
                );
                recheck |= mode != StaleMode::Warn;
            }
        }
        if recheck && requests.send(Request::Recheck).await.is_err() {
            return;
        }
        let changed = match wake {
            Some(at) => tokio::select! {
                c = authority.changed() => c,
                () = tokio::time::sleep(std::time::Duration::from_secs(at.saturating_sub(now))) => Ok(()),
            },
            None => authority.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}
