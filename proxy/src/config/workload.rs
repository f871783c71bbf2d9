//! Workload identity's settings (`[[workload_issuer]]`): the platforms
//! whose OIDC tokens (GitHub Actions, GitLab CI, Kubernetes service
//! accounts) vouch for a principal, their keys (a pinned JWKS file, or a
//! URL pulled by [`crate::revocation::jwks_pull`]), and the rules that map
//! a token's claims to a principal and accounts. The verifier is proto's
//! [`ztssh_proto::trust::workload`]; this module turns the operator's
//! tables into its [`Issuers`], before any port is bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ztssh_fetch::Target;
use ztssh_proto::time::UnixTime;
use ztssh_proto::trust::workload::{
    Alg, Issuer, Issuers, KeySet, KeysInForce, MAX_JWKS, MAX_SKEW, Rule,
};

use crate::config::Settings;

/// One `[[workload_issuer]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The name used in logs, metrics and messages (`github`).
    pub name: String,
    /// The tokens' `iss`, exactly.
    pub issuer: String,
    /// The audience a token must be minted for (default
    /// `ztssh:SERVER-ID`, what the sidecar asks for by default).
    #[serde(default)]
    pub audience: Option<String>,
    /// A pinned JWKS file (reloaded on SIGHUP).
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// Where to pull the JWKS from (https; conditional GET).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A PEM bundle to check `jwks_url`'s server with, instead of the
    /// built-in roots (a cluster's own CA).
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// Accept an `http://` `jwks_url` (test rigs: anyone on the path could
    /// serve keys of their own and mint any token).
    #[serde(default)]
    pub jwks_allow_http: bool,
    /// Seconds between pulls of `jwks_url` (each up to 10 % sooner, so
    /// that proxies do not pull in step).
    #[serde(default = "default_jwks_poll")]
    pub jwks_poll_secs: u64,
    /// Seconds after the last good pull from which the keys are too old
    /// to trust: the issuer is then unavailable (its tokens are refused)
    /// until a pull succeeds.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_secs: u64,
    /// The algorithms accepted (`RS256`, `ES256`, `EdDSA`).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The longest token lifetime accepted (`exp` minus `iat`/`nbf`).
    #[serde(default = "default_max_lifetime")]
    pub max_token_lifetime_secs: u64,
    /// Clock skew allowed around `iat`, `nbf` and `exp`.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// The claims that say whose workload a token is, one of which every
    /// rule must pin exactly (default: the platform's own: GitHub's
    /// repository and owner, GitLab's project and group, else `sub` or
    /// `kubernetes.io/namespace`).
    #[serde(default)]
    pub tenant_claims: Vec<String>,
    /// Who its tokens may act as (`[[workload_issuer.rule]]`).
    #[serde(default)]
    pub rule: Vec<RuleSettings>,
}

/// One `[[workload_issuer.rule]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// The principal a matching token acts as.
    pub principal: String,
    /// The local accounts it may log in to.
    pub accounts: Vec<String>,
    /// Claim path → value or glob; every one must match.
    pub claims: BTreeMap<String, String>,
}

fn default_jwks_poll() -> u64 {
    300
}
fn default_jwks_max_age() -> u64 {
    86_400
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_max_lifetime() -> u64 {
    3600
}
fn default_skew() -> u64 {
    60
}

/// Where and how one issuer's JWKS is pulled.
#[derive(Debug)]
pub struct JwksPull {
    /// The issuer's name.
    pub name: String,
    /// The URL, the fetch timeout and TLS.
    pub target: Arc<Target>,
    /// Time between pulls (before jitter).
    pub poll: Duration,
    /// Seconds after a good pull from which its keys are stale.
    pub max_age_secs: u64,
}

/// The line of the `n`-th `[[workload_issuer]]` header in `path`, to
/// name in an error.
fn table_line(path: &Path, n: usize) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[workload_issuer]]")
        .nth(n)
        .map(|(i, _)| i + 1)
}

