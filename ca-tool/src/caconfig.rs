//! `CA/ca.toml`: which signer holds each CA key, and the issuance caps.
//!
//! ```toml
//! [root]                 # absent: the file root.key
//! signer = "pkcs11"      # file | agent | pkcs11
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token = "ztssh-root"
//! key = "root"
//!
//! [host_ca]              # absent: derived from root.key's seed
//! signer = "agent"
//! fingerprint = "SHA256:..."
//!
//! [caps]                 # the longest validity the CA signs, per kind
//! licence = "24h"
//! host_certificate = "90d"
//! delegation = "90d"
//! ```
//!
//! Read strictly, like the rest of the directory: an unknown table or key,
//! a missing one or a value of the wrong kind is an error at its line. No
//! PIN is ever written here.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use toml_edit::{ImDocument, Item, TableLike};
use ztssh_keyfile as keyfile;
use ztssh_proto::hostca::MAX_HOST_CERT_TTL;
use ztssh_proto::time::{human, parse_duration};

use crate::signer::Spec;
use crate::tomlfile::Parser;

/// The file's name in the CA directory.
pub const FILE: &str = "ca.toml";
/// The largest file read.
const MAX_FILE: u64 = 64 * 1024;

/// The hard maxima no configuration raises (the formats' and the threat
/// model's own limits).
pub const MAX_LICENCE: u64 = 86_400;
/// See [`MAX_LICENCE`].
pub const MAX_DELEGATION: u64 = crate::delegate::MAX_DELEGATION_TTL;

/// The longest validity the CA signs, per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Server licences (default 24 h).
    pub licence: u64,
    /// OpenSSH host certificates (default 90 days).
    pub host_certificate: u64,
    /// Delegations, and the root's certification of a host CA (default 90 days).
    pub delegation: u64,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            licence: 86_400,
            host_certificate: 90 * 86_400,
            delegation: 90 * 86_400,
        }
    }
}

/// What `ca.toml` says (or the defaults, for a directory without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaConfig {
    /// Who holds the root key.
    pub root: Spec,
    /// Who holds the host CA key; `None`: derived from the root's seed.
    pub host_ca: Option<Spec>,
    /// Issuance caps.
    pub caps: Caps,
}

impl CaConfig {
    /// Reads `dir/ca.toml`; a directory without one has a file root, a
    /// derived host CA and the default caps.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(Self {
                root: Spec::File(dir.join("root.key")),
                host_ca: None,
                caps: Caps::default(),
            });
        }
        let raw = keyfile::read_regular(&path, MAX_FILE).map_err(anyhow::Error::msg)?;
        let Ok(text) = String::from_utf8(raw) else {
            bail!("{}: not UTF-8 text", path.display());
        };
        parse(dir, &path, &text).map_err(|all| anyhow::anyhow!("{}", all.join("\n")))
    }

    /// Writes the file (0600, atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut text = String::from(
            "# ztssh-ca: which signer holds each CA key, and the issuance caps.\n\
             # docs/OPERATOR.md, \"Keeping the root in hardware\".\n",
        );
        text.push_str(&spec_table("root", &self.root, dir));
        if let Some(h) = &self.host_ca {
            text.push_str(&spec_table("host_ca", h, dir));
        }
        let c = &self.caps;
        text.push_str(&format!(
            "\n[caps]\nlicence = \"{}\"\nhost_certificate = \"{}\"\ndelegation = \"{}\"\n",
            secs(c.licence),
            secs(c.host_certificate),
            secs(c.delegation)
        ));
        keyfile::write_atomic(
            &dir.join(FILE),
            text.as_bytes(),
            0o600,
            keyfile::Existing::Replace,
        )?;
        Ok(())
    }
}

/// A duration as `parse_duration` reads it back.
fn secs(s: u64) -> String {
    if s.is_multiple_of(86_400) && s > 86_400 {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3_600) {
        format!("{}h", s / 3_600)
    } else {
        format!("{s}s")
    }
}

fn quoted(s: &str) -> String {
    toml_edit::Value::from(s).to_string().trim().to_owned()
}

