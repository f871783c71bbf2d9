//! Signature agility for everything a root signs: the pinned root's public
//! key says which algorithm it signs with ([`RootKey`]), every root
//! signature names its algorithm ([`RootSignature`]), and a verifier
//! accepts only the algorithm its pinned root declares. There is no
//! negotiation and no fallback: a hybrid root's objects must carry both
//! halves, and an Ed25519 root's objects are exactly today's bytes.
//!
//! ```text
//! RootKey (Ed25519)   = key[32]                        (root.pub, unchanged)
//! RootKey (hybrid)    = "ZTRK" ver=1 alg=2 ed25519[32] ml_dsa_65[1952]
//! RootKey (sk)        = "ZTRK" ver=1 alg=3 ed25519[32] application:str8
//! Signature (Ed25519) = sig[64]                        (unchanged)
//! Signature (hybrid)  = "ZTSG" ver=1 alg=2 ed25519_sig[64] ml_dsa_65_sig[3309]
//! Signature (sk)      = "ZTSG" ver=1 alg=3 ed25519_sig[64] flags:u8 counter:u32
//! ```
//!
//! A FIDO security key root (`sk-ssh-ed25519@openssh.com`, through
//! ssh-agent) signs as OpenSSH's PROTOCOL.u2f says: Ed25519 over
//! `SHA-256(application) || flags || counter || SHA-256(C || tbs)`; the
//! flags and counter travel in the block, and a verifier requires the
//! user-presence bit (a touch).
//!
//! ```text
//! ```
//!
//! A hybrid root signs `C' || tbs`, where `C' = CTX_HYBRID_PREFIX || C`
//! and `C` is the object's usual context, with both halves: Ed25519 over
//! `C' || tbs`; ML-DSA-65 (FIPS 204 context [`labels::MLDSA_CONTEXT`]) over
//! `C' || tbs || ed25519_sig`. The format is PROTOCOL.md §2.4; the argument, §6 item 23.
//!
//! Objects name their issuer by its Ed25519 half (the `issuer[32]` field
//! every format already has), so the bodies of the formats do not change.

use std::fmt;
use std::sync::Arc;

use crate::error::{AuthError, Malformed};
use crate::keys::{PublicKey, hex};
use crate::labels::{self, magic};
use crate::primitives;

/// Length of an encoded ML-DSA-65 verifying key (FIPS 204).
pub const MLDSA65_PUBLIC_LEN: usize = 1952;
/// Length of an encoded ML-DSA-65 signature (FIPS 204).
pub const MLDSA65_SIG_LEN: usize = 3309;
/// Version of the hybrid key and signature encodings.
const HYBRID_VERSION: u8 = 1;
/// Algorithm number of Ed25519 + ML-DSA-65 (1 is Ed25519's, implicit in
/// the unchanged form).
const ALG_HYBRID: u8 = 2;
/// Algorithm number of a FIDO security key's Ed25519 (sk-ssh-ed25519).
const ALG_SK_ED25519: u8 = 3;
/// Length of an sk signature block.
pub const SK_SIG_LEN: usize = HEADER_LEN + 64 + 1 + 4;
/// The authenticator's user-presence flag (it was touched).
pub const SK_USER_PRESENT: u8 = 0x01;
/// Length of the header before the halves (magic, version, algorithm).
const HEADER_LEN: usize = 4 + 1 + 1;
/// Length of an encoded hybrid root key.
pub const HYBRID_PUBLIC_LEN: usize = HEADER_LEN + 32 + MLDSA65_PUBLIC_LEN;
/// Length of a hybrid signature block.
pub const HYBRID_SIG_LEN: usize = HEADER_LEN + 64 + MLDSA65_SIG_LEN;

/// The algorithms a root signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ed25519 alone: every root made before hybrids.
    Ed25519,
    /// Ed25519 and ML-DSA-65, both required.
    Ed25519MlDsa65,
    /// A FIDO security key's Ed25519 (sk-ssh-ed25519), touched.
    SkEd25519,
}

