//! The user's identity: an OpenSSH key file or a key held by ssh-agent.
//! Either produces an SSHSIG over what the handshake asks to be signed,
//! checked here before it is sent, so a key or signature the proxy would
//! refuse is explained on the spot.

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, SshSig};
use ztssh_proto::control::MAX_SSHSIG;
use ztssh_proto::labels::{SSHSIG_NAMESPACE_HANDSHAKE, SSHSIG_NAMESPACE_RENEW};
use ztssh_proto::userkey::{self, describe};

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

/// Reads the identity file and its permission bits (checked on the
/// descriptor the key is read from).
fn read_identity_file(path: &Path) -> Result<(zeroize::Zeroizing<String>, u32), String> {
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
    let mut text = zeroize::Zeroizing::new(String::new());
    file.take(MAX_IDENTITY_FILE)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    Ok((text, meta.mode()))
}

/// Warns on stderr when other users can read a private key file.
fn warn_if_exposed(path: &Path, mode: u32) {
    if let Some(who) = exposure(mode) {
        eprintln!(
            "ztssh: warning: identity {} can be read by {} (mode {:o}); anyone who reads it \
             can log in as you: run: chmod 600 {}",
            path.display(),
            who,
            mode & 0o777,
            path.display()
        );
    }
}
/// Most ssh-agent keys tried for one connection. Each key the proxy
/// refuses counts as a failed authentication against this machine's
/// address (three in a row reach the proxy's default penalty threshold),
/// so past this many the user is asked to name the key with --identity.
pub const MAX_KEYS_TRIED: usize = 3;

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
    /// Whether the key is a security key (each signature needs a touch).
    pub fn is_security_key(&self) -> bool {
        matches!(
            self.public_key().algorithm(),
            ssh_key::Algorithm::SkEd25519 | ssh_key::Algorithm::SkEcdsaSha2NistP256
        )
    }

    /// Whether ssh-agent holds the key (it can be removed from there).
    pub fn is_agent(&self) -> bool {
        matches!(self, Self::Agent { .. })
    }
}

/// The keys to try, in order, and what was left out and why.
pub struct Candidates {
    /// Keys to try, at most [`MAX_KEYS_TRIED`].
    pub keys: Vec<Identity>,
    /// Agent keys not tried, each with the reason.
    pub skipped: Vec<String>,
}

impl Identity {
    /// Chooses the identities to try. With `--identity FILE`, that key
    /// alone, as ssh's IdentitiesOnly (through the agent when the file is
    /// passphrase-protected or is the `.pub` half). Without it, every key
    /// in ssh-agent that ztssh accepts, in the agent's order, except that
    /// the key with fingerprint `first` (the one that last worked for this
    /// principal and server) comes first.
    pub fn candidates(
        file: Option<&Path>,
        agent_sock: Option<&Path>,
        first: Option<&str>,
    ) -> Result<Candidates, String> {
        if let Some(path) = file {
            return Ok(Candidates {
                keys: vec![Self::from_file(path, agent_sock)?],
                skipped: Vec::new(),
            });
        }
        let sock = agent_sock.ok_or(
            "no identity: SSH_AUTH_SOCK is not set (or empty), so there is no ssh-agent to ask; \
             pass --identity ~/.ssh/id_ed25519, or start ssh-agent (eval \"$(ssh-agent)\") and ssh-add your key",
        )?;
        let mut held = Agent::connect(sock)?.identities()?;
        if let Some(fp) = first {
            // A stable sort: the others keep the agent's order.
            held.sort_by_key(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string() != fp);
        }
        let (mut keys, mut skipped) = (Vec::new(), Vec::new());
        for key in held {
            match userkey::check_key(key.key_data()) {
                Err(why) => skipped.push(format!("{}: {why}", describe(&key))),
                Ok(()) if keys.len() == MAX_KEYS_TRIED => skipped.push(format!(
                    "{}: not tried, {MAX_KEYS_TRIED} keys at most (name it with --identity)",
                    describe(&key)
                )),
                Ok(()) => keys.push(Self::Agent {
                    sock: sock.to_owned(),
                    key,
                }),
            }
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                "it holds no keys".to_owned()
            } else {
                skipped.join("; ")
            };
            return Err(format!(
                "ssh-agent holds no key ztssh can use ({why}); run ssh-add, or pass --identity"
            ));
        }
        Ok(Candidates { keys, skipped })
    }

    fn from_file(path: &Path, agent_sock: Option<&Path>) -> Result<Self, String> {
        let (text, mode) = read_identity_file(path)?;
        let (public, private) = match ssh_key::PrivateKey::from_openssh(text.as_bytes()) {
            Ok(k) => {
                warn_if_exposed(path, mode);
                (k.public_key().clone(), Some(k))
            }
            // The public half names a key held by ssh-agent.
            Err(e) => match ssh_key::PublicKey::from_openssh(text.trim()) {
                Ok(k) => (k, None),
                Err(_) => return Err(format!("cannot read identity {}: {e}", path.display())),
            },
        };
        userkey::check_key(public.key_data())
            .map_err(|why| format!("cannot use identity {}: {why}", path.display()))?;
        let is_sk = matches!(
            public.algorithm(),
            ssh_key::Algorithm::SkEd25519 | ssh_key::Algorithm::SkEcdsaSha2NistP256
        );
        let is_public = private.is_none();
        match private {
            Some(k) if !k.is_encrypted() && !is_sk => return Ok(Self::File(Box::new(k))),
            _ => {}
        }
        let why = if is_sk {
            "is a security key"
        } else if is_public {
            "is a public key"
        } else {
            "is passphrase-protected"
        };
        let sock = agent_sock.ok_or_else(|| {
            format!(
                "{} {why}; load it with ssh-add so ztssh can use it through ssh-agent",
                path.display()
            )
        })?;
        let held = Agent::connect(sock)?.identities()?;
        if !held.iter().any(|k| k.key_data() == public.key_data()) {
            return Err(format!(
                "{} {why} and its key is not in ssh-agent; run: ssh-add {}",
                path.display(),
                path.display().to_string().trim_end_matches(".pub")
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

    /// Signs renewal data in the renewal namespace, encoded for a RENEW.
    pub fn sign_renewal(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let sig = self.sign_in(SSHSIG_NAMESPACE_RENEW, msg)?;
        userkey::encode_sig(&sig, MAX_SSHSIG).map_err(|e| e.to_string())
    }

    fn sign_in(&self, ns: &str, msg: &[u8]) -> Result<SshSig, String> {
        let sig = match self {
            Self::File(k) => k
                .sign(ns, HashAlg::Sha512, msg)
                .map_err(|e| format!("cannot sign with identity: {e}"))?,
            Self::Agent { sock, key } => {
                let data =
                    SshSig::signed_data(ns, HashAlg::Sha512, msg).map_err(|e| e.to_string())?;
                let sig = Agent::connect(sock)?.sign(key, &data)?;
                SshSig::new(key.key_data().clone(), ns, HashAlg::Sha512, sig)
                    .map_err(|e| e.to_string())?
            }
        };
        // The proxy's own check, here first: a signature it would refuse
        // is explained instead of ending in a closed connection.
        let key = self.public_key();
        userkey::verify_sshsig(key, ns, msg, &sig).map_err(|why| {
            let from = match self {
                Self::File(_) => "the key file's",
                Self::Agent { .. } => "ssh-agent's",
            };
            format!("{from} signature with {} is unusable: {why}", describe(key))
        })?;
        Ok(sig)
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
