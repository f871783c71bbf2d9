//! Licences that renew themselves: the pull from `licence_url` (the list
//! pull's conditional GET, backoff and body cap: [`super::fetch`]) and the
//! step of the one reload task that swaps a newer licence in
//! ([`renew`]). What may replace the licence in force is proto's decision
//! ([`trust::offer_licence`]): a newer, valid, unrevoked licence for this
//! proxy's own keys and server id, signed by the root or a `licences`
//! delegation. Live sessions carry on across the swap: they are re-checked
//! under the new authority, as after any reload.

use std::sync::Arc;

use hyper::body::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use ztssh_fetch::{Fetched, Fetcher};
use ztssh_proto::cert::LicenceVerified;
use ztssh_proto::delegation;
use ztssh_proto::labels::pem;
use ztssh_proto::trust::{self, LicenceUpdate};

use crate::config::pull::PullSettings;
use crate::ops::clock;
use crate::revocation::fetch::next_delay;
use crate::revocation::reload::Request;
use crate::state::Shared;
use crate::trust::authority::Authority;

/// A licence fetched from `licence_url`, verified under the root.
#[derive(Debug)]
pub struct FetchedLicence {
    /// The licence (with its delegation, if a delegated key signed it).
    pub licence: LicenceVerified,
    /// Its PEM text, written to the `licence` file if it goes into force.
    pub pem: Bytes,
}

/// Pulls the licence until the reload task is gone.
pub async fn poll(
    shared: Arc<Shared>,
    settings: Arc<PullSettings>,
    requests: mpsc::Sender<Request>,
) {
    let url = settings.url.to_string();
    let mut fetcher = Fetcher::new(Arc::clone(&settings.target));
    let mut failures: u32 = 0;
    info!(event = "licence_pull", url = %url, poll_secs = settings.poll.as_secs(), "pulling the licence");
    loop {
        let result = match fetcher.fetch().await {
            Ok(Fetched::NotModified) => Ok(None),
            Ok(Fetched::Body(body)) => {
                let root = shared.cfg.root.clone();
                tokio::task::spawn_blocking(move || verify(&body, &root).map(|l| Some((l, body))))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            }
            Err(e) => Err(e.to_string()),
        };
        let label = match &result {
            Ok(None) => "not_modified",
            Ok(Some(_)) => "ok",
            Err(_) => "failed",
        };
        shared
            .metrics
            .licence_fetches
            .with_label_values(&[label])
            .inc();
        match result {
            Ok(None) => {
                failures = 0;
                debug!(event = "licence_fetch", result = "not_modified", url = %url, "licence unchanged");
            }
            Ok(Some((licence, pem))) => {
                failures = 0;
                let fetched = FetchedLicence { licence, pem };
                if requests
                    .send(Request::Licence(Some(Box::new(fetched))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let until = shared.authority.borrow().licence.usable_until();
                error!(event = "licence_fetch_failed", url = %url, error = %e, failures,
                    "licence fetch from {url} failed: {e}; the licence in force (until {}) stays",
                    ztssh_proto::time::when(until, clock::unix()));
            }
        }
        if requests.is_closed() {
            return;
        }
        tokio::time::sleep(next_delay(settings.poll)).await;
    }
}

/// A licence's PEM text, verified under the root (and its delegation).
fn verify(text: &[u8], root: &ztssh_proto::rootkey::RootKey) -> Result<LicenceVerified, String> {
    let (der, deleg) = delegation::split_pem(text, pem::LICENCE).map_err(|e| e.to_string())?;
    let licence = delegation::verify_licence(root, &der, deleg.as_deref(), None, clock::unix())
        .map_err(|e| e.to_string())?;
    if !ztssh_proto::handshake::fits_message_2(&licence) {
        return Err("the licence and its delegation are too long for handshake message 2".into());
    }
    Ok(licence)
}

/// The reload task's licence step: the `licence` file (when it changed)
/// and a fetched licence (if any), each offered in turn to the licence in
/// force. Returns the authority to publish, if the licence changed, and
/// whether an offer was refused. Runs on the blocking pool.
pub fn renew(
    shared: &Shared,
    base: &Authority,
    file: bool,
    fetched: Option<Box<FetchedLicence>>,
    now: u64,
) -> (Option<Authority>, bool) {
    let mut next: Option<Authority> = None;
    let mut refused = false;
    let path = &shared.cfg.settings.licence;
    let mut offers: Vec<(LicenceVerified, Option<Bytes>, &str)> = Vec::new();
    if file {
        match crate::config::read_licence(path, &shared.cfg.root, now) {
            Ok(l) => offers.push((l, None, "file")),
            Err(e) => {
                refused = true;
                warn!(event = "licence_refused", source = "file", error = %e,
                    "the licence file was not taken: {e}; the licence in force stays");
            }
        }
    }
    if let Some(f) = fetched {
        offers.push((f.licence, Some(f.pem), "url"));
    }
    for (offered, pem, source) in offers {
        let current = next.as_ref().unwrap_or(base);
        match trust::offer_licence(&current.licence, &offered, current.crl.as_ref(), now) {
            LicenceUpdate::Same => {}
            LicenceUpdate::Refuse(why) => {
                refused = true;
                warn!(event = "licence_refused", source, serial = %offered.body.serial, why = %why,
                    "licence {} from the {source} refused: {why}; the licence in force stays",
                    offered.body.serial);
            }
            LicenceUpdate::Replace => {
                if let Some(pem) = pem
                    && let Err(e) = ztssh_keyfile::write_atomic(
                        path,
                        &pem,
                        0o644,
                        ztssh_keyfile::Existing::Replace,
                    )
                {
                    error!(event = "licence_cache_failed", path = %path.display(), error = %e,
                        "cannot keep the renewed licence in {}: {e}; it is in force, but a restart \
                         would start from the old file", path.display());
                }
                info!(event = "licence_renewed", source, serial = %offered.body.serial,
                    not_after = offered.usable_until(),
                    delegated = %offered.delegation().is_some(),
                    "licence {} in force until {} (from the {source}); live sessions carry on",
                    offered.body.serial, ztssh_proto::time::date(offered.usable_until()));
                let mut a = current.republish();
                a.licence = offered;
                next = Some(a);
            }
        }
    }
    (next, refused)
}