impl Algorithm {
    /// The name operators see.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "Ed25519",
            Self::Ed25519MlDsa65 => "hybrid Ed25519 + ML-DSA-65",
            Self::SkEd25519 => "sk-ssh-ed25519 (FIDO security key)",
        }
    }

    /// Length of its signature block at the end of a signed object.
    pub fn signature_len(self) -> usize {
        match self {
            Self::Ed25519 => 64,
            Self::Ed25519MlDsa65 => HYBRID_SIG_LEN,
            Self::SkEd25519 => SK_SIG_LEN,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A pinned root: the key a proxy, a sidecar or the CA trusts, and with
/// it the one algorithm that root's signatures must use.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RootKey {
    /// An Ed25519 root.
    Ed25519(PublicKey),
    /// A hybrid root: both halves sign, both must verify.
    Hybrid {
        /// The Ed25519 half, which objects name as their issuer.
        ed25519: PublicKey,
        /// The encoded ML-DSA-65 verifying key.
        mldsa: Arc<[u8]>,
    },
    /// A FIDO security key's Ed25519 key: its signatures must carry the
    /// user-presence flag.
    SkEd25519 {
        /// The Ed25519 key, which objects name as their issuer.
        key: PublicKey,
        /// The FIDO application (`ssh:` for ssh-keygen's keys).
        application: Arc<str>,
    },
}

impl From<PublicKey> for RootKey {
    fn from(key: PublicKey) -> Self {
        Self::Ed25519(key)
    }
}

impl RootKey {
    /// The key objects name as their issuer: the Ed25519 key, or a hybrid
    /// root's Ed25519 half.
    pub fn id(&self) -> PublicKey {
        match self {
            Self::Ed25519(k) | Self::Hybrid { ed25519: k, .. } | Self::SkEd25519 { key: k, .. } => {
                *k
            }
        }
    }

    /// The algorithm its signatures must use.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::Ed25519,
            Self::Hybrid { .. } => Algorithm::Ed25519MlDsa65,
            Self::SkEd25519 { .. } => Algorithm::SkEd25519,
        }
    }

    /// Whether its signatures carry an ML-DSA-65 half.
    pub fn is_hybrid(&self) -> bool {
        matches!(self, Self::Hybrid { .. })
    }

    /// The encoding in `root.pub`: 32 bytes for Ed25519 (as ever), the
    /// versioned hybrid form otherwise.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(k) => k.0.to_vec(),
            Self::Hybrid { ed25519, mldsa } => {
                let mut out = Vec::with_capacity(HYBRID_PUBLIC_LEN);
                out.extend_from_slice(magic::ROOT_KEY);
                out.extend_from_slice(&[HYBRID_VERSION, ALG_HYBRID]);
                out.extend_from_slice(&ed25519.0);
                out.extend_from_slice(mldsa);
                out
            }
            Self::SkEd25519 { key, application } => {
                let mut out = Vec::with_capacity(HEADER_LEN + 32 + 1 + application.len());
                out.extend_from_slice(magic::ROOT_KEY);
                out.extend_from_slice(&[HYBRID_VERSION, ALG_SK_ED25519]);
                out.extend_from_slice(&key.0);
                out.push(u8::try_from(application.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(application.as_bytes());
                out
            }
        }
    }

    /// Parses any of the encodings.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if let Ok(k) = <[u8; 32]>::try_from(bytes) {
            return Ok(Self::Ed25519(PublicKey(k)));
        }
        let (alg, rest) = strip_header(bytes, magic::ROOT_KEY, "root public key")?;
        if alg == ALG_SK_ED25519 {
            return Self::decode_sk(rest);
        }
        if rest.len() != 32 + MLDSA65_PUBLIC_LEN {
            return Err(Malformed::Invalid {
                what: "root public key",
                why: "a hybrid root key is 32 bytes of Ed25519 and 1952 of ML-DSA-65",
            });
        }
        let (ed, pq) = rest.split_at(32);
        Ok(Self::Hybrid {
            ed25519: PublicKey(crate::keys::to_array(ed, "root public key")?),
            mldsa: Arc::from(pq),
        })
    }

    fn decode_sk(rest: &[u8]) -> Result<Self, Malformed> {
        let what = "root public key";
        let mut r = crate::codec::Reader::new(rest, what);
        let key = PublicKey(r.array()?);
        let application = r.str8(255)?;
        r.finish()?;
        if application.is_empty() {
            return Err(Malformed::Invalid {
                what,
                why: "a security key's application is empty",
            });
        }
        Ok(Self::SkEd25519 {
            key,
            application: Arc::from(application),
        })
    }

    /// Short fingerprint for humans: an Ed25519 root's as ever; a hybrid
    /// root's covers both halves.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        match self {
            Self::Ed25519(k) => k.fingerprint(),
            Self::Hybrid { .. } | Self::SkEd25519 { .. } => {
                let digest = sha2::Sha256::digest(self.encode());
                hex(digest.get(..8).unwrap_or_default())
            }
        }
    }

    /// The length of a signature block under this root.
    pub fn signature_len(&self) -> usize {
        self.algorithm().signature_len()
    }

    /// Splits a signed object into its body and its signature block, as
    /// this root's algorithm lays it out. Refuses, before any signature
    /// work, an object without the block this root requires (an Ed25519
    /// signature where a hybrid is pinned: stripped, or from another root).
    pub fn split_signed<'a>(
        &self,
        bytes: &'a [u8],
        what: &'static str,
    ) -> Result<(&'a [u8], RootSignature), crate::ProtoError> {
        let Some(at) = bytes.len().checked_sub(self.signature_len()) else {
            return Err(if self.is_hybrid() && bytes.len() >= 64 {
                AuthError::NotHybrid(what).into()
            } else {
                Malformed::Truncated(what).into()
            });
        };
        let (tbs, tail) = bytes.split_at(at);
        let sig = RootSignature::from_tail(tail, what);
        match (self, sig) {
            (Self::Hybrid { .. }, Ok(sig @ RootSignature::Hybrid { .. })) => Ok((tbs, sig)),
            (Self::Hybrid { .. }, _) => Err(AuthError::NotHybrid(what).into()),
            (Self::SkEd25519 { .. }, Ok(sig @ RootSignature::SkEd25519 { .. })) => Ok((tbs, sig)),
            (Self::SkEd25519 { .. }, _) => Err(AuthError::WrongAlgorithm {
                what,
                pinned: Algorithm::SkEd25519.name(),
            }
            .into()),
            (Self::Ed25519(_), Ok(sig)) => Ok((tbs, sig)),
            (Self::Ed25519(_), Err(e)) => Err(e.into()),
        }
    }

    /// Verifies `sig` over `context || msg`: both halves for a hybrid
    /// root; refuses a signature of another algorithm.
    pub fn verify(
        &self,
        context: &[u8],
        msg: &[u8],
        sig: &RootSignature,
        what: &'static str,
    ) -> Result<(), AuthError> {
        match (self, sig) {
            (Self::Ed25519(k), RootSignature::Ed25519(s)) => k.verify(context, msg, s, what),
            (
                Self::Hybrid { ed25519, mldsa },
                RootSignature::Hybrid {
                    ed25519: es,
                    mldsa: ps,
                },
            ) => {
                let ctx = hybrid_context(context);
                ed25519.verify(&ctx, msg, es, what)?;
                let m = mldsa_message(&ctx, msg, es);
                if primitives::mldsa_verify(mldsa, &m, labels::MLDSA_CONTEXT, ps) {
                    Ok(())
                } else {
                    Err(AuthError::BadPqSignature(what))
                }
            }
            (
                Self::SkEd25519 { key, application },
                RootSignature::SkEd25519 {
                    ed25519,
                    flags,
                    counter,
                },
            ) => {
                if flags & SK_USER_PRESENT == 0 {
                    return Err(AuthError::NoUserPresence(what));
                }
                let m = sk_message(application, *flags, *counter, context, msg);
                if primitives::ed_verify(&key.0, &m, ed25519) {
                    Ok(())
                } else {
                    Err(AuthError::BadSignature(what))
                }
            }
            (Self::Hybrid { .. }, _) => Err(AuthError::NotHybrid(what)),
            (Self::Ed25519(_), RootSignature::Hybrid { .. }) => {
                Err(AuthError::UnexpectedHybrid(what))
            }
            (pinned, _) => Err(AuthError::WrongAlgorithm {
                what,
                pinned: pinned.algorithm().name(),
            }),
        }
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey({}, {})", self.algorithm(), self.fingerprint())
    }
}

