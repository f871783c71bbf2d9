//! Configuration: TOML through figment, `ZTSSH_*` environment overrides, then
//! command-line flags. Everything is loaded and checked here, before any
//! port is bound; a failure is a [`ConfigError`] and exit code 64.

pub mod access;
pub mod krl;
pub mod licence_pull;
pub mod pull;
pub mod workload;
pub mod zsk;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use ztssh_keyfile as keyfile;
use ztssh_proto::cert::LicenceVerified;
use ztssh_proto::conn::{CoverTraffic, RekeyPolicy};
use ztssh_proto::crl::Crl;
use ztssh_proto::delegation;
use ztssh_proto::frame::FrameSize;
use ztssh_proto::keys::{NoiseKeypair, SigningKey};
use ztssh_proto::labels::pem;
use ztssh_proto::time::when;

mod choice;
#[cfg(test)]
mod tests;

pub use choice::{Choice, LogFormat};

use crate::admission::limits::{LimitSettings, PenaltySettings};
use crate::trust::authority::{Authority, read_crl_kept};
use crate::trust::authz::Authorized;
use crate::trust::policy::{Policy, parse_net};
use ztssh_proto::identity::{INSECURE_MIN_CERT_TTL, MAX_CERT_TTL, MIN_CERT_TTL, Timing};
use ztssh_proto::trust::{self, ListUpdate, StaleMode, Staleness};

/// A configuration problem, reported before any port is bound.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// File names inside the state directory.
pub const SUBCA_KEY_FILE: &str = "subca.key";
/// Noise static key file name.
pub const NOISE_KEY_FILE: &str = "noise.key";
/// Licence request file name.
pub const REQUEST_FILE: &str = "licence-request.pem";

/// Settings that `ZTSSH_<NAME>` environment variables may override: every
/// key of [`Settings`] but its tables (`[limits]`, `[penalties]`), as a
/// test checks. Other `ZTSSH_*` variables (the sidecar's, say) are not ours
/// and are ignored.
const ENV_KEYS: &[&str] = &[
    "listen",
    "upstream",
    "state_dir",
    "licence",
    "root_public_key",
    "authorized_principals",
    "frame_size",
    "handshake_timeout_secs",
    "upstream_connect_timeout_secs",
    "upstream_max_startups",
    "max_connections",
    "max_handshakes",
    "max_sessions_per_principal",
    "log_format",
    "revocation_list",
    "revocation_url",
    "revocation_cache",
    "revocation_poll_secs",
    "revocation_fetch_timeout_secs",
    "revocation_ca_file",
    "licence_url",
    "licence_poll_secs",
    "revocation_stale",
    "revocation_stale_grace_secs",
    "access_list",
    "access_list_url",
    "access_list_cache",
    "access_list_stale",
    "access_list_stale_grace_secs",
    "challenge_interval_secs",
    "challenge_deadline_secs",
    "cert_ttl_secs",
    "insecure_short_certs",
    "rekey_after_secs",
    "rekey_after_bytes",
    "cover_traffic",
    "metrics_listen",
    "user",
    "drain_grace_secs",
    "policy",
    "upstream_source_range",
    "authorized_keys_socket",
    "authorized_keys_command_user",
    "sshd_host_certificates",
    "sshd_revoked_keys",
    "trusted_user_ca_keys",
    "user_ca_krl",
    "user_ca_krl_url",
    "user_ca_krl_allow_http",
    "user_ca_krl_cache",
    "user_ca_krl_poll_secs",
    "workload_token_record",
];

