//! In-band rekey: a ratchet of the transport keys with fresh X25519 and
//! ML-KEM-768 secrets, exchanged inside the encrypted tunnel (so the
//! current keys authenticate it).
//!
//! ```text
//! chain_0     = HKDF-SHA256(salt = h, ikm = k_c2s_0 || k_s2c_0, info = KDF_REKEY_CHAIN0)
//! th          = SHA-256(KDF_REKEY_TRANSCRIPT || epoch:u64 || initiator:u8
//!                       || init_x25519 || kem_ek || reply_x25519 || kem_ct)
//! prk         = HKDF-Extract(salt = chain_n, ikm = X25519(a, B) || ML-KEM shared secret)
//! chain_{n+1} = HKDF-Expand(prk, KDF_REKEY_CHAIN  || th, 32)
//! k_c2s       = HKDF-Expand(prk, KDF_REKEY_C2S    || th, 32)
//! k_s2c       = HKDF-Expand(prk, KDF_REKEY_S2C    || th, 32)
//! ```
//!
//! The message flow and when each direction switches keys are described
//! in `docs/PROTOCOL.md` §4.1; the state machine lives in
//! [`crate::conn`], which owns both halves of the record layer.

use ring::hkdf;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::codec::Reader;
use crate::error::{Malformed, ProtoError};
use crate::handshake::{KEM_CT_LEN, KEM_EK_LEN};
use crate::keys::{CryptoRng, Secret};
use crate::labels;
use crate::primitives::{self, KemSecret};

/// Length of a REKEY INIT message: `x25519[32] kem_ek[1184]`.
pub const INIT_LEN: usize = 32 + KEM_EK_LEN;
/// Length of a REKEY REPLY message: `x25519[32] kem_ct[1088]`.
pub const REPLY_LEN: usize = 32 + KEM_CT_LEN;

/// A REKEY message, as carried by one or more consecutive REKEY records.
#[derive(Clone, PartialEq, Eq)]
pub enum RekeyMsg {
    /// Starts a rekey: the initiator's fresh X25519 public key and ML-KEM
    /// encapsulation key.
    Init(Box<[u8; INIT_LEN]>),
    /// Answers INIT: the responder's fresh X25519 public key and the ML-KEM
    /// ciphertext. The responder's records after it use the new keys.
    Reply(Box<[u8; REPLY_LEN]>),
    /// The initiator's records after it use the new keys.
    Finish,
}

impl std::fmt::Debug for RekeyMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Init(_) => "RekeyMsg::Init",
            Self::Reply(_) => "RekeyMsg::Reply",
            Self::Finish => "RekeyMsg::Finish",
        })
    }
}

/// Wire tags of the REKEY messages (first data byte of each REKEY record).
pub(crate) mod tag {
    pub const INIT: u8 = 1;
    pub const REPLY: u8 = 2;
    pub const FINISH: u8 = 3;
}

impl RekeyMsg {
    /// The tag and body.
    pub(crate) fn parts(&self) -> (u8, &[u8]) {
        match self {
            Self::Init(b) => (tag::INIT, &b[..]),
            Self::Reply(b) => (tag::REPLY, &b[..]),
            Self::Finish => (tag::FINISH, &[]),
        }
    }

    /// The body length a tag must carry, or `None` for an unknown tag.
    pub(crate) fn body_len(tag: u8) -> Option<usize> {
        match tag {
            tag::INIT => Some(INIT_LEN),
            tag::REPLY => Some(REPLY_LEN),
            tag::FINISH => Some(0),
            _ => None,
        }
    }

