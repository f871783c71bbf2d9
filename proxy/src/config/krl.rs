//! The user CA's KRL settings (`user_ca_krl*`), checked with the rest
//! before any port is bound; the pull itself is
//! [`crate::revocation::krl_pull`], the rule [`ztssh_proto::trust::check_krl`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use ztssh_fetch::Target;
use ztssh_proto::krl::Krl;

use crate::config::Settings;
use crate::trust::krl::read_krl;

/// Where and how to pull the KRL.
#[derive(Debug)]
pub struct KrlPullSettings {
    /// The KRL's URL, the fetch timeout and TLS.
    pub target: Arc<Target>,
    /// The URL, as configured.
    pub url: Uri,
    /// Time between fetches (before jitter).
    pub poll: Duration,
    /// Where a newer KRL is kept (`user_ca_krl_cache`, else `user_ca_krl`).
    pub cache: Option<PathBuf>,
}

/// A refusal, with the key whose line the message should name.
type Refused = (&'static str, String);

impl KrlPullSettings {
    /// The checks that need no file: the URL's scheme, the poll interval,
    /// settings that need another.
    pub fn check(s: &Settings) -> Result<(), Refused> {
        Self::from_settings(s).map(|_| ())
    }

    /// The pull settings, or `None` without a `user_ca_krl_url`.
    pub fn from_settings(s: &Settings) -> Result<Option<Arc<Self>>, Refused> {
        let Some(text) = &s.user_ca_krl_url else {
            if s.user_ca_krl_cache.is_some() {
                return Err((
                    "user_ca_krl_cache",
                    "user_ca_krl_cache is set but user_ca_krl_url is not: it keeps KRLs fetched from user_ca_krl_url".into(),
                ));
            }
            if s.user_ca_krl_allow_http {
                return Err((
                    "user_ca_krl_allow_http",
                    "user_ca_krl_allow_http is set but user_ca_krl_url is not".into(),
                ));
            }
            return Ok(None);
        };
        if text
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("http://")
            && !s.user_ca_krl_allow_http
        {
            return Err((
                "user_ca_krl_url",
                format!(
                    "user_ca_krl_url = {text:?} is plain http: a KRL is unsigned, so anyone on the path could \
                     serve an emptier one and un-revoke keys. Use https://, or set \
                     user_ca_krl_allow_http = true if the path is trusted"
                ),
            ));
        }
        if !(1..=3600).contains(&s.user_ca_krl_poll_secs) {
            return Err((
                "user_ca_krl_poll_secs",
                "user_ca_krl_poll_secs must be between 1 and 3600".into(),
            ));
        }
        let timeout = Duration::from_secs(s.revocation_fetch_timeout_secs.clamp(1, 120));
        let target = Target::new("user_ca_krl_url", text, timeout, None)
            .map_err(|e| ("user_ca_krl_url", e))?;
        Ok(Some(Arc::new(Self {
            url: target.url.clone(),
            target: Arc::new(target),
            poll: Duration::from_secs(s.user_ca_krl_poll_secs),
            cache: s
                .user_ca_krl_cache
                .clone()
                .or_else(|| s.user_ca_krl.clone()),
        })))
    }
}

/// The KRL to start from (and to offer on SIGHUP): the newer of
/// `user_ca_krl` and the KRL kept in `user_ca_krl_cache` (of the same
/// version, the cache if it revokes more: [`ztssh_proto::krl::offer`]). A missing file
/// is an error for `user_ca_krl` (the operator named it) and normal for the
/// cache before the first fetch; a cache that cannot be read is reported
/// and left aside.
pub fn read_configured(s: &Settings) -> Result<Option<Arc<Krl>>, String> {
    let file = match &s.user_ca_krl {
        Some(path) if s.user_ca_krl_url.is_none() || path.exists() => Some(read_krl(path)?),
        _ => None,
    };
    let cached = match &s.user_ca_krl_cache {
        Some(path) if path.exists() => match read_krl(path) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(event = "krl_cache_unusable", path = %path.display(), error = %e,
                    "ignoring the kept KRL: {e}; the next fetch replaces it");
                None
            }
        },
        _ => None,
    };
    let newest = match (file, cached) {
        (Some(f), Some(c)) if ztssh_proto::krl::offer(Some(&f), &c).replaces() => Some(c),
        (Some(f), _) => Some(f),
        (None, c) => c,
    };
    Ok(newest.map(Arc::new))
}
