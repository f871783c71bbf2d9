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
        Self::parse_all(&text).map_err(|all| {
            all.iter()
                .map(|(line, why)| format!("{}:{line}: {why}", path.display()))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Parses the file's text; an error is the 1-based line of the first
    /// mistake and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        Self::parse_all(text).map_err(|mut all| all.swap_remove(0))
    }

    /// Parses the file's text; an error lists every mistake (never none),
    /// each as its 1-based line and what is wrong with it.
    pub fn parse_all(text: &str) -> Result<Self, Vec<(usize, String)>> {
        let mut keys: HashMap<String, Vec<_>> = HashMap::new();
        let mut mistakes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok((principal, key)) => keys.entry(principal.to_owned()).or_default().push(key),
                Err(why) => mistakes.push((i + 1, why)),
            }
        }
        if mistakes.is_empty() {
            Ok(Self { keys })
        } else {
            Err(mistakes)
        }
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

/// One `PRINCIPAL KEYTYPE BASE64 [COMMENT]` line.
fn parse_line(line: &str) -> Result<(&str, ssh_key::public::KeyData), String> {
    let (principal, key) = line
        .split_once(char::is_whitespace)
        .ok_or("expected: PRINCIPAL ssh-ed25519 AAAA... [comment]")?;
    let parsed = ssh_key::PublicKey::from_openssh(key.trim());
    // An authorized_keys line pasted as it is: the key type where the
    // principal goes, and so no key after it (a principal that merely is
    // named like a key type, followed by a key, is a valid line).
    // ssh-key takes any `name@domain` as a key type of its own: only the
    // types it knows are named, and the name is printed escaped.
    let pasted = matches!(
        ssh_key::Algorithm::new(principal),
        Ok(algorithm) if !matches!(algorithm, ssh_key::Algorithm::Other(_))
    );
    if parsed.is_err() && pasted {
        let principal = printable(principal);
        return Err(format!(
            "this line starts with the key type {principal}, as an authorized_keys line does: \
             put the ztssh principal first, e.g. `alice {principal} AAAA... [comment]`"
        ));
    }
    check_name(principal, MAX_PRINCIPAL, "principal").map_err(|e| e.to_string())?;
    // ssh-key's errors may quote decoded bytes: keep them on one line.
    let key = parsed.map_err(|e| {
        let e = printable(&e.to_string());
        format!(
            "not an OpenSSH public key ({e}); expected: PRINCIPAL ssh-ed25519 AAAA... [comment]"
        )
    })?;
    ztssh_proto::userkey::check_key(key.key_data()).map_err(|e| e.to_string())?;
    Ok((principal, key.key_data().clone()))
}

/// `s` with control characters escaped (`\n`, `\u{1b}`), for one-line
/// messages that quote bytes from a file.
pub fn printable(s: &str) -> String {
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

/// Whether `name` can be a local account name: 1 to 32 of `A-Z a-z 0-9 . _ -`,
/// not starting with `-` (what useradd accepts, less a trailing `$`).
pub fn check_account(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 32 || name.starts_with('-') || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} is not an account name (1-32 of A-Z a-z 0-9 . _ -, not starting with -)"
        ));
    }
    Ok(())
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

    #[test]
    fn an_unknown_name_at_domain_is_not_named_as_a_key_type() {
        // ssh-key parses any `x@y` as a key type; the fuzz target found the
        // message then quoted control characters from the line.
        let e = Authorized::parse("al]ice\0\0@5519 AAAX\n").expect_err("bad");
        assert_eq!(e.0, 1);
        assert!(!e.1.contains("key type"), "{}", e.1);
        assert!(!e.1.chars().any(char::is_control), "{:?}", e.1);
    }

    #[test]
    fn a_principal_named_like_a_key_type_with_a_key_after_it_is_a_valid_line() {
        // Only a line with no key after the key type is a pasted
        // authorized_keys line (the fuzz target's oracle found this).
        let a = Authorized::parse(&format!("ssh-ed25519 {ALICE}\n")).expect("parse");
        let key = ssh_key::PublicKey::from_openssh(ALICE).expect("key");
        assert!(a.allows("ssh-ed25519", &key));
    }

    #[test]
    fn every_bad_line_is_reported_and_a_pasted_authorized_keys_line_is_named() {
        let text = format!("alice {ALICE}\n{ALICE}\n# ok\nbob\ncarol ssh-ed25519 garbage\n");
        let e = Authorized::parse_all(&text).expect_err("bad");
        assert_eq!(e.iter().map(|m| m.0).collect::<Vec<_>>(), vec![2, 4, 5]);
        assert_eq!(
            e[0].1,
            "this line starts with the key type ssh-ed25519, as an authorized_keys line does: \
             put the ztssh principal first, e.g. `alice ssh-ed25519 AAAA... [comment]`"
        );
        assert!(e[2].1.contains("not an OpenSSH public key"), "{}", e[2].1);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("authorized_principals");
        std::fs::write(&path, &text).expect("write");
        let msg = Authorized::load(&path).expect_err("bad");
        let p = path.display();
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 3, "{msg}");
        assert!(
            lines[0].starts_with(&format!("{p}:2: this line starts")),
            "{msg}"
        );
        assert!(lines[1].starts_with(&format!("{p}:4: expected")), "{msg}");
        assert!(
            lines[2].starts_with(&format!("{p}:5: not an OpenSSH")),
            "{msg}"
        );
    }

    #[test]
    fn keys_ztssh_refuses_are_config_errors_at_their_line() {
        const WEAK: &str = include_str!("../../../proto/src/testdata/userkey/rsa1024.pub");
        const RSA: &str = include_str!("../../../proto/src/testdata/userkey/rsa2048.pub");
        let e = Authorized::parse(&format!("alice {ALICE}\nbob {WEAK}")).expect_err("weak");
        assert_eq!(
            e,
            (
                2,
                "RSA key of 1024 bits refused: ztssh accepts RSA keys of 2048 to 4096 bits".into()
            )
        );
        let a = Authorized::parse(&format!("bob {RSA}")).expect("rsa-2048");
        let key = ssh_key::PublicKey::from_openssh(RSA.trim()).expect("key");
        assert!(a.allows("bob", &key));
    }

    #[test]
    fn errors_stay_on_one_line_whatever_the_key_decodes_to() {
        // Found by the fuzz target: the key type inside this base64 reads
        // "ss\n]Zd25519", and ssh-key quotes it in its error.
        let e = Authorized::parse(
            "alice ssh-ed25519 AAAAC3NzCl1aZDI1NTE5AAAAIDmTo3zNUKgKQUwbBf+KQW8nM5mVM0k= ci\n",
        )
        .expect_err("bad key");
        assert_eq!(e.0, 1);
        assert!(e.1.contains("'ss\\n]Zd25519'"), "{}", e.1);
        assert!(!e.1.chars().any(char::is_control), "{}", e.1);
    }

    #[test]
    fn account_names() {
        for ok in ["alice", "deploy", "svc_web-1", "a.b"] {
            assert!(check_account(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-rf", "al ice", "root\n", "a/b", &"x".repeat(33)] {
            assert!(check_account(bad).is_err(), "{bad:?}");
        }
    }
}
