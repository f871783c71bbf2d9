//! The user SSH CA's KRL: read from `user_ca_krl` whenever it changes (the
//! same watcher as the revocation list's file) and pulled from
//! `user_ca_krl_url` with the list pull's machinery (conditional GET,
//! backoff, a cap on the body). Either way the KRL is decoded off the
//! runtime's workers and handed to the one reload task as a
//! [`Request::Krl`]; the reload task alone decides
//! ([`crate::trust::krl::merge_krl`]) and alone keeps a fetched KRL in the
//! cache file, in the step that puts it in force. A KRL that revokes a live
//! session's key ends it at once: every driver rechecks on the new
//! authority, as for a ban.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::body::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use ztssh_fetch::{Fetched, Fetcher};
use ztssh_proto::krl::{self, Krl, KrlUpdate, MAX_KRL_BYTES};

use crate::config::krl::KrlPullSettings;
use crate::revocation::fetch::{next_delay, retry_secs};
use crate::revocation::reload::Request;
use crate::revocation::watch::watch_crl_file;
use crate::state::Kept;
use crate::state::Shared;
use crate::trust::authority::Authority;
use crate::trust::krl::{krl_from, merge_krl, refuse_unreadable, result_label};

/// A KRL offered to the reload task.
#[derive(Debug)]
pub struct KrlOffer {
    /// The KRL, decoded.
    pub krl: Arc<Krl>,
    /// Its bytes, kept in the cache if it goes into force (empty: not kept).
    pub bytes: Bytes,
    /// Where it came from, for the logs (`user_ca_krl` or the URL).
    pub source: String,
}

/// Starts the file watcher and the pull, as configured.
pub fn spawn(shared: &Arc<Shared>, requests: &mpsc::Sender<Request>) {
    if let Some(path) = shared.cfg.settings.user_ca_krl.clone() {
        tokio::spawn(watch_file(Arc::clone(shared), path, requests.clone()));
    }
    if let Some(pull) = shared.cfg.krl_pull.clone() {
        tokio::spawn(poll(Arc::clone(shared), pull, requests.clone()));
    }
}

/// Of two offers queued together, the newer KRL; on a tie the later one,
/// unless it would un-revoke something the earlier one revokes (then the
/// earlier one, which would go into force over it).
pub fn keep_newest(slot: &mut Option<Box<KrlOffer>>, offer: Box<KrlOffer>) {
    if slot.as_ref().is_none_or(|kept| {
        let update = krl::offer(Some(&kept.krl), &offer.krl);
        update.replaces() || update == KrlUpdate::Same
    }) {
        *slot = Some(offer);
    }
}

/// The reload task's step for an offered KRL: the authority to publish, if
/// the KRL replaces the one in force; a fetched one is then kept on disk.
pub fn apply(
    shared: &Shared,
    current: &Authority,
    offer: KrlOffer,
    kept: &mut Kept,
) -> Option<Authority> {
    let krl = Arc::clone(&offer.krl);
    let (next, update) = merge_krl(current, offer.krl, &offer.source);
    shared
        .metrics
        .krl_loads
        .with_label_values(&[result_label(&update)])
        .inc();
    if update.replaces()
        && !offer.bytes.is_empty()
        && let Some(cache) = shared
            .cfg
            .krl_pull
            .as_ref()
            .and_then(|p| p.cache.as_deref())
    {
        keep(cache, &offer.bytes, &krl, kept);
    }
    next
}

/// SIGHUP re-read the configured KRL (`fresh`): it replaces the one in
/// force only if newer, as any other offer.
pub fn on_reload(
    shared: &Shared,
    current: &Authority,
    fresh: Option<Arc<Krl>>,
) -> Option<Arc<Krl>> {
    let Some(fresh) = fresh else {
        return current.krl.clone();
    };
    let (next, update) = merge_krl(current, fresh, "user_ca_krl");
    if update != KrlUpdate::Same {
        shared
            .metrics
            .krl_loads
            .with_label_values(&[result_label(&update)])
            .inc();
    }
    match next {
        Some(a) => a.krl,
        None => current.krl.clone(),
    }
}

