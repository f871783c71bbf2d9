//! The public-key operations, in one place: Ed25519 for ztssh's own
//! signatures, X25519 for the Noise handshake and rekeys, ML-KEM-768, and
//! SSHSIG for users' keys.
//!
//! A fuzzing build swaps them for cheap, deterministic stand-ins (module
//! `standin`), so that fuzz targets behind a handshake run at tens of
//! thousands of executions a second instead of thousands. It takes two
//! switches, so neither can turn them on by accident: `cfg(fuzzing)`, which
//! cargo-fuzz sets for every crate it compiles, and this crate's
//! `crypto-standins` feature, which only `proto/fuzz/Cargo.toml` enables.
//! The stand-ins keep each operation's shape (lengths, what must agree with
//! what, which inputs are refused) but none of its security: every binary
//! refuses to compile while [`CRYPTO_STANDINS`] is true, and CI checks that
//! it does (`proto/fuzz/smoke.sh`).

/// True in a fuzzing build, whose public-key operations are insecure
/// stand-ins. Each binary asserts at compile time that it is false. Set
/// by whichever implementation is compiled, so it cannot disagree with it.
#[cfg(not(all(fuzzing, feature = "crypto-standins")))]
pub use real::CRYPTO_STANDINS;
#[cfg(all(fuzzing, feature = "crypto-standins"))]
pub use standin::CRYPTO_STANDINS;

#[cfg(not(all(fuzzing, feature = "crypto-standins")))]
pub(crate) use real::*;
#[cfg(all(fuzzing, feature = "crypto-standins"))]
pub(crate) use standin::*;

/// Snow's resolver, with the 32 bytes the caller drew from the driver's
/// RNG for the handshake's ephemeral key as snow's only random source.
/// Snow asks for random bytes only to write the `e` token, once per side in
/// this pattern; a second request fails the handshake instead of reaching
/// for the operating system.
struct Seeded {
    ephemeral: crate::keys::Secret<32>,
    inner: snow::resolvers::FallbackResolver,
}

impl snow::resolvers::CryptoResolver for Seeded {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        let copy = crate::keys::Secret::new(*self.ephemeral.expose());
        Some(Box::new(OneShot(Some(copy))))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        self.inner.resolve_dh(choice)
    }
    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        self.inner.resolve_hash(choice)
    }
    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        self.inner.resolve_cipher(choice)
    }
}

/// Hands out one 32-byte key, once.
struct OneShot(Option<crate::keys::Secret<32>>);

impl snow::types::Random for OneShot {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self.0.take() {
            Some(key) if dest.len() == 32 => {
                dest.copy_from_slice(key.expose());
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

#[cfg(not(all(fuzzing, feature = "crypto-standins")))]
mod real {
    use ed25519_dalek::Signer;
    use ml_kem::kem::{Decapsulate, Encapsulate, Kem, KeyExport};
    use ml_kem::{MlKem768, TryKeyInit};
    use zeroize::Zeroizing;

    use crate::keys::{CryptoRng, Secret};

    /// The real operations.
    pub const CRYPTO_STANDINS: bool = false;

    /// An Ed25519 signing key (zeroized on drop by ed25519-dalek).
    pub(crate) struct EdSigner(ed25519_dalek::SigningKey);

    impl EdSigner {
        pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
            Self(ed25519_dalek::SigningKey::from_bytes(seed))
        }

        pub(crate) fn seed(&self) -> Secret<32> {
            Secret::new(self.0.to_bytes())
        }

        pub(crate) fn public(&self) -> [u8; 32] {
            self.0.verifying_key().to_bytes()
        }

        pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
            self.0.sign(msg).to_bytes()
        }
    }

    /// Strict Ed25519 verification (no small-order keys, canonical `s`).
    pub(crate) fn ed_verify(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public) else {
            return false;
        };
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }

    /// An ML-DSA-65 signing key (FIPS 204; zeroized on drop by ml-dsa).
    pub(crate) struct MlDsaSigner(Box<ml_dsa::SigningKey<ml_dsa::MlDsa65>>);

    impl MlDsaSigner {
        /// `ML-DSA.KeyGen_internal` from the 32-byte seed ξ.
        pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
            let xi = Zeroizing::new(ml_dsa::B32::from(*seed));
            Self(Box::new(ml_dsa::SigningKey::from_seed(&xi)))
        }

