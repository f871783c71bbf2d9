//! A minimal ssh-agent client (draft-miller-ssh-agent): list identities and
//! sign. Enough for ztssh; no key export is ever needed.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use ssh_key::encoding::{Decode, Encode};

use crate::platform::{self, AgentStream};

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const FAILURE: u8 = 5;
/// Sign request flag: an RSA key signs with rsa-sha2-256.
pub const RSA_SHA2_256: u32 = 2;
/// Sign request flag: an RSA key signs with rsa-sha2-512.
pub const RSA_SHA2_512: u32 = 4;
/// Largest agent reply accepted.
const MAX_REPLY: usize = 256 * 1024;

/// A connection to ssh-agent.
pub struct Agent {
    sock: AgentStream,
}

impl Agent {
    /// Connects to the agent at `path` (usually `$SSH_AUTH_SOCK`).
    pub fn connect(path: &Path) -> Result<Self, String> {
        let sock = platform::connect_agent(path, Duration::from_secs(30)).map_err(|e| {
            format!(
                "cannot reach ssh-agent at {} (SSH_AUTH_SOCK): {e}; {}, or pass --identity KEY",
                path.display(),
                platform::AGENT_HINT
            )
        })?;
        Ok(Self { sock })
    }

    fn call(&mut self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let io = |e: std::io::Error| format!("ssh-agent connection failed: {e}");
        let len = u32::try_from(msg.len()).map_err(|_| "agent request too large".to_owned())?;
        self.sock.write_all(&len.to_be_bytes()).map_err(io)?;
        self.sock.write_all(msg).map_err(io)?;
        let mut len = [0u8; 4];
        self.sock.read_exact(&mut len).map_err(io)?;
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len == 0 || len > MAX_REPLY {
            return Err(format!("ssh-agent sent a reply of {len} bytes"));
        }
        let mut reply = vec![0u8; len];
        self.sock.read_exact(&mut reply).map_err(io)?;
        Ok(reply)
    }

    /// The public keys the agent holds.
    pub fn identities(&mut self) -> Result<Vec<ssh_key::PublicKey>, String> {
        parse_identities(&self.call(&[REQUEST_IDENTITIES])?)
    }

    /// The OpenSSH certificates the agent holds.
    pub fn certificates(&mut self) -> Result<Vec<ssh_key::Certificate>, String> {
        parse_certificates(&self.call(&[REQUEST_IDENTITIES])?)
    }

    /// Asks the agent to sign `data` with `key`. An RSA key is asked for
    /// rsa-sha2-512 (without the flag, agents answer with SHA-1 ssh-rsa,
    /// which ztssh refuses).
    pub fn sign(
        &mut self,
        key: &ssh_key::PublicKey,
        data: &[u8],
    ) -> Result<ssh_key::Signature, String> {
        parse_signature(&self.call(&sign_request(key, data)?)?)
    }
}

/// The body of a SIGN_REQUEST for `key` over `data`, with the flags its
/// type needs.
pub fn sign_request(key: &ssh_key::PublicKey, data: &[u8]) -> Result<Vec<u8>, String> {
    let flags = match key.algorithm() {
        ssh_key::Algorithm::Rsa { .. } => RSA_SHA2_512,
        _ => 0,
    };
    let blob = key.to_bytes().map_err(|e| e.to_string())?;
    let mut msg = vec![SIGN_REQUEST];
    blob.encode(&mut msg).map_err(|e| e.to_string())?;
    data.encode(&mut msg).map_err(|e| e.to_string())?;
    flags.encode(&mut msg).map_err(|e| e.to_string())?;
    Ok(msg)
}