/// Raw settings as written by the operator.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the tunnel listens on.
    pub listen: String,
    /// The local sshd.
    pub upstream: String,
    /// Directory with subca.key and noise.key (from `keygen`).
    pub state_dir: PathBuf,
    /// The server licence from `ztssh-ca authorize-server`.
    pub licence: PathBuf,
    /// The pinned root CA public key.
    pub root_public_key: PathBuf,
    /// Principals and their OpenSSH public keys.
    pub authorized_principals: PathBuf,
    /// Record size in bytes.
    #[serde(default = "default_frame")]
    pub frame_size: usize,
    /// Seconds a client has to finish the handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Seconds to wait for sshd to accept.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_connect_timeout_secs: u64,
    /// New sshd connections sshd may still be logging in at once (its
    /// `MaxStartups`): the proxy holds the next one back until one is done.
    #[serde(default = "default_upstream_max_startups")]
    pub upstream_max_startups: usize,
    /// Most open connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections still in the handshake.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Most live sessions one principal may hold on this proxy, unless the
    /// policy's `max_sessions` for it says otherwise; so one principal (or
    /// a stolen key) cannot take every `max_connections` slot.
    #[serde(default = "default_max_sessions_per_principal")]
    pub max_sessions_per_principal: u32,
    /// `text` or `json`.
    #[serde(default, with = "choice")]
    pub log_format: LogFormat,
    /// The root-signed revocation list (`ztssh-ca crl`); reloaded on SIGHUP
    /// and whenever the file changes.
    #[serde(default)]
    pub revocation_list: Option<PathBuf>,
    /// Where to pull the revocation list from (`http://` or `https://`),
    /// with a conditional GET every `revocation_poll_secs`. With
    /// `revocation_list` also set, that file is the list the proxy starts
    /// from and where it keeps each newer list it fetched.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// A writable file where the proxy keeps the newest list it fetched
    /// from `revocation_url` (default: `revocation_list` itself). At start
    /// and on every reload the proxy enforces the newer of the two, so a
    /// restart never falls back to an older list while `revocation_list`
    /// sits on a read-only volume (a Kubernetes ConfigMap).
    #[serde(default)]
    pub revocation_cache: Option<PathBuf>,
    /// Seconds between fetches of `revocation_url` (±10 % jitter).
    #[serde(default = "default_revocation_poll")]
    pub revocation_poll_secs: u64,
    /// Seconds one fetch may take, from connect to the last body byte.
    #[serde(default = "default_revocation_fetch_timeout")]
    pub revocation_fetch_timeout_secs: u64,
    /// PEM bundle of the CAs that may sign an `https://` revocation_url's
    /// certificate (default: the Mozilla roots built into the proxy).
    #[serde(default)]
    pub revocation_ca_file: Option<PathBuf>,
    /// Where to pull this proxy's licence from (`http://` or `https://`;
    /// TLS trusts `revocation_ca_file` when set): a newer valid licence for
    /// this proxy's own keys is written to `licence` and put in force with
    /// no restart. The `licence` file is watched either way.
    #[serde(default)]
    pub licence_url: Option<String>,
    /// Seconds between fetches of `licence_url` (±10 % jitter).
    #[serde(default = "default_licence_poll")]
    pub licence_poll_secs: u64,
    /// What an overdue list means: `warn`, `refuse-new` or `close-all`.
    #[serde(default, with = "choice")]
    pub revocation_stale: StaleMode,
    /// Seconds past the list's next-update time before `revocation_stale`
    /// applies.
    #[serde(default = "default_revocation_stale_grace")]
    pub revocation_stale_grace_secs: u64,
    /// The signed access list (`ztssh-ca access`): principals it grants
    /// besides `authorized_principals`; reloaded whenever the file changes.
    #[serde(default)]
    pub access_list: Option<PathBuf>,
    /// Where to pull the access list from, every `revocation_poll_secs`
    /// (the revocation list's fetch timeout and CA file apply too).
    #[serde(default)]
    pub access_list_url: Option<String>,
    /// A writable file where the newest list fetched from
    /// `access_list_url` is kept (default: `access_list` itself).
    #[serde(default)]
    pub access_list_cache: Option<PathBuf>,
    /// What an access list past its valid-until means: `warn`,
    /// `refuse-new` (the default) or `close-all`, for what it grants.
    #[serde(default, with = "choice")]
    pub access_list_stale: access::AccessStale,
    /// Seconds past the list's valid-until before `access_list_stale`
    /// applies.
    #[serde(default)]
    pub access_list_stale_grace_secs: u64,
    /// Seconds between identity challenges (±10 % jitter).
    #[serde(default = "default_challenge_interval")]
    pub challenge_interval_secs: u64,
    /// Seconds a client has to answer a challenge.
    #[serde(default = "default_challenge_deadline")]
    pub challenge_deadline_secs: u16,
    /// Lifetime of client certificates (60 to 3600).
    #[serde(default = "default_cert_ttl")]
    pub cert_ttl_secs: u64,
    /// Test rigs only: allows `cert_ttl_secs` down to 2 s (sidecars then
    /// need `--insecure-short-certs` too). Logged as a warning.
    #[serde(default)]
    pub insecure_short_certs: bool,
    /// Seconds on one set of tunnel keys before this side starts a rekey.
    #[serde(default = "default_rekey_after_secs")]
    pub rekey_after_secs: u64,
    /// Record bytes (both directions) on one set of tunnel keys before
    /// this side starts a rekey.
    #[serde(default = "default_rekey_after_bytes")]
    pub rekey_after_bytes: u64,
    /// `"interactive"`: after a small write, records go out on a fixed
    /// cadence for a few seconds (PAD when idle); `"off"`: never.
    #[serde(default = "default_cover_traffic", with = "choice")]
    pub cover_traffic: CoverTraffic,
    /// Where to serve `/metrics` and `/healthz` (off when unset).
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Switch to this user after binding the ports (off when unset).
    #[serde(default)]
    pub user: Option<String>,
    /// Seconds SIGTERM waits for sessions to finish before closing them.
    #[serde(default = "default_drain_grace")]
    pub drain_grace_secs: u64,
    /// The access policy file (principals, sources, hours); reloaded on
    /// SIGHUP. Without one, the authorized principals file alone decides.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// User CA public keys in sshd's `TrustedUserCAKeys` format: an OpenSSH
    /// user certificate they signed vouches for its principals (reloaded
    /// on SIGHUP). Off when unset.
    #[serde(default)]
    pub trusted_user_ca_keys: Option<PathBuf>,
    /// Zero standing keys: the loopback network the proxy connects to sshd
    /// from, one address per live session (off when unset: the kernel
    /// picks, normally 127.0.0.1).
    #[serde(default)]
    pub upstream_source_range: Option<String>,
    /// Zero standing keys: the Unix socket on which sshd's
    /// `AuthorizedKeysCommand` asks which keys may log in (off when unset).
    #[serde(default)]
    pub authorized_keys_socket: Option<PathBuf>,
    /// sshd's `AuthorizedKeysCommandUser`: it and root may ask the socket.
    #[serde(default)]
    pub authorized_keys_command_user: Option<String>,
    /// For `sshd-config`/`sshd-setup`: sshd's host certificates from
    /// `ztssh-ca sign-host` (a `HostCertificate` line each).
    #[serde(default)]
    pub sshd_host_certificates: Vec<PathBuf>,
    /// For `sshd-config`/`sshd-setup`: the KRL from `ztssh-ca krl` that
    /// sshd checks every key against (`RevokedKeys`).
    #[serde(default)]
    pub sshd_revoked_keys: Option<PathBuf>,
    /// The user SSH CA's KRL (OpenSSH's binary format, `ssh-keygen -k`):
    /// a session whose key it revokes ends at once. Watched like
    /// `revocation_list`; with `user_ca_krl_url`, where a fetched KRL is kept.
    #[serde(default)]
    pub user_ca_krl: Option<PathBuf>,
    /// Where to pull the KRL from: `https://`, or `http://` only with
    /// `user_ca_krl_allow_http` (a KRL is unsigned).
    #[serde(default)]
    pub user_ca_krl_url: Option<String>,
    /// Accept an `http://` `user_ca_krl_url`, whose KRL anyone on the path
    /// can replace with an older or emptier one of a higher version.
    #[serde(default)]
    pub user_ca_krl_allow_http: bool,
    /// Where the newest KRL fetched is kept (default: `user_ca_krl`).
    #[serde(default)]
    pub user_ca_krl_cache: Option<PathBuf>,
    /// Seconds between fetches of `user_ca_krl_url` (±10 % jitter).
    #[serde(default = "default_krl_poll")]
    pub user_ca_krl_poll_secs: u64,
    /// Per-source rate and handshake limits.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Growing penalties for sources that keep failing.
    #[serde(default)]
    pub penalties: PenaltySettings,
    /// Where the proxy keeps the workload tokens used (with the key that
    /// first presented each), so that a restart forgets no use: a file in
    /// a writable directory the proxy's user owns. Needed with
    /// `[[workload_issuer]]`.
    #[serde(default)]
    pub workload_token_record: Option<PathBuf>,
    /// Platforms whose OIDC tokens vouch for a principal (CI jobs, pods):
    /// `[[workload_issuer]]` tables, each with its rules.
    #[serde(default)]
    pub workload_issuer: Vec<workload::IssuerSettings>,
}

