//! Where a CA key lives, and the one way ztssh-ca signs with it.
//!
//! Every signing command (licences, revocation lists, access lists,
//! delegations, host certificates, the root's certification of a host CA)
//! takes its key through [`Signer`]: given `context || message`, it
//! returns the signature and says its algorithm. Three holders:
//!
//! - [`file`]: a key file in the CA directory (`root.key`, today's default);
//! - [`agent`]: a key ssh-agent holds, chosen by fingerprint (`--agent`),
//!   including a key a PKCS#11 token lent it (`ssh-add -s`) and a FIDO
//!   `sk-ssh-ed25519` key, which asks for a touch on each signature;
//! - [`pkcs11`]: a key in a PKCS#11 token or HSM (`--pkcs11 MODULE --token
//!   LABEL --key LABEL`), created there non-extractable by `init`.
//!
//! The formats verify Ed25519 (a key file, a token's key), Ed25519 with
//! ML-DSA-65 (a hybrid root, `init --pq`, whose ML-DSA half is [`pq`]'s
//! encrypted file), or a FIDO key's sk-ssh-ed25519 with its flags and
//! counter: [`RootSigning`] lends a signer to proto's formats in the form
//! its root declares, and refuses any other algorithm clearly. Every
//! signature is checked against the signer's public key before it is used
//! (a confused agent or token is caught here, not by every proxy).

use std::path::PathBuf;

use anyhow::{Result, bail};
use ssh_key::public::KeyData;
use ztssh_proto::keys::{PublicKey, SignerFailed};
use ztssh_proto::rootkey::{HybridSigner, MlDsaKey, RootKey, RootSignature, RootSigner};

pub mod agent;
pub mod file;
pub mod pkcs11;
pub mod pq;

/// Opens the root's signer as `dir/ca.toml` records it, and checks it
/// holds the key `root.pub` names. A hybrid root's signer carries its
/// ML-DSA half too ([`pq::open`] asks for the passphrase).
pub fn root(dir: &std::path::Path) -> Result<Box<dyn Signer>> {
    let config = crate::caconfig::CaConfig::load(dir)?;
    let signer = config.root.open(ztssh_proto::labels::pem::ROOT_KEY)?;
    let pinned = dir.join("root.pub");
    if pinned.exists() {
        let pinned = ztssh_keyfile::read_root_public(&pinned).map_err(anyhow::Error::msg)?;
        if signer.ed25519_public()? != pinned.id() {
            bail!(
                "{} holds key {}, not the root {} that {}/root.pub names: the wrong token, key \
                 label or agent key",
                signer.holder(),
                signer.public().fingerprint(ssh_key::HashAlg::Sha256),
                pinned.fingerprint(),
                dir.display()
            );
        }
        if pinned.is_hybrid() {
            let mldsa = pq::open(dir, &pinned)?;
            return Ok(Box::new(HybridHeld { ed: signer, mldsa }));
        }
    } else if dir.join(pq::KEY_FILE).exists() {
        // A hybrid root's Ed25519 half alone would sign objects every
        // hybrid pin refuses, and spend their versions: refused (the
        // issue 25 review's F2).
        bail!(
            "{}/root.pub is missing, and {}/{} says this root is hybrid: its Ed25519 half alone \
             must not sign; restore root.pub from your backup (or from a proxy's \
             root_public_key) and run the command again",
            dir.display(),
            dir.display(),
            pq::KEY_FILE
        );
    }
    Ok(signer)
}

/// A hybrid root's Ed25519 half, wherever it is held, with its ML-DSA half.
struct HybridHeld {
    ed: Box<dyn Signer>,
    mldsa: MlDsaKey,
}

impl Signer for HybridHeld {
    fn public(&self) -> &ssh_key::PublicKey {
        self.ed.public()
    }

    fn holder(&self) -> String {
        format!("{} + {}", self.ed.holder(), pq::KEY_FILE)
    }

    fn sign_raw(&self, data: &[u8]) -> Result<ssh_key::Signature> {
        self.ed.sign_raw(data)
    }

