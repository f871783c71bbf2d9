//! `ztssh-ca access`: sign the access list from a TOML file a team reviews
//! in a pull request, and `show` for a signed one.
//!
//! ```toml
//! [principal.carol]
//! keys = ["ssh-ed25519 AAAAC3Nza... carol@laptop"]
//! servers = ["web*"]             # optional: server ids or globs; default all
//! accounts = ["carol", "deploy"] # optional: narrows each proxy's policy
//! ```
//!
//! Every mistake is reported at once, each at its `FILE:LINE`. The version
//! comes from `CA/access.version`, which only goes up (as `crl.version`).
//! Signed by the root, or (`--delegation FILE --key KEY`) by an `access`
//! delegation's key from a copy of the CA's records without root.key; the
//! list is then refused before signing if it reaches beyond the
//! delegation's servers (`Delegable::within`, the verifiers' own rule).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Result, bail};
use toml_edit::{ImDocument, Item, TableLike, Value};
use ztssh_keyfile as keyfile;
use ztssh_proto::access::{self, AccessList, Grant};
use ztssh_proto::cert::{MAX_PRINCIPAL, check_name};
use ztssh_proto::delegation::{self, Delegable};
use ztssh_proto::keys::{PublicKey, to_array};
use ztssh_proto::labels::pem;
use ztssh_proto::time::{human, parse_duration, when};

use crate::delegate::Delegated;
use crate::tomlfile::Parser;

/// The access list's version counter in the CA directory.
pub const VERSION_FILE: &str = "access.version";
/// Longest `--valid-for`.
pub const MAX_VALID_FOR: u64 = 90 * 86_400;
/// The keys of one `[principal.NAME]` table.
const PRINCIPAL_KEYS: &[&str] = &["keys", "servers", "accounts"];
/// The largest input file read.
const MAX_INPUT: u64 = 64 << 20;