fn default_krl_poll() -> u64 {
    30
}

fn default_revocation_poll() -> u64 {
    5
}
fn default_licence_poll() -> u64 {
    60
}
fn default_revocation_fetch_timeout() -> u64 {
    10
}
fn default_revocation_stale_grace() -> u64 {
    3600
}

fn default_drain_grace() -> u64 {
    10
}

fn default_challenge_interval() -> u64 {
    30
}
fn default_challenge_deadline() -> u16 {
    10
}
fn default_cover_traffic() -> CoverTraffic {
    // Off by default: it adds up to one cadence (20 ms) to every small
    // round trip after the first of a burst (docs/BENCHMARKS.md).
    CoverTraffic::Off
}
fn default_rekey_after_secs() -> u64 {
    ztssh_proto::conn::DEFAULT_REKEY_AFTER_SECS
}
fn default_rekey_after_bytes() -> u64 {
    ztssh_proto::conn::DEFAULT_REKEY_AFTER_BYTES
}
fn default_cert_ttl() -> u64 {
    300
}

fn default_frame() -> usize {
    ztssh_proto::frame::DEFAULT_FRAME
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_upstream_timeout() -> u64 {
    5
}
/// The `MaxStartups` start value the sshd lines and the loopback drop-in
/// set (`MaxStartups 100:30:200`), and the default of
/// `upstream_max_startups`.
pub const SSHD_MAX_STARTUPS: usize = 100;
fn default_upstream_max_startups() -> usize {
    SSHD_MAX_STARTUPS
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_handshakes() -> usize {
    64
}
/// The default session cap per principal: more than a person opens, far
/// fewer than `max_connections`.
pub const DEFAULT_MAX_SESSIONS_PER_PRINCIPAL: u32 = 64;
fn default_max_sessions_per_principal() -> u32 {
    DEFAULT_MAX_SESSIONS_PER_PRINCIPAL
}

/// Command-line overrides (only the ones given are applied).
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--upstream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

/// Everything the proxy needs, loaded and checked.
pub struct Config {
    /// Raw settings.
    pub settings: Settings,
    /// Parsed listen address.
    pub listen: SocketAddr,
    /// Parsed upstream address.
    pub upstream: SocketAddr,
    /// Parsed metrics address.
    pub metrics_listen: Option<SocketAddr>,
    /// The account to switch to after binding.
    pub user: Option<nix::unistd::User>,
    /// SIGTERM grace period.
    pub drain_grace: Duration,
    /// Frame size.
    pub frame_size: FrameSize,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Upstream connect deadline.
    pub upstream_timeout: Duration,
    /// Noise static key.
    pub noise: NoiseKeypair,
    /// Sub-CA key: issues client certificates.
    pub subca: SigningKey,
    /// The pinned root.
    pub root: ztssh_proto::rootkey::RootKey,
    /// Challenge and certificate timing.
    pub timing: Timing,
    /// When a session starts a rekey.
    pub rekey: RekeyPolicy,
    /// Keystroke-timing cover traffic.
    pub cover: CoverTraffic,
    /// Networks never penalised.
    pub penalty_exempt: Vec<ipnet::IpNet>,
    /// Where and how to pull the revocation list, if from a URL.
    pub pull: Option<Arc<pull::PullSettings>>,
    /// Where the access list comes from, if one is configured.
    pub access: Option<Arc<access::AccessSettings>>,
    /// Where and how to pull the licence, if from a URL.
    pub licence_pull: Option<Arc<pull::PullSettings>>,
    /// Where and how to pull the user CA's KRL, if from a URL.
    pub krl_pull: Option<Arc<krl::KrlPullSettings>>,
    /// Zero standing keys: one loopback source address per session.
    pub upstream_sources: Option<ipnet::Ipv4Net>,
    /// Zero standing keys: where and to whom sshd's command is answered.
    pub authorized_keys: Option<AuthorizedKeysConfig>,
    /// The workload issuers whose key sets are pulled from a URL.
    pub jwks_pulls: Vec<Arc<workload::JwksPull>>,
    /// The record of workload tokens used, kept across reloads.
    pub replay: crate::trust::workload::Replay,
}

/// The `AuthorizedKeysCommand` socket, checked.
pub struct AuthorizedKeysConfig {
    /// The socket's path (absolute; its directory exists).
    pub socket: PathBuf,
    /// The one account besides root that may ask (sshd's
    /// `AuthorizedKeysCommandUser`).
    pub command_user: nix::unistd::User,
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Reads the settings from `path`, the environment and `overrides`.
pub fn settings(path: &Path, overrides: &Overrides) -> Result<Settings, ConfigError> {
    if !path.exists() {
        return Err(err(format!(
            "config file {} does not exist",
            path.display()
        )));
    }
    Figment::new()
        .merge(Toml::file_exact(path))
        .merge(Env::prefixed("ZTSSH_").only(ENV_KEYS))
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(|e| extract_error(path, e))
        .and_then(|s: Settings| {
            // Checked here too, where the file is known, to name its line.
            cert_ttl(&s).map_err(|e| match key_line(path, "cert_ttl_secs") {
                Some(line) => err(format!("{}:{line}: {}", path.display(), e.0)),
                None => err(format!("{}: {}", path.display(), e.0)),
            })?;
            krl::KrlPullSettings::check(&s).map_err(|(key, e)| match key_line(path, key) {
                Some(line) => err(format!("{}:{line}: {e}", path.display())),
                None => err(format!("{}: {e}", path.display())),
            })?;
            workload::check(path, &s).map_err(err)?;
            Ok(s)
        })
}

/// A refused word for a [`Choice`] setting is shown as its own message,
/// which names the key and the words to use, wherever the value came from
/// (file, environment or flag); any other error names the file.
fn extract_error(path: &Path, e: figment::Error) -> ConfigError {
    if let figment::error::Kind::UnknownField(_, known) = &e.kind {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let table = &e.path[..e.path.len().saturating_sub(1)];
        let all = keyfile::config_keys::unknown(path, &text, table, known);
        if !all.is_empty() {
            return err(all.join("\n"));
        }
    }
    if e.count() == 1
        && let figment::error::Kind::Message(msg) = &e.kind
        && let [key] = e.path.as_slice()
        && choice::CHOICE_KEYS.contains(&key.as_str())
    {
        return err(msg.clone());
    }
    err(format!("{}: {e}", path.display()))
}

/// Reads the root public key file.
pub fn read_root(path: &Path) -> Result<ztssh_proto::rootkey::RootKey, ConfigError> {
    keyfile::read_root_public(path).map_err(err)
}

/// What `sshd-guard-check` needs from proxy.toml: sshd's address, the
/// range the proxy connects to it from, and the user it runs as. Read
/// without the keys, licence and lists, so that the guard is still checked
/// while those are broken (an expired licence does not open the range).
pub fn guard_target(
    settings: &Settings,
) -> Result<
    (
        SocketAddr,
        Option<ipnet::Ipv4Net>,
        Option<nix::unistd::User>,
    ),
    ConfigError,
> {
    let upstream = settings.upstream.parse::<SocketAddr>().map_err(|_| {
        err(format!(
            "upstream = {:?} is not an address like 127.0.0.1:22",
            settings.upstream
        ))
    })?;
    let range = match &settings.upstream_source_range {
        Some(range) => {
            Some(zsk::check_range(range, upstream, settings.max_connections).map_err(err)?)
        }
        None => None,
    };
    let user = match &settings.user {
        Some(name) => Some(crate::ops::process::lookup_user(name).map_err(err)?),
        None => None,
    };
    Ok((upstream, range, user))
}

/// Loads and checks everything; `now` is Unix seconds. Returns the static
/// configuration and the initial [`Authority`] (which reloads replace).
pub fn load(settings: Settings, now: u64) -> Result<(Config, Authority), ConfigError> {
    let addr = |what: &str, v: &str| {
        v.parse::<SocketAddr>().map_err(|_| {
            err(format!(
                "{what} = {v:?} is not an address like 127.0.0.1:22"
            ))
        })
    };
    let listen = addr("listen", &settings.listen)?;
    let upstream = addr("upstream", &settings.upstream)?;
    let user = match &settings.user {
        Some(name) => Some(crate::ops::process::lookup_user(name).map_err(err)?),
        None => None,
    };
    if settings.drain_grace_secs > 3600 {
        return Err(err("drain_grace_secs must be at most 3600"));
    }
    let metrics_listen = match &settings.metrics_listen {
        Some(m) => Some(addr("metrics_listen", m)?),
        None => None,
    };
    let frame_size = FrameSize::new(settings.frame_size)
        .map_err(|e| err(format!("frame_size = {}: {e}", settings.frame_size)))?;
    if !(1..=300).contains(&settings.handshake_timeout_secs) {
        return Err(err("handshake_timeout_secs must be between 1 and 300"));
    }
    if !(1..=60).contains(&settings.upstream_connect_timeout_secs) {
        return Err(err(
            "upstream_connect_timeout_secs must be between 1 and 60",
        ));
    }
    if !(1..=10_000).contains(&settings.upstream_max_startups) {
        return Err(err(
            "upstream_max_startups must be between 1 and 10000 (sshd's MaxStartups start value)",
        ));
    }
    if settings.max_connections == 0 || settings.max_handshakes == 0 {
        return Err(err("max_connections and max_handshakes must be at least 1"));
    }
    if settings.max_sessions_per_principal == 0 {
        return Err(err(
            "max_sessions_per_principal = 0 would lock every principal out; it must be at least 1",
        ));
    }
    let noise_secret =
        keyfile::read_secret(&settings.state_dir.join(NOISE_KEY_FILE), pem::NOISE_KEY)
            .map_err(err)?;
    let noise = NoiseKeypair::from_private(noise_secret);
    let subca = keyfile::read_signing_key(&settings.state_dir.join(SUBCA_KEY_FILE), pem::SUBCA_KEY)
        .map_err(err)?;
    let root = read_root(&settings.root_public_key)?;
    let pull = pull::PullSettings::from_settings(&settings).map_err(err)?;
    let access = access::AccessSettings::from_settings(&settings).map_err(err)?;
    let licence_pull = licence_pull::from_settings(&settings).map_err(err)?;
    let krl_pull = krl::KrlPullSettings::from_settings(&settings).map_err(|(_, e)| err(e))?;
    let jwks_pulls = workload::pulls(&settings).map_err(err)?;
    let replay = crate::trust::workload::new_replay();
    let authority = read_authority(
        &settings,
        &root,
        &noise,
        &subca,
        &replay,
        now,
        Read::AtStart,
    )?;
    refuse_revoked_keys(&settings, &authority)?;
    let timing = timing(&settings)?;
    let rekey =
        RekeyPolicy::new(settings.rekey_after_secs, settings.rekey_after_bytes).map_err(err)?;
    let cover = settings.cover_traffic;
    let penalty_exempt = check_limits(&settings)?;
    let upstream_sources = match &settings.upstream_source_range {
        Some(range) => {
            Some(zsk::check_range(range, upstream, settings.max_connections).map_err(err)?)
        }
        None => None,
    };
    let authorized_keys = check_authorized_keys(&settings, upstream_sources.is_some())?;
    let cfg = Config {
        listen,
        upstream,
        metrics_listen,
        user,
        drain_grace: Duration::from_secs(settings.drain_grace_secs),
        frame_size,
        handshake_timeout: Duration::from_secs(settings.handshake_timeout_secs),
        upstream_timeout: Duration::from_secs(settings.upstream_connect_timeout_secs),
        noise,
        subca,
        root,
        timing,
        rekey,
        cover,
        penalty_exempt,
        upstream_sources,
        authorized_keys,
        pull,
        access,
        licence_pull,
        krl_pull,
        jwks_pulls,
        replay,
        settings,
    };
    Ok((cfg, authority))
}

fn timing(s: &Settings) -> Result<Timing, ConfigError> {
    if !(1..=3600).contains(&s.challenge_interval_secs) {
        return Err(err("challenge_interval_secs must be between 1 and 3600"));
    }
    if !(1..=300).contains(&s.challenge_deadline_secs) {
        return Err(err("challenge_deadline_secs must be between 1 and 300"));
    }
    cert_ttl(s)?;
    Ok(Timing {
        interval_secs: s.challenge_interval_secs,
        deadline_secs: s.challenge_deadline_secs,
        cert_ttl_secs: s.cert_ttl_secs,
    })
}

/// `cert_ttl_secs` within [`MIN_CERT_TTL`]..=[`MAX_CERT_TTL`] (the floor
/// is [`INSECURE_MIN_CERT_TTL`] with `insecure_short_certs`): a sidecar
/// refuses a shorter certificate, since each renewal asks the user's key
/// for a signature.
fn cert_ttl(s: &Settings) -> Result<(), ConfigError> {
    let min = if s.insecure_short_certs {
        INSECURE_MIN_CERT_TTL
    } else {
        MIN_CERT_TTL
    };
    if (min..=MAX_CERT_TTL).contains(&s.cert_ttl_secs) {
        return Ok(());
    }
    Err(err(format!(
        "cert_ttl_secs = {}: must be between {min} and {MAX_CERT_TTL} (sidecars refuse \
         certificates shorter than {MIN_CERT_TTL}s: each renewal asks the user's key for a signature)",
        s.cert_ttl_secs
    )))
}

/// The line of `key = ...` in the file at `path`, if it is there.
fn key_line(path: &Path, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn check_limits(s: &Settings) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let l = &s.limits;
    if l.rate_per_minute == 0 || l.rate_burst == 0 {
        return Err(err(
            "limits.rate_per_minute and limits.rate_burst must be at least 1",
        ));
    }
    if l.handshakes_per_source == 0 || l.handshakes_per_source > s.max_handshakes {
        return Err(err(format!(
            "limits.handshakes_per_source must be between 1 and max_handshakes ({})",
            s.max_handshakes
        )));
    }
    let [source, site, block] = l.network_caps(s.max_handshakes);
    if !(source <= site && site <= block && block <= s.max_handshakes) {
        return Err(err(format!(
            "limits: need handshakes_per_source ({source}) <= handshakes_per_56 ({site}) \
             <= handshakes_per_48 ({block}) <= max_handshakes ({})",
            s.max_handshakes
        )));
    }
    if !(1..=300).contains(&l.queue_timeout_secs) {
        return Err(err("limits.queue_timeout_secs must be between 1 and 300"));
    }
    if l.queue_per_source > l.max_queued {
        return Err(err(format!(
            "limits: need queue_per_source ({}) <= max_queued ({})",
            l.queue_per_source, l.max_queued
        )));
    }
    if !(16..=10_000_000).contains(&l.tracked_sources) {
        return Err(err(
            "limits.tracked_sources must be between 16 and 10000000",
        ));
    }
    let p = &s.penalties;
    if p.threshold_secs == 0 || p.max_secs < p.threshold_secs || p.max_secs > 86_400 {
        return Err(err(
            "penalties: need 1 <= threshold_secs <= max_secs <= 86400",
        ));
    }
    // One timeout or eviction must never lock out a source by itself: a
    // whole office NAT shares it.
    for (name, secs) in [
        ("timeout_secs", p.timeout_secs),
        ("evicted_secs", p.evicted_secs),
    ] {
        if p.enabled && secs >= p.threshold_secs {
            return Err(err(format!(
                "penalties.{name} = {secs} must be less than threshold_secs ({}): \
                 one slow or evicted handshake would lock out everyone behind the same address",
                p.threshold_secs
            )));
        }
    }
    p.exempt
        .iter()
        .map(|n| parse_net(n).map_err(|why| err(format!("penalties.exempt: {n:?}: {why}"))))
        .collect()
}

fn check_authorized_keys(
    s: &Settings,
    have_range: bool,
) -> Result<Option<AuthorizedKeysConfig>, ConfigError> {
    let Some(socket) = &s.authorized_keys_socket else {
        if s.authorized_keys_command_user.is_some() {
            return Err(err(
                "authorized_keys_command_user is set but authorized_keys_socket is not; set both, or neither",
            ));
        }
        return Ok(None);
    };
    if !have_range {
        return Err(err(
            "authorized_keys_socket needs upstream_source_range (e.g. \"127.77.0.0/16\"): \
             each key sshd is given is bound to its session's own source address",
        ));
    }
    zsk::check_socket_path(socket).map_err(err)?;
    let Some(name) = &s.authorized_keys_command_user else {
        return Err(err(
            "authorized_keys_socket needs authorized_keys_command_user: the account sshd runs \
             AuthorizedKeysCommand as (its AuthorizedKeysCommandUser), e.g. a dedicated \"ztssh-akc\"",
        ));
    };
    let command_user = match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(err(format!(
                "authorized_keys_command_user = {name:?}: no such user; create it (useradd --system {name}) or name another"
            )));
        }
        Err(e) => {
            return Err(err(format!(
                "authorized_keys_command_user = {name:?}: cannot look it up: {e}"
            )));
        }
    };
    Ok(Some(AuthorizedKeysConfig {
        socket: socket.clone(),
        command_user,
    }))
}

fn staleness(s: &Settings) -> Result<Staleness, ConfigError> {
    let mode = s.revocation_stale;
    if s.revocation_stale_grace_secs > 30 * 86_400 {
        return Err(err(
            "revocation_stale_grace_secs must be at most 2592000 (30 days)",
        ));
    }
    if mode != StaleMode::Warn && s.revocation_list.is_none() && s.revocation_url.is_none() {
        return Err(err(format!(
            "revocation_stale = {:?} needs a revocation list: set revocation_list or revocation_url",
            mode.word()
        )));
    }
    Ok(Staleness {
        mode,
        grace_secs: s.revocation_stale_grace_secs,
    })
}

/// Reloads what SIGHUP reloads: licence, principals, revocation list and
/// policy.
/// On any error the caller keeps the previous authority.
pub fn reload_authority(cfg: &Config, now: u64) -> Result<Authority, ConfigError> {
    read_authority(
        &cfg.settings,
        &cfg.root,
        &cfg.noise,
        &cfg.subca,
        &cfg.replay,
        now,
        Read::AtReload,
    )
}

/// When the authority is read: at start nothing is in force yet, so the
/// cache's list of a forked version wins there; at a reload the list in
/// force is the judge, and the file's list is offered to it as read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Read {
    AtStart,
    AtReload,
}