fn spec_table(name: &str, spec: &Spec, dir: &Path) -> String {
    let body = match spec {
        Spec::File(p) => {
            let rel = p.strip_prefix(dir).unwrap_or(p);
            format!(
                "signer = \"file\"\npath = {}\n",
                quoted(&rel.display().to_string())
            )
        }
        Spec::Agent { fingerprint } => {
            format!(
                "signer = \"agent\"\nfingerprint = {}\n",
                quoted(fingerprint)
            )
        }
        Spec::Pkcs11 { module, token, key } => format!(
            "signer = \"pkcs11\"\nmodule = {}\ntoken = {}\nkey = {}\n",
            quoted(&module.display().to_string()),
            quoted(token),
            quoted(key)
        ),
    };
    format!("\n[{name}]\n{body}")
}

/// Refuses a validity above the CA's cap for `kind`, saying what the cap
/// is and where to change it.
pub fn refuse_above_cap(kind: &str, ttl: u64, cap: u64, dir: Option<&Path>) -> Result<()> {
    let key = match kind {
        "licence" => "licence",
        "host certificate" => "host_certificate",
        _ => "delegation",
    };
    bail!(
        "--ttl {} is above this CA's cap for a {kind}, {}: ask for less, or raise caps.{key} in \
         {} (docs/OPERATOR.md, issuance profiles)",
        human(ttl),
        human(cap),
        dir.map_or_else(|| FILE.to_owned(), |d| d.join(FILE).display().to_string())
    )
}

impl Parser<'_> {
    /// The string at `table.key`, or an error at the table.
    fn string(
        &mut self,
        table: &dyn TableLike,
        name: &str,
        key: &str,
        span: Option<std::ops::Range<usize>>,
    ) -> Option<String> {
        match table.get(key) {
            Some(item) => match item.as_str() {
                Some(s) if !s.is_empty() && !s.chars().any(char::is_control) => Some(s.to_owned()),
                _ => {
                    self.at(
                        item.span(),
                        format!("{name}.{key} must be a non-empty string"),
                    );
                    None
                }
            },
            None => {
                self.at(span, format!("[{name}] needs {key} = \"...\""));
                None
            }
        }
    }

    fn unknown_keys(&mut self, table: &dyn TableLike, name: &str, allowed: &[&str]) {
        for (key, _) in table.iter() {
            if !allowed.contains(&key) {
                let span = table.key(key).and_then(|k| k.span());
                let hint = match keyfile::config_keys::did_you_mean(key, allowed) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!("[{name}] takes {}", allowed.join(", ")),
                };
                self.at(
                    span,
                    format!("unknown key `{}`; {hint}", key.escape_default()),
                );
            }
        }
    }

    fn spec(&mut self, dir: &Path, name: &str, item: &Item) -> Option<Spec> {
        let span = item.span();
        let Some(t) = item.as_table_like() else {
            self.at(span, format!("{name} must be a table: [{name}]"));
            return None;
        };
        let signer = self.string(t, name, "signer", span.clone())?;
        match signer.as_str() {
            "file" => {
                self.unknown_keys(t, name, &["signer", "path"]);
                let p = PathBuf::from(self.string(t, name, "path", span)?);
                Some(Spec::File(if p.is_absolute() { p } else { dir.join(p) }))
            }
            "agent" => {
                self.unknown_keys(t, name, &["signer", "fingerprint"]);
                let fingerprint = self.string(t, name, "fingerprint", span)?;
                Some(Spec::Agent { fingerprint })
            }
            "pkcs11" => {
                self.unknown_keys(t, name, &["signer", "module", "token", "key"]);
                let module = self.string(t, name, "module", span.clone());
                let token = self.string(t, name, "token", span.clone());
                let key = self.string(t, name, "key", span);
                Some(Spec::Pkcs11 {
                    module: PathBuf::from(module?),
                    token: token?,
                    key: key?,
                })
            }
            other => {
                let at = t.get("signer").and_then(Item::span);
                self.at(
                    at,
                    format!(
                        "{name}.signer {:?} is not one of file, agent, pkcs11",
                        other.escape_default().to_string()
                    ),
                );
                None
            }
        }
    }

    fn caps(&mut self, item: &Item) -> Caps {
        let mut caps = Caps::default();
        let Some(t) = item.as_table_like() else {
            self.at(item.span(), "caps must be a table: [caps]");
            return caps;
        };
        self.unknown_keys(t, "caps", &["licence", "host_certificate", "delegation"]);
        let fields: [(&str, &mut u64, u64); 3] = [
            ("licence", &mut caps.licence, MAX_LICENCE),
            (
                "host_certificate",
                &mut caps.host_certificate,
                MAX_HOST_CERT_TTL,
            ),
            ("delegation", &mut caps.delegation, MAX_DELEGATION),
        ];
        for (key, slot, max) in fields {
            let Some(v) = t.get(key) else { continue };
            match v.as_str().and_then(parse_duration).filter(|d| *d > 0) {
                Some(d) if d <= max => *slot = d,
                Some(d) => self.at(
                    v.span(),
                    format!(
                        "caps.{key} = {} is above the {} that ztssh-ca never exceeds",
                        human(d),
                        human(max)
                    ),
                ),
                None => self.at(
                    v.span(),
                    format!("caps.{key} must be a duration like \"24h\" or \"90d\""),
                ),
            }
        }
        caps
    }
}

