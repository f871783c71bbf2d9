//! Key material. Private keys live in wrappers that zeroize on drop, print as
//! `<secret>`, are not `Clone`, and compare in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{AuthError, Malformed};
use crate::primitives;

/// The random source the core draws from: the driver's, passed in to each
/// call that makes a key, a serial or a nonce. The core never reads the
/// operating system's random source itself. Binaries pass the OS's CSPRNG
/// (`rand_core::UnwrapErr(getrandom::SysRng)`); virtual-time tests and
/// fuzz targets pass a seeded one, which makes them fully deterministic.
pub use rand_core::CryptoRng;

/// `N` bytes from `rng`.
pub fn random_bytes<const N: usize>(rng: &mut (impl CryptoRng + ?Sized)) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

/// A deterministic random source for tests and fuzz targets (feature
/// `testkit`): ChaCha20 from a seed, so a run repeats exactly. Never in
/// binaries.
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub struct SeededRng(chacha20::ChaCha20Rng);

#[cfg(any(test, feature = "testkit"))]
impl SeededRng {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(rand_core::SeedableRng::seed_from_u64(seed))
    }
}

#[cfg(any(test, feature = "testkit"))]
impl rand_core::TryRng for SeededRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.0.try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0.try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.try_fill_bytes(dst)
    }
}

#[cfg(any(test, feature = "testkit"))]
impl rand_core::TryCryptoRng for SeededRng {}

/// The unit tests' random source: each test thread's own [`SeededRng`]
/// from a fixed seed, so every test is deterministic however the tests are
/// scheduled.
#[cfg(test)]
pub(crate) struct TestRng;

#[cfg(test)]
thread_local! {
    static TEST_RNG: std::cell::RefCell<SeededRng> = std::cell::RefCell::new(SeededRng::new(20));
}

#[cfg(test)]
impl rand_core::TryRng for TestRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        TEST_RNG.with_borrow_mut(|r| r.try_next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        TEST_RNG.with_borrow_mut(|r| r.try_next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        TEST_RNG.with_borrow_mut(|r| r.try_fill_bytes(dst))
    }
}

#[cfg(test)]
impl rand_core::TryCryptoRng for TestRng {}

/// `N` secret bytes: zeroed on drop, redacted in `Debug`, compared in constant time.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// Wraps bytes (the caller's copy should be zeroized by the caller).
    pub fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Fresh random secret.
    pub fn random(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let mut s = Self([0; N]);
        rng.fill_bytes(&mut s.0);
        s
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
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let seed = Secret::<32>::random(rng);
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

/// Why a key held outside this process (ssh-agent, a PKCS#11 token) did
/// not sign: the holder's own words, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignerFailed(pub String);

/// Whatever holds a CA's Ed25519 key: a [`SigningKey`] in memory, or (in
/// `ztssh-ca`) an ssh-agent or a PKCS#11 token the key never leaves. It
/// signs `context || msg`, as [`SigningKey::sign`] does, and may fail
/// (a wrong PIN, a token unplugged, a touch refused).
pub trait Signer {
    /// The public half, which the signed object names as its issuer.
    fn public(&self) -> PublicKey;
    /// Signs `context || msg`.
    fn try_sign(&self, context: &[u8], msg: &[u8]) -> Result<[u8; 64], SignerFailed>;
}

impl Signer for SigningKey {
    fn public(&self) -> PublicKey {
        SigningKey::public(self)
    }

    fn try_sign(&self, context: &[u8], msg: &[u8]) -> Result<[u8; 64], SignerFailed> {
        Ok(self.sign(context, msg))
    }
}

/// Why an object could not be signed: it is not well formed, or its
/// signer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The object itself is refused.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The key's holder did not sign.
    #[error(transparent)]
    Signer(#[from] SignerFailed),
}

impl SignError {
    /// The error of a signer that cannot fail ([`SigningKey`]).
    pub(crate) fn into_malformed(self, what: &'static str) -> Malformed {
        match self {
            Self::Malformed(m) => m,
            Self::Signer(_) => Malformed::Invalid {
                what,
                why: "the signer failed",
            },
        }
    }
}

/// A Noise (X25519) static key pair.
pub struct NoiseKeypair {
    private: Secret<32>,
    public: [u8; 32],
}

impl NoiseKeypair {
    /// A fresh random key pair.
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        Self::from_private(Secret::random(rng))
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
        let k = SigningKey::generate(&mut TestRng);
        let sig = k.sign(b"ctx-a", b"msg");
        assert!(k.public().verify(b"ctx-a", b"msg", &sig, "t").is_ok());
        assert!(k.public().verify(b"ctx-b", b"msg", &sig, "t").is_err());
        assert!(k.public().verify(b"ctx-a", b"msg2", &sig, "t").is_err());
    }

    #[test]
    fn secrets_are_redacted_and_round_trip() {
        let k = SigningKey::generate(&mut TestRng);
        let seed = k.to_seed();
        assert_eq!(format!("{seed:?}"), "<secret>");
        assert!(!format!("{k:?}").contains(&hex(seed.expose())));
        assert_eq!(SigningKey::from_seed(&seed).public(), k.public());
        let n = NoiseKeypair::generate(&mut TestRng);
        let again = NoiseKeypair::from_private(Secret::new(*n.private().expose()));
        assert_eq!(again.public(), n.public());
    }
}
