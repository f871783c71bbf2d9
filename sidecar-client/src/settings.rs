//! Sidecar options: `~/.config/ztssh/sidecar.toml`, then `ZTSSH_*`
//! environment variables, then command-line flags.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub mod hosts;
pub use hosts::HostIdentities;

/// Effective settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The pinned root CA public key file.
    pub root: Option<PathBuf>,
    /// OpenSSH private key file; without it the agent's key is used.
    pub identity: Option<PathBuf>,
    /// Whether `identity` came from the command line (`--identity`), which
    /// wins over `[[hosts]]`; one from the file or `ZTSSH_IDENTITY` does not.
    #[serde(skip)]
    pub identity_on_command_line: bool,
    /// Per-host identities (`[[hosts]]` blocks, first match wins).
    #[serde(default)]
    pub hosts: Vec<HostIdentities>,
    /// Offer a server the agent's other keys too, when its `[[hosts]]` keys
    /// or the key remembered for it are refused or missing. Off: a server
    /// learns only the keys meant for it.
    #[serde(default, deserialize_with = "switch")]
    pub try_agent_keys: bool,
    /// The ztssh principal; defaults to the local user name.
    pub principal: Option<String>,
    /// Connect here instead of resolving HOST (the licence is still checked against HOST).
    pub connect: Option<String>,
    /// Record size; must match the proxy.
    #[serde(default = "default_frame")]
    pub frame_size: usize,
    /// Seconds to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds for the whole handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Print each step on stderr (`ZTSSH_VERBOSE=1` too).
    #[serde(default, deserialize_with = "switch")]
    pub verbose: bool,
    /// Test rigs only: accept client certificates down to 2 s instead of
    /// 60 s (said on stderr each session).
    #[serde(default)]
    pub insecure_short_certs: bool,
    /// The root-signed revocation list (`ztssh-ca crl`); a server whose
    /// licence it revokes is refused before the user is revealed.
    #[serde(default)]
    pub revocation_list: Option<PathBuf>,
    /// Where to refresh `revocation_list` from at each start (a conditional
    /// GET; the `ETag` is kept beside the file).
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// When ssh passes port 22 (no `Port` line, no `-p`), look up the SRV
    /// record `_ztssh._tcp.HOST` for the proxy's host and port first
    /// (`discover.rs` gives the rules).
    #[serde(default = "default_true")]
    pub srv_discovery: bool,
    /// DNS servers to ask instead of resolv.conf's (`"192.0.2.53"` or
    /// `"192.0.2.53:5353"`); /etc/hosts is read first either way.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    /// Seconds for each DNS lookup.
    #[serde(default = "default_dns_timeout")]
    pub dns_timeout_secs: u64,
    /// Seconds on one set of tunnel keys before the sidecar starts a rekey.
    #[serde(default = "default_rekey_after_secs")]
    pub rekey_after_secs: u64,
    /// Record bytes (both directions) on one set of tunnel keys before the
    /// sidecar starts a rekey.
    #[serde(default = "default_rekey_after_bytes")]
    pub rekey_after_bytes: u64,
    /// `"interactive"` (keystroke-timing cover traffic) or `"off"`.
    #[serde(default = "default_cover_traffic")]
    pub cover_traffic: String,
}

fn default_cover_traffic() -> String {
    // Off by default: it adds up to one cadence (20 ms) to every small
    // round trip after the first of a burst (docs/BENCHMARKS.md).
    "off".into()
}

fn default_rekey_after_secs() -> u64 {
    ztssh_proto::conn::DEFAULT_REKEY_AFTER_SECS
}
fn default_rekey_after_bytes() -> u64 {
    ztssh_proto::conn::DEFAULT_REKEY_AFTER_BYTES
}

fn default_true() -> bool {
    true
}
fn default_dns_timeout() -> u64 {
    3
}
fn default_frame() -> usize {
    ztssh_proto::frame::DEFAULT_FRAME
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_handshake_timeout() -> u64 {
    15
}

/// Flags given on the command line (only those set override).
#[derive(Debug, Default, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_size: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub verbose: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_short_certs: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub try_agent_keys: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_list: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
}

/// The default config file, `~/.config/ztssh/sidecar.toml` (honours XDG_CONFIG_HOME).
pub fn default_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("ztssh/sidecar.toml"));
    }
    ztssh_sidecar::platform::home_dir().map(|h| h.join(".config/ztssh/sidecar.toml"))
}

