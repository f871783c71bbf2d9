//! A CA key in a file of the CA directory (`root.key`, `host-ca.key`):
//! read strictly (0600, this user's) by `ztssh-keyfile`, zeroized on drop.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use ztssh_keyfile as keyfile;
use ztssh_proto::keys::SigningKey;

use super::Signer;

/// A key file's Ed25519 key.
pub struct FileSigner {
    key: SigningKey,
    public: ssh_key::PublicKey,
    path: PathBuf,
}

impl FileSigner {
    /// Reads the key at `path`, a PEM block labelled `label`.
    pub fn load(path: &Path, label: &'static str) -> Result<Self> {
        let key = keyfile::read_signing_key(path, label).map_err(anyhow::Error::msg)?;
        Ok(Self::new(key, path))
    }

    /// A key already in memory (just made, about to be written to `path`).
    pub fn new(key: SigningKey, path: &Path) -> Self {
        let data =
            ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(key.public().0));
        Self {
            public: ssh_key::PublicKey::new(data, ""),
            key,
            path: path.to_owned(),
        }
    }
}

impl Signer for FileSigner {
    fn public(&self) -> &ssh_key::PublicKey {
        &self.public
    }

    fn holder(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn sign_raw(&self, data: &[u8]) -> Result<ssh_key::Signature> {
        let sig = self.key.sign(b"", data);
        ssh_key::Signature::new(ssh_key::Algorithm::Ed25519, sig.to_vec()).map_err(|e| anyhow!(e))
    }
}