/// Reads the licence, the authorized principals and the revocation list.
fn read_authority(
    s: &Settings,
    root: &ztssh_proto::rootkey::RootKey,
    noise: &NoiseKeypair,
    subca: &SigningKey,
    replay: &crate::trust::workload::Replay,
    now: u64,
    when: Read,
) -> Result<Authority, ConfigError> {
    let licence = load_licence(&s.licence, root, noise, subca, now)?;
    let workload = workload::issuers(s, &licence.body.server_id, now)
        .map_err(err)?
        .map(|issuers| {
            Arc::new(crate::trust::workload::WorkloadInForce {
                issuers,
                replay: Arc::clone(replay),
            })
        });
    let authorized = Authorized::load(&s.authorized_principals).map_err(err)?;
    let crl = match &s.revocation_list {
        Some(path) => {
            let crl = read_crl_kept(path, root, now).map_err(err)?;
            within_delegated_ceiling(path, &crl, "revocation list", "crl").map_err(err)?;
            Some(crl)
        }
        None => None,
    };
    let crl = newer_cached(crl, s.revocation_cache.as_deref(), root, now, when);
    let policy = match &s.policy {
        Some(path) => Policy::load(path).map_err(err)?,
        None => Policy::default(),
    };
    let user_cas = match &s.trusted_user_ca_keys {
        Some(path) => Some(Arc::new(
            crate::trust::authority::read_user_cas(path).map_err(err)?,
        )),
        None => None,
    };
    Ok(Authority {
        licence,
        crl,
        authorized,
        policy: Arc::new(policy),
        staleness: staleness(s)?,
        user_cas,
        access: access::load(s, root).map_err(err)?,
        krl: krl::read_configured(s).map_err(err)?,
        workload,
    })
}

