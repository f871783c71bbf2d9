//! Per-host identities in sidecar.toml, as ssh_config's `Host` blocks
//! with `IdentityFile`: the first `[[hosts]]` block whose patterns match
//! the host ssh gave (`%h`) names the keys offered to that server, and no
//! other key of the agent's is offered unless the user asks
//! (`try_agent_keys`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One `[[hosts]]` block.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostIdentities {
    /// Host patterns as ssh_config's `Host`: `*` and `?` wildcards,
    /// separated by spaces or commas, `!pattern` excludes; matched against
    /// `%h`, ignoring ASCII case.
    pub host: String,
    /// Key files (or their `.pub` halves for keys held by ssh-agent).
    #[serde(default)]
    pub identity_files: Vec<PathBuf>,
    /// ssh-agent keys by fingerprint, as `ssh-add -l` prints them
    /// (`SHA256:...`).
    #[serde(default)]
    pub agent_keys: Vec<String>,
}

/// Longest `host` value and most patterns read in one block.
const MAX_HOST_FIELD: usize = 4096;
const MAX_PATTERNS: usize = 64;
/// Most keys one block may name (more could not all be tried anyway).
const MAX_KEYS: usize = 16;

impl HostIdentities {
    /// Whether `host` matches: some pattern matches and no negated one does.
    pub fn matches(&self, host: &str) -> bool {
        let mut hit = false;
        for p in patterns(&self.host) {
            match p.strip_prefix('!') {
                Some(neg) if glob(neg, host) => return false,
                Some(_) => {}
                None => hit |= glob(p, host),
            }
        }
        hit
    }

    /// Checks one block; `n` is its place (1-based) for the message.
    pub fn check(&self, n: usize) -> Result<(), String> {
        let at = format!("[[hosts]] block {n} (host = {:?})", self.host);
        let pats: Vec<&str> = patterns(&self.host).collect();
        if self.host.len() > MAX_HOST_FIELD || pats.len() > MAX_PATTERNS {
            return Err(format!(
                "{at}: too many host patterns (at most {MAX_PATTERNS}, {MAX_HOST_FIELD} bytes); split the block"
            ));
        }
        if pats.iter().all(|p| p.starts_with('!')) {
            return Err(format!(
                "{at}: no pattern that matches a host (only exclusions); add one, e.g. host = \"*.corp.example !bastion.corp.example\""
            ));
        }
        if pats.iter().any(|p| p.trim_start_matches('!').is_empty()) {
            return Err(format!("{at}: an empty pattern (a lone `!`); remove it"));
        }
        if self.identity_files.is_empty() && self.agent_keys.is_empty() {
            return Err(format!(
                "{at}: names no key; add identity_files = [\"~/.ssh/id_ed25519\"] or agent_keys = [\"SHA256:...\"] (ssh-add -l prints them)"
            ));
        }
        if self.identity_files.len() + self.agent_keys.len() > MAX_KEYS {
            return Err(format!(
                "{at}: more than {MAX_KEYS} keys; name the ones this host accepts"
            ));
        }
        for fp in &self.agent_keys {
            if !is_fingerprint(fp) {
                return Err(format!(
                    "{at}: agent key {:?} is not a SHA256 fingerprint; copy it from ssh-add -l (SHA256: and 43 base64 characters)",
                    fp.escape_default().to_string()
                ));
            }
        }
        Ok(())
    }
}

/// The first block that matches `host`.
pub fn find<'a>(blocks: &'a [HostIdentities], host: &str) -> Option<&'a HostIdentities> {
    blocks.iter().find(|b| b.matches(host))
}

fn patterns(field: &str) -> impl Iterator<Item = &str> {
    field
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|p| !p.is_empty())
}

/// `SHA256:` and 43 characters of unpadded standard base64.
fn is_fingerprint(fp: &str) -> bool {
    fp.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    })
}

/// ssh's `match_pattern`: `*` any run, `?` one character, ASCII case
/// ignored. Iterative, with one backtrack point: linear in practice and
/// never recursive, whatever the pattern.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c.eq_ignore_ascii_case(&n[j]) => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn block(host: &str) -> HostIdentities {
        HostIdentities {
            host: host.into(),
            identity_files: vec!["/k".into()],
            agent_keys: Vec::new(),
        }
    }

    #[test]
    fn patterns_match_as_ssh_config_host_does() {
        let b = block("*.corp.example, web? !web9.corp.example !db*");
        for h in ["a.corp.example", "WEB1", "x.CORP.example", "web1"] {
            assert!(b.matches(h), "{h}");
        }
        for h in [
            "corp.example",
            "web9.corp.example",
            "WEB9.corp.example",
            "db1.corp.example",
            "web10",
            "a.corp.example.evil",
            "",
        ] {
            assert!(!b.matches(h), "{h}");
        }
        assert!(block("*").matches("anything"));
        assert!(!block("web1").matches("web1."));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        // A pathological pattern ends quickly (no exponential backtracking).
        let long = "a".repeat(2000);
        assert!(!glob("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn the_first_matching_block_wins() {
        let blocks = [block("web1"), block("*")];
        assert!(std::ptr::eq(find(&blocks, "web1").unwrap(), &blocks[0]));
        assert!(std::ptr::eq(find(&blocks, "db").unwrap(), &blocks[1]));
        assert!(find(&blocks[..1], "db").is_none());
    }

    #[test]
    fn bad_blocks_are_refused_with_what_to_do() {
        let fp = format!("SHA256:{}", "A".repeat(43));
        let mut b = block("web1");
        b.agent_keys = vec![fp.clone()];
        assert_eq!(b.check(1), Ok(()));
        b.agent_keys = vec!["MD5:aa:bb".into()];
        let e = b.check(2).unwrap_err();
        assert!(e.contains("block 2") && e.contains("ssh-add -l"), "{e}");
        let e = block("!web1").check(1).unwrap_err();
        assert!(e.contains("only exclusions"), "{e}");
        let e = block("web1 !").check(1).unwrap_err();
        assert!(e.contains("lone `!`"), "{e}");
        let mut none = block("web1");
        none.identity_files.clear();
        assert!(none.check(1).unwrap_err().contains("names no key"));
        assert!(!is_fingerprint(&format!("SHA256:{}=", "A".repeat(42))));
    }
}