/// Parses the body of a reply to REQUEST_IDENTITIES (the frame without its
/// length): the declared number of (key blob, comment) entries and nothing
/// after them. Keys of types this build cannot parse are skipped, so at
/// most the declared number come back.
pub fn parse_identities(reply: &[u8]) -> Result<Vec<ssh_key::PublicKey>, String> {
    let mut keys = Vec::new();
    for (blob, comment) in parse_entries(reply)? {
        if let Ok(mut key) = ssh_key::PublicKey::from_bytes(&blob) {
            key.set_comment(comment);
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The certificates in a reply to REQUEST_IDENTITIES (ssh-add loads
/// `KEY-cert.pub` with `KEY`); other entries are skipped.
pub fn parse_certificates(reply: &[u8]) -> Result<Vec<ssh_key::Certificate>, String> {
    Ok(parse_entries(reply)?
        .into_iter()
        .filter_map(|(blob, _)| ssh_key::Certificate::from_bytes(&blob).ok())
        .collect())
}

/// The (blob, comment) entries of a reply to REQUEST_IDENTITIES.
fn parse_entries(reply: &[u8]) -> Result<Vec<(Vec<u8>, String)>, String> {
    let bad = |_| "ssh-agent sent a malformed identity list".to_owned();
    let (&kind, mut rest) = reply.split_first().ok_or("empty agent reply")?;
    if kind != IDENTITIES_ANSWER {
        return Err(format!("ssh-agent refused to list keys (reply {kind})"));
    }
    let count = u32::decode(&mut rest).map_err(bad)?;
    let mut entries = Vec::new();
    // Each entry takes at least 8 bytes, so a count larger than the frame
    // can hold fails at the first missing entry.
    for _ in 0..count {
        let blob = Vec::<u8>::decode(&mut rest).map_err(bad)?;
        let comment = String::decode(&mut rest).map_err(bad)?;
        entries.push((blob, comment));
    }
    no_trailing(rest, "identity list")?;
    Ok(entries)
}

/// Parses the body of a reply to SIGN_REQUEST: one signature blob holding
/// exactly one signature, and nothing after it.
pub fn parse_signature(reply: &[u8]) -> Result<ssh_key::Signature, String> {
    let (&kind, mut rest) = reply.split_first().ok_or("empty agent reply")?;
    match kind {
        SIGN_RESPONSE => {
            let blob =
                Vec::<u8>::decode(&mut rest).map_err(|_| "malformed agent signature".to_owned())?;
            no_trailing(rest, "signature")?;
            let mut inner = blob.as_slice();
            let sig = ssh_key::Signature::decode(&mut inner)
                .map_err(|e| format!("agent signature: {e}"))?;
            no_trailing(inner, "signature blob")?;
            Ok(sig)
        }
        FAILURE => Err(
            "ssh-agent refused to sign (key removed, agent locked, or confirmation denied)".into(),
        ),
        other => Err(format!("ssh-agent sent unexpected reply {other}")),
    }
}

fn no_trailing(rest: &[u8], what: &str) -> Result<(), String> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "ssh-agent sent {} stray bytes after its {what}",
            rest.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtuO alice@laptop";

    fn answer(count: u32, entries: &[(&[u8], &str)]) -> Vec<u8> {
        let mut m = vec![IDENTITIES_ANSWER];
        count.encode(&mut m).unwrap();
        for (blob, comment) in entries {
            blob.encode(&mut m).unwrap();
            comment.encode(&mut m).unwrap();
        }
        m
    }

    #[test]
    fn identities_are_exactly_the_declared_entries() {
        let key = ssh_key::PublicKey::from_openssh(ED25519).unwrap();
        let blob = key.to_bytes().unwrap();
        let keys = parse_identities(&answer(2, &[(&blob, "a"), (b"garbage", "b")])).unwrap();
        assert_eq!(keys.len(), 1, "an unparseable key is skipped");
        assert_eq!(keys[0].key_data(), key.key_data());
        assert_eq!(keys[0].comment().as_bytes(), b"a");
        assert_eq!(parse_identities(&answer(0, &[])).unwrap(), vec![]);
        // More declared than sent, bytes after the last entry, a refusal.
        assert!(parse_identities(&answer(3, &[(&blob, "a"), (&blob, "b")])).is_err());
        assert!(parse_identities(&answer(u32::MAX, &[(&blob, "a")])).is_err());
        let mut long = answer(1, &[(&blob, "a")]);
        long.push(0);
        assert_eq!(
            parse_identities(&long),
            Err("ssh-agent sent 1 stray bytes after its identity list".into())
        );
        assert!(parse_identities(&[FAILURE]).is_err());
        assert!(parse_identities(&[]).is_err());
    }

    #[test]
    fn rsa_keys_are_asked_for_rsa_sha2_512_and_others_for_nothing() {
        const RSA: &str = include_str!("../../proto/src/testdata/userkey/rsa2048.pub");
        let flags = |key: &str| {
            let key = ssh_key::PublicKey::from_openssh(key.trim()).unwrap();
            let msg = sign_request(&key, b"data").unwrap();
            let tail: [u8; 4] = msg[msg.len() - 4..].try_into().unwrap();
            assert_eq!(msg[0], SIGN_REQUEST);
            u32::from_be_bytes(tail)
        };
        assert_eq!(flags(RSA), RSA_SHA2_512);
        assert_eq!(flags(ED25519), 0);
    }

    #[test]
    fn a_signature_reply_holds_one_signature_and_nothing_else() {
        let sig = ssh_key::Signature::new(ssh_key::Algorithm::Ed25519, vec![7u8; 64]).unwrap();
        let blob = sig.encode_vec().unwrap();
        let reply = |blob: &[u8], tail: &[u8]| {
            let mut m = vec![SIGN_RESPONSE];
            blob.encode(&mut m).unwrap();
            m.extend_from_slice(tail);
            m
        };
        assert_eq!(parse_signature(&reply(&blob, b"")).unwrap(), sig);
        assert!(parse_signature(&reply(&blob, b"x")).is_err());
        let mut padded = blob.clone();
        padded.push(0);
        assert!(parse_signature(&reply(&padded, b"")).is_err());
        assert!(parse_signature(&reply(&blob[..blob.len() - 1], b"")).is_err());
        assert!(
            parse_signature(&[FAILURE])
                .unwrap_err()
                .contains("refused to sign")
        );
    }
}