impl Parser<'_> {
    fn strings<'v>(
        &mut self,
        name: &str,
        key: &str,
        item: &'v Item,
    ) -> Vec<(&'v str, Option<std::ops::Range<usize>>)> {
        let Some(array) = item.as_array() else {
            self.at(
                item.span(),
                format!("principal.{name}.{key} must be a list of strings, e.g. {key} = [\"...\"]"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for v in array {
            match v {
                Value::String(s) => out.push((s.value().as_str(), v.span())),
                _ => self.at(
                    v.span(),
                    format!("principal.{name}.{key}: each entry must be a string"),
                ),
            }
        }
        if out.is_empty() && array.is_empty() {
            let what = match key {
                "keys" => "allows no key: give at least one, or remove the principal".to_owned(),
                _ => format!("= [] allows none: leave {key} out to allow every one"),
            };
            self.at(item.span(), format!("principal.{name}.{key} {what}"));
        }
        out
    }

    fn principal(
        &mut self,
        name: &str,
        name_span: Option<std::ops::Range<usize>>,
        table: &dyn TableLike,
    ) -> Option<Grant> {
        let before = self.errors.len();
        if let Err(e) = check_name(name, MAX_PRINCIPAL, "principal") {
            self.at(name_span.clone(), format!("principal {name:?}: {e}"));
        }
        // Every later message names the principal as it reads in the file,
        // with any control character escaped.
        let name = printable(name);
        let name = name.as_str();
        let mut grant = Grant::default();
        let mut have_keys = false;
        for (key, item) in table.iter() {
            let key_span = table.key(key).and_then(|k| k.span());
            match key {
                "keys" => {
                    have_keys = true;
                    for (text, span) in self.strings(name, key, item) {
                        match ssh_key::PublicKey::from_openssh(text.trim()) {
                            Ok(k) => match ztssh_proto::userkey::check_key(k.key_data()) {
                                Ok(()) if grant.has_key(k.key_data()) => {
                                    self.at(span, format!("principal.{name}.keys: this key is listed twice"));
                                }
                                Ok(()) => grant.keys.push(k.key_data().clone()),
                                Err(e) => self.at(span, format!("principal.{name}.keys: {e}")),
                            },
                            Err(e) => self.at(
                                span,
                                format!(
                                    "principal.{name}.keys: not an OpenSSH public key ({}); expected \"ssh-ed25519 AAAA... [comment]\", as in KEY.pub",
                                    printable(&e.to_string())
                                ),
                            ),
                        }
                    }
                }
                "servers" => {
                    for (text, span) in self.strings(name, key, item) {
                        match access::check_server_glob(text) {
                            Ok(()) if !grant.servers.insert(text.to_owned()) => {
                                self.at(
                                    span,
                                    format!("principal.{name}.servers: {text:?} is listed twice"),
                                );
                            }
                            Ok(()) => {}
                            Err(e) => self.at(
                                span,
                                format!("principal.{name}.servers: {:?}: {e}", printable(text)),
                            ),
                        }
                    }
                }
                "accounts" => {
                    for (text, span) in self.strings(name, key, item) {
                        match access::check_account(text) {
                            Ok(()) if !grant.accounts.insert(text.to_owned()) => {
                                self.at(
                                    span,
                                    format!("principal.{name}.accounts: {text:?} is listed twice"),
                                );
                            }
                            Ok(()) => {}
                            Err(e) => self.at(
                                span,
                                format!("principal.{name}.accounts: {:?}: {e}", printable(text)),
                            ),
                        }
                    }
                }
                other => {
                    let hint = match keyfile::config_keys::did_you_mean(other, PRINCIPAL_KEYS) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => {
                            format!("the keys of a principal are {}", PRINCIPAL_KEYS.join(", "))
                        }
                    };
                    self.at(
                        key_span,
                        format!(
                            "unknown key `principal.{name}.{}`; {hint}",
                            printable(other)
                        ),
                    );
                }
            }
        }
        if !have_keys {
            self.at(
                name_span.clone(),
                format!(
                    "principal.{name} has no keys = [...]: give at least one OpenSSH public key"
                ),
            );
        }
        let caps = [
            ("keys", grant.keys.len(), access::MAX_KEYS),
            ("servers", grant.servers.len(), access::MAX_SERVERS),
            ("accounts", grant.accounts.len(), access::MAX_ACCOUNTS),
        ];
        for (what, n, max) in caps {
            if n > max {
                self.at(
                    name_span.clone(),
                    format!("principal.{name} has {n} {what}; at most {max} are allowed"),
                );
            }
        }
        (self.errors.len() == before).then_some(grant)
    }
}

/// `s` with control characters escaped, for one-line messages.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Parses the access TOML; an error lists every mistake, each at its
/// `FILE:LINE`.
pub fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, Grant>, Vec<String>> {
    let mut p = Parser {
        path,
        text,
        errors: Vec::new(),
    };
    let doc = match ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.message().trim().to_owned();
            p.at(e.span(), format!("not valid TOML: {}", printable(&msg)));
            return Err(p.errors);
        }
    };
    let mut out = BTreeMap::new();
    for (key, item) in doc.as_table().iter() {
        let key_span = doc.as_table().key(key).and_then(|k| k.span());
        if key != "principal" {
            let hint = match keyfile::config_keys::did_you_mean(key, &["principal"]) {
                Some(m) => format!("did you mean `[{m}.NAME]`?"),
                None => "an access list holds only [principal.NAME] tables".into(),
            };
            p.at(
                key_span,
                format!("unknown key `{}`; {hint}", printable(key)),
            );
            continue;
        }
        let Some(principals) = item.as_table_like() else {
            p.at(key_span, "principal must be tables: [principal.NAME]");
            continue;
        };
        for (name, entry) in principals.iter() {
            let name_span = principals.key(name).and_then(|k| k.span());
            let Some(table) = entry.as_table_like() else {
                p.at(
                    name_span,
                    format!(
                        "principal.{} must be a table: [principal.{0}]",
                        printable(name)
                    ),
                );
                continue;
            };
            if let Some(grant) = p.principal(name, name_span, table) {
                out.insert(name.to_owned(), grant);
            }
        }
    }
    if out.len() > access::MAX_PRINCIPALS {
        p.at(
            None,
            format!(
                "{} principals; at most {} are allowed",
                out.len(),
                access::MAX_PRINCIPALS
            ),
        );
    }
    if p.errors.is_empty() {
        Ok(out)
    } else {
        Err(p.errors)
    }
}