/// What a FIDO authenticator signs for `context || msg` (PROTOCOL.u2f).
fn sk_message(application: &str, flags: u8, counter: u32, context: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut m = Vec::with_capacity(32 + 1 + 4 + 32);
    m.extend_from_slice(&sha2::Sha256::digest(application.as_bytes()));
    m.push(flags);
    m.extend_from_slice(&counter.to_be_bytes());
    let mut h = sha2::Sha256::new();
    h.update(context);
    h.update(msg);
    m.extend_from_slice(&h.finalize());
    m
}

/// Checks `magic ver=1 alg` (hybrid or sk) and returns the algorithm and
/// what follows.
fn strip_header<'a>(
    bytes: &'a [u8],
    magic: &[u8; 4],
    what: &'static str,
) -> Result<(u8, &'a [u8]), Malformed> {
    let (head, rest) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or(Malformed::Truncated(what))?;
    if head.get(..4) != Some(&magic[..]) {
        return Err(Malformed::BadMagic(what));
    }
    if head.get(4) != Some(&HYBRID_VERSION) {
        return Err(Malformed::BadVersion {
            what,
            version: head.get(4).copied().unwrap_or_default(),
        });
    }
    match head.get(5) {
        Some(&alg) if alg == ALG_HYBRID || alg == ALG_SK_ED25519 => Ok((alg, rest)),
        _ => Err(Malformed::Invalid {
            what,
            why: "unknown signature algorithm (this build knows Ed25519, Ed25519 + ML-DSA-65 \
                  and sk-ssh-ed25519)",
        }),
    }
}