/// Refuses a list read from `path` that no offer would put in force even
/// with nothing in force yet: one a delegated key signed above
/// [`trust::MAX_DELEGATED_VERSION`] (`what`: its name; `command`: the
/// `ztssh-ca` command that signs it).
pub fn within_delegated_ceiling<L: trust::Versioned>(
    path: &Path,
    list: &L,
    what: &str,
    command: &str,
) -> Result<(), String> {
    match trust::offer(None, list) {
        ListUpdate::Rollback { offered, .. } => Err(format!(
            "{}: {what} version {offered}, signed by a delegated key, is above {} (the versions \
             above it are the root's); sign it with the root (ztssh-ca {command} --dir CA) or \
             revoke the delegation if its key was stolen",
            path.display(),
            trust::MAX_DELEGATED_VERSION
        )),
        _ => Ok(()),
    }
}

/// The newer of the configured list and the one kept in
/// `revocation_cache`. The cache only ever adds revocations: a missing one
/// is normal before the first fetch, and one that cannot be read or
/// verified is reported and left aside (the next fetch replaces it).
///
/// At start, a kept list of the file's version with other contents (a
/// fork) is the one enforced: the reload task writes the cache only in the
/// step that puts a list in force, never over one as new, so the kept list
/// went into force and the file's was (or would have been) refused while
/// it was; starting from the file's would trade the list in force for the
/// one refused at every restart. At a reload the file's list is returned
/// as read, for the list in force to refuse (and count) it.
fn newer_cached(
    crl: Option<Crl>,
    cache: Option<&Path>,
    root: &ztssh_proto::rootkey::RootKey,
    now: u64,
    when: Read,
) -> Option<Crl> {
    let Some(path) = cache else {
        return crl;
    };
    if !path.exists() {
        return crl;
    }
    let cached = match read_crl_kept(path, root, now) {
        Ok(cached) => cached,
        Err(e) => {
            tracing::warn!(event = "crl_cache_unusable", path = %path.display(), error = %e,
                "ignoring the kept revocation list: {e}; the next fetch replaces it");
            return crl;
        }
    };
    match trust::offer(crl.as_ref(), &cached) {
        ListUpdate::Replace => Some(cached),
        ListUpdate::Forked { version } => {
            crate::trust::authority::refuse_forked(version);
            match when {
                Read::AtStart => Some(cached),
                Read::AtReload => crl,
            }
        }
        ListUpdate::Same | ListUpdate::Behind { .. } | ListUpdate::Rollback { .. } => crl,
    }
}