/// The checks that need no file, each error at its table's line: every
/// table valid ([`Issuers::new`]'s rules, a key source, the pull's
/// settings), and zero standing keys configured, without which sshd could
/// not take a workload's throwaway key.
pub fn check(path: &Path, s: &Settings) -> Result<(), String> {
    if s.workload_issuer.is_empty() {
        return Ok(());
    }
    let at = |n: usize, e: String| match table_line(path, n) {
        Some(line) => format!("{}:{line}: {e}", path.display()),
        None => format!("{}: {e}", path.display()),
    };
    if s.authorized_keys_socket.is_none() || s.upstream_source_range.is_none() {
        return Err(at(
            0,
            "workload_issuer needs zero standing keys (authorized_keys_socket and \
             upstream_source_range): a workload's key is a throwaway one registered nowhere, so \
             sshd can take it only as the key of its live session; set both (docs/OPERATOR.md, \
             zero standing keys), or remove the [[workload_issuer]] tables"
                .into(),
        ));
    }
    if s.workload_token_record.is_none() {
        return Err(at(
            0,
            "workload_issuer needs workload_token_record: the file where the proxy keeps the \
             tokens used, so that a restart forgets no use (a token read from a log must never \
             open a session); set it to a file in a writable directory of the proxy's user, \
             such as /var/lib/ztssh/workload-tokens.record (the packaged unit's StateDirectory)"
                .into(),
        ));
    }
    for (n, t) in s.workload_issuer.iter().enumerate() {
        check_table(t).map_err(|e| at(n, format!("workload_issuer {:?}: {e}", t.name)))?;
        // Each table's own rules, at its own line.
        let one = issuer(t, "ztssh:server", None).map_err(|e| at(n, e))?;
        Issuers::new(vec![one]).map_err(|e| at(n, e))?;
    }
    // The rules Issuers::new applies, with an audience in place of the
    // default (the server id is known only with the licence).
    let list = s
        .workload_issuer
        .iter()
        .map(|t| issuer(t, "ztssh:server", None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(0, e))?;
    Issuers::new(list).map_err(|e| at(0, e))?;
    Ok(())
}

fn check_table(t: &IssuerSettings) -> Result<(), String> {
    match (&t.jwks, &t.jwks_url) {
        (Some(_), Some(_)) => {
            return Err("set jwks (a pinned file) or jwks_url (pulled), not both".into());
        }
        (None, None) => {
            return Err(
                "set jwks (a pinned JWKS file) or jwks_url (where the platform publishes its keys)"
                    .into(),
            );
        }
        (Some(_), None) => {
            if t.jwks_ca_file.is_some() || t.jwks_allow_http {
                return Err("jwks_ca_file and jwks_allow_http apply to jwks_url only".into());
            }
        }
        (None, Some(url)) => {
            pull_target(t, url)?;
        }
    }
    if !(1..=86_400).contains(&t.jwks_poll_secs) {
        return Err("jwks_poll_secs must be between 1 and 86400".into());
    }
    if t.jwks_max_age_secs < t.jwks_poll_secs.saturating_mul(2) || t.jwks_max_age_secs > 30 * 86_400
    {
        return Err(format!(
            "jwks_max_age_secs = {} must be at least twice jwks_poll_secs ({}) and at most \
             2592000 (30 days)",
            t.jwks_max_age_secs, t.jwks_poll_secs
        ));
    }
    if !(1..=7 * 86_400).contains(&t.max_token_lifetime_secs) {
        return Err("max_token_lifetime_secs must be between 1 and 604800 (7 days)".into());
    }
    if t.clock_skew_secs > MAX_SKEW {
        return Err(format!("clock_skew_secs must be at most {MAX_SKEW}"));
    }
    if let Some(r) = t.rule.iter().find(|r| r.accounts.is_empty()) {
        return Err(format!(
            "the rule for principal {:?} names no accounts: list the local accounts its \
             workloads may log in to",
            r.principal
        ));
    }
    Ok(())
}

fn pull_target(t: &IssuerSettings, url: &str) -> Result<Target, String> {
    if url.trim_start().to_ascii_lowercase().starts_with("http://") && !t.jwks_allow_http {
        return Err(format!(
            "jwks_url = {url:?} is plain http: a key set is unsigned, so anyone on the path could \
             serve keys of their own and mint any token. Use https:// (jwks_ca_file for a \
             private CA), or jwks_allow_http = true on a test rig"
        ));
    }
    Target::new(
        "jwks_url",
        url,
        Duration::from_secs(10),
        t.jwks_ca_file.as_deref(),
    )
}

/// The proto issuer for one table, its keys as given.
fn issuer(
    t: &IssuerSettings,
    default_audience: &str,
    keys: Option<KeysInForce>,
) -> Result<Issuer, String> {
    let algorithms = t
        .algorithms
        .iter()
        .map(|a| {
            Alg::parse(a).ok_or_else(|| {
                format!(
                    "workload_issuer {:?}: algorithm {a:?} is not one ztssh verifies: use RS256, \
                     ES256 or EdDSA (never none or HMAC)",
                    t.name
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Issuer {
        name: t.name.clone(),
        issuer: t.issuer.clone(),
        audience: t
            .audience
            .clone()
            .unwrap_or_else(|| default_audience.to_owned()),
        algorithms,
        max_lifetime_secs: t.max_token_lifetime_secs,
        skew_secs: t.clock_skew_secs,
        keys,
        tenant_claims: t.tenant_claims.clone(),
        rules: t
            .rule
            .iter()
            .map(|r| Rule {
                principal: r.principal.clone(),
                accounts: r.accounts.clone(),
                claims: r
                    .claims
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect(),
    })
}

/// Reads a pinned JWKS file.
pub fn read_jwks(path: &Path) -> Result<KeySet, String> {
    let bytes = ztssh_keyfile::read_regular(path, MAX_JWKS as u64)
        .map_err(|e| format!("workload issuer key set: {e}"))?;
    KeySet::from_json(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The issuers as configured for the server `server_id` (the default
/// audience), pinned key sets read now; pulled ones have no keys until
/// their first pull. `None` without any `[[workload_issuer]]`.
pub fn issuers(s: &Settings, server_id: &str, now: UnixTime) -> Result<Option<Issuers>, String> {
    if s.workload_issuer.is_empty() {
        return Ok(None);
    }
    let audience = format!("ztssh:{server_id}");
    let list = s
        .workload_issuer
        .iter()
        .map(|t| {
            let keys = match &t.jwks {
                Some(path) => Some(KeysInForce {
                    set: Arc::new(read_jwks(path)?),
                    fetched: now,
                    max_age_secs: None,
                }),
                None => None,
            };
            issuer(t, &audience, keys)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Issuers::new(list).map(Some)
}

/// The pulls to run, one per issuer with a `jwks_url`.
pub fn pulls(s: &Settings) -> Result<Vec<Arc<JwksPull>>, String> {
    s.workload_issuer
        .iter()
        .filter_map(|t| t.jwks_url.as_ref().map(|url| (t, url)))
        .map(|(t, url)| {
            Ok(Arc::new(JwksPull {
                name: t.name.clone(),
                target: Arc::new(pull_target(t, url)?),
                poll: Duration::from_secs(t.jwks_poll_secs),
                max_age_secs: t.jwks_max_age_secs,
            }))
        })
        .collect()
}