    fn mldsa(&self) -> Option<&MlDsaKey> {
        Some(&self.mldsa)
    }
}

/// Which holder, as `ca.toml` records it and the flags name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// A key file.
    File(PathBuf),
    /// ssh-agent (`SSH_AUTH_SOCK`), the key with this SHA-256 fingerprint.
    Agent {
        /// `SHA256:...`, as `ssh-add -l` prints it.
        fingerprint: String,
    },
    /// A PKCS#11 token.
    Pkcs11 {
        /// The module (`.so`).
        module: PathBuf,
        /// The token's label.
        token: String,
        /// The key's label (`CKA_LABEL`).
        key: String,
    },
}

impl Spec {
    /// What the audit log and messages call it.
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => format!("file:{}", p.display()),
            Self::Agent { fingerprint } => format!("agent:{fingerprint}"),
            Self::Pkcs11 { token, key, .. } => format!("pkcs11:{token}/{key}"),
        }
    }

    /// Opens the holder (for PKCS#11: logs in with the PIN).
    pub fn open(&self, pem_label: &'static str) -> Result<Box<dyn Signer>> {
        Ok(match self {
            Self::File(p) => Box::new(file::FileSigner::load(p, pem_label)?),
            Self::Agent { fingerprint } => Box::new(agent::AgentSigner::open(fingerprint)?),
            Self::Pkcs11 { module, token, key } => {
                Box::new(pkcs11::Pkcs11Signer::open(module, token, key, false)?)
            }
        })
    }
}

/// A signature's algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (RFC 8032), what today's formats verify.
    Ed25519,
    /// A FIDO security key's Ed25519 (`sk-ssh-ed25519@openssh.com`): the
    /// authenticator signs `SHA-256(application) || flags || counter ||
    /// SHA-256(message)`.
    SkEd25519,
    /// ECDSA over NIST P-256 with SHA-256.
    EcdsaP256,
}

impl Algorithm {
    /// OpenSSH's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ssh-ed25519",
            Self::SkEd25519 => "sk-ssh-ed25519@openssh.com",
            Self::EcdsaP256 => "ecdsa-sha2-nistp256",
        }
    }

    /// The algorithm of a key, or a clear refusal.
    pub fn of(key: &KeyData) -> Result<Self> {
        Ok(match key {
            KeyData::Ed25519(_) => Self::Ed25519,
            KeyData::SkEd25519(_) => Self::SkEd25519,
            KeyData::Ecdsa(ssh_key::public::EcdsaPublicKey::NistP256(_)) => Self::EcdsaP256,
            other => bail!(
                "a {} key cannot be a ztssh CA key: use Ed25519 (or, once the formats carry \
                 them, sk-ssh-ed25519 or ECDSA P-256)",
                other.algorithm()
            ),
        })
    }
}

/// A security key's flags and counter, signed with its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkAssertion {
    /// Authenticator flags (bit 0: user presence; bit 2: user verified).
    pub flags: u8,
    /// The authenticator's signature counter.
    pub counter: u32,
}

/// User presence: the key was touched.
pub const SK_USER_PRESENT: u8 = 0x01;

/// A signature and its algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The signature as OpenSSH encodes its bytes: 64 bytes for Ed25519;
    /// 64 bytes then flags and counter for sk-ssh-ed25519; the `mpint r,
    /// mpint s` blob for ECDSA.
    pub bytes: Vec<u8>,
    /// For a security key, its flags and counter.
    pub sk: Option<SkAssertion>,
}

/// Whatever holds a CA key.
pub trait Signer {
    /// The key's public half.
    fn public(&self) -> &ssh_key::PublicKey;
    /// Where it is held, for the audit log (`file:…`, `agent:SHA256:…`,
    /// `pkcs11:TOKEN/KEY`).
    fn holder(&self) -> String;
    /// Signs `data` as its holder does, in OpenSSH's encoding, unchecked.
    fn sign_raw(&self, data: &[u8]) -> Result<ssh_key::Signature>;
    /// A hybrid root's ML-DSA-65 half; `None` for every other key.
    fn mldsa(&self) -> Option<&MlDsaKey> {
        None
    }
}