/// Refuses to start under a licence whose Noise or Sub-CA key the
/// revocation list revokes: the keys in the state directory are to be
/// treated as stolen, and no licence for them will ever be good again.
/// (At a reload the list is only enforced: sessions end and none are
/// admitted, as the trust rules decide.)
fn refuse_revoked_keys(s: &Settings, authority: &Authority) -> Result<(), ConfigError> {
    let Some(crl) = &authority.crl else {
        return Ok(());
    };
    let b = &authority.licence.body;
    let Some(which) = crl.revoked.revoked_licence_key(b) else {
        return Ok(());
    };
    Err(err(format!(
        "{}: this proxy's {which} key is revoked by the revocation list (version {}): the keys \
         in its state directory must be treated as stolen, and no licence for them is good any \
         more. Generate new keys (ztssh-proxy keygen --dir NEW_STATE_DIR), have the CA sign the \
         new licence-request.pem, and point state_dir and licence at them (docs/OPERATOR.md, \
         recovery after a stolen proxy)",
        s.licence.display(),
        crl.list_version
    )))
}

/// Reads and verifies a licence file: signed by the root, or by a
/// `licences` delegation's key with the delegation beside it
/// ([`delegation::verify_licence`]).
pub fn read_licence(
    path: &Path,
    root: &ztssh_proto::rootkey::RootKey,
    now: u64,
) -> Result<LicenceVerified, String> {
    let text = keyfile::read_regular(path, keyfile::MAX_PEM_FILE)?;
    let (der, deleg) = delegation::split_pem(&text, pem::LICENCE)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let licence = delegation::verify_licence(root, &der, deleg.as_deref(), None, now)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !ztssh_proto::handshake::fits_message_2(&licence) {
        return Err(format!(
            "{}: the licence and its delegation are too long for handshake message 2; sign one \
             with fewer host names, or a delegation with fewer server globs",
            path.display()
        ));
    }
    Ok(licence)
}

