//! Workload issuers' key sets pulled from their `jwks_url`: one task per
//! issuer, with the list pull's machinery (conditional GET, jittered
//! polls). A set fetched (200) or confirmed unchanged (304) is handed to
//! the one reload task as a [`Request::Jwks`], which puts it in force with
//! the time of the pull: a platform's key rotation takes effect at the next
//! poll, and keys not confirmed for `jwks_max_age_secs` stop vouching
//! (the issuer's tokens are then refused as unjudgeable, never taken on
//! old keys).

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use ztssh_fetch::{Fetched, Fetcher};
use ztssh_proto::trust::workload::{KeySet, KeysInForce};

use crate::config::workload::JwksPull;
use crate::ops::clock;
use crate::revocation::fetch::{next_delay, retry_secs};
use crate::revocation::reload::Request;
use crate::trust::authority::Authority;

/// A key set for one issuer, offered to the reload task.
#[derive(Debug)]
pub struct JwksOffer {
    /// The issuer's name.
    pub name: String,
    /// The keys, with the time they were fetched or confirmed.
    pub keys: KeysInForce,
}

/// Starts one pull per issuer with a `jwks_url`.
pub fn spawn(pulls: &[Arc<JwksPull>], requests: &mpsc::Sender<Request>) {
    for p in pulls {
        tokio::spawn(poll(Arc::clone(p), requests.clone()));
    }
}

/// The reload task's step: the authority with the offered key set in
/// force for its issuer, or `None` when no issuer has that name any more.
pub fn apply(current: &Authority, offer: JwksOffer) -> Option<Authority> {
    let workload = current
        .workload
        .as_ref()?
        .with_keys(&offer.name, offer.keys)?;
    let mut next = current.republish();
    next.workload = Some(Arc::new(workload));
    Some(next)
}

/// Pulls one issuer's key set until the reload task is gone.
async fn poll(pull: Arc<JwksPull>, requests: mpsc::Sender<Request>) {
    let url = pull.target.url.to_string();
    let name = pull.name.clone();
    let mut fetcher = Fetcher::new(Arc::clone(&pull.target));
    let mut last: Option<Arc<KeySet>> = None;
    let mut failures: u32 = 0;
    info!(event = "jwks_pull", issuer = %name, url = %url, poll_secs = pull.poll.as_secs(),
        "pulling workload issuer {name}'s key set");
    loop {
        let outcome = match fetcher.fetch().await {
            Ok(Fetched::NotModified) => last.clone().ok_or_else(|| {
                // A 304 before any 200 (a cache in between): ask again in full.
                fetcher = Fetcher::new(Arc::clone(&pull.target));
                "the server answered 304 before the proxy had any key set".to_owned()
            }),
            Ok(Fetched::Body(body)) => {
                tokio::task::spawn_blocking(move || KeySet::from_json(&body))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .map(Arc::new)
            }
            Err(e) => Err(format!("fetch failed: {e}")),
        };
        match outcome {
            Ok(set) => {
                failures = 0;
                if last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &set)) {
                    for why in set.skipped_why() {
                        warn!(event = "jwks_key_skipped", issuer = %name, detail = %why,
                            "workload issuer {name}'s key set: {why}");
                    }
                    info!(event = "jwks_loaded", issuer = %name, keys = set.len(), kids = %set.kids().join(","),
                        "workload issuer {name}: {} key(s) in force", set.len());
                } else {
                    debug!(event = "jwks_fetch", issuer = %name, result = "not_modified", "key set unchanged");
                }
                last = Some(Arc::clone(&set));
                let offer = JwksOffer {
                    name: name.clone(),
                    keys: KeysInForce {
                        set,
                        fetched: clock::unix(),
                        max_age_secs: Some(pull.max_age_secs),
                    },
                };
                if requests.send(Request::Jwks(Box::new(offer))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = next_delay(pull.poll.min(std::time::Duration::from_secs(60)));
                error!(event = "jwks_fetch_failed", issuer = %name, url = %url, error = %e, failures,
                    retry_secs = retry_secs(delay), max_age_secs = pull.max_age_secs,
                    "workload issuer {name}'s key set from {url}: {e}; the keys in force stay until \
                     {}s after the last good pull, then its tokens are refused; retrying in {}s",
                    pull.max_age_secs, retry_secs(delay));
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