        /// The encoded verifying key ([`crate::rootkey::MLDSA65_PUBLIC_LEN`] bytes).
        pub(crate) fn public(&self) -> Vec<u8> {
            self.0.expanded_key().verifying_key().encode().to_vec()
        }

        /// Signs `msg` with the FIPS 204 context `ctx` (deterministic
        /// variant), or None when `ctx` is longer than 255 bytes.
        pub(crate) fn sign(&self, msg: &[u8], ctx: &[u8]) -> Option<Vec<u8>> {
            let sig = self.0.expanded_key().sign_deterministic(msg, ctx).ok()?;
            Some(sig.encode().to_vec())
        }
    }

    /// `ML-DSA.Verify` of an encoded ML-DSA-65 signature; false for wrong
    /// lengths and non-canonical encodings.
    pub(crate) fn mldsa_verify(public: &[u8], msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
        let Ok(public) = ml_dsa::EncodedVerifyingKey::<ml_dsa::MlDsa65>::try_from(public) else {
            return false;
        };
        let Ok(sig) = ml_dsa::EncodedSignature::<ml_dsa::MlDsa65>::try_from(sig) else {
            return false;
        };
        let Some(sig) = ml_dsa::Signature::<ml_dsa::MlDsa65>::decode(&sig) else {
            return false;
        };
        ml_dsa::VerifyingKey::<ml_dsa::MlDsa65>::decode(&public).verify_with_context(msg, ctx, &sig)
    }

    /// The X25519 public key of a (clamped) secret scalar.
    pub(crate) fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
        curve25519_dalek::MontgomeryPoint::mul_base_clamped(*secret).to_bytes()
    }

    /// X25519; the caller refuses an all-zero result (a low-order key).
    pub(crate) fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(
            curve25519_dalek::MontgomeryPoint(*public)
                .mul_clamped(*secret)
                .to_bytes(),
        )
    }

    /// An ML-KEM-768 decapsulation key (zeroized on drop by ml-kem).
    pub(crate) struct KemSecret(ml_kem::DecapsulationKey<MlKem768>);

    /// A fresh ML-KEM-768 key pair: the secret and the encapsulation key.
    pub(crate) fn kem_generate(rng: &mut (impl CryptoRng + ?Sized)) -> (KemSecret, Vec<u8>) {
        let (dk, ek) = MlKem768::generate_keypair_from_rng(&mut &mut *rng);
        (KemSecret(dk), ek.to_bytes().to_vec())
    }

    /// Encapsulates to `ek`: the ciphertext and the shared secret, or None
    /// when `ek` is not a valid key.
    pub(crate) fn kem_encapsulate(
        ek: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Option<(Vec<u8>, Zeroizing<[u8; 32]>)> {
        let ek = ml_kem::EncapsulationKey::<MlKem768>::new_from_slice(ek).ok()?;
        let (ct, ss) = ek.encapsulate_with_rng(rng);
        let ss = Zeroizing::new(ss);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(ss.as_slice());
        Some((ct.to_vec(), out))
    }

    impl KemSecret {
        /// Decapsulates `ct`, or None when it has the wrong length. (A
        /// wrong ciphertext of the right length yields an unrelated secret,
        /// as ML-KEM's implicit rejection does.)
        pub(crate) fn decapsulate(&self, ct: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
            let ss = Zeroizing::new(self.0.decapsulate_slice(ct).ok()?);
            let mut out = Zeroizing::new([0u8; 32]);
            out.copy_from_slice(ss.as_slice());
            Some(out)
        }
    }

    /// The Noise resolver: ring's ciphers, snow's own X25519, and
    /// `ephemeral` as the only random bytes snow gets (its ephemeral key).
    pub(crate) fn noise_resolver(
        ephemeral: Secret<32>,
    ) -> Box<dyn snow::resolvers::CryptoResolver + Send> {
        Box::new(super::Seeded {
            ephemeral,
            inner: snow::resolvers::FallbackResolver::new(
                Box::new(snow::resolvers::RingResolver),
                Box::new(snow::resolvers::DefaultResolver),
            ),
        })
    }

    /// Checks a user's SSHSIG.
    pub(crate) fn sshsig_verify(
        key: &ssh_key::PublicKey,
        namespace: &str,
        data: &[u8],
        sig: &ssh_key::SshSig,
    ) -> bool {
        key.verify(namespace, data, sig).is_ok()
    }

    /// Signs `data` in `namespace` with a user's private key (SHA-512).
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn sshsig_sign(
        key: &ssh_key::PrivateKey,
        namespace: &str,
        data: &[u8],
    ) -> Option<ssh_key::SshSig> {
        key.sign(namespace, ssh_key::HashAlg::Sha512, data).ok()
    }

    /// Checks an OpenSSH certificate's signature under the CA key it names
    /// (whether that CA is trusted is the caller's check, made first).
    pub(crate) fn user_cert_verify(cert: &ssh_key::Certificate) -> bool {
        cert.verify_signature().is_ok()
    }
}