fn load_licence(
    path: &Path,
    root: &ztssh_proto::rootkey::RootKey,
    noise: &NoiseKeypair,
    subca: &SigningKey,
    now: u64,
) -> Result<LicenceVerified, ConfigError> {
    let licence = read_licence(path, root, now).map_err(err)?;
    if licence.body.noise_key != noise.public() || licence.body.subca_key != subca.public() {
        return Err(err(format!(
            "{}: licence was issued for other keys than the ones in the state directory; \
             request a new licence for this proxy's licence-request.pem",
            path.display()
        )));
    }
    Ok(licence)
}

impl Config {
    fn list_summary(&self, authority: &Authority) -> String {
        let loaded = authority
            .crl
            .as_ref()
            .map_or("none loaded".to_owned(), |c| {
                format!("version {}", c.list_version)
            });
        let pulled = self.pull.as_ref().map_or(String::new(), |p| {
            format!(", pulled from {} every {}s", p.url, p.poll.as_secs())
        });
        let stale = authority.staleness;
        format!(
            "{loaded}{pulled}, when overdue by {}s: {}",
            stale.grace_secs,
            stale.mode.label()
        )
    }

    /// One-paragraph summary for `check` and start-up logs.
    pub fn summary(&self, authority: &Authority, now: u64) -> String {
        let b = &authority.licence.body;
        format!(
            "listen {} -> upstream {}; server id {} ({}); licence {} valid until {}; {}; frame size {}; \
             challenge every {}s, answer within {}s; client certificates {}s{}; rekey after {}s or {} bytes; cover traffic {:?}; revocation list {}; {}; \
             at most {} session(s) per principal where the policy sets no max_sessions; {}; {}",
            self.listen,
            self.upstream,
            b.server_id,
            b.hostnames.join(", "),
            b.serial,
            when(b.not_after, now),
            self.principals_summary(authority),
            self.frame_size.get(),
            self.timing.interval_secs,
            self.timing.deadline_secs,
            self.timing.cert_ttl_secs,
            if self.settings.insecure_short_certs {
                " (INSECURE: insecure_short_certs allows certificates down to 2s, for test rigs only)"
            } else {
                ""
            },
            self.rekey.after_secs,
            self.rekey.after_bytes,
            self.cover,
            self.list_summary(authority),
            authority.policy.summary(),
            self.settings.max_sessions_per_principal,
            self.zsk_summary(),
            workload_summary(authority, now),
        )
    }

