//! The user's identity: an OpenSSH key file or a key held by ssh-agent.
//! Either produces an SSHSIG over what the handshake asks to be signed.

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, SshSig};
use ztssh_proto::labels::{SSHSIG_NAMESPACE_HANDSHAKE, SSHSIG_NAMESPACE_RENEW};

use ztssh_sidecar::agent::Agent;

/// Largest identity file read (an RSA-16384 key is about 13 kB).
const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// What is wrong with an identity file's permission bits, if anything.
fn exposure(mode: u32) -> Option<&'static str> {
    match (mode & 0o040 != 0, mode & 0o004 != 0) {
        (false, false) => None,
        (true, false) => Some("its group"),
        (false, true) => Some("every user"),
        (true, true) => Some("its group and every user"),
    }
}

/// Reads the identity file, warning on stderr when other users can read
/// it (the mode is checked on the descriptor the key is read from).
fn read_identity_file(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let cannot = |e: std::io::Error| format!("cannot read identity {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "cannot read identity {}: not a regular file",
            path.display()
        ));
    }
    if let Some(who) = exposure(meta.mode()) {
        eprintln!(
            "ztssh: warning: identity {} can be read by {} (mode {:o}); anyone who reads it \
             can log in as you: run: chmod 600 {}",
            path.display(),
            who,
            meta.mode() & 0o777,
            path.display()
        );
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    file.take(MAX_IDENTITY_FILE)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    Ok(text)
}

/// Where the user's key lives.
pub enum Identity {
    /// An unencrypted private key file.
    File(Box<ssh_key::PrivateKey>),
    /// A key in ssh-agent.
    Agent {
        sock: PathBuf,
        key: ssh_key::PublicKey,
    },
}

impl Identity {
    /// Chooses the identity: `--identity FILE` if given (through the agent
    /// when the file is passphrase-protected), else the agent's first
    /// Ed25519 or ECDSA key.
    pub fn resolve(file: Option<&Path>, agent_sock: Option<&Path>) -> Result<Self, String> {
        match file {
            Some(path) => Self::from_file(path, agent_sock),
            None => {
                let sock = agent_sock.ok_or(
                    "no identity: pass --identity ~/.ssh/id_ed25519 or start ssh-agent and ssh-add your key",
                )?;
                let keys = Agent::connect(sock)?.identities()?;
                let key = keys
                    .into_iter()
                    .find(|k| {
                        matches!(
                            k.algorithm(),
                            ssh_key::Algorithm::Ed25519 | ssh_key::Algorithm::Ecdsa { .. }
                        )
                    })
                    .ok_or("ssh-agent holds no Ed25519 or ECDSA key; run ssh-add")?;
                Ok(Self::Agent {
                    sock: sock.to_owned(),
                    key,
                })
            }
        }
    }

    fn from_file(path: &Path, agent_sock: Option<&Path>) -> Result<Self, String> {
        let text = read_identity_file(path)?;
        let key = ssh_key::PrivateKey::from_openssh(text.as_bytes())
            .map_err(|e| format!("cannot read identity {}: {e}", path.display()))?;
        if !key.is_encrypted() {
            return Ok(Self::File(Box::new(key)));
        }
        let public = key.public_key().clone();
        let sock = agent_sock.ok_or_else(|| {
            format!("{} is passphrase-protected; load it with ssh-add so ztssh can use it through ssh-agent", path.display())
        })?;
        let held = Agent::connect(sock)?.identities()?;
        if !held.iter().any(|k| k.key_data() == public.key_data()) {
            return Err(format!(
                "{} is passphrase-protected and not in ssh-agent; run: ssh-add {}",
                path.display(),
                path.display()
            ));
        }
        Ok(Self::Agent {
            sock: sock.to_owned(),
            key: public,
        })
    }

    /// The public key sent to the proxy.
    pub fn public_key(&self) -> &ssh_key::PublicKey {
        match self {
            Self::File(k) => k.public_key(),
            Self::Agent { key, .. } => key,
        }
    }

    /// Signs `msg` as an SSHSIG in the handshake namespace.
    pub fn sign(&self, msg: &[u8]) -> Result<SshSig, String> {
        self.sign_in(SSHSIG_NAMESPACE_HANDSHAKE, msg)
    }

    /// Signs renewal data as an encoded SSHSIG in the renewal namespace.
    pub fn sign_renewal(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        use ssh_key::encoding::Encode;
        let sig = self.sign_in(SSHSIG_NAMESPACE_RENEW, msg)?;
        sig.encode_vec().map_err(|e| e.to_string())
    }

    fn sign_in(&self, ns: &str, msg: &[u8]) -> Result<SshSig, String> {
        match self {
            Self::File(k) => k
                .sign(ns, HashAlg::Sha512, msg)
                .map_err(|e| format!("cannot sign with identity: {e}")),
            Self::Agent { sock, key } => {
                let data =
                    SshSig::signed_data(ns, HashAlg::Sha512, msg).map_err(|e| e.to_string())?;
                let sig = Agent::connect(sock)?.sign(key, &data)?;
                SshSig::new(key.key_data().clone(), ns, HashAlg::Sha512, sig)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exposure;

    #[test]
    fn group_and_world_readable_modes_are_named() {
        assert_eq!(exposure(0o100600), None);
        assert_eq!(exposure(0o100400), None);
        assert_eq!(exposure(0o100640), Some("its group"));
        assert_eq!(exposure(0o100604), Some("every user"));
        assert_eq!(exposure(0o100644), Some("its group and every user"));
    }
}
