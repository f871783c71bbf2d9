//! The authorized principals file: one `PRINCIPAL KEYTYPE BASE64 [COMMENT]`
//! per line, the way authorized_keys is written. `#` starts a comment.

use std::collections::HashMap;
use std::path::Path;

use ztssh_proto::cert::{MAX_PRINCIPAL, check_name};

/// Who may act as which principal.
#[derive(Debug, Default, Clone)]
pub struct Authorized {
    keys: HashMap<String, Vec<ssh_key::public::KeyData>>,
}

impl Authorized {
    /// Parses the file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|(line, why)| format!("{}:{line}: {why}", path.display()))
    }

    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut keys: HashMap<String, Vec<_>> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (principal, key) = line.split_once(char::is_whitespace).ok_or((
                i + 1,
                "expected: PRINCIPAL ssh-ed25519 AAAA... [comment]".to_owned(),
            ))?;
            check_name(principal, MAX_PRINCIPAL, "principal")
                .map_err(|e| (i + 1, e.to_string()))?;
            let key = ssh_key::PublicKey::from_openssh(key.trim())
                .map_err(|e| (i + 1, format!("not an OpenSSH public key ({e})")))?;
            keys.entry(principal.to_owned())
                .or_default()
                .push(key.key_data().clone());
        }
        Ok(Self { keys })
    }

    /// Whether `key` may act as `principal`.
    pub fn allows(&self, principal: &str, key: &ssh_key::PublicKey) -> bool {
        self.keys
            .get(principal)
            .is_some_and(|ks| ks.iter().any(|k| k == key.key_data()))
    }

    /// Number of principals.
    pub fn principals(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtuO alice@laptop";

    #[test]
    fn parses_and_authorizes() {
        let a = Authorized::parse(&format!("# team\n\nalice {ALICE}\n")).expect("parse");
        let key = ssh_key::PublicKey::from_openssh(ALICE).expect("key");
        assert!(a.allows("alice", &key));
        assert!(!a.allows("bob", &key));
        assert_eq!(a.principals(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(Authorized::parse("alice\n").err().map(|e| e.0), Some(1));
        let e = Authorized::parse(&format!("alice {ALICE}\nbob ssh-ed25519 garbage\n"))
            .expect_err("bad");
        assert_eq!(e.0, 2);
        assert!(e.1.contains("not an OpenSSH public key"));
        assert!(Authorized::parse(&format!("al ice {ALICE}")).is_err());
    }
}
