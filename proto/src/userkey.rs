//! The user's OpenSSH key: which keys ztssh accepts, how their signatures
//! travel, and how they are checked. One place, used by the proxy (which
//! decides) and by the sidecar (which checks its own key and its own
//! signature first, so the user reads why in plain words instead of a
//! closed connection).
//!
//! Accepted keys (see `docs/PROTOCOL.md` §2.3):
//! - Ed25519;
//! - ECDSA on NIST P-256, P-384 and P-521 (SHA-256, -384, -512);
//! - RSA of [`MIN_RSA_BITS`] to [`MAX_RSA_BITS`] bits, signing with
//!   `rsa-sha2-256` or `rsa-sha2-512` only (never SHA-1 `ssh-rsa`);
//! - FIDO security keys through ssh-agent (`sk-ssh-ed25519@openssh.com`,
//!   `sk-ecdsa-sha2-nistp256@openssh.com`), whose signatures carry the
//!   authenticator's flags and counter ([`SkAssertion`]).
//!
//! Wire form of a user signature (message 3 and RENEW): either a whole
//! SSHSIG blob (it begins with the six bytes `SSHSIG`), or, when that would
//! not fit (RSA), the bare SSH signature blob (`string algorithm, string
//! signature[, byte flags, uint32 counter]`), which stands for the SSHSIG
//! with the session's user key, the message's namespace and SHA-512. A bare
//! blob begins with a 32-bit length, never with `SSHSIG`, so the two cannot
//! be confused.

use ssh_key::encoding::{Decode, Encode};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, SshSig};

/// Smallest RSA modulus accepted (NIST SP 800-131A; OpenSSH's own floor
/// since 8.x is 1024, ztssh's is higher).
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA modulus accepted: a 4096-bit key and its signature fit
/// message 3 and a RENEW at the smallest frame size.
pub const MAX_RSA_BITS: u32 = 4096;

/// SK flag: the user touched the key (user presence).
pub const SK_USER_PRESENT: u8 = 0x01;
/// SK flag: the authenticator verified the user (PIN or biometric).
pub const SK_USER_VERIFIED: u8 = 0x04;

/// Why a user key or its signature is refused. The text is what the user
/// reads (after "cannot use KEY: " on the sidecar) and what the proxy logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserKeyError {
    /// An RSA key outside the accepted sizes.
    #[error(
        "RSA key of {bits} bits refused: ztssh accepts RSA keys of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
    )]
    RsaSize {
        /// The key's modulus size.
        bits: u32,
    },
    /// A security key whose FIDO application string does not begin with
    /// `ssh:` (ssh-keygen makes no other; a web origin's credential is not
    /// an SSH key).
    #[error(
        "security key with application {0:?} refused: ztssh accepts only applications beginning with \"ssh:\" (as ssh-keygen -t ed25519-sk / ecdsa-sk makes them)"
    )]
    SkApplication(String),
    /// A key type ztssh does not accept.
    #[error(
        "{0} keys are not supported: use Ed25519, ECDSA, RSA ({MIN_RSA_BITS} to {MAX_RSA_BITS} bits) or a FIDO security key"
    )]
    Unsupported(String),
    /// A SHA-1 RSA signature.
    #[error(
        "ssh-rsa (SHA-1) signature refused: RSA keys must sign with rsa-sha2-256 or rsa-sha2-512"
    )]
    Sha1,
    /// The signature's algorithm is not the key's.
    #[error("a {sig} signature cannot come from a {key} key")]
    AlgorithmMismatch {
        /// The signature's algorithm.
        sig: String,
        /// The key's algorithm.
        key: String,
    },
    /// The signature blob does not parse, or names another key or namespace.
    #[error("malformed user signature ({0})")]
    Malformed(&'static str),
    /// The signature does not verify.
    #[error("user key signature does not verify")]
    BadSignature,
    /// A security key signed without the user's touch.
    #[error("security key signature without user presence (the key was not touched)")]
    NoPresence,
    /// A security key signed without verifying the user, which is required.
    #[error("security key signature without user verification (no PIN), which the policy requires")]
    NoVerification,
}

/// What a security key's authenticator asserted with a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkAssertion {
    /// Authenticator flags ([`SK_USER_PRESENT`], [`SK_USER_VERIFIED`]).
    pub flags: u8,
    /// The authenticator's signature counter.
    pub counter: u32,
}

impl SkAssertion {
    /// Whether the user touched the key.
    pub fn presence(&self) -> bool {
        self.flags & SK_USER_PRESENT != 0
    }