/// The context both halves of a hybrid signature sign under.
fn hybrid_context(context: &[u8]) -> Vec<u8> {
    [labels::CTX_HYBRID_PREFIX, context].concat()
}

/// What the ML-DSA half signs: the Ed25519 half's message and signature.
fn mldsa_message(ctx: &[u8], msg: &[u8], ed_sig: &[u8; 64]) -> Vec<u8> {
    [ctx, msg, &ed_sig[..]].concat()
}

/// A root's signature, as it ends a signed object.
#[derive(Clone, PartialEq, Eq)]
pub enum RootSignature {
    /// 64 bytes of Ed25519.
    Ed25519([u8; 64]),
    /// Both halves.
    Hybrid {
        /// The Ed25519 half.
        ed25519: [u8; 64],
        /// The ML-DSA-65 half ([`MLDSA65_SIG_LEN`] bytes).
        mldsa: Box<[u8]>,
    },
    /// A security key's signature, its flags and its counter.
    SkEd25519 {
        /// Ed25519 over the authenticator's message.
        ed25519: [u8; 64],
        /// Authenticator flags (bit 0: user presence).
        flags: u8,
        /// The authenticator's signature counter.
        counter: u32,
    },
}

impl RootSignature {
    /// Parses a signature block: 64 bytes are Ed25519, a block of
    /// [`HYBRID_SIG_LEN`] with its header is hybrid.
    pub fn from_tail(tail: &[u8], what: &'static str) -> Result<Self, Malformed> {
        if let Ok(s) = <[u8; 64]>::try_from(tail) {
            return Ok(Self::Ed25519(s));
        }
        if tail.len() > 64 && !tail.starts_with(magic::SIGNATURE) {
            return Err(Malformed::TrailingBytes {
                what,
                count: tail.len() - 64,
            });
        }
        let (alg, rest) = strip_header(tail, magic::SIGNATURE, what)?;
        if alg == ALG_SK_ED25519 {
            let mut r = crate::codec::Reader::new(rest, what);
            let sig = Self::SkEd25519 {
                ed25519: r.array()?,
                flags: r.u8()?,
                counter: r.u32()?,
            };
            r.finish()?;
            return Ok(sig);
        }
        if rest.len() != 64 + MLDSA65_SIG_LEN {
            return Err(Malformed::Invalid {
                what,
                why: "the signature is neither 64 bytes of Ed25519 nor a whole hybrid block",
            });
        }
        let (ed, pq) = rest.split_at(64);
        Ok(Self::Hybrid {
            ed25519: crate::keys::to_array(ed, what)?,
            mldsa: pq.into(),
        })
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::Ed25519,
            Self::Hybrid { .. } => Algorithm::Ed25519MlDsa65,
            Self::SkEd25519 { .. } => Algorithm::SkEd25519,
        }
    }

    /// Its encoded length.
    pub fn len(&self) -> usize {
        self.algorithm().signature_len()
    }

    /// Never empty (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ed25519(s) => out.extend_from_slice(s),
            Self::Hybrid { ed25519, mldsa } => {
                out.extend_from_slice(magic::SIGNATURE);
                out.extend_from_slice(&[HYBRID_VERSION, ALG_HYBRID]);
                out.extend_from_slice(ed25519);
                out.extend_from_slice(mldsa);
            }
            Self::SkEd25519 {
                ed25519,
                flags,
                counter,
            } => {
                out.extend_from_slice(magic::SIGNATURE);
                out.extend_from_slice(&[HYBRID_VERSION, ALG_SK_ED25519]);
                out.extend_from_slice(ed25519);
                out.push(*flags);
                out.extend_from_slice(&counter.to_be_bytes());
            }
        }
    }
}

impl fmt::Debug for RootSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootSignature({})", self.algorithm())
    }
}

mod sign;
pub use sign::{HybridSigner, MlDsaKey, RootSigner};

#[cfg(test)]
mod tests;
