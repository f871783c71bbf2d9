//! Pulling the revocation list over HTTP(S): a conditional GET
//! (`If-None-Match`, `If-Modified-Since`) every `revocation_poll_secs`
//! less up to 10 % of jitter, so an unchanged list costs one 304; a failed
//! fetch is retried on the same schedule (no backoff past the poll
//! interval, so a list server that comes back is seen within it); a
//! timeout on every fetch and a cap on the body. A list that verifies under the pinned root is handed to the one
//! reload task, which alone decides (from the authority in force at that
//! moment) whether it replaces the loaded one, and which alone keeps it in
//! the cache. The pull remembers the newest version the URL gave, so that
//! a URL that goes back is told apart from one that merely lags. Nothing here is on the path
//! that carries out a kill: sessions only ever see the authority the
//! reload task publishes.

use std::sync::Arc;
use std::time::Duration;

use getrandom::SysRng;
use hyper::body::Bytes;
use rand_core::UnwrapErr;
use tokio::sync::mpsc;
use tracing::{debug, error, info};
use ztssh_fetch::{Fetched, Fetcher};
use ztssh_proto::crl::Crl;
use ztssh_proto::keys::random_bytes;
use ztssh_proto::trust::{self, ListUpdate};

use crate::config::pull::PullSettings;
use crate::revocation::reload::{FetchedList, Request};
use crate::state::Shared;

pub use ztssh_fetch::MAX_LIST_BYTES;

/// The wait before the next fetch, after a good one or a failed one alike:
/// the poll interval less 0-10 % of jitter, so a fleet does not fetch in
/// step and no fetch comes later than the interval. Every pull (the
/// revocation list, the access list, the user CA's KRL, the licence) waits
/// this long.
///
/// Failures do not lengthen it. A backoff protects a server from load it
/// did not agree to, but a failed fetch costs it no more than the poll it
/// was configured for (a refused connection costs less); and every second
/// of backoff is a second after the server is back during which a ban
/// published meanwhile is not in force. The soak (docs/BENCHMARKS.md) saw
/// a 1 s poll back off to 16 s during a 15 s outage, so two bans landed
/// 6 and 15 s late. A fleet that needs less load on a failing server sets
/// a longer `revocation_poll_secs`.
pub fn next_delay(poll: Duration) -> Duration {
    let spread = u64::from(u16::from_le_bytes(random_bytes::<2>(&mut UnwrapErr(SysRng))) % 101);
    let ms = u64::try_from(poll.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ms / 1000 * (1000 - spread) + ms % 1000 * (1000 - spread) / 1000)
}