/// `ztssh-ca access`: reads `input`, signs the list with the next version
/// and writes it to `out`: with the root (`dir`'s root.key), or with an
/// `access` delegation's key (`signer`; `dir` may then be a copy of the
/// CA's records without root.key), the delegation written beside the list.
pub fn sign(
    dir: &Path,
    input: &Path,
    out: &Path,
    valid_for: &str,
    now: u64,
    signer: Option<&Delegated>,
) -> Result<()> {
    let Some(ttl) = parse_duration(valid_for).filter(|t| *t > 0 && *t <= MAX_VALID_FOR) else {
        bail!(
            "--valid-for {valid_for:?} must be a duration like 7d or 12h, at most {}",
            human(MAX_VALID_FOR)
        );
    };
    let raw = keyfile::read_regular(input, MAX_INPUT).map_err(anyhow::Error::msg)?;
    let Ok(text) = String::from_utf8(raw) else {
        bail!("{}: not UTF-8 text", input.display());
    };
    let principals = parse(input, &text).map_err(|all| anyhow::anyhow!("{}", all.join("\n")))?;
    let held: Box<dyn crate::signer::Signer> = match signer {
        Some(d) => Box::new(crate::signer::file::FileSigner::new(
            d.key_copy(),
            Path::new("delegated key"),
        )),
        None => crate::signer::root(dir)?,
    };
    let root = crate::signer::RootSigning::new(held.as_ref())?;
    let version_path = dir.join(VERSION_FILE);
    let list_version = crate::revoke::next_version(&version_path, false)?;
    let list = AccessList {
        list_version,
        issued: now,
        // Never past a delegation: the list grants nothing after it anyway.
        valid_until: signer
            .map_or(u64::MAX, |d| d.delegation.body.not_after)
            .min(now.saturating_add(ttl)),
        issuer: ztssh_proto::rootkey::RootSigner::root_key(&root).id(),
        principals,
        delegation: None,
    };
    // The chain's own rule, asked before signing: every proxy would refuse
    // a list that reaches beyond the delegation's servers.
    if let Some(d) = signer
        && let Err(why) = list.within(&d.delegation)
    {
        bail!(
            "{}: not signed: every proxy would refuse this list, since {why}; or ask the root \
             for an access delegation that covers those servers (ztssh-ca delegate --purpose \
             access --servers)",
            input.display()
        );
    }
    let bytes = list.sign_with(&root)?;
    crate::issuance::audit(
        dir,
        now,
        "access-list",
        &format!(
            "version={list_version} principals={} not_before={now} not_after={}",
            list.principals.len(),
            list.valid_until
        ),
        &root.holder(),
    )?;
    keyfile::write_atomic(
        &version_path,
        format!("{list_version}\n").as_bytes(),
        0o600,
        keyfile::Existing::Replace,
    )?;
    let text = delegation::encode_pem(pem::ACCESS, &bytes, signer.map(|d| &d.delegation))?;
    keyfile::write_atomic(out, text.as_bytes(), 0o644, keyfile::Existing::Replace)?;
    println!(
        "access list version {list_version} ({} principals, {} keys), valid for {}, written to {}{}",
        list.principals.len(),
        list.keys(),
        human(list.valid_until.saturating_sub(now)),
        out.display(),
        match signer {
            Some(d) => format!(" (signed under delegation {})", d.delegation.body.serial),
            None => String::new(),
        }
    );
    Ok(())
}