    /// Whether the authenticator verified the user (PIN).
    pub fn verification(&self) -> bool {
        self.flags & SK_USER_VERIFIED != 0
    }

    /// Checks the flags against what is required.
    pub fn check(&self, presence: bool, verification: bool) -> Result<(), UserKeyError> {
        if presence && !self.presence() {
            return Err(UserKeyError::NoPresence);
        }
        if verification && !self.verification() {
            return Err(UserKeyError::NoVerification);
        }
        Ok(())
    }
}

/// A user signature that verified. Only [`verify`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSigVerified {
    sk: Option<SkAssertion>,
}

impl UserSigVerified {
    /// The authenticator's assertion, for a security key.
    pub fn sk(&self) -> Option<SkAssertion> {
        self.sk
    }
}

/// The exact bit length of an RSA key's modulus (`key_size` of ssh-key
/// counts whole bytes, so a 2041-bit modulus would read as 2048).
pub fn rsa_bits(k: &ssh_key::public::RsaPublicKey) -> u32 {
    let bytes = k.n().as_positive_bytes().unwrap_or_default();
    let Some((first, rest)) = bytes.split_first() else {
        return 0;
    };
    let rest_bits = u32::try_from(rest.len()).map_or(u32::MAX, |n| n.saturating_mul(8));
    rest_bits.saturating_add(8 - first.leading_zeros())
}

/// A security key's application must begin with `ssh:`, as ssh-keygen
/// requires.
fn check_application(app: &str) -> Result<(), UserKeyError> {
    if app.starts_with("ssh:") {
        Ok(())
    } else {
        Err(UserKeyError::SkApplication(app.to_owned()))
    }
}

/// Whether ztssh accepts this key at all (type, size, security key
/// application).
pub fn check_key(key: &KeyData) -> Result<(), UserKeyError> {
    match key {
        KeyData::Ed25519(_) => Ok(()),
        KeyData::SkEd25519(k) => check_application(k.application()),
        KeyData::SkEcdsaSha2NistP256(k) => check_application(k.application()),
        KeyData::Ecdsa(k) => match k.curve() {
            EcdsaCurve::NistP256 | EcdsaCurve::NistP384 | EcdsaCurve::NistP521 => Ok(()),
        },
        KeyData::Rsa(k) => {
            let bits = rsa_bits(k);
            if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                Ok(())
            } else {
                Err(UserKeyError::RsaSize { bits })
            }
        }
        KeyData::Dsa(_) => Err(UserKeyError::Unsupported("DSA (ssh-dss)".into())),
        other => Err(UserKeyError::Unsupported(other.algorithm().to_string())),
    }
}

/// A short description of a key for messages: type, bits where they vary,
/// SHA-256 fingerprint and comment.
pub fn describe(key: &ssh_key::PublicKey) -> String {
    let kind = match key.key_data() {
        KeyData::Rsa(k) => format!("RSA-{}", rsa_bits(k)),
        KeyData::Ecdsa(k) => format!(
            "ECDSA-{}",
            k.curve().as_str().trim_start_matches("nist").to_uppercase()
        ),
        KeyData::Ed25519(_) => "ED25519".into(),
        KeyData::SkEd25519(_) => "ED25519-SK".into(),
        KeyData::SkEcdsaSha2NistP256(_) => "ECDSA-SK".into(),
        other => other.algorithm().to_string(),
    };
    let fp = key.fingerprint(HashAlg::Sha256);
    match key.comment().as_bytes() {
        [] => format!("{fp} ({kind})"),
        c => format!("{fp} ({kind}, {})", String::from_utf8_lossy(c)),
    }
}

/// The signature algorithm a key must produce (RSA: any SHA-2 one).
fn pairs(key: &Algorithm, sig: &Algorithm) -> Result<(), UserKeyError> {
    match (key, sig) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { hash: None }) => Err(UserKeyError::Sha1),
        (Algorithm::Rsa { .. }, Algorithm::Rsa { hash: Some(_) }) => Ok(()),
        (k, s) if k == s => Ok(()),
        (k, s) => Err(UserKeyError::AlgorithmMismatch {
            sig: s.to_string(),
            key: k.to_string(),
        }),
    }
}

