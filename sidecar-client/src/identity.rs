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

use crate::settings::HostIdentities;

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
fn read_identity_file(path: &Path) -> Result<(zeroize::Zeroizing<String>, Option<u32>), String> {
    use std::io::Read;
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
    Ok((text, ztssh_sidecar::platform::private_mode(&meta)))
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
    /// Usable agent keys held back from this server: neither named for it
    /// in `[[hosts]]` nor the one remembered for it. A refusal then names
    /// `--try-agent-keys`.
    pub withheld: usize,
}

/// What the user's settings say to offer one server.
pub struct Choice<'a> {
    /// `--identity` (or `identity` without a `[[hosts]]` block): that key
    /// alone, as ssh's IdentitiesOnly.
    pub file: Option<&'a Path>,
    /// The `[[hosts]]` block that matched the host.
    pub mapped: Option<&'a HostIdentities>,
    /// The fingerprint of the agent key that last worked for this
    /// principal and server.
    pub remembered: Option<&'a str>,
    /// Offer the agent's other keys too (`--try-agent-keys`).
    pub try_agent_keys: bool,
    /// The server as the user named it, for messages.
    pub server: &'a str,
}

/// How to ask for the agent's other keys, as the refusal says it.
pub const TRY_AGENT_KEYS: &str =
    "pass --try-agent-keys (or set try_agent_keys = true in sidecar.toml)";

impl Identity {
    /// Chooses the identities to offer. With a key file (`choice.file`),
    /// that key alone. With a `[[hosts]]` block, its keys alone. Otherwise
    /// the agent key that last worked for this principal and server alone,
    /// or, the first time (nothing remembered), the agent's first key that
    /// ztssh accepts, alone: a server nobody vouched for learns one key and
    /// one signature, never a tour of the agent. `try_agent_keys` adds the
    /// agent's other keys after the chosen ones.
    pub fn candidates(choice: &Choice, agent_sock: Option<&Path>) -> Result<Candidates, String> {
        if let Some(path) = choice.file {
            return Ok(Candidates {
                keys: vec![Self::from_file(path, agent_sock)?],
                skipped: Vec::new(),
                withheld: 0,
            });
        }
        let (mut keys, mut skipped) = (Vec::new(), Vec::new());
        let mapped_fps: &[String] = choice.mapped.map_or(&[], |b| &b.agent_keys);
        if let Some(block) = choice.mapped {
            for f in &block.identity_files {
                match Self::from_file(f, agent_sock) {
                    Ok(k) => keys.push(k),
                    Err(e) => skipped.push(e),
                }
            }
        }
        let need_agent = choice.mapped.is_none() || !mapped_fps.is_empty() || choice.try_agent_keys;
        let (sock, held) = match agent_sock {
            Some(sock) if need_agent => (Some(sock), Agent::connect(sock)?.identities()?),
            None if choice.mapped.is_none() => return Err(
                "no identity: SSH_AUTH_SOCK is not set (or empty), so there is no ssh-agent to ask; \
                 pass --identity ~/.ssh/id_ed25519, or start ssh-agent (eval \"$(ssh-agent)\") and ssh-add your key"
                    .to_owned(),
            ),
            _ => (None, Vec::new()),
        };
        let fp_of = |k: &ssh_key::PublicKey| k.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        for fp in mapped_fps {
            if !held.iter().any(|k| fp_of(k) == *fp) {
                skipped.push(format!(
                    "{fp} (named for {} in sidecar.toml): not in ssh-agent; ssh-add it",
                    choice.server
                ));
            }
        }
        if let (None, Some(fp), false) = (choice.mapped, choice.remembered, choice.try_agent_keys)
            && !held.iter().any(|k| fp_of(k) == fp)
        {
            return Err(format!(
                "the ssh-agent key that last worked on {} ({fp}) is no longer in ssh-agent, and ztssh \
                 offers a server no other agent key unless asked: ssh-add that key, name this host's key \
                 in sidecar.toml ([[hosts]]), or {TRY_AGENT_KEYS}",
                choice.server
            ));
        }
        // First use (nothing mapped or remembered): the agent's first
        // usable key stands in for the remembered one.
        let first_use = match (choice.mapped, choice.remembered) {
            (None, None) => held
                .iter()
                .find(|k| userkey::check_key(k.key_data()).is_ok())
                .map(fp_of),
            _ => None,
        };
        let first = choice.remembered.or(first_use.as_deref());
        // Chosen: the mapped keys, or the remembered (or first) one. It goes
        // first either way.
        // With no usable key at all, every one is "chosen", so the refusal
        // lists why each cannot be used (none is offered either way).
        let chosen = |fp: &str| match (choice.mapped, first) {
            (Some(_), _) => mapped_fps.iter().any(|m| m == fp),
            (None, Some(f)) => f == fp,
            (None, None) => true,
        };
        let mut held: Vec<(bool, ssh_key::PublicKey)> =
            held.into_iter().map(|k| (chosen(&fp_of(&k)), k)).collect();
        // Stable sorts: the others keep the agent's order.
        if let Some(r) = first {
            held.sort_by_key(|(_, k)| fp_of(k) != r);
        }
        held.sort_by_key(|(c, _)| !c);
        let mut withheld = 0;
        for (is_chosen, key) in held {
            if keys
                .iter()
                .any(|k: &Self| k.public_key().key_data() == key.key_data())
            {
                continue;
            }
            match userkey::check_key(key.key_data()) {
                Err(why) if is_chosen || choice.try_agent_keys => {
                    skipped.push(format!("{}: {why}", describe(&key)))
                }
                Err(_) => {}
                Ok(()) if !is_chosen && !choice.try_agent_keys => withheld += 1,
                Ok(()) if keys.len() == MAX_KEYS_TRIED => skipped.push(format!(
                    "{}: not tried, {MAX_KEYS_TRIED} keys at most (name it with --identity)",
                    describe(&key)
                )),
                Ok(()) => keys.push(Self::Agent {
                    sock: sock.map(Path::to_owned).unwrap_or_default(),
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
            if choice.mapped.is_some() {
                return Err(format!(
                    "none of the keys sidecar.toml names for {} can be used ({why}); fix its [[hosts]] block, \
                     or {TRY_AGENT_KEYS}",
                    choice.server
                ));
            }
            return Err(format!(
                "ssh-agent holds no key ztssh can use ({why}); run ssh-add, or pass --identity"
            ));
        }
        Ok(Candidates {
            keys,
            skipped,
            withheld,
        })
    }

    fn from_file(path: &Path, agent_sock: Option<&Path>) -> Result<Self, String> {
        let (text, mode) = read_identity_file(path)?;
        let (public, private) = match ssh_key::PrivateKey::from_openssh(text.as_bytes()) {
            Ok(k) => {
                // Windows has no mode bits to judge (platform::private_mode).
                if let Some(mode) = mode {
                    warn_if_exposed(path, mode);
                }
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

    /// The ssh-agent socket, for a key held there.
    pub fn agent_sock(&self) -> Option<&Path> {
        match self {
            Self::File(_) => None,
            Self::Agent { sock, .. } => Some(sock),
        }
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