/// `ztssh-ca show` for an access list: its signature under the issuer it
/// names, and under `root` when given (a delegated list's chain is
/// checked and printed by the caller: `delegated`).
pub fn show(
    bytes: &[u8],
    root: Option<&ztssh_proto::rootkey::RootKey>,
    delegated: bool,
    now: u64,
) -> Result<()> {
    let issuer = bytes
        .get(4 + 1 + 24..4 + 1 + 24 + 32)
        .ok_or_else(|| anyhow::anyhow!("access list is truncated"))?;
    let issuer = PublicKey(to_array(issuer, "issuer")?);
    let key = match root {
        Some(r) if !delegated && r.id() == issuer => r.clone(),
        _ => issuer.into(),
    };
    let list = AccessList::decode_verified(bytes, &key)?;
    let signed_by = match root {
        _ if delegated => format!(
            "valid, by the delegated key {}; the chain to the root is above",
            issuer.fingerprint()
        ),
        Some(r) if list.issuer != r.id() => format!(
            "INVALID: signed by {}, not by root {}",
            list.issuer.fingerprint(),
            r.fingerprint()
        ),
        Some(_) => format!("valid, by root {}, the given root", issuer.fingerprint()),
        None => format!(
            "valid, by {}; the root itself NOT checked (pass --dir or --root)",
            issuer.fingerprint()
        ),
    };
    println!("ztssh access list (signature: {signed_by})");
    println!("  version:     {}", list.list_version);
    println!("  issued:      {}", when(list.issued, now));
    println!(
        "  valid until: {}{}",
        when(list.valid_until, now),
        if list.is_stale(now) { " STALE" } else { "" }
    );
    println!(
        "  principals:  {} ({} keys)",
        list.principals.len(),
        list.keys()
    );
    for (name, g) in &list.principals {
        let join = |s: &BTreeSet<String>, none: &str| {
            if s.is_empty() {
                none.to_owned()
            } else {
                s.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        println!(
            "  principal {name}: servers {}; accounts {}",
            join(&g.servers, "all"),
            join(&g.accounts, "as the policy allows")
        );
        for k in &g.keys {
            let key = ssh_key::PublicKey::new(k.clone(), "");
            println!("    {}", ztssh_proto::userkey::describe(&key));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtuO alice@laptop";

    #[test]
    fn a_good_file_parses() {
        let text = format!(
            "# team\n[principal.carol]\nkeys = [\"{ALICE}\"]\nservers = [\"web*\"]\naccounts = [\"carol\", \"deploy\"]\n\n[principal.dave]\nkeys = [\"{ALICE}\"]\n"
        );
        let p = parse(Path::new("access.toml"), &text).expect("parse");
        assert_eq!(p.len(), 2);
        assert!(p["carol"].covers("web1") && !p["carol"].covers("db1"));
        assert!(p["dave"].covers("db1") && p["dave"].accounts.is_empty());
    }

    #[test]
    fn every_mistake_is_reported_at_its_line_with_a_hint() {
        let text = format!(
            "principals = 1\n[principal.carol]\nkey = [\"{ALICE}\"]\nserver = [\"web*\"]\n\
             [principal.dave]\nkeys = [\"ssh-ed25519 garbage\"]\naccounts = [\"-rf\"]\nservers = []\n\
             [principal.\"er in\"]\nkeys = [\"{ALICE}\"]\n"
        );
        let e = parse(Path::new("access.toml"), &text).expect_err("bad");
        let joined = e.join("\n");
        for want in [
            "access.toml:1: unknown key `principals`; did you mean `[principal.NAME]`?",
            "access.toml:3: unknown key `principal.carol.key`; did you mean `keys`?",
            "access.toml:4: unknown key `principal.carol.server`; did you mean `servers`?",
            "access.toml:2: principal.carol has no keys",
            "access.toml:6: principal.dave.keys: not an OpenSSH public key",
            "access.toml:7: principal.dave.accounts: \"-rf\"",
            "access.toml:8: principal.dave.servers = [] allows none",
            "access.toml:9: principal \"er in\"",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
        let e = parse(Path::new("a.toml"), "[principal.x\nkeys=1").expect_err("toml");
        assert!(e[0].starts_with("a.toml:1: not valid TOML"), "{e:?}");
    }

    /// A principal's name from a reviewed file reaches CI's log and the
    /// signer's terminal only escaped: every message about it, not just the
    /// one that refuses the name (an escape sequence in a pull request's
    /// TOML key rewrote the terminal through `principal.NAME.keys ...`).
    #[test]
    fn a_name_with_control_characters_never_reaches_a_message_raw() {
        let text = "[principal.\"ev\\u001b[2Jil\"]\nkeys = []\nservers = [\"web\\u0007\"]\nkey = 1\n\
                    [principal.\"ma\\nllory\"]\naccounts = [\"a\\u001bb\"]\n";
        let e = parse(Path::new("access.toml"), text).expect_err("bad");
        let joined = e.join("\n");
        assert!(e.len() >= 5, "{joined}");
        for line in &e {
            assert!(
                !line.chars().any(char::is_control),
                "raw control character in {line:?}"
            );
        }
    }
}
