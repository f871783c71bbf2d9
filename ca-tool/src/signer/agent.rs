//! A CA key held by ssh-agent (`SSH_AUTH_SOCK`), chosen by its SHA-256
//! fingerprint: the SSH_AGENTC_SIGN_REQUEST exchange of
//! draft-miller-ssh-agent, encoded with ssh-key. Any key the agent holds
//! works the same: a key file `ssh-add` loaded, a PKCS#11 token's key
//! (`ssh-add -s MODULE`), a FIDO security key (which asks for a touch on
//! each signature; [`super::Signer`] refuses a signature without one).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ssh_key::encoding::{Decode, Encode};

use super::Signer;

const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// Largest agent reply accepted.
const MAX_REPLY: usize = 256 * 1024;
/// Most identities read from one answer.
const MAX_IDENTITIES: u32 = 4096;
/// How long a signature may take: a security key waits for its touch.
const SIGN_TIMEOUT: Duration = Duration::from_secs(60);

/// A key in ssh-agent.
pub struct AgentSigner {
    sock: PathBuf,
    public: ssh_key::PublicKey,
    fingerprint: String,
}

fn socket() -> Result<PathBuf> {
    match std::env::var_os("SSH_AUTH_SOCK") {
        Some(s) if !s.is_empty() => Ok(PathBuf::from(s)),
        _ => bail!(
            "SSH_AUTH_SOCK is not set: start ssh-agent (eval \"$(ssh-agent)\") and add the CA \
             key (ssh-add KEY, or ssh-add -s PKCS11_MODULE for a token)"
        ),
    }
}

fn call(sock: &std::path::Path, msg: &[u8]) -> Result<Vec<u8>> {
    let mut s = UnixStream::connect(sock).with_context(|| {
        format!(
            "cannot reach ssh-agent at {} (SSH_AUTH_SOCK)",
            sock.display()
        )
    })?;
    s.set_read_timeout(Some(SIGN_TIMEOUT))?;
    s.set_write_timeout(Some(SIGN_TIMEOUT))?;
    let len = u32::try_from(msg.len()).map_err(|_| anyhow!("agent request too large"))?;
    let io = |e: std::io::Error| anyhow!("ssh-agent connection failed: {e}");
    s.write_all(&len.to_be_bytes()).map_err(io)?;
    s.write_all(msg).map_err(io)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(io)?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len == 0 || len > MAX_REPLY {
        bail!("ssh-agent sent a reply of {len} bytes");
    }
    let mut reply = vec![0u8; len];
    s.read_exact(&mut reply).map_err(io)?;
    Ok(reply)
}

/// The keys the agent holds (types this build cannot parse are skipped).
pub fn identities(sock: &std::path::Path) -> Result<Vec<ssh_key::PublicKey>> {
    let reply = call(sock, &[REQUEST_IDENTITIES])?;
    let bad = |_| anyhow!("ssh-agent sent a malformed identity list");
    let (&kind, mut rest) = reply
        .split_first()
        .ok_or_else(|| anyhow!("empty agent reply"))?;
    if kind != IDENTITIES_ANSWER {
        bail!("ssh-agent refused to list its keys (reply {kind})");
    }
    let count = u32::decode(&mut rest).map_err(bad)?.min(MAX_IDENTITIES);
    let mut keys = Vec::new();
    for _ in 0..count {
        let blob = Vec::<u8>::decode(&mut rest).map_err(bad)?;
        let comment = String::decode(&mut rest).map_err(bad)?;
        if let Ok(mut key) = ssh_key::PublicKey::from_bytes(&blob) {
            key.set_comment(comment);
            keys.push(key);
        }
    }
    Ok(keys)
}

impl AgentSigner {
    /// The agent's key whose fingerprint is `fingerprint` (`SHA256:…`).
    pub fn open(fingerprint: &str) -> Result<Self> {
        let sock = socket()?;
        let keys = identities(&sock)?;
        let Some(public) = keys
            .into_iter()
            .find(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string() == fingerprint)
        else {
            bail!(
                "ssh-agent at {} holds no key {fingerprint}: add it (ssh-add KEY, ssh-add -K for a \
                 security key, ssh-add -s MODULE for a token) and check with ssh-add -l",
                sock.display()
            );
        };
        super::Algorithm::of(public.key_data())?;
        Ok(Self {
            sock,
            public,
            fingerprint: fingerprint.to_owned(),
        })
    }
}

impl Signer for AgentSigner {
    fn public(&self) -> &ssh_key::PublicKey {
        &self.public
    }

    fn holder(&self) -> String {
        format!("agent:{}", self.fingerprint)
    }

    fn sign_raw(&self, data: &[u8]) -> Result<ssh_key::Signature> {
        let enc = |e: ssh_key::encoding::Error| anyhow!("cannot encode the sign request: {e}");
        let blob = self.public.to_bytes().map_err(|e| anyhow!(e))?;
        let mut msg = vec![SIGN_REQUEST];
        blob.encode(&mut msg).map_err(enc)?;
        data.encode(&mut msg).map_err(enc)?;
        0u32.encode(&mut msg).map_err(enc)?;
        let reply = call(&self.sock, &msg)?;
        let (&kind, mut rest) = reply
            .split_first()
            .ok_or_else(|| anyhow!("empty agent reply"))?;
        match kind {
            SIGN_RESPONSE => {
                let blob = Vec::<u8>::decode(&mut rest)
                    .map_err(|_| anyhow!("malformed agent signature"))?;
                if !rest.is_empty() {
                    bail!("ssh-agent sent bytes after its signature");
                }
                let mut inner = blob.as_slice();
                let sig = ssh_key::Signature::decode(&mut inner)
                    .map_err(|e| anyhow!("ssh-agent's signature: {e}"))?;
                if !inner.is_empty() {
                    bail!("ssh-agent sent bytes after its signature");
                }
                Ok(sig)
            }
            FAILURE => bail!(
                "ssh-agent refused to sign with {} (a security key not touched in time, a \
                 confirmation declined, a token locked or removed?)",
                self.fingerprint
            ),
            other => bail!("ssh-agent answered the sign request with message {other}"),
        }
    }
}