    /// Builds a message from a complete body.
    pub(crate) fn from_parts(tag: u8, body: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(body, "rekey message");
        let msg = match tag {
            tag::INIT => Self::Init(Box::new(r.array()?)),
            tag::REPLY => Self::Reply(Box::new(r.array()?)),
            tag::FINISH => Self::Finish,
            _ => {
                return Err(Malformed::Invalid {
                    what: "rekey message",
                    why: "unknown type",
                });
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

/// The chaining secret the next rekey derives from. Zeroized on drop.
pub struct Chain(Secret<32>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chain(<secret>)")
    }
}

/// New transport keys and the chain for the rekey after them.
pub struct NewKeys {
    /// The next chaining secret.
    pub chain: Chain,
    /// Client-to-server record key.
    pub c2s: Zeroizing<[u8; 32]>,
    /// Server-to-client record key.
    pub s2c: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for NewKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewKeys(<secret>)")
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]]) -> Result<Zeroizing<[u8; 32]>, ProtoError> {
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(info, Len32)
        .and_then(|okm| okm.fill(&mut out[..]))
        .map_err(|_| ProtoError::Internal("hkdf"))?;
    Ok(out)
}

impl Chain {
    /// The first chain, from the handshake's transport keys and hash.
    pub(crate) fn initial(
        h: &[u8; 32],
        c2s: &[u8; 32],
        s2c: &[u8; 32],
    ) -> Result<Self, ProtoError> {
        let mut ikm = Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(c2s);
        ikm[32..].copy_from_slice(s2c);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, h).extract(&ikm[..]);
        let out = expand(&prk, &[labels::KDF_REKEY_CHAIN0])?;
        Ok(Self(Secret::new(*out)))
    }

    /// The ratchet step: new keys from this chain and the new secrets.
    fn derive(&self, dh: &[u8; 32], kem: &[u8], th: &[u8; 32]) -> Result<NewKeys, ProtoError> {
        let mut ikm = Zeroizing::new(Vec::with_capacity(64));
        ikm.extend_from_slice(dh);
        ikm.extend_from_slice(kem);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, self.0.expose()).extract(&ikm);
        let chain = expand(&prk, &[labels::KDF_REKEY_CHAIN, th])?;
        Ok(NewKeys {
            chain: Self(Secret::new(*chain)),
            c2s: expand(&prk, &[labels::KDF_REKEY_C2S, th])?,
            s2c: expand(&prk, &[labels::KDF_REKEY_S2C, th])?,
        })
    }
}

fn transcript(epoch: u64, client_started: bool, init: &[u8], reply: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(labels::KDF_REKEY_TRANSCRIPT);
    h.update(epoch.to_be_bytes());
    h.update([if client_started { 1u8 } else { 2 }]);
    h.update(init);
    h.update(reply);
    h.finalize().into()
}

/// X25519 with the all-zero output (a low-order public key) refused.
fn x25519(secret: &Secret<32>, public: &[u8]) -> Result<Zeroizing<[u8; 32]>, ProtoError> {
    let point: [u8; 32] = public.try_into().map_err(|_| Malformed::Invalid {
        what: "rekey message",
        why: "bad X25519 key",
    })?;
    let shared = primitives::x25519(secret.expose(), &point);
    if shared.iter().all(|&b| b == 0) {
        return Err(ProtoError::PeerMisbehaved(
            "rekey with a low-order X25519 key",
        ));
    }
    Ok(shared)
}

/// The initiator's secrets while its INIT is outstanding. Zeroized on drop
/// (the X25519 scalar and the ML-KEM decapsulation key both are).
pub struct Pending {
    x_secret: Secret<32>,
    kem_dk: KemSecret,
    init: Box<[u8; INIT_LEN]>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending(<secret>)")
    }
}

/// Starts a rekey: fresh X25519 and ML-KEM-768 keys from `rng`, and the
/// INIT message.
pub fn start(rng: &mut (impl CryptoRng + ?Sized)) -> (Pending, RekeyMsg) {
    let x_secret = Secret::random(rng);
    let x_public = primitives::x25519_public(x_secret.expose());
    let (kem_dk, kem_ek) = primitives::kem_generate(rng);
    let mut init = Box::new([0u8; INIT_LEN]);
    init[..32].copy_from_slice(&x_public);
    init[32..].copy_from_slice(&kem_ek);
    let msg = RekeyMsg::Init(init.clone());
    (
        Pending {
            x_secret,
            kem_dk,
            init,
        },
        msg,
    )
}

