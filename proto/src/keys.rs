//! Key material. Private keys live in wrappers that zeroize on drop, print as
//! `<secret>`, are not `Clone`, and compare in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{AuthError, Malformed};
use crate::primitives;

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// Only if the OS has no working random source, where no key may be made.
#[allow(clippy::expect_used)]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source failed");
    out
}

/// `N` secret bytes: zeroed on drop, redacted in `Debug`, compared in constant time.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// Wraps bytes (the caller's copy should be zeroized by the caller).
    pub fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Fresh random secret.
    pub fn random() -> Self {
        Self(random_bytes())
    }

    /// Reveals the bytes for use in a cryptographic call.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<const N: usize> PartialEq for Secret<N> {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// An Ed25519 public key (root, Sub-CA or session key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Verifies `sig` over `context || msg`.
    pub fn verify(
        &self,
        context: &[u8],
        msg: &[u8],
        sig: &[u8; 64],
        what: &'static str,
    ) -> Result<(), AuthError> {
        if primitives::ed_verify(&self.0, &signed_message(context, msg), sig) {
            Ok(())
        } else {
            Err(AuthError::BadSignature(what))
        }
    }

    /// Short fingerprint for humans: first 8 bytes of SHA-256, hex.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.0);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

fn signed_message(context: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + msg.len());
    m.extend_from_slice(context);
    m.extend_from_slice(msg);
    m
}

/// An Ed25519 signing key. Every signature carries a context string.
pub struct SigningKey(primitives::EdSigner);

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let seed = Secret::<32>::random();
        Self::from_seed(&seed)
    }

    /// Rebuilds a key from its 32-byte seed.
    pub fn from_seed(seed: &Secret<32>) -> Self {
        Self(primitives::EdSigner::from_seed(seed.expose()))
    }

    /// The seed, for writing to a 0600 key file.
    pub fn to_seed(&self) -> Secret<32> {
        self.0.seed()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.public())
    }

    /// Signs `context || msg`.
    pub fn sign(&self, context: &[u8], msg: &[u8]) -> [u8; 64] {
        self.0.sign(&signed_message(context, msg))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey(<secret>, public {})",
            self.public().fingerprint()
        )
    }
}

/// A Noise (X25519) static key pair.
pub struct NoiseKeypair {
    private: Secret<32>,
    public: [u8; 32],
}

impl NoiseKeypair {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        Self::from_private(Secret::random())
    }

    /// Rebuilds the pair from the private key.
    pub fn from_private(private: Secret<32>) -> Self {
        let public = primitives::x25519_public(private.expose());
        Self { private, public }
    }

    /// The private scalar.
    pub fn private(&self) -> &Secret<32> {
        &self.private
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

impl fmt::Debug for NoiseKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoiseKeypair(<secret>, public {})", hex(&self.public))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies a slice into an array, or reports it malformed.
pub fn to_array<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], Malformed> {
    bytes.try_into().map_err(|_| Malformed::Invalid {
        what,
        why: "wrong key length",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_separates_signatures() {
        let k = SigningKey::generate();
        let sig = k.sign(b"ctx-a", b"msg");
        assert!(k.public().verify(b"ctx-a", b"msg", &sig, "t").is_ok());
        assert!(k.public().verify(b"ctx-b", b"msg", &sig, "t").is_err());
        assert!(k.public().verify(b"ctx-a", b"msg2", &sig, "t").is_err());
    }

    #[test]
    fn secrets_are_redacted_and_round_trip() {
        let k = SigningKey::generate();
        let seed = k.to_seed();
        assert_eq!(format!("{seed:?}"), "<secret>");
        assert!(!format!("{k:?}").contains(&hex(seed.expose())));
        assert_eq!(SigningKey::from_seed(&seed).public(), k.public());
        let n = NoiseKeypair::generate();
        let again = NoiseKeypair::from_private(Secret::new(*n.private().expose()));
        assert_eq!(again.public(), n.public());
    }
}