/// Encodes a user signature for the wire: the SSHSIG when it is at most
/// `cap` bytes, else the bare signature blob (see the module docs).
pub fn encode_sig(sig: &SshSig, cap: usize) -> Result<Vec<u8>, UserKeyError> {
    let whole = sig
        .encode_vec()
        .map_err(|_| UserKeyError::Malformed("cannot encode SSHSIG"))?;
    if whole.len() <= cap {
        return Ok(whole);
    }
    sig.signature()
        .encode_vec()
        .map_err(|_| UserKeyError::Malformed("cannot encode signature"))
}

/// Decodes a user signature in either wire form (see the module docs) for
/// `key` in `namespace`.
pub fn decode_sig(key: &KeyData, namespace: &str, blob: &[u8]) -> Result<SshSig, UserKeyError> {
    let mut reader = blob;
    if blob.starts_with(b"SSHSIG") {
        let sig = SshSig::decode(&mut reader).map_err(|_| UserKeyError::Malformed("SSHSIG"))?;
        if !reader.is_empty() {
            return Err(UserKeyError::Malformed("bytes after the SSHSIG"));
        }
        if sig.public_key() != key {
            return Err(UserKeyError::Malformed("SSHSIG names another key"));
        }
        return Ok(sig);
    }
    let bare = ssh_key::Signature::decode(&mut reader)
        .map_err(|_| UserKeyError::Malformed("signature blob"))?;
    if !reader.is_empty() {
        return Err(UserKeyError::Malformed("bytes after the signature"));
    }
    SshSig::new(key.clone(), namespace, HashAlg::Sha512, bare)
        .map_err(|_| UserKeyError::Malformed("namespace"))
}

/// Checks a user signature over `data` in `namespace`, in either wire form:
/// the key is acceptable, the signature's algorithm is the key's (SHA-2 for
/// RSA), and it verifies. For a security key, the authenticator's flags and
/// counter come back (they are signed too); requiring them is the caller's
/// policy.
pub fn verify(
    key: &ssh_key::PublicKey,
    namespace: &str,
    data: &[u8],
    blob: &[u8],
) -> Result<UserSigVerified, UserKeyError> {
    let sig = decode_sig(key.key_data(), namespace, blob)?;
    verify_sshsig(key, namespace, data, &sig)
}

/// [`verify`] for a decoded SSHSIG (the sidecar checks its own signatures
/// with it before sending them).
pub fn verify_sshsig(
    key: &ssh_key::PublicKey,
    namespace: &str,
    data: &[u8],
    sig: &SshSig,
) -> Result<UserSigVerified, UserKeyError> {
    check_key(key.key_data())?;
    if sig.public_key() != key.key_data() {
        return Err(UserKeyError::Malformed("SSHSIG names another key"));
    }
    pairs(&key.algorithm(), &sig.algorithm())?;
    if !crate::primitives::sshsig_verify(key, namespace, data, sig) {
        return Err(UserKeyError::BadSignature);
    }
    let sk = match key.key_data() {
        KeyData::SkEd25519(_) | KeyData::SkEcdsaSha2NistP256(_) => Some(sk_trailer(sig)?),
        _ => None,
    };
    Ok(UserSigVerified { sk })
}

/// Signs `data` in `namespace` with a user's key held in memory (SHA-512),
/// as the fuzz harness's honest client does: a real SSHSIG, or in a fuzzing
/// build the stand-in that [`verify`] then accepts (`primitives`).
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub fn sign(
    key: &ssh_key::PrivateKey,
    namespace: &str,
    data: &[u8],
) -> Result<SshSig, UserKeyError> {
    crate::primitives::sshsig_sign(key, namespace, data)
        .ok_or(UserKeyError::Malformed("cannot sign with this key"))
}

/// The flags and counter at the end of a security key's signature (ssh-key
/// keeps them appended to the signature bytes, and they were covered by the
/// verification: PROTOCOL.u2f signs `SHA-256(application) || flags ||
/// counter || SHA-256(message)`).
fn sk_trailer(sig: &SshSig) -> Result<SkAssertion, UserKeyError> {
    let bytes = sig.signature_bytes();
    let tail: [u8; 5] = bytes
        .len()
        .checked_sub(5)
        .and_then(|at| bytes.get(at..))
        .and_then(|t| t.try_into().ok())
        .ok_or(UserKeyError::Malformed("security key signature too short"))?;
    let [flags, c @ ..] = tail;
    let counter = u32::from_be_bytes(c);
    Ok(SkAssertion { flags, counter })
}

#[cfg(test)]
#[path = "userkey_tests.rs"]
pub(crate) mod tests;
