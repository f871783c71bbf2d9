//! A minimal ssh-agent client (draft-miller-ssh-agent): list identities and
//! sign. Enough for ztssh; no key export is ever needed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ssh_key::encoding::{Decode, Encode};

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const FAILURE: u8 = 5;
/// Largest agent reply accepted.
const MAX_REPLY: usize = 256 * 1024;

/// A connection to ssh-agent.
pub struct Agent {
    sock: UnixStream,
}

impl Agent {
    /// Connects to the agent at `path` (usually `$SSH_AUTH_SOCK`).
    pub fn connect(path: &Path) -> Result<Self, String> {
        let sock = UnixStream::connect(path)
            .map_err(|e| format!("cannot reach ssh-agent at {}: {e}", path.display()))?;
        let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
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
        let reply = self.call(&[REQUEST_IDENTITIES])?;
        let bad = |_| "ssh-agent sent a malformed identity list".to_owned();
        let (&kind, mut rest) = reply.split_first().ok_or("empty agent reply")?;
        if kind != IDENTITIES_ANSWER {
            return Err(format!("ssh-agent refused to list keys (reply {kind})"));
        }
        let count = u32::decode(&mut rest).map_err(bad)?;
        let mut keys = Vec::new();
        for _ in 0..count.min(1024) {
            let blob = Vec::<u8>::decode(&mut rest).map_err(bad)?;
            let comment = String::decode(&mut rest).map_err(bad)?;
            // Keys of types this build cannot parse (e.g. RSA) are skipped.
            if let Ok(mut key) = ssh_key::PublicKey::from_bytes(&blob) {
                key.set_comment(comment);
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Asks the agent to sign `data` with `key`.
    pub fn sign(
        &mut self,
        key: &ssh_key::PublicKey,
        data: &[u8],
    ) -> Result<ssh_key::Signature, String> {
        let blob = key.to_bytes().map_err(|e| e.to_string())?;
        let mut msg = vec![SIGN_REQUEST];
        blob.encode(&mut msg).map_err(|e| e.to_string())?;
        data.encode(&mut msg).map_err(|e| e.to_string())?;
        0u32.encode(&mut msg).map_err(|e| e.to_string())?;
        let reply = self.call(&msg)?;
        let (&kind, mut rest) = reply.split_first().ok_or("empty agent reply")?;
        match kind {
            SIGN_RESPONSE => {
                let sig_blob = Vec::<u8>::decode(&mut rest)
                    .map_err(|_| "malformed agent signature".to_owned())?;
                ssh_key::Signature::decode(&mut sig_blob.as_slice())
                    .map_err(|e| format!("agent signature: {e}"))
            }
            FAILURE => Err(
                "ssh-agent refused to sign (key removed, agent locked, or confirmation denied)"
                    .into(),
            ),
            other => Err(format!("ssh-agent sent unexpected reply {other}")),
        }
    }
}
