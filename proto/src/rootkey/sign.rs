//! The signing side of [`super`]: whatever signs for a root
//! ([`RootSigner`]), and a hybrid root's ML-DSA-65 half ([`MlDsaKey`],
//! [`HybridSigner`]).

use std::fmt;
use std::sync::Arc;

use super::{RootKey, RootSignature, hybrid_context, mldsa_message};
use crate::keys::{Secret, SignerFailed};
use crate::labels;
use crate::primitives;

/// Whatever signs for a root: any Ed25519 [`crate::keys::Signer`] (a key in
/// memory, an ssh-agent, a token), or a [`HybridSigner`].
pub trait RootSigner {
    /// The root it signs for.
    fn root_key(&self) -> RootKey;
    /// Signs `context || msg` as that root's algorithm requires.
    fn try_sign_root(&self, context: &[u8], msg: &[u8]) -> Result<RootSignature, SignerFailed>;
}

impl<T: crate::keys::Signer + ?Sized> RootSigner for T {
    fn root_key(&self) -> RootKey {
        RootKey::Ed25519(self.public())
    }

    fn try_sign_root(&self, context: &[u8], msg: &[u8]) -> Result<RootSignature, SignerFailed> {
        self.try_sign(context, msg).map(RootSignature::Ed25519)
    }
}

/// An ML-DSA-65 signing key: the post-quantum half of a hybrid root. Made
/// from a 32-byte seed (FIPS 204's ξ); zeroized on drop, redacted in
/// `Debug`, not `Clone`.
pub struct MlDsaKey {
    inner: primitives::MlDsaSigner,
    seed: Secret<32>,
}

impl MlDsaKey {
    /// A fresh key from the driver's random source.
    pub fn generate(rng: &mut (impl crate::keys::CryptoRng + ?Sized)) -> Self {
        Self::from_seed(Secret::random(rng))
    }

    /// Rebuilds the key from its seed.
    pub fn from_seed(seed: Secret<32>) -> Self {
        Self {
            inner: primitives::MlDsaSigner::from_seed(seed.expose()),
            seed,
        }
    }

    /// The seed, for the CA's encrypted key file.
    pub fn seed(&self) -> &Secret<32> {
        &self.seed
    }

    /// The encoded verifying key.
    pub fn public(&self) -> Vec<u8> {
        self.inner.public()
    }
}

impl fmt::Debug for MlDsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MlDsaKey(<secret>)")
    }
}

/// A hybrid root's signer: its Ed25519 half wherever it is held, and its
/// ML-DSA-65 half in memory.
pub struct HybridSigner<'a> {
    ed25519: &'a dyn crate::keys::Signer,
    mldsa: &'a MlDsaKey,
    mldsa_public: Arc<[u8]>,
}

impl<'a> HybridSigner<'a> {
    /// Pairs the two halves.
    pub fn new(ed25519: &'a dyn crate::keys::Signer, mldsa: &'a MlDsaKey) -> Self {
        Self {
            ed25519,
            mldsa,
            mldsa_public: Arc::from(mldsa.public()),
        }
    }
}

impl RootSigner for HybridSigner<'_> {
    fn root_key(&self) -> RootKey {
        RootKey::Hybrid {
            ed25519: self.ed25519.public(),
            mldsa: Arc::clone(&self.mldsa_public),
        }
    }

    fn try_sign_root(&self, context: &[u8], msg: &[u8]) -> Result<RootSignature, SignerFailed> {
        let ctx = hybrid_context(context);
        let ed25519 = self.ed25519.try_sign(&ctx, msg)?;
        let m = mldsa_message(&ctx, msg, &ed25519);
        let mldsa = self
            .mldsa
            .inner
            .sign(&m, labels::MLDSA_CONTEXT)
            .ok_or_else(|| SignerFailed("ML-DSA-65 refused the context string".into()))?;
        Ok(RootSignature::Hybrid {
            ed25519,
            mldsa: mldsa.into(),
        })
    }
}
