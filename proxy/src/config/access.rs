//! The access list's settings (`access_list`, `access_list_url`,
//! `access_list_cache`, `access_list_stale`, `access_list_stale_grace_secs`),
//! checked with the rest before any port is bound. The pull and the reload
//! step are [`crate::revocation::access_pull`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use ztssh_fetch::Target;
use ztssh_keyfile as keyfile;
use ztssh_proto::access::{self, AccessList};
use ztssh_proto::crl::Revocations;
use ztssh_proto::rootkey::RootKey;
use ztssh_proto::trust::{self, ListUpdate, StaleMode, Staleness};

use crate::config::Choice;
use crate::config::Settings;
use crate::trust::access::AccessInForce;

/// `access_list_stale`: the staleness mode, a setting of its own (its own
/// key in messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessStale(pub StaleMode);

impl Default for AccessStale {
    /// A list past its valid-until (plus grace) admits no new session: it
    /// grants access, and a list nobody renews should stop granting it.
    fn default() -> Self {
        Self(StaleMode::RefuseNew)
    }
}

impl Choice for AccessStale {
    const KEY: &'static str = "access_list_stale";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("warn", Self(StaleMode::Warn)),
        ("refuse-new", Self(StaleMode::RefuseNew)),
        ("close-all", Self(StaleMode::CloseAll)),
    ];
}

/// Where the access list comes from; checked before any port is bound.
#[derive(Debug)]
pub struct AccessSettings {
    /// `access_list`: a file, watched like the revocation list's.
    pub file: Option<PathBuf>,
    /// `access_list_url`, if set.
    pub pull: Option<AccessPull>,
    /// What an overdue list means.
    pub staleness: Staleness,
}

/// The access list's pull: the revocation list's poll interval, fetch
/// timeout and CA file apply to it too.
#[derive(Debug)]
pub struct AccessPull {
    /// The list's URL, the fetch timeout and TLS.
    pub target: Arc<Target>,
    /// The URL, as configured.
    pub url: Uri,
    /// Time between fetches (before jitter): `revocation_poll_secs`.
    pub poll: Duration,
    /// Where a newer list is kept (`access_list_cache`, else `access_list`).
    pub cache: Option<PathBuf>,
}

impl AccessSettings {
    /// The settings, or `None` without `access_list` and `access_list_url`.
    pub fn from_settings(s: &Settings) -> Result<Option<Arc<Self>>, String> {
        if s.access_list_stale_grace_secs > 30 * 86_400 {
            return Err("access_list_stale_grace_secs must be at most 2592000 (30 days)".into());
        }
        let staleness = Staleness {
            mode: s.access_list_stale.0,
            grace_secs: s.access_list_stale_grace_secs,
        };
        let pull = match &s.access_list_url {
            None => {
                if s.access_list_cache.is_some() {
                    return Err("access_list_cache is set but access_list_url is not: \
                                it keeps lists fetched from access_list_url"
                        .into());
                }
                None
            }
            Some(text) => {
                if !(1..=3600).contains(&s.revocation_poll_secs) {
                    return Err("revocation_poll_secs must be between 1 and 3600".into());
                }
                if !(1..=120).contains(&s.revocation_fetch_timeout_secs) {
                    return Err("revocation_fetch_timeout_secs must be between 1 and 120".into());
                }
                let timeout = Duration::from_secs(s.revocation_fetch_timeout_secs);
                let target = Target::new(
                    "access_list_url",
                    text,
                    timeout,
                    s.revocation_ca_file.as_deref(),
                )?;
                Some(AccessPull {
                    url: target.url.clone(),
                    target: Arc::new(target),
                    poll: Duration::from_secs(s.revocation_poll_secs),
                    cache: s
                        .access_list_cache
                        .clone()
                        .or_else(|| s.access_list.clone()),
                })
            }
        };
        if s.access_list.is_none() && pull.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Self {
            file: s.access_list.clone(),
            pull,
            staleness,
        })))
    }
}

/// Verifies the access list text read from `path`: the root's, or a
/// delegated key's with its delegation beside it, checked by proto's
/// [`ztssh_proto::access::verify_pem`] against the revocation list in
/// force (`revocations`), at the time now.
pub fn access_from(
    path: &Path,
    text: &[u8],
    root: &RootKey,
    revocations: Option<&Revocations>,
) -> Result<AccessList, String> {
    access::verify_pem(text, root, revocations, crate::ops::clock::unix())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads an access list this machine keeps (the operator's `access_list`
/// file or the pull's cache) at start-up or on SIGHUP: as
/// [`access_from`], except that a list whose delegation has since ended
/// loads withdrawn, granting nothing but keeping its version in force
/// ([`ztssh_proto::access::verify_pem_kept`]).
pub fn read_access_kept(path: &Path, root: &RootKey) -> Result<AccessList, String> {
    let text = keyfile::read_regular(path, keyfile::MAX_PEM_FILE)?;
    access::verify_pem_kept(&text, root, crate::ops::clock::unix())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The access list at start-up and on SIGHUP: the newer of `access_list`
/// and the copy kept in `access_list_cache`. A file that is configured
/// must verify (a config error otherwise); a cache that does not is
/// reported and left aside (the next fetch replaces it).
pub fn load(s: &Settings, root: &RootKey) -> Result<AccessInForce, String> {
    let staleness = Staleness {
        mode: s.access_list_stale.0,
        grace_secs: s.access_list_stale_grace_secs,
    };
    let mut list = match &s.access_list {
        // A file named but not there yet is normal with a URL (it is
        // where the pull keeps the list); without one it is a mistake.
        Some(p) if !p.exists() && s.access_list_url.is_some() => None,
        Some(p) => {
            let l = read_access_kept(p, root)?;
            crate::config::within_delegated_ceiling(p, &l, "access list", "access")?;
            Some(l)
        }
        None => None,
    };
    if let Some(cache) = &s.access_list_cache
        && cache.exists()
    {
        match read_access_kept(cache, root) {
            Ok(cached) => {
                if trust::offer(list.as_ref(), &cached) == ListUpdate::Replace {
                    list = Some(cached);
                }
            }
            Err(e) => tracing::warn!(event = "access_cache_unusable", path = %cache.display(),
                error = %e, "ignoring the kept access list: {e}; the next fetch replaces it"),
        }
    }
    Ok(AccessInForce {
        list: list.map(Arc::new),
        staleness,
    })
}