/// Loads settings; a missing default file is fine, a missing explicit one is not.
pub fn load(explicit: Option<&Path>, flags: &Flags) -> Result<Settings, String> {
    let mut fig = Figment::new();
    let file = match explicit {
        Some(p) if !p.exists() => {
            return Err(format!("config file {} does not exist", p.display()));
        }
        Some(p) => Some(p.to_owned()),
        None => default_path().filter(|p| p.exists()),
    };
    if let Some(p) = &file {
        fig = fig.merge(Toml::file_exact(p));
    }
    let mut s: Settings = fig
        .merge(Env::prefixed("ZTSSH_").only(&[
            "root",
            "identity",
            "principal",
            "connect",
            "frame_size",
            "verbose",
            "revocation_list",
            "revocation_url",
            "srv_discovery",
            "dns_servers",
            "dns_timeout_secs",
            "rekey_after_secs",
            "rekey_after_bytes",
            "cover_traffic",
            "try_agent_keys",
        ]))
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| extract_error(file.as_deref(), e))?;
    s.root = s.root.map(|p| expand_tilde(&p));
    s.identity = s.identity.map(|p| expand_tilde(&p));
    s.identity_on_command_line = flags.identity.is_some();
    for (n, block) in s.hosts.iter_mut().enumerate() {
        block.check(n + 1).map_err(|e| match &file {
            Some(p) => format!("{}: {e}", p.display()),
            None => e,
        })?;
        for f in &mut block.identity_files {
            *f = expand_tilde(f);
        }
    }
    s.revocation_list = s.revocation_list.map(|p| expand_tilde(&p));
    Ok(s)
}

/// Unknown keys at their lines in the file (all of them, each with the
/// key it is most likely a typo of); any other error as figment says it.
fn extract_error(file: Option<&Path>, e: figment::Error) -> String {
    if let (figment::error::Kind::UnknownField(_, known), Some(path)) = (&e.kind, file) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all = ztssh_keyfile::config_keys::unknown(path, &text, &[], known);
        if !all.is_empty() {
            return all.join("\n");
        }
    }
    format!("config: {e}")
}

/// A yes/no setting, also as an environment variable would spell it:
/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
fn switch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Spelled {
        Bool(bool),
        Int(i64),
        Word(String),
    }
    let bad = |what: String| {
        serde::de::Error::custom(format!(
            "{what}: expected true or false (1/0, yes/no and on/off also do)"
        ))
    };
    match Spelled::deserialize(d)? {
        Spelled::Bool(b) => Ok(b),
        Spelled::Int(1) => Ok(true),
        Spelled::Int(0) => Ok(false),
        Spelled::Int(n) => Err(bad(n.to_string())),
        Spelled::Word(w) => match w.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err(bad(format!("{w:?}"))),
        },
    }
}

/// Expands a leading `~/` (the home directory: `HOME`, or `USERPROFILE`
/// on Windows).
pub fn expand_tilde(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), ztssh_sidecar::platform::home_dir()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `ZTSSH_VERBOSE=1` reaches serde as figment's `Env` parses it: the
    /// number 1 (a type error for a plain bool).
    fn verbose_from(value: impl Serialize) -> Result<bool, String> {
        Figment::new()
            .merge(("verbose", value))
            .extract::<Settings>()
            .map(|s| s.verbose)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ztssh_verbose_takes_the_ways_people_write_yes_and_no() {
        assert!(verbose_from(1).unwrap());
        assert!(!verbose_from(0).unwrap());
        assert!(verbose_from(true).unwrap());
        for (w, want) in [("yes", true), ("ON", true), ("no", false), ("0", false)] {
            assert_eq!(verbose_from(w).unwrap(), want, "{w}");
        }
        let e = verbose_from(2).unwrap_err();
        assert!(e.contains("expected true or false"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_at_their_lines_all_at_once() {
        let dir = std::env::temp_dir().join(format!("ztssh-settings-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sidecar.toml");
        let text = "root = \"/r\"\nverbos = true\n\nprincipal = \"a\"\nconect = \"x\"\n";
        std::fs::write(&path, text).unwrap();
        let e = load(Some(&path), &Flags::default()).err().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let p = path.display();
        assert_eq!(
            e,
            format!(
                "{p}:2: unknown key `verbos`; did you mean `verbose`?\n\
                 {p}:5: unknown key `conect`; did you mean `connect`?"
            )
        );
    }
}