/// Insecure stand-ins with the real operations' shapes, for fuzzing only:
/// - Ed25519: the public key is a hash of the seed, a signature is
///   SHA-512(public key || message). Anyone can forge one; only the fuzz
///   harness's honest peers bother to. Signatures are compared in constant
///   time, so libFuzzer's comparison tracing cannot hand the fuzzer the
///   expected tag. Any 32 bytes are a key (the real verifier refuses
///   non-points and small-order keys; no target relies on that).
/// - X25519: the public key is the secret itself, and the shared secret is
///   the XOR of the two (so both sides agree). An all-zero public key gives
///   the all-zero result, as a low-order point does in X25519, so the
///   callers' refusal of it stays reachable (as does a public key equal to
///   the secret, which no honest peer sends).
/// - ML-KEM-768: the encapsulation key is a 32-byte seed followed by
///   zeros (any other tail is refused, as a non-canonical key is); the
///   ciphertext is 32 random bytes followed by zeros; the shared secret is
///   a hash of the seed and the whole ciphertext, so a ciphertext of the
///   right length always decapsulates, and a changed byte anywhere gives
///   another secret (implicit rejection).
/// - ML-DSA-65: the public key is a hash of the seed followed by zeros;
///   a signature is SHA-512 over the key, the FIPS 204 context and the
///   message, followed by zeros to the real length (compared in constant
///   time, whole, so a changed byte anywhere is refused).
/// - SSHSIG: the signature bytes are SHA-512 over the key, namespace and
///   message; a security key's flags and counter follow them and are
///   covered too.
#[cfg(all(fuzzing, feature = "crypto-standins"))]
mod standin {
    use sha2::{Digest, Sha256, Sha512};
    use ssh_key::encoding::Encode;
    use zeroize::Zeroizing;

    use subtle::ConstantTimeEq;

    use crate::handshake::{KEM_CT_LEN, KEM_EK_LEN};
    use crate::keys::{CryptoRng, Secret, random_bytes};

    /// Insecure stand-ins.
    pub const CRYPTO_STANDINS: bool = true;

    pub(crate) struct EdSigner {
        seed: Secret<32>,
        public: [u8; 32],
    }

    impl EdSigner {
        pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
            let public = Sha256::new()
                .chain_update(b"ztssh fuzzing stand-in: ed25519 public")
                .chain_update(seed)
                .finalize()
                .into();
            Self {
                seed: Secret::new(*seed),
                public,
            }
        }

        pub(crate) fn seed(&self) -> Secret<32> {
            Secret::new(*self.seed.expose())
        }

        pub(crate) fn public(&self) -> [u8; 32] {
            self.public
        }

        pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
            ed_tag(&self.public, msg)
        }
    }

    fn ed_tag(public: &[u8; 32], msg: &[u8]) -> [u8; 64] {
        Sha512::new()
            .chain_update(b"ztssh fuzzing stand-in: ed25519")
            .chain_update(public)
            .chain_update(msg)
            .finalize()
            .into()
    }

    pub(crate) fn ed_verify(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        bool::from(ed_tag(public, msg)[..].ct_eq(&sig[..]))
    }

    /// ML-DSA-65 stand-in: the public key is a hash of the seed followed by
    /// zeros; a signature is SHA-512(public || ctx || msg) followed by zeros.
    pub(crate) struct MlDsaSigner {
        public: Vec<u8>,
    }

    impl MlDsaSigner {
        pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
            let mut public = vec![0u8; crate::rootkey::MLDSA65_PUBLIC_LEN];
            let head: [u8; 32] = Sha256::new()
                .chain_update(b"ztssh fuzzing stand-in: ml-dsa-65 public")
                .chain_update(seed)
                .finalize()
                .into();
            public[..32].copy_from_slice(&head);
            Self { public }
        }

        pub(crate) fn public(&self) -> Vec<u8> {
            self.public.clone()
        }

        pub(crate) fn sign(&self, msg: &[u8], ctx: &[u8]) -> Option<Vec<u8>> {
            (ctx.len() <= 255).then(|| mldsa_tag(&self.public, msg, ctx))
        }
    }

    fn mldsa_tag(public: &[u8], msg: &[u8], ctx: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; crate::rootkey::MLDSA65_SIG_LEN];
        let tag: [u8; 64] = Sha512::new()
            .chain_update(b"ztssh fuzzing stand-in: ml-dsa-65")
            .chain_update(public)
            .chain_update([u8::try_from(ctx.len()).unwrap_or(u8::MAX)])
            .chain_update(ctx)
            .chain_update(msg)
            .finalize()
            .into();
        sig[..64].copy_from_slice(&tag);
        sig
    }

    pub(crate) fn mldsa_verify(public: &[u8], msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
        public.len() == crate::rootkey::MLDSA65_PUBLIC_LEN
            && bool::from(mldsa_tag(public, msg, ctx)[..].ct_eq(sig))
    }

    pub(crate) fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
        *secret
    }

    pub(crate) fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        if public.iter().all(|&b| b == 0) {
            return out;
        }
        for ((o, a), b) in out.iter_mut().zip(secret).zip(public) {
            *o = a ^ b;
        }
        out
    }

    pub(crate) struct KemSecret(Secret<32>);

    pub(crate) fn kem_generate(rng: &mut (impl CryptoRng + ?Sized)) -> (KemSecret, Vec<u8>) {
        let seed = Secret::<32>::random(rng);
        let mut ek = vec![0u8; KEM_EK_LEN];
        ek[..32].copy_from_slice(seed.expose());
        (KemSecret(seed), ek)
    }

    fn kem_ss(seed: &[u8], ct: &[u8]) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(
            Sha256::new()
                .chain_update(b"ztssh fuzzing stand-in: ml-kem")
                .chain_update(seed)
                .chain_update(ct)
                .finalize()
                .into(),
        )
    }

    pub(crate) fn kem_encapsulate(
        ek: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Option<(Vec<u8>, Zeroizing<[u8; 32]>)> {
        if ek.len() != KEM_EK_LEN || ek[32..].iter().any(|&b| b != 0) {
            return None;
        }
        let m: [u8; 32] = random_bytes(rng);
        let mut ct = vec![0u8; KEM_CT_LEN];
        ct[..32].copy_from_slice(&m);
        let ss = kem_ss(&ek[..32], &ct);
        Some((ct, ss))
    }

    impl KemSecret {
        pub(crate) fn decapsulate(&self, ct: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
            if ct.len() != KEM_CT_LEN {
                return None;
            }
            Some(kem_ss(self.0.expose(), ct))
        }
    }

    /// Stand-in X25519 for snow: the public key is the private key.
    struct StandinDh {
        key: Zeroizing<[u8; 32]>,
    }

    impl snow::types::Dh for StandinDh {
        fn name(&self) -> &'static str {
            "25519"
        }
        fn pub_len(&self) -> usize {
            32
        }
        fn priv_len(&self) -> usize {
            32
        }
        fn set(&mut self, privkey: &[u8]) {
            let n = privkey.len().min(32);
            self.key[..n].copy_from_slice(&privkey[..n]);
        }
        fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
            rng.try_fill_bytes(&mut self.key[..])
        }
        fn pubkey(&self) -> &[u8] {
            &self.key[..]
        }
        fn privkey(&self) -> &[u8] {
            &self.key[..]
        }
        /// As snow's own X25519: the first 32 bytes of `pubkey` (snow may
        /// pass a longer buffer), and no check of the result.
        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
            let public: [u8; 32] = pubkey
                .get(..32)
                .and_then(|p| p.try_into().ok())
                .ok_or(snow::Error::Dh)?;
            let shared = x25519(&self.key, &public);
            out.get_mut(..32)
                .ok_or(snow::Error::Dh)?
                .copy_from_slice(&shared[..]);
            Ok(())
        }
    }

    /// A cheap, non-cryptographic stand-in for the handshake's SHA-256
    /// (MixHash, HMAC and HKDF inside snow): four 64-bit lanes, each word
    /// multiplied in, then mixed across lanes. Deterministic, and any
    /// changed byte changes the result, so both sides of an honest
    /// handshake agree and a tampered one fails; hashing the padded
    /// handshake messages and snow's dozens of HMACs were most of an
    /// honest handshake's cost once the public-key operations were cheap.
    #[derive(Default)]
    struct StandinHash {
        lanes: [u64; 4],
        words: usize,
        tail: [u8; 8],
        tail_len: usize,
        total: u64,
    }

    impl StandinHash {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;

        fn absorb(&mut self, word: u64) {
            let lane = &mut self.lanes[self.words % 4];
            *lane = (*lane ^ word).wrapping_mul(Self::K).rotate_left(29);
            self.words += 1;
        }

        fn fmix(mut x: u64) -> u64 {
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            x ^ (x >> 33)
        }
    }

    impl snow::types::Hash for StandinHash {
        fn name(&self) -> &'static str {
            "SHA256"
        }
        fn block_len(&self) -> usize {
            64
        }
        fn hash_len(&self) -> usize {
            32
        }
        fn reset(&mut self) {
            *self = Self::default();
        }
        fn input(&mut self, mut data: &[u8]) {
            self.total = self.total.wrapping_add(data.len() as u64);
            if self.tail_len > 0 {
                let n = (8 - self.tail_len).min(data.len());
                self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
                self.tail_len += n;
                data = &data[n..];
                if self.tail_len < 8 {
                    return;
                }
                self.absorb(u64::from_le_bytes(self.tail));
                self.tail_len = 0;
            }
            let mut words = data.chunks_exact(8);
            for w in &mut words {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                self.absorb(u64::from_le_bytes(b));
            }
            let rest = words.remainder();
            self.tail[..rest.len()].copy_from_slice(rest);
            self.tail_len = rest.len();
        }
        fn result(&mut self, out: &mut [u8]) {
            let mut last = [0u8; 8];
            last[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            self.absorb(u64::from_le_bytes(last));
            self.absorb(self.total);
            let l = self.lanes;
            for (i, o) in out.chunks_mut(8).take(4).enumerate() {
                let x =
                    Self::fmix(l[i] ^ l[(i + 1) % 4].rotate_left(17) ^ l[(i + 2) % 4] ^ i as u64);
                o.copy_from_slice(&x.to_le_bytes()[..o.len()]);
            }
        }
    }

    struct StandinResolver(super::Seeded);

    impl snow::resolvers::CryptoResolver for StandinResolver {
        fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
            self.0.resolve_rng()
        }
        fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
            match choice {
                snow::params::DHChoice::Curve25519 => Some(Box::new(StandinDh {
                    key: Zeroizing::new([0; 32]),
                })),
                other => self.0.resolve_dh(other),
            }
        }
        fn resolve_hash(
            &self,
            choice: &snow::params::HashChoice,
        ) -> Option<Box<dyn snow::types::Hash>> {
            match choice {
                snow::params::HashChoice::SHA256 => Some(Box::<StandinHash>::default()),
                other => self.0.resolve_hash(other),
            }
        }
        fn resolve_cipher(
            &self,
            choice: &snow::params::CipherChoice,
        ) -> Option<Box<dyn snow::types::Cipher>> {
            self.0.resolve_cipher(choice)
        }
    }

    pub(crate) fn noise_resolver(
        ephemeral: Secret<32>,
    ) -> Box<dyn snow::resolvers::CryptoResolver + Send> {
        Box::new(StandinResolver(super::Seeded {
            ephemeral,
            inner: snow::resolvers::FallbackResolver::new(
                Box::new(snow::resolvers::RingResolver),
                Box::new(snow::resolvers::DefaultResolver),
            ),
        }))
    }

    fn is_sk(key: &ssh_key::public::KeyData) -> bool {
        matches!(
            key,
            ssh_key::public::KeyData::SkEd25519(_)
                | ssh_key::public::KeyData::SkEcdsaSha2NistP256(_)
        )
    }

    fn sshsig_tag(
        key: &ssh_key::public::KeyData,
        namespace: &str,
        data: &[u8],
        trailer: &[u8],
    ) -> Option<[u8; 64]> {
        let key = key.encode_vec().ok()?;
        Some(
            Sha512::new()
                .chain_update(b"ztssh fuzzing stand-in: sshsig")
                .chain_update((key.len() as u64).to_be_bytes())
                .chain_update(&key)
                .chain_update((namespace.len() as u64).to_be_bytes())
                .chain_update(namespace.as_bytes())
                .chain_update(trailer)
                .chain_update(data)
                .finalize()
                .into(),
        )
    }

    /// A stand-in certificate signature: SHA-512 over the CA key and the
    /// signed prefix (the encoding up to the signature).
    pub(crate) fn user_cert_verify(cert: &ssh_key::Certificate) -> bool {
        let (Ok(whole), Ok(sig)) = (cert.to_bytes(), cert.signature().encode_vec()) else {
            return false;
        };
        let Some(signed) = whole
            .len()
            .checked_sub(sig.len() + 4)
            .and_then(|n| whole.get(..n))
        else {
            return false;
        };
        user_cert_tag(cert.signature_key(), signed)
            .is_some_and(|tag| bool::from(tag[..].ct_eq(cert.signature().as_bytes())))
    }

    /// The stand-in signature of CA `ca` over a certificate's `signed`
    /// prefix (what the fuzz targets sign with).
    pub(crate) fn user_cert_tag(ca: &ssh_key::public::KeyData, signed: &[u8]) -> Option<[u8; 64]> {
        let ca = ca.encode_vec().ok()?;
        Some(
            Sha512::new()
                .chain_update(b"ztssh fuzzing stand-in: user certificate")
                .chain_update((ca.len() as u64).to_be_bytes())
                .chain_update(&ca)
                .chain_update(signed)
                .finalize()
                .into(),
        )
    }

    pub(crate) fn sshsig_verify(
        key: &ssh_key::PublicKey,
        namespace: &str,
        data: &[u8],
        sig: &ssh_key::SshSig,
    ) -> bool {
        if sig.namespace() != namespace {
            return false;
        }
        let bytes = sig.signature_bytes();
        let trailer_len = if is_sk(key.key_data()) { 5 } else { 0 };
        if bytes.len() != 64 + trailer_len {
            return false;
        }
        let (tag, trailer) = bytes.split_at(64);
        sshsig_tag(key.key_data(), namespace, data, trailer)
            .is_some_and(|t| bool::from(t[..].ct_eq(tag)))
    }

    /// Stand-in SSHSIGs for Ed25519 and RSA keys held in memory (ssh-key
    /// refuses stand-in bytes as an ECDSA signature). An RSA one is marked
    /// rsa-sha2-512, as the real signer's is.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn sshsig_sign(
        key: &ssh_key::PrivateKey,
        namespace: &str,
        data: &[u8],
    ) -> Option<ssh_key::SshSig> {
        let key_data = key.public_key().key_data().clone();
        let tag = sshsig_tag(&key_data, namespace, data, &[])?;
        let algorithm = match key.algorithm() {
            ssh_key::Algorithm::Rsa { .. } => ssh_key::Algorithm::Rsa {
                hash: Some(ssh_key::HashAlg::Sha512),
            },
            other => other,
        };
        let signature = ssh_key::Signature::new(algorithm, tag.to_vec()).ok()?;
        ssh_key::SshSig::new(key_data, namespace, ssh_key::HashAlg::Sha512, signature).ok()
    }
}