impl dyn Signer + '_ {
    /// Signs `data` (`context || message`), checks the signature under the
    /// public key, and for a security key requires user presence.
    pub fn sign(&self, data: &[u8]) -> Result<Signature> {
        use ed25519_dalek::Verifier;
        let sig = self.sign_raw(data)?;
        let algorithm = Algorithm::of(self.public().key_data())?;
        if sig.algorithm() != self.public().algorithm() {
            bail!(
                "{} answered with a {} signature for a {} key",
                self.holder(),
                sig.algorithm(),
                self.public().algorithm()
            );
        }
        if self.public().key_data().verify(data, &sig).is_err() {
            bail!(
                "{} returned a signature that does not verify under its key {}: refusing it",
                self.holder(),
                self.public().fingerprint(ssh_key::HashAlg::Sha256)
            );
        }
        let bytes = sig.as_bytes().to_vec();
        let sk = match algorithm {
            Algorithm::SkEd25519 => Some(sk_trailer(&bytes)?),
            _ => None,
        };
        if let Some(a) = sk
            && a.flags & SK_USER_PRESENT == 0
        {
            bail!(
                "the security key behind {} signed without user presence (flags {:#04x}: \
                 nobody touched it): refusing the signature; touch the key when it blinks, \
                 and do not add it with `ssh-add -O no-touch-required`",
                self.holder(),
                a.flags
            );
        }
        Ok(Signature {
            algorithm,
            bytes,
            sk,
        })
    }

    /// The Ed25519 public key, for today's formats; refuses others clearly.
    ///
    /// A FIDO `sk-ssh-ed25519` key's Ed25519 key counts: it is the key its
    /// signatures verify under, and objects name it as their issuer.
    pub fn ed25519_public(&self) -> Result<PublicKey> {
        match self.public().key_data() {
            KeyData::Ed25519(k) => Ok(PublicKey(k.0)),
            KeyData::SkEd25519(k) => Ok(PublicKey(k.public_key().0)),
            other => bail!(
                "{} holds a {} key; licences, lists and delegations verify Ed25519 (a key \
                 file, a token's key or a FIDO sk-ssh-ed25519 key), alone or with ML-DSA-65: \
                 use an Ed25519 key",
                self.holder(),
                other.algorithm()
            ),
        }
    }

    /// The root this signer signs for, as `root.pub` records it.
    pub fn root_public(&self) -> Result<RootKey> {
        Ok(RootSigning::new(self)?.root_key())
    }
}

/// The flags and counter at the end of a security key's signature.
fn sk_trailer(bytes: &[u8]) -> Result<SkAssertion> {
    let tail: [u8; 5] = bytes
        .len()
        .checked_sub(5)
        .and_then(|at| bytes.get(at..))
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("security key signature too short"))?;
    let [flags, c @ ..] = tail;
    Ok(SkAssertion {
        flags,
        counter: u32::from_be_bytes(c),
    })
}

/// A [`Signer`]'s plain Ed25519 signatures for proto's formats (the
/// Ed25519 root, and a hybrid root's Ed25519 half).
pub struct Ed25519Root<'a> {
    inner: &'a dyn Signer,
    public: PublicKey,
}

impl<'a> Ed25519Root<'a> {
    /// Refuses a signer whose key is not Ed25519.
    pub fn new(inner: &'a dyn Signer) -> Result<Self> {
        Ok(Self {
            public: inner.ed25519_public()?,
            inner,
        })
    }

    /// Where the key is held.
    pub fn holder(&self) -> String {
        self.inner.holder()
    }
}

impl ztssh_proto::keys::Signer for Ed25519Root<'_> {
    fn public(&self) -> PublicKey {
        self.public
    }

    fn try_sign(&self, context: &[u8], msg: &[u8]) -> Result<[u8; 64], SignerFailed> {
        let mut data = Vec::with_capacity(context.len() + msg.len());
        data.extend_from_slice(context);
        data.extend_from_slice(msg);
        let sig = self
            .inner
            .sign(&data)
            .map_err(|e| SignerFailed(format!("{e:#}")))?;
        match (sig.algorithm, <[u8; 64]>::try_from(sig.bytes.as_slice())) {
            (Algorithm::Ed25519, Ok(s)) => Ok(s),
            _ => Err(SignerFailed(format!(
                "{} signed with {} where a plain Ed25519 signature was needed",
                self.inner.holder(),
                sig.algorithm.name()
            ))),
        }
    }
}

