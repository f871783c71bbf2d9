//! The revocation-list pull's settings, checked with the rest before any
//! port is bound; the pull itself is [`crate::revocation::fetch`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use ztssh_fetch::Target;

use crate::config::Settings;

/// Where and how to pull the list; checked before any port is bound.
#[derive(Debug)]
pub struct PullSettings {
    /// The list's URL, the fetch timeout and TLS.
    pub target: Arc<Target>,
    /// The list's URL, as configured.
    pub url: Uri,
    /// Time between fetches (before jitter).
    pub poll: Duration,
    /// Where a newer list is kept on disk (`revocation_cache`, else
    /// `revocation_list`), if set.
    pub cache: Option<PathBuf>,
}

impl PullSettings {
    /// The pull settings, or `None` without a `revocation_url`.
    pub fn from_settings(s: &Settings) -> Result<Option<Arc<Self>>, String> {
        let Some(text) = &s.revocation_url else {
            if s.revocation_ca_file.is_some() && s.licence_url.is_none() {
                return Err(
                    "revocation_ca_file is set but neither revocation_url nor licence_url is"
                        .into(),
                );
            }
            if s.revocation_cache.is_some() {
                return Err("revocation_cache is set but revocation_url is not: \
                            it keeps lists fetched from revocation_url"
                    .into());
            }
            return Ok(None);
        };
        if !(1..=3600).contains(&s.revocation_poll_secs) {
            return Err("revocation_poll_secs must be between 1 and 3600".into());
        }
        if !(1..=120).contains(&s.revocation_fetch_timeout_secs) {
            return Err("revocation_fetch_timeout_secs must be between 1 and 120".into());
        }
        let timeout = Duration::from_secs(s.revocation_fetch_timeout_secs);
        let target = Target::new(
            "revocation_url",
            text,
            timeout,
            s.revocation_ca_file.as_deref(),
        )?;
        Ok(Some(Arc::new(Self {
            url: target.url.clone(),
            target: Arc::new(target),
            poll: Duration::from_secs(s.revocation_poll_secs),
            cache: s
                .revocation_cache
                .clone()
                .or_else(|| s.revocation_list.clone()),
        })))
    }
}