/// The contract both implementations keep: `cargo test` runs it against
/// the real one, and `proto/fuzz/smoke.sh` against the stand-ins.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{KEM_CT_LEN, KEM_EK_LEN};
    use crate::keys::TestRng;
    use crate::keys::random_bytes;

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let a = EdSigner::from_seed(&[1; 32]);
        let b = EdSigner::from_seed(&[2; 32]);
        let sig = a.sign(b"msg");
        assert!(ed_verify(&a.public(), b"msg", &sig));
        assert!(!ed_verify(&a.public(), b"msh", &sig));
        assert!(!ed_verify(&b.public(), b"msg", &sig));
        assert_eq!(EdSigner::from_seed(a.seed().expose()).public(), a.public());
    }

    #[test]
    fn mldsa_signatures_verify_only_for_their_key_context_and_message() {
        use crate::rootkey::{MLDSA65_PUBLIC_LEN, MLDSA65_SIG_LEN};
        let a = MlDsaSigner::from_seed(&[1; 32]);
        let b = MlDsaSigner::from_seed(&[2; 32]);
        let (pa, pb) = (a.public(), b.public());
        assert_eq!(pa.len(), MLDSA65_PUBLIC_LEN);
        assert_eq!(MlDsaSigner::from_seed(&[1; 32]).public(), pa);
        let sig = a.sign(b"msg", b"ctx").expect("sign");
        assert_eq!(sig.len(), MLDSA65_SIG_LEN);
        assert!(mldsa_verify(&pa, b"msg", b"ctx", &sig));
        assert!(!mldsa_verify(&pa, b"msh", b"ctx", &sig));
        assert!(!mldsa_verify(&pa, b"msg", b"ctz", &sig));
        assert!(!mldsa_verify(&pb, b"msg", b"ctx", &sig));
        assert!(!mldsa_verify(
            &pa,
            b"msg",
            b"ctx",
            &sig[..MLDSA65_SIG_LEN - 1]
        ));
        assert!(!mldsa_verify(&pa[..100], b"msg", b"ctx", &sig));
        let mut bad = sig.clone();
        bad[MLDSA65_SIG_LEN - 1] ^= 1;
        assert!(!mldsa_verify(&pa, b"msg", b"ctx", &bad));
        assert!(
            a.sign(b"msg", &[0; 256]).is_none(),
            "FIPS 204 caps the context at 255 bytes"
        );
    }

    /// Which implementation these tests ran against.
    #[test]
    fn the_flag_names_the_implementation_compiled() {
        let s: [u8; 32] = random_bytes(&mut TestRng);
        // Only the stand-in's public key is its secret.
        assert_eq!(CRYPTO_STANDINS, x25519_public(&s) == s);
    }

    #[test]
    fn x25519_shared_secrets_agree() {
        let (a, b): ([u8; 32], [u8; 32]) = (random_bytes(&mut TestRng), random_bytes(&mut TestRng));
        let ab = x25519(&a, &x25519_public(&b));
        let ba = x25519(&b, &x25519_public(&a));
        assert_eq!(*ab, *ba);
        assert!(ab.iter().any(|&x| x != 0));
        // The all-zero public key (a low-order point) gives the all-zero
        // result, which the callers refuse.
        assert!(x25519(&a, &[0; 32]).iter().all(|&x| x == 0));
    }

    #[test]
    fn kem_secrets_agree_and_bad_input_is_refused() {
        let (dk, ek) = kem_generate(&mut TestRng);
        assert_eq!(ek.len(), KEM_EK_LEN);
        let (ct, ss) = kem_encapsulate(&ek, &mut TestRng).expect("encapsulate");
        assert_eq!(ct.len(), KEM_CT_LEN);
        assert_eq!(*dk.decapsulate(&ct).expect("decapsulate"), *ss);
        assert!(dk.decapsulate(&ct[1..]).is_none());
        assert!(kem_encapsulate(&ek[1..], &mut TestRng).is_none());
        // A key whose coefficients are out of range (all 0xff) is refused.
        assert!(kem_encapsulate(&vec![0xff; KEM_EK_LEN], &mut TestRng).is_none());
        // A wrong ciphertext of the right length decapsulates to another
        // secret, wherever the change is.
        for at in [0, KEM_CT_LEN / 2, KEM_CT_LEN - 1] {
            let mut bad = ct.clone();
            bad[at] ^= 1;
            assert_ne!(*dk.decapsulate(&bad).expect("implicit rejection"), *ss);
        }
    }

    #[test]
    fn sshsig_signatures_verify_only_in_their_namespace() {
        let key = ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[3; 32]));
        let sig = sshsig_sign(&key, "ns", b"data").expect("sign");
        assert!(sshsig_verify(key.public_key(), "ns", b"data", &sig));
        assert!(!sshsig_verify(key.public_key(), "other", b"data", &sig));
        assert!(!sshsig_verify(key.public_key(), "ns", b"datb", &sig));
    }
}