/// Answers a peer's INIT: the REPLY and the new keys. `epoch` is the
/// number of rekeys completed so far; `client_started` says whether the
/// client sent the INIT. `rng` gives the fresh secrets.
pub fn respond(
    chain: &Chain,
    epoch: u64,
    client_started: bool,
    init: &[u8; INIT_LEN],
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(NewKeys, RekeyMsg), ProtoError> {
    let (peer_x, ek_bytes) = init.split_at(32);
    let (ct, kem_ss) = primitives::kem_encapsulate(ek_bytes, rng).ok_or(Malformed::Invalid {
        what: "rekey message",
        why: "bad ML-KEM key",
    })?;
    let x_secret = Secret::random(rng);
    let dh = x25519(&x_secret, peer_x)?;
    let x_public = primitives::x25519_public(x_secret.expose());
    let mut reply = Box::new([0u8; REPLY_LEN]);
    reply[..32].copy_from_slice(&x_public);
    reply[32..].copy_from_slice(ct.as_slice());
    let th = transcript(epoch, client_started, &init[..], &reply[..]);
    let keys = chain.derive(&dh, kem_ss.as_slice(), &th)?;
    Ok((keys, RekeyMsg::Reply(reply)))
}

impl Pending {
    /// Completes the rekey with the peer's REPLY; consumes (and so
    /// zeroizes) the initiator's secrets.
    pub fn complete(
        self,
        chain: &Chain,
        epoch: u64,
        client_started: bool,
        reply: &[u8; REPLY_LEN],
    ) -> Result<NewKeys, ProtoError> {
        let (peer_x, ct) = reply.split_at(32);
        let dh = x25519(&self.x_secret, peer_x)?;
        let kem_ss = self.kem_dk.decapsulate(ct).ok_or(Malformed::Invalid {
            what: "rekey message",
            why: "bad ML-KEM ciphertext",
        })?;
        let th = transcript(epoch, client_started, &self.init[..], &reply[..]);
        chain.derive(&dh, kem_ss.as_slice(), &th)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::TestRng;

    fn chain() -> Chain {
        Chain::initial(&[7; 32], &[1; 32], &[2; 32]).expect("chain")
    }

    #[test]
    fn both_sides_derive_the_same_keys_and_each_step_differs() {
        let (a, b) = (chain(), chain());
        let (pending, init) = start(&mut TestRng);
        let RekeyMsg::Init(init) = init else {
            panic!("init")
        };
        let (rk, reply) = respond(&b, 0, true, &init, &mut TestRng).expect("respond");
        let RekeyMsg::Reply(reply) = reply else {
            panic!("reply")
        };
        let ik = pending.complete(&a, 0, true, &reply).expect("complete");
        assert_eq!(*ik.c2s, *rk.c2s);
        assert_eq!(*ik.s2c, *rk.s2c);
        assert_eq!(ik.chain.0, rk.chain.0);
        assert_ne!(*ik.c2s, *ik.s2c);
        assert_ne!(*ik.c2s, [1; 32]);
        assert!(ik.chain.0 != a.0);
    }

    #[test]
    fn transcript_binds_epoch_and_role() {
        let (pending, init) = start(&mut TestRng);
        let RekeyMsg::Init(init) = init else {
            panic!("init")
        };
        let (rk, reply) = respond(&chain(), 3, false, &init, &mut TestRng).expect("respond");
        let RekeyMsg::Reply(reply) = reply else {
            panic!("reply")
        };
        // The initiator believes a different epoch / role: other keys.
        let ik = pending
            .complete(&chain(), 4, false, &reply)
            .expect("complete");
        assert_ne!(*ik.c2s, *rk.c2s);
        let (p2, init2) = start(&mut TestRng);
        let RekeyMsg::Init(init2) = init2 else {
            panic!("init")
        };
        let (rk2, reply2) = respond(&chain(), 0, true, &init2, &mut TestRng).expect("respond");
        let RekeyMsg::Reply(reply2) = reply2 else {
            panic!("reply")
        };
        let ik2 = p2.complete(&chain(), 0, false, &reply2).expect("complete");
        assert_ne!(*ik2.s2c, *rk2.s2c);
    }

    #[test]
    fn low_order_and_bad_kem_keys_are_refused() {
        let mut init = Box::new([0u8; INIT_LEN]);
        let (_, good) = start(&mut TestRng);
        let RekeyMsg::Init(good) = good else {
            panic!("init")
        };
        init.copy_from_slice(&good[..]);
        init[..32].fill(0);
        assert!(respond(&chain(), 0, true, &init, &mut TestRng).is_err());
        let body = [0xffu8; INIT_LEN];
        assert!(respond(&chain(), 0, true, &body, &mut TestRng).is_err());
    }
}