/// Parses `ca.toml`'s text; every mistake at its line.
pub fn parse(dir: &Path, path: &Path, text: &str) -> Result<CaConfig, Vec<String>> {
    let mut p = Parser {
        path,
        text,
        errors: Vec::new(),
    };
    let doc = match ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.message().trim().escape_default().to_string();
            p.at(e.span(), format!("not valid TOML: {msg}"));
            return Err(p.errors);
        }
    };
    let mut config = CaConfig {
        root: Spec::File(dir.join("root.key")),
        host_ca: None,
        caps: Caps::default(),
    };
    let top = doc.as_table();
    p.unknown_keys(top, "ca.toml", &["root", "host_ca", "caps"]);
    if let Some(item) = top.get("root")
        && let Some(s) = p.spec(dir, "root", item)
    {
        config.root = s;
    }
    if let Some(item) = top.get("host_ca") {
        config.host_ca = p.spec(dir, "host_ca", item);
    }
    if let Some(item) = top.get("caps") {
        config.caps = p.caps(item);
    }
    if p.errors.is_empty() {
        Ok(config)
    } else {
        Err(p.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/ca")
    }

    #[test]
    fn written_config_reads_back_the_same() {
        let c = CaConfig {
            root: Spec::Pkcs11 {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token: "ztssh \"root\"".into(),
                key: "root".into(),
            },
            host_ca: Some(Spec::Agent {
                fingerprint: "SHA256:abc".into(),
            }),
            caps: Caps {
                licence: 3_600,
                host_certificate: 30 * 86_400,
                delegation: 7 * 86_400,
            },
        };
        let tmp = std::env::temp_dir().join(format!("ztssh-caconfig-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("dir");
        c.save(&tmp).expect("save");
        let back = CaConfig::load(&tmp).expect("load");
        let _ = std::fs::remove_dir_all(&tmp);
        assert_eq!(back, c);
    }

    #[test]
    fn every_mistake_is_named_at_its_line() {
        let text = "[root]\nsigner = \"pkcs11\"\nmodule = \"/m.so\"\ntoken = \"t\"\nkye = \"k\"\n\n\
                    [caps]\nlicence = \"48h\"\nhost_certificate = \"soon\"\n[extra]\n";
        let errs = parse(&dir(), Path::new("ca.toml"), text).expect_err("refused");
        let all = errs.join("\n");
        assert!(
            all.contains("ca.toml:5: unknown key `kye`; [root] takes signer, module, token, key"),
            "{all}"
        );
        assert!(all.contains("[root] needs key"), "{all}");
        assert!(
            all.contains("ca.toml:8: caps.licence = 2d is above the 1d"),
            "{all}"
        );
        assert!(
            all.contains("ca.toml:9: caps.host_certificate must be a duration"),
            "{all}"
        );
        assert!(all.contains("ca.toml:10: unknown key `extra`"), "{all}");
    }

    #[test]
    fn an_unknown_signer_is_refused() {
        let errs =
            parse(&dir(), Path::new("ca.toml"), "[root]\nsigner = \"kms\"\n").expect_err("refused");
        assert!(
            errs[0].contains("ca.toml:2: root.signer \"kms\" is not one of"),
            "{errs:?}"
        );
    }
}