/// Keeps a fetched KRL that went into force, never over one there that
/// it would not replace (newer, or of its version and revoking as much).
/// What this task wrote there last (`kept`) went into force before this
/// one replaced it, and is not decoded again.
fn keep(path: &std::path::Path, bytes: &Bytes, krl: &Krl, kept: &mut Kept) {
    let shown = path.display();
    let version = krl.krl_version;
    if let Ok(there) = ztssh_keyfile::read_regular(path, MAX_KRL_BYTES as u64)
        && kept.version_of(&there).is_none()
        && let Ok(there) = Krl::decode(&there)
        && !krl::offer(Some(&there), krl).replaces()
    {
        debug!(event = "krl_cached", path = %shown, "the cache already holds KRL version {} or newer", version);
        return;
    }
    match ztssh_keyfile::write_atomic(path, bytes, 0o644, ztssh_keyfile::Existing::Replace) {
        Ok(()) => {
            kept.wrote(bytes, version);
            debug!(event = "krl_cached", path = %shown, krl_version = version, "user CA KRL kept on disk")
        }
        Err(e) => warn!(event = "krl_cache_failed", path = %shown, error = %e,
            "cannot keep the fetched KRL in {shown}: {e}; a restart starts from the older KRL there"),
    }
}

/// Reads `user_ca_krl` each time the revocation-list watcher (inotify and
/// a stat poll) sees it change, and offers it to the reload task.
async fn watch_file(shared: Arc<Shared>, path: PathBuf, requests: mpsc::Sender<Request>) {
    let (tx, mut changed) = mpsc::channel(1);
    tokio::spawn(watch_crl_file(path.clone(), tx));
    let source = "user_ca_krl".to_owned();
    while changed.recv().await.is_some() {
        let p = path.clone();
        let me = Arc::clone(&shared);
        let read = tokio::task::spawn_blocking(move || {
            let bytes = ztssh_keyfile::read_regular(&p, MAX_KRL_BYTES as u64)?;
            // What the reload task just wrote there: in force already.
            let ours = me
                .krl_kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .version_of(&bytes)
                .is_some();
            if ours {
                return Ok(None);
            }
            krl_from(&p, &bytes).map(Some)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let krl = match read {
            Ok(None) => continue,
            Ok(Some(k)) => k,
            Err(e) => {
                shared
                    .metrics
                    .krl_loads
                    .with_label_values(&["invalid"])
                    .inc();
                refuse_unreadable(&source, &e);
                continue;
            }
        };
        let offer = KrlOffer {
            krl: Arc::new(krl),
            bytes: Bytes::new(),
            source: source.clone(),
        };
        if requests.send(Request::Krl(Box::new(offer))).await.is_err() {
            return;
        }
    }
}

/// Pulls the KRL until the reload task is gone.
async fn poll(
    shared: Arc<Shared>,
    settings: Arc<KrlPullSettings>,
    requests: mpsc::Sender<Request>,
) {
    let url = settings.url.to_string();
    let mut fetcher = Fetcher::new(Arc::clone(&settings.target));
    let mut failures: u32 = 0;
    info!(event = "krl_pull", url = %url, poll_secs = settings.poll.as_secs(), "pulling the user CA KRL");
    loop {
        let outcome = match fetcher.fetch().await {
            Ok(Fetched::NotModified) => Ok(None),
            Ok(Fetched::Body(body)) => tokio::task::spawn_blocking(move || {
                Krl::decode(&body)
                    .map(|k| Some((k, body)))
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
            Err(e) => Err(format!("fetch failed: {e}")),
        };
        match outcome {
            Ok(None) => {
                failures = 0;
                debug!(event = "krl_fetch", result = "not_modified", url = %url, "user CA KRL unchanged");
            }
            Ok(Some((krl, body))) => {
                failures = 0;
                let offer = KrlOffer {
                    krl: Arc::new(krl),
                    bytes: body,
                    source: url.clone(),
                };
                if requests.send(Request::Krl(Box::new(offer))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                shared
                    .metrics
                    .krl_loads
                    .with_label_values(&["fetch_failed"])
                    .inc();
                let delay = next_delay(settings.poll);
                error!(event = "krl_fetch_failed", url = %url, error = %e, failures, retry_secs = retry_secs(delay),
                    "user CA KRL from {url}: {e}; the KRL in force stays; retrying in {}s", retry_secs(delay));
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        if requests.is_closed() {
            return;
        }
        tokio::time::sleep(next_delay(settings.poll)).await;
    }
}