/// A root's signer as proto's formats take it: Ed25519 alone, or both
/// halves of a hybrid root.
pub struct RootSigning<'a> {
    ed: Ed25519Root<'a>,
    mldsa: Option<&'a MlDsaKey>,
    /// A FIDO security key's application, when the key is one.
    sk_application: Option<std::sync::Arc<str>>,
}

impl<'a> RootSigning<'a> {
    /// Refuses a signer whose key is not Ed25519 (or a FIDO key's).
    pub fn new(inner: &'a dyn Signer) -> Result<Self> {
        let sk_application = match inner.public().key_data() {
            KeyData::SkEd25519(k) => Some(std::sync::Arc::from(k.application())),
            _ => None,
        };
        if sk_application.is_some() && inner.mldsa().is_some() {
            bail!(
                "{} is a FIDO security key: a hybrid root's Ed25519 half must be a plain \
                 Ed25519 key (a file, ssh-agent or a PKCS#11 token)",
                inner.holder()
            );
        }
        Ok(Self {
            ed: Ed25519Root::new(inner)?,
            mldsa: inner.mldsa(),
            sk_application,
        })
    }

    /// Signs as a FIDO security key: PROTOCOL.u2f's signature, its flags
    /// and counter (the holder has checked the touch and the signature).
    fn sign_sk(&self, context: &[u8], msg: &[u8]) -> Result<RootSignature, SignerFailed> {
        let data = [context, msg].concat();
        let sig = self
            .ed
            .inner
            .sign(&data)
            .map_err(|e| SignerFailed(format!("{e:#}")))?;
        let (Some(a), Some(ed25519)) = (
            sig.sk,
            sig.bytes
                .get(..64)
                .and_then(|b| <[u8; 64]>::try_from(b).ok()),
        ) else {
            return Err(SignerFailed(format!(
                "{} answered with a {} signature, not a security key's",
                self.holder(),
                sig.algorithm.name()
            )));
        };
        Ok(RootSignature::SkEd25519 {
            ed25519,
            flags: a.flags,
            counter: a.counter,
        })
    }

    /// Where the key is held.
    pub fn holder(&self) -> String {
        self.ed.holder()
    }
}

impl RootSigner for RootSigning<'_> {
    fn root_key(&self) -> RootKey {
        match (self.mldsa, &self.sk_application) {
            (Some(k), _) => HybridSigner::new(&self.ed, k).root_key(),
            (None, Some(app)) => RootKey::SkEd25519 {
                key: self.ed.public,
                application: std::sync::Arc::clone(app),
            },
            (None, None) => self.ed.root_key(),
        }
    }

    fn try_sign_root(&self, context: &[u8], msg: &[u8]) -> Result<RootSignature, SignerFailed> {
        match (self.mldsa, &self.sk_application) {
            (Some(k), _) => HybridSigner::new(&self.ed, k).try_sign_root(context, msg),
            (None, Some(_)) => self.sign_sk(context, msg),
            (None, None) => self.ed.try_sign_root(context, msg),
        }
    }
}

/// A [`Signer`] as the host CA key of OpenSSH host certificates.
pub struct HostCaSigner(pub Box<dyn Signer>);

impl ztssh_proto::hostca::HostSigner for HostCaSigner {
    fn public_key(&self) -> KeyData {
        self.0.public().key_data().clone()
    }

    fn sign_ssh(&self, data: &[u8]) -> Result<ssh_key::Signature, SignerFailed> {
        let sig = self
            .0
            .sign(data)
            .map_err(|e| SignerFailed(format!("{e:#}")))?;
        let alg = self.0.public().algorithm();
        ssh_key::Signature::new(alg, sig.bytes).map_err(|e| SignerFailed(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