/// `d` in whole seconds, rounded up: what a log line's `retry_secs` says
/// (a 1 s poll's 0.95 s is "1", not "0").
pub fn retry_secs(d: Duration) -> u64 {
    u64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Pulls the list until the reload task is gone.
pub async fn poll(
    shared: Arc<Shared>,
    settings: Arc<PullSettings>,
    requests: mpsc::Sender<Request>,
) {
    let url = settings.url.to_string();
    let mut fetcher = Fetcher::new(Arc::clone(&settings.target));
    let mut failures: u32 = 0;
    // The older version last reported as a rollback, so that a server stuck
    // on an old list without validators is not reported at every poll.
    let mut reported: Option<u64> = None;
    // The newest version this URL gave so far: from a restart on, at least
    // the one it gave before, kept in `revocation_cache`, so that a URL that
    // went back while the proxy was down is still a rollback, not a lag.
    let mut newest: Option<u64> = {
        let worker = Arc::clone(&shared);
        let pull = Arc::clone(&settings);
        tokio::task::spawn_blocking(move || kept_version(&worker, &pull))
            .await
            .unwrap_or(None)
    };
    info!(event = "crl_pull", url = %url, poll_secs = settings.poll.as_secs(), "pulling the revocation list");
    loop {
        let outcome = match fetcher.fetch().await {
            Ok(Fetched::NotModified) => {
                shared
                    .metrics
                    .crl_fetches
                    .with_label_values(&["not_modified"])
                    .inc();
                debug!(event = "crl_fetch", result = "not_modified", url = %url, "revocation list unchanged");
                Ok(None)
            }
            Ok(Fetched::Body(body)) => {
                let root = shared.cfg.root.clone();
                tokio::task::spawn_blocking(move || {
                    trust::verify_pem(&body, &root, crate::ops::clock::unix())
                        .map(|c| (c, body))
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
                .map(|(crl, body)| {
                    let v = crl.list_version;
                    let wanted = offer(&shared, &settings, crl, body, newest, &mut reported);
                    newest = newest.max(Some(v));
                    wanted
                })
            }
            Err(e) => Err(e),
        };
        let offered = match outcome {
            Ok(o) => o,
            Err(e) => {
                failures = failures.saturating_add(1);
                shared
                    .metrics
                    .crl_fetches
                    .with_label_values(&["failed"])
                    .inc();
                let delay = next_delay(settings.poll);
                let loaded = shared
                    .authority
                    .borrow()
                    .crl
                    .as_ref()
                    .map_or(0, |c| c.list_version);
                error!(event = "crl_fetch_failed", url = %url, error = %e, failures, list_version = loaded,
                    retry_secs = retry_secs(delay),
                    "revocation list fetch from {url} failed: {e}; the last good list (version {loaded}) stays in force; retrying in {}s",
                    retry_secs(delay));
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        failures = 0;
        if let Some(list) = offered
            && requests
                .send(Request::Fetched(Box::new(list)))
                .await
                .is_err()
        {
            return;
        }
        if requests.is_closed() {
            return;
        }
        tokio::time::sleep(next_delay(settings.poll)).await;
    }
}

/// The version of the list kept in `revocation_cache`: the newest the URL
/// gave before a restart (the reload task writes it only with lists from
/// the URL that went into force). Not when the cache is `revocation_list`
/// itself, which an operator writes too: its version says nothing about
/// the URL.
fn kept_version(shared: &Shared, settings: &PullSettings) -> Option<u64> {
    let cache = settings.cache.as_deref()?;
    if shared.cfg.settings.revocation_cache.as_deref() != Some(cache) || !cache.exists() {
        return None;
    }
    crate::trust::authority::read_crl_kept(cache, &shared.cfg.root, crate::ops::clock::unix())
        .ok()
        .map(|c| c.list_version)
}

/// Counts a verified list and decides whether to hand it to the reload
/// task: a newer list always, one from a URL that went back once (the
/// reload task refuses it loudly), the loaded version and a list merely
/// behind the loaded one (another source was faster) never.
fn offer(
    shared: &Shared,
    settings: &PullSettings,
    crl: Crl,
    body: Bytes,
    source_newest: Option<u64>,
    reported: &mut Option<u64>,
) -> Option<FetchedList> {
    shared.metrics.crl_fetches.with_label_values(&["ok"]).inc();
    let update = trust::offer_from(shared.authority.borrow().crl.as_ref(), &crl, source_newest);
    let v = crl.list_version;
    info!(event = "crl_fetch", result = "ok", url = %settings.url, list_version = v, "revocation list fetched");
    let list = |pem| FetchedList {
        crl,
        pem,
        source_newest,
    };
    match update {
        ListUpdate::Same | ListUpdate::Behind { .. } => None,
        ListUpdate::Rollback { .. } | ListUpdate::Forked { .. } if *reported == Some(v) => None,
        ListUpdate::Rollback { .. } | ListUpdate::Forked { .. } => {
            *reported = Some(v);
            Some(list(Bytes::new()))
        }
        ListUpdate::Replace => Some(list(body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fetch_comes_within_the_poll_interval_with_jitter_below_it() {
        let poll = Duration::from_secs(2);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = next_delay(poll);
            assert!(
                d >= Duration::from_millis(1800) && d <= poll,
                "{d:?}: between 90 % of the interval and the interval"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 10, "jittered: {seen:?}");
        let long = Duration::from_secs(600);
        assert!(next_delay(long) <= long && next_delay(long) >= Duration::from_secs(540));
    }
}