    /// How many principals come from each source, and the access list's
    /// state.
    fn principals_summary(&self, authority: &Authority) -> String {
        let file = authority.authorized.principals();
        let Some(settings) = &self.access else {
            return format!("{file} authorized principal(s)");
        };
        let a = &authority.access;
        let server = &authority.licence.body.server_id;
        let list = match &a.list {
            None => "no access list loaded yet".to_owned(),
            Some(l) => format!(
                "{} from the access list (version {}, {} for this server {server}, valid until {})",
                a.principals(),
                l.list_version,
                a.principals_here(server),
                ztssh_proto::time::date(l.valid_until),
            ),
        };
        let from = match (&settings.file, &settings.pull) {
            (_, Some(p)) => format!("pulled from {} every {}s", p.url, p.poll.as_secs()),
            (Some(f), None) => format!("read from {}", f.display()),
            (None, None) => String::new(),
        };
        format!(
            "principals: the union of {file} from {} and {list}, {from}; when the access list is \
             overdue by {}s: {}",
            self.settings.authorized_principals.display(),
            a.staleness.grace_secs,
            a.staleness.mode.label()
        )
    }

    fn zsk_summary(&self) -> String {
        match (&self.upstream_sources, &self.authorized_keys) {
            (None, _) => {
                "sshd sees the proxy's default source address (upstream_source_range unset)".into()
            }
            (Some(r), None) => {
                format!("one source address per session from {r}; no authorized-keys socket")
            }
            (Some(r), Some(a)) => format!(
                "zero standing keys: one source address per session from {r}, authorized-keys socket {} for root and {}",
                a.socket.display(),
                a.command_user.name
            ),
        }
    }
}

/// The workload issuers: each with its audience, its keys and its rules.
fn workload_summary(authority: &Authority, now: u64) -> String {
    let Some(w) = &authority.workload else {
        return "no workload issuers".into();
    };
    let issuers: Vec<String> = w
        .issuers
        .list()
        .iter()
        .map(|i| {
            let keys = match &i.keys {
                None => "no keys yet (pulled at start)".to_owned(),
                Some(k) if k.stale(now) => format!("{} key(s), STALE", k.set.len()),
                Some(k) => format!("{} key(s) ({})", k.set.len(), k.set.kids().join(", ")),
            };
            let principals: Vec<&str> = i.rules.iter().map(|r| r.principal.as_str()).collect();
            format!(
                "{} (iss {}, audience {}, {keys}, {} rule(s) for {})",
                i.name,
                i.issuer,
                i.audience,
                i.rules.len(),
                principals.join(", ")
            )
        })
        .collect();
    format!("workload issuers: {}", issuers.join("; "))
}
