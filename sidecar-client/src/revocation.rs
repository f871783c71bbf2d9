//! The revocation list a sidecar was given (`revocation_list`): the same
//! root-signed list the proxies enforce. The sidecar refuses a server whose
//! licence it revokes, by server id or serial, right after the licence is
//! verified and before anything about the user is sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ztssh_keyfile as keyfile;
use ztssh_proto::cert::Licence;
use ztssh_proto::crl::Crl;
use ztssh_proto::end::EndKind;
use ztssh_proto::time::{UnixTime, when};
use ztssh_proto::trust::{self, ListUpdate};

/// Unix seconds, for a delegated list's delegation window.
fn now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A verified list and where it came from.
pub struct Revocations {
    path: PathBuf,
    crl: Crl,
}

impl Revocations {
    /// Reads the list and verifies it under the pinned root. A list that is
    /// configured but unusable stops the sidecar: it fails closed.
    pub fn load(path: &Path, root: &ztssh_proto::rootkey::RootKey) -> Result<Self, String> {
        let unusable = |e: String| {
            format!(
                "cannot use the revocation list {}: {e}; fetch the current list from your \
                 administrators, or remove revocation_list from sidecar.toml to connect without it",
                path.display()
            )
        };
        let text = keyfile::read_regular(path, keyfile::MAX_PEM_FILE).map_err(unusable)?;
        let crl = trust::verify_pem(&text, root, now()).map_err(|e| unusable(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            crl,
        })
    }

    /// A warning when the list is past its next-update time.
    pub fn stale_warning(&self, now: UnixTime) -> Option<String> {
        self.crl.is_stale(now).then(|| {
            format!(
                "warning: the revocation list {} (version {}) is past its next update, {}; \
                 servers revoked since are not known to it: fetch a newer one",
                self.path.display(),
                self.crl.list_version,
                when(self.crl.next_update, now)
            )
        })
    }

    /// Refuses a licence the list revokes, with what the user can do.
    pub fn check(&self, licence: &Licence, host: &str, now: UnixTime) -> Result<(), String> {
        match trust::check_licence(licence, Some(&self.crl), now) {
            Err(e) if e.kind == EndKind::LicenceRevoked => {
                let b = &licence.body;
                let why = e.reason.split_once("revoked: ").map_or("", |(_, why)| why);
                let keys = self.crl.revoked.revoked_licence_key(b).is_some();
                let after = if keys {
                    "Its keys are revoked for good: the server answers with a stolen or retired \
                     key, and only a server with new keys can be trusted again"
                } else {
                    "If it was re-licensed since, get the newest list (ztssh-ca crl, or the \
                     published copy) and retry"
                };
                Err(format!(
                    "refusing to connect to {host}: its server licence ({}, serial {}) is revoked by \
                     the revocation list {} (version {}): {why}. Nothing about you was sent. The \
                     server may be compromised: do not use it, and tell its operators. {after}",
                    b.server_id,
                    b.serial,
                    self.path.display(),
                    self.crl.list_version
                ))
            }
            // Expiry and validity are judged by the handshake itself.
            _ => Ok(()),
        }
    }
}

/// How long the sidecar waits for the list before using its copy.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// Refreshes the copy at `cache` from `url` with a conditional GET (the
/// `ETag` of the copy is kept in `CACHE.etag`). A newer list that verifies
/// under the root replaces the copy; anything else keeps it. Returns
/// warnings for the user; fails only when there is no usable copy at all,
/// so the sidecar fails closed.
pub async fn refresh(
    url: &str,
    cache: &Path,
    root: &ztssh_proto::rootkey::RootKey,
) -> Result<Vec<String>, String> {
    let target = ztssh_fetch::Target::new("revocation_url", url, REFRESH_TIMEOUT, None)?;
    let etag_path = PathBuf::from(format!("{}.etag", cache.display()));
    let copy = Revocations::load(cache, root).ok();
    let etag = match &copy {
        Some(_) => std::fs::read_to_string(&etag_path).ok(),
        None => None,
    };
    let mut fetcher =
        ztssh_fetch::Fetcher::new(Arc::new(target)).with_etag(etag.as_deref().map(str::trim));
    let have = copy.as_ref().map(|c| c.crl.list_version);
    let problem = match fetcher.fetch().await {
        Ok(ztssh_fetch::Fetched::NotModified) => return Ok(Vec::new()),
        Ok(ztssh_fetch::Fetched::Body(body)) => match trust::verify_pem(&body, root, now()) {
            Ok(crl) => match trust::offer(copy.as_ref().map(|c| &c.crl), &crl) {
                ListUpdate::Replace => {
                    keyfile::write_atomic(cache, &body, 0o644, keyfile::Existing::Replace)
                        .map_err(|e| format!("cannot write {}: {e}", cache.display()))?;
                    if let Some(e) = fetcher.etag() {
                        let _ = keyfile::write_atomic(
                            &etag_path,
                            e.as_bytes(),
                            0o644,
                            keyfile::Existing::Replace,
                        );
                    }
                    return Ok(Vec::new());
                }
                ListUpdate::Same | ListUpdate::Behind { .. } => return Ok(Vec::new()),
                ListUpdate::Rollback { offered, loaded } if offered > loaded => format!(
                    "it serves version {offered}, signed by a delegated key, which leaves out \
                     entries of your copy (version {loaded}) or raises the version too far; \
                     refused. Tell your administrators: only the root removes entries"
                ),
                ListUpdate::Rollback { offered, .. } => {
                    format!("it serves version {offered}, older than your copy; refused")
                }
                ListUpdate::Forked { version } => format!(
                    "it serves a version {version} other than your copy of version {version}: two lists were \
                     signed under one version (a signing mistake, or a forked CA); refused. Tell your \
                     administrators: they need to issue a newer list"
                ),
            },
            Err(e) => e.to_string(),
        },
        Err(e) => e,
    };
    match have {
        Some(v) => Ok(vec![format!(
            "warning: cannot refresh the revocation list from {url}: {problem}; using your copy {} (version {v})",
            cache.display()
        )]),
        None => Err(format!(
            "cannot get the revocation list from {url}: {problem}, and there is no usable copy at {}; \
             try again, or ask your administrators for the list",
            cache.display()
        )),
    }
}
