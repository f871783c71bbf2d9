//! The licence pull's settings (`licence_url`, `licence_poll_secs`),
//! checked with the rest before any port is bound; the pull itself is
//! [`crate::revocation::licence_pull`].

use std::sync::Arc;
use std::time::Duration;

use ztssh_fetch::Target;

use crate::config::Settings;
use crate::config::pull::PullSettings;

/// The pull settings, or `None` without a `licence_url`. The last good
/// licence is kept in the `licence` file itself.
pub fn from_settings(s: &Settings) -> Result<Option<Arc<PullSettings>>, String> {
    let Some(text) = &s.licence_url else {
        return Ok(None);
    };
    if !(1..=86_400).contains(&s.licence_poll_secs) {
        return Err("licence_poll_secs must be between 1 and 86400".into());
    }
    if !(1..=120).contains(&s.revocation_fetch_timeout_secs) {
        return Err("revocation_fetch_timeout_secs must be between 1 and 120".into());
    }
    let timeout = Duration::from_secs(s.revocation_fetch_timeout_secs);
    let target = Target::new(
        "licence_url",
        text,
        timeout,
        s.revocation_ca_file.as_deref(),
    )?;
    Ok(Some(Arc::new(PullSettings {
        url: target.url.clone(),
        target: Arc::new(target),
        poll: Duration::from_secs(s.licence_poll_secs),
        cache: Some(s.licence.clone()),
    })))
}
