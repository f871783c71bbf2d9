//! The proxy's authorized principals parser. Invariants: an accepted file
//! authorizes, for every line that is not blank or a comment, that line's
//! key for that line's principal (a key type and size ztssh accepts), and
//! that key re-encodes to the key type
//! and base64 written on the line; it names exactly the distinct
//! principals written. A refused file names its first bad line, with a
//! one-line reason free of control characters.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use ztssh_proto::cert::{MAX_PRINCIPAL, check_name};
use ztssh_proxy::trust::authz::Authorized;

/// Pieces of principals files: names, separators, keys whole and broken.
const TOKENS: &[&str] = &[
    "\n",
    "\n",
    "\r\n",
    " ",
    " ",
    "\t",
    "#",
    "alice",
    "bob",
    "b.c@d",
    "-x",
    "al\u{e9}",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtuO",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtuP",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtu",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDJgtdqH/PvV4m5wSYFl25O2FDtnWmBYq0MioYysydII2kmsoFtphEe9ovggM3i4sS2esUwbBf+KQW8nM5mVM0k=",
    "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBK7j79WDIIN6QjW6WnFFaxKQttvtKUQawO5XqpKxCe1f8auHwxGZBl0017wazz1WLprE8oktP2bekOMoO9NBGd1ADvHsuS1omQE099njxncyrIdgmfUAg3Xn5wReYE07BA==",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCqF06yVpm3f/+3Nyds1PwmhhdUa2aq+iH5DCAVMwap/Ml/Sm066mqUfuteTOhRV/5iZ+sWgoukvkFkZMOrtKLFJS8OKaCVhpBY7kaYP8kA5cSQ11WHK5vQrL7gonGY2YGAHO8XQ94jeXUqBlB1arisvOnLkSJ6dtAip3hkZPc+ew==",
    "ssh-ed25519 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDJgtdqH/PvV4m5wSYFl25O2FDtnWmBYq0MioYysydII2kmsoFtphEe9ovggM3i4sS2esUwbBf+KQW8nM5mVM0k=",
    "ssh-ed25519",
    "AAAA",
    "=",
    "==",
    "alice@laptop",
    "comment with words",
];

/// Principal and key of a line the parser must accept, or `None` for a
/// line it must refuse. Blank lines and comments are `Some(None)`.
#[allow(clippy::option_option)]
fn expect(line: &str) -> Option<Option<(&str, ssh_key::PublicKey)>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Some(None);
    }
    let (principal, key) = line.split_once(char::is_whitespace)?;
    check_name(principal, MAX_PRINCIPAL, "principal").ok()?;
    let key = ssh_key::PublicKey::from_openssh(key.trim()).ok()?;
    // Only key types and sizes ztssh accepts (the 1024-bit RSA token is not).
    ztssh_proto::userkey::check_key(key.key_data()).ok()?;
    Some(Some((principal, key)))
}

fuzz_target!(|data: &[u8]| {
    let text = match data.split_first() {
        Some((mode, rest)) if mode % 4 == 0 => String::from_utf8_lossy(rest).into_owned(),
        _ => ztssh_proto_fuzz::assemble(data, TOKENS, |_, _| None),
    };
    match Authorized::parse(&text) {
        Ok(authorized) => {
            let mut principals = BTreeSet::new();
            for line in text.lines() {
                let Some((principal, key)) = expect(line).expect("accepted a bad line") else {
                    continue;
                };
                assert!(
                    authorized.allows(principal, &key),
                    "{line:?} not authorized"
                );
                // The key is the one written: type and base64 re-encode.
                let written: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
                let encoded = key.to_openssh().expect("re-encode");
                let encoded: Vec<&str> = encoded.split_whitespace().take(2).collect();
                assert_eq!(encoded, written, "{line:?}");
                principals.insert(principal);
            }
            assert_eq!(authorized.principals(), principals.len());
        }
        Err((line, why)) => {
            let lines: Vec<&str> = text.lines().collect();
            assert!(
                (1..=lines.len()).contains(&line),
                "line {line} of {}",
                lines.len()
            );
            assert!(
                !why.is_empty() && !why.chars().any(char::is_control),
                "{why:?}"
            );
            let (before, at) = lines.split_at(line - 1);
            assert!(
                before.iter().all(|l| expect(l).is_some()),
                "not the first bad line"
            );
            assert!(
                at.first().and_then(|l| expect(l)).is_none(),
                "line {line} is fine"
            );
        }
    }
});
