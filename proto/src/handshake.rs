//! The hybrid handshake: `Noise_XXpsk3_25519_AESGCM_SHA256` with an
//! ML-KEM-768 shared secret as psk3, as typestates.
//!
//! Call order, client side:
//! 1. [`client_start`] returns [`AwaitingServerHello`] and message 1 (send it).
//! 2. [`AwaitingServerHello::handle_server_hello`] with message 2 verifies the
//!    server's licence and returns [`ServerVerified`]; nothing about the user
//!    has been revealed yet.
//! 3. The user key signs [`ServerVerified::user_signed_data`] as an SSHSIG
//!    (from a file or ssh-agent).
//! 4. [`ServerVerified::into_client_auth`] returns message 3 (send it) and a
//!    [`ClientSession`] holding the transport.
//!
//! Server side:
//! 1. [`server_start`] returns [`AwaitingClientHello`].
//! 2. [`AwaitingClientHello::handle_client_hello`] with message 1 returns
//!    [`AwaitingClientAuth`] and message 2 (send it).
//! 3. [`AwaitingClientAuth::handle_client_auth`] with message 3 returns
//!    [`ClientAuth::Authenticated`] with a [`ClientAuthenticated`], which can
//!    only exist once the user's SSHSIG over the transcript verified;
//!    authorization is then the caller's decision. A user key or signature
//!    the proxy does not accept comes back as [`ClientAuth::KeyRefused`]
//!    with the tunnel to say so on: an outcome, not an error (errors are
//!    plain data and own no transport).
//!
//! Every message is padded to a fixed length (see [`message_len`]), so its size
//! reveals nothing; the padding sits inside the Noise payload and is hashed.
//!
//! The steps that make keys take the driver's random source (`rng`): the
//! ephemeral and ML-KEM keys, the client's throwaway static key and its
//! session key, and the server's encapsulation.

use sha2::Digest;
use zeroize::Zeroizing;

use crate::cert::{Licence, LicenceVerified, MAX_LICENCE_LEN, MAX_PRINCIPAL, check_name};
use crate::codec::{Reader, Writer};
use crate::delegation::{self, MAX_DELEGATION_LEN};
use crate::end::{EndKind, Ended};
use crate::error::{AuthError, Malformed, ProtoError};
use crate::frame::{FrameSize, Transport};
use crate::keys::{CryptoRng, NoiseKeypair, PublicKey, Secret, SigningKey};
use crate::labels;
use crate::primitives::{self, KemSecret};
use crate::time::UnixTime;
use crate::trust::usercert::MAX_USER_CERT;
use crate::trust::workload::MAX_TOKEN;
use crate::userkey::{self, UserSigVerified};

/// ML-KEM-768 encapsulation key length.
pub const KEM_EK_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length.
pub const KEM_CT_LEN: usize = 1088;
/// Message 1 is always this long: the frame size is not agreed yet.
pub const HELLO_LEN: usize = 2048;
const SERVER_HELLO_MIN: usize = 4096;
/// Message 2's length, before rounding to whole frames, under a hybrid
/// (Ed25519 + ML-DSA-65) root: its licence carries a 3,379-byte signature
/// block, which does not fit [`SERVER_HELLO_MIN`]. Both sides know which
/// applies before message 2 (the client from its pinned root, the proxy
/// from its licence), so the length is still fixed per root.
const SERVER_HELLO_HYBRID_MIN: usize = 8192;
const CLIENT_AUTH_MIN: usize = 2048;
/// Message 3's length when it carries a user certificate
/// ([`CAP_USER_CERT`]), before rounding to whole frames.
const CLIENT_AUTH_CERT_MIN: usize = 6144;
/// Message 3's length when it carries a workload token
/// ([`CAP_WORKLOAD_TOKEN`]), before rounding to whole frames: the longest
/// key, signature and token ([`MAX_TOKEN`]) fit.
const CLIENT_AUTH_TOKEN_MIN: usize = 8192;
/// Message 1 capability bit: message 3 carries an OpenSSH user
/// certificate and is [`client_auth_len`] long.
pub const CAP_USER_CERT: u32 = 1;
/// Message 1 capability bit: message 3 carries a workload's platform token
/// (an OIDC JWT, [`crate::trust::workload`]) and is [`client_auth_len`]
/// long. A client sets at most one of the two bits; no other is defined.
pub const CAP_WORKLOAD_TOKEN: u32 = 2;
/// Largest OpenSSH public key or user signature blob accepted in message
/// 3 (an RSA-4096 key, and its signature in the bare form, fit).
pub const MAX_SSH_BLOB: usize = 1024;

// Noise overhead of each message for this pattern (psk mode encrypts from msg 1 on).
const OVERHEAD_1: usize = 32 + 16; // e, payload tag
const OVERHEAD_2: usize = 32 + 48 + 16; // e, encrypted s, payload tag
const OVERHEAD_3: usize = 48 + 16; // encrypted s, payload tag

/// Wire length of message 3 for frame size `f`, with or without a user
/// certificate ([`CAP_USER_CERT`] in message 1 says which).
pub fn client_auth_len(f: FrameSize, with_cert: bool) -> usize {
    let carries = if with_cert {
        Carries::UserCert
    } else {
        Carries::Nothing
    };
    carries.message3_len(f)
}

/// What message 3 carries beside the user key's signature, as message 1's
/// caps announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carries {
    /// Nothing: the key alone.
    Nothing,
    /// An OpenSSH user certificate ([`CAP_USER_CERT`]).
    UserCert,
    /// A workload token ([`CAP_WORKLOAD_TOKEN`]).
    Token,
}

impl Carries {
    /// From message 1's caps; `None` for reserved bits or both at once.
    fn from_caps(caps: u32) -> Option<Self> {
        match caps {
            0 => Some(Self::Nothing),
            CAP_USER_CERT => Some(Self::UserCert),
            CAP_WORKLOAD_TOKEN => Some(Self::Token),
            _ => None,
        }
    }

    fn caps(self) -> u32 {
        match self {
            Self::Nothing => 0,
            Self::UserCert => CAP_USER_CERT,
            Self::Token => CAP_WORKLOAD_TOKEN,
        }
    }

    /// Wire length of message 3 for frame size `f`.
    pub fn message3_len(self, f: FrameSize) -> usize {
        let round = |min: usize| min.div_ceil(f.get()) * f.get();
        match self {
            Self::Nothing => message_len(3, f),
            Self::UserCert => round(CLIENT_AUTH_CERT_MIN),
            Self::Token => round(CLIENT_AUTH_TOKEN_MIN),
        }
    }
}

/// The credential message 3 carries beside the key (the bytes the user
/// key's signature also covers).
enum Extra {
    Nothing,
    UserCert(Vec<u8>),
    /// A bearer secret: zeroized when dropped.
    Token(Zeroizing<Vec<u8>>),
}

impl Extra {
    fn carries(&self) -> Carries {
        match self {
            Self::Nothing => Carries::Nothing,
            Self::UserCert(_) => Carries::UserCert,
            Self::Token(_) => Carries::Token,
        }
    }

    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Nothing => None,
            Self::UserCert(c) => Some(c),
            Self::Token(t) => Some(t),
        }
    }
}

/// Whether `licence` (and its delegation) fits message 2 at the smallest
/// frame size; a proxy refuses one that does not before it serves it.
pub fn fits_message_2(licence: &LicenceVerified) -> bool {
    licence_fits_message_2(
        licence.encoded().len(),
        licence.delegation().map(|d| d.encoded().len()),
        licence.is_hybrid(),
    )
}

/// [`fits_message_2`] for a licence of `licence_len` encoded bytes, with
/// a delegation of `delegation_len` bytes if a delegated key signed it,
/// under a root of this kind: what a CA checks before it signs one.
pub fn licence_fits_message_2(
    licence_len: usize,
    delegation_len: Option<usize>,
    hybrid: bool,
) -> bool {
    let delegation = delegation_len.map_or(0, |d| 2 + d);
    let body = 2 + KEM_CT_LEN + 2 + licence_len + delegation;
    body + 2 <= server_hello_min(hybrid) - OVERHEAD_2
}

fn server_hello_min(hybrid: bool) -> usize {
    if hybrid {
        SERVER_HELLO_HYBRID_MIN
    } else {
        SERVER_HELLO_MIN
    }
}

/// Wire length of message 2 for frame size `f` under a root of this
/// kind: [`message_len`]`(2, f)` for an Ed25519 root; longer for a hybrid
/// root, whose licence carries both signatures.
pub fn server_hello_len(f: FrameSize, hybrid: bool) -> usize {
    server_hello_min(hybrid).div_ceil(f.get()) * f.get()
}

/// Wire length of handshake message `n` (1, 2 or 3) for frame size `f`
/// (message 2 under an Ed25519 root, see [`server_hello_len`]; message 3
/// without a user certificate, see [`client_auth_len`]).
pub fn message_len(n: u8, f: FrameSize) -> usize {
    let round = |min: usize| min.div_ceil(f.get()) * f.get();
    match n {
        1 => HELLO_LEN,
        2 => round(SERVER_HELLO_MIN),
        _ => round(CLIENT_AUTH_MIN),
    }
}

/// The prologue names the protocol and version. The frame size is not in it
/// but in message 1's payload, which is hashed into the transcript all the
/// same; that way a mismatch gets a clear error instead of a decrypt failure.
fn prologue() -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(labels::PROLOGUE).u16(labels::PROTOCOL_VERSION);
    w.into_vec()
}

/// Snow's builder; `rng` gives the handshake's ephemeral key.
fn builder<'a>(rng: &mut (impl CryptoRng + ?Sized)) -> Result<snow::Builder<'a>, ProtoError> {
    let params = labels::NOISE_PARAMS
        .parse()
        .map_err(|_| ProtoError::Internal("noise params"))?;
    Ok(snow::Builder::with_resolver(
        params,
        primitives::noise_resolver(Secret::random(rng)),
    ))
}

/// Wraps `body` as `len:u16 | body | zeros` of exactly `payload_len` bytes.
fn pad_payload(body: &[u8], payload_len: usize) -> Result<Zeroizing<Vec<u8>>, ProtoError> {
    let len =
        u16::try_from(body.len()).map_err(|_| ProtoError::Internal("handshake body too long"))?;
    if body.len() + 2 > payload_len {
        return Err(ProtoError::Internal(
            "handshake body does not fit its message",
        ));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(payload_len));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out.resize(payload_len, 0);
    Ok(out)
}

/// Inverse of [`pad_payload`]; padding must be all zero.
fn unpad_payload<'a>(payload: &'a [u8], what: &'static str) -> Result<&'a [u8], Malformed> {
    let mut r = Reader::new(payload, what);
    let len = usize::from(r.u16()?);
    let body = r.take(len)?;
    if !r.rest_is_zero() {
        return Err(Malformed::Invalid {
            what,
            why: "non-zero padding",
        });
    }
    Ok(body)
}

fn write_msg(
    hs: &mut snow::HandshakeState,
    body: &[u8],
    total: usize,
    overhead: usize,
) -> Result<Vec<u8>, ProtoError> {
    write_payload(hs, &pad_payload(body, total - overhead)?, total)
}

/// Writes a Noise message around an already padded payload; the message
/// must come out exactly `total` bytes long.
fn write_payload(
    hs: &mut snow::HandshakeState,
    payload: &[u8],
    total: usize,
) -> Result<Vec<u8>, ProtoError> {
    let mut out = vec![0u8; total];
    let n = hs.write_message(payload, &mut out)?;
    if n != total {
        return Err(ProtoError::Internal("handshake message length mismatch"));
    }
    Ok(out)
}

fn read_msg(
    hs: &mut snow::HandshakeState,
    msg: &[u8],
    total: usize,
) -> Result<Zeroizing<Vec<u8>>, ProtoError> {
    if msg.len() != total {
        return Err(Malformed::Invalid {
            what: "handshake message",
            why: "wrong length",
        }
        .into());
    }
    let mut payload = Zeroizing::new(vec![0u8; total]);
    let n = hs.read_message(msg, &mut payload)?;
    payload.truncate(n);
    Ok(payload)
}

fn kem_psk(shared: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = sha2::Sha256::new();
    h.update(labels::KDF_KEM_PSK);
    h.update(shared);
    Zeroizing::new(h.finalize().into())
}

fn handshake_hash(hs: &snow::HandshakeState) -> Result<[u8; 32], ProtoError> {
    hs.get_handshake_hash()
        .try_into()
        .map_err(|_| ProtoError::Internal("hash length"))
}

/// The record layer from a finished handshake: Noise's split keys (the
/// same keys its transport mode would use, so the records are those of
/// `Noise_XXpsk3_25519_AESGCM_SHA256`'s transport), run by
/// [`Transport`] so that each direction can be rekeyed on its own.
fn into_transport(
    hs: &mut snow::HandshakeState,
    hash: &[u8; 32],
    f: FrameSize,
    is_client: bool,
) -> Result<Transport, ProtoError> {
    if !hs.is_handshake_finished() {
        return Err(ProtoError::Internal("handshake not finished"));
    }
    let (c2s, s2c) = hs.dangerously_get_raw_split();
    let (c2s, s2c) = (Zeroizing::new(c2s), Zeroizing::new(s2c));
    Transport::new(&c2s, &s2c, hash, f, is_client)
}

/// Data the user key signs: the transcript hash after message 2, the
/// session key it vouches for and, when message 3 carries one, the user
/// certificate's bytes (so it cannot be swapped for another).
fn user_signed(h2: &[u8; 32], session_key: &PublicKey, cert: Option<&[u8]>) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + cert.map_or(0, <[u8]>::len));
    m.extend_from_slice(h2);
    m.extend_from_slice(&session_key.0);
    if let Some(cert) = cert {
        m.extend_from_slice(cert);
    }
    m
}

// ---------------------------------------------------------------- client

/// What the client needs to begin.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The pinned root CA key.
    pub root: crate::rootkey::RootKey,
    /// The host name the user typed (`%h`); must be in the licence.
    pub host: String,
    /// Frame size; must match the proxy's.
    pub frame_size: FrameSize,
}

/// Client has sent message 1.
pub struct AwaitingServerHello {
    hs: snow::HandshakeState,
    kem_dk: KemSecret,
    cfg: ClientConfig,
    extra: Extra,
}

/// Starts a client handshake; returns the state and message 1.
pub fn client_start(
    cfg: ClientConfig,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(AwaitingServerHello, Vec<u8>), ProtoError> {
    client_start_with_cert(cfg, None, rng)
}

/// Starts a client handshake that will present `user_cert` (an OpenSSH
/// user certificate's binary form) in message 3, when given: message 1
/// then sets [`CAP_USER_CERT`].
pub fn client_start_with_cert(
    cfg: ClientConfig,
    user_cert: Option<Vec<u8>>,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(AwaitingServerHello, Vec<u8>), ProtoError> {
    if user_cert
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.len() > MAX_USER_CERT)
    {
        return Err(ProtoError::Incompatible(format!(
            "the user certificate is empty or larger than {MAX_USER_CERT} bytes"
        )));
    }
    let extra = user_cert.map_or(Extra::Nothing, Extra::UserCert);
    client_start_with(cfg, extra, rng)
}

/// Starts a client handshake that will present a workload's platform
/// token (a compact JWT) in message 3: message 1 then sets
/// [`CAP_WORKLOAD_TOKEN`]. The token is given after message 2
/// ([`ServerVerified::present_token`]), once the licence names the server
/// whose audience it must be minted for.
pub fn client_start_with_token(
    cfg: ClientConfig,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(AwaitingServerHello, Vec<u8>), ProtoError> {
    client_start_with(cfg, Extra::Token(Zeroizing::new(Vec::new())), rng)
}

fn client_start_with(
    cfg: ClientConfig,
    extra: Extra,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(AwaitingServerHello, Vec<u8>), ProtoError> {
    let caps = extra.carries().caps();
    // The client's Noise static key is throwaway: the user is proven by the
    // SSHSIG in message 3, which works with keys held in ssh-agent.
    let throwaway = NoiseKeypair::generate(rng);
    let prologue = prologue();
    let mut hs = builder(rng)?
        .local_private_key(throwaway.private().expose())?
        .prologue(&prologue)?
        .build_initiator()?;
    let (kem_dk, kem_ek) = primitives::kem_generate(rng);
    let mut w = Writer::new();
    w.u16(labels::PROTOCOL_VERSION)
        .u16(cfg.frame_size.wire())
        .u32(caps);
    w.bytes(&kem_ek);
    let msg1 = write_msg(&mut hs, &w.into_vec(), HELLO_LEN, OVERHEAD_1)?;
    Ok((
        AwaitingServerHello {
            hs,
            kem_dk,
            cfg,
            extra,
        },
        msg1,
    ))
}

impl AwaitingServerHello {
    /// How many bytes message 2 is: fixed by the frame size and the pinned
    /// root's kind (read exactly this many before
    /// [`Self::handle_server_hello`]).
    pub fn server_hello_len(&self) -> usize {
        server_hello_len(self.cfg.frame_size, self.cfg.root.is_hybrid())
    }

    /// Handles message 2: decapsulates, sets the psk, and verifies the
    /// licence against the pinned root, the host name and the Noise key;
    /// then makes the session key from `rng`.
    pub fn handle_server_hello(
        mut self,
        msg2: &[u8],
        now: UnixTime,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<ServerVerified, ProtoError> {
        let total = self.server_hello_len();
        let payload = read_msg(&mut self.hs, msg2, total)?;
        let body = unpad_payload(&payload, "server hello")?;
        let mut r = Reader::new(body, "server hello");
        let version = r.u16()?;
        if version != labels::PROTOCOL_VERSION {
            return Err(ProtoError::Incompatible(format!(
                "server speaks protocol version {version}"
            )));
        }
        let ct = r.take(KEM_CT_LEN)?;
        // Parsed only once its root signature verifies, below.
        let licence_bytes = r.var16(MAX_LICENCE_LEN)?;
        // A licence a delegated key signed: the root's delegation follows.
        let delegation = match r.remaining() {
            0 => None,
            _ => Some(r.var16(MAX_DELEGATION_LEN)?),
        };
        r.finish()?;

        let shared = self.kem_dk.decapsulate(ct).ok_or(Malformed::Invalid {
            what: "server hello",
            why: "bad KEM ciphertext",
        })?;
        let psk = kem_psk(shared.as_slice());
        self.hs.set_psk(3, psk.as_slice())?;

        let verified: LicenceVerified =
            delegation::verify_licence(&self.cfg.root, licence_bytes, delegation, None, now)?;
        let lic = verified.licence();
        if !lic.covers(&self.cfg.host) {
            return Err(AuthError::HostNotCovered {
                host: self.cfg.host.clone(),
                covered: lic.body.hostnames.join(", "),
            }
            .into());
        }
        let proved = self
            .hs
            .get_remote_static()
            .ok_or(ProtoError::Internal("no remote static"))?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            proved,
            &lic.body.noise_key[..],
        )) {
            return Err(AuthError::KeyMismatch.into());
        }
        let h2 = handshake_hash(&self.hs)?;
        let session_key = SigningKey::generate(rng);
        Ok(ServerVerified {
            hs: self.hs,
            frame_size: self.cfg.frame_size,
            licence: lic.clone(),
            h2,
            session_key,
            extra: self.extra,
        })
    }
}

/// The server proved its licensed identity; the user has not been revealed yet.
pub struct ServerVerified {
    hs: snow::HandshakeState,
    frame_size: FrameSize,
    licence: Licence,
    h2: [u8; 32],
    session_key: SigningKey,
    extra: Extra,
}

impl ServerVerified {
    /// The verified licence.
    pub fn licence(&self) -> &Licence {
        &self.licence
    }

    /// Whether message 1 announced a workload token, which
    /// [`Self::present_token`] must now give.
    pub fn wants_token(&self) -> bool {
        matches!(self.extra, Extra::Token(_))
    }

    /// Gives the workload token message 3 carries (the handshake began
    /// with [`client_start_with_token`]); before [`Self::user_signed_data`],
    /// which covers it.
    pub fn present_token(&mut self, token: Zeroizing<Vec<u8>>) -> Result<(), ProtoError> {
        if !self.wants_token() {
            return Err(ProtoError::Internal("no workload token was announced"));
        }
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(ProtoError::Incompatible(format!(
                "the workload token is empty or larger than {MAX_TOKEN} bytes"
            )));
        }
        self.extra = Extra::Token(token);
        Ok(())
    }

    /// What the user key must sign (as SSHSIG, namespace
    /// [`labels::SSHSIG_NAMESPACE_HANDSHAKE`]).
    pub fn user_signed_data(&self) -> Vec<u8> {
        user_signed(&self.h2, &self.session_key.public(), self.extra.bytes())
    }

    /// Builds message 3 with the user's identity and signature.
    pub fn into_client_auth(
        mut self,
        principal: &str,
        user_key: &ssh_key::PublicKey,
        user_sig: &ssh_key::SshSig,
    ) -> Result<(ClientSession, Vec<u8>), ProtoError> {
        check_name(principal, MAX_PRINCIPAL, "principal")?;
        if matches!(&self.extra, Extra::Token(t) if t.is_empty()) {
            return Err(ProtoError::Internal(
                "message 1 announced a workload token and none was given",
            ));
        }
        let key_blob = user_key
            .to_bytes()
            .map_err(|_| ProtoError::Internal("encode user key"))?;
        let sig_blob = userkey::encode_sig(user_sig, MAX_SSH_BLOB)
            .map_err(|_| ProtoError::Internal("encode user signature"))?;
        if key_blob.len() > MAX_SSH_BLOB || sig_blob.len() > MAX_SSH_BLOB {
            return Err(ProtoError::Internal("user key or signature too large"));
        }
        let pop = self.session_key.sign(labels::CTX_SESSION_KEY_POP, &self.h2);
        let mut w = Writer::new();
        w.str8(principal)
            .var16(&key_blob)
            .bytes(&self.session_key.public().0)
            .bytes(&pop)
            .var16(&sig_blob);
        if let Some(extra) = self.extra.bytes() {
            w.var16(extra);
        }
        let total = self.extra.carries().message3_len(self.frame_size);
        let msg3 = write_msg(&mut self.hs, &w.into_vec(), total, OVERHEAD_3)?;
        let hash = handshake_hash(&self.hs)?;
        let transport = into_transport(&mut self.hs, &hash, self.frame_size, true)?;
        Ok((
            ClientSession {
                transport,
                session_key: self.session_key,
                licence: self.licence,
                handshake_hash: hash,
            },
            msg3,
        ))
    }
}

/// The client's side of an established tunnel.
#[derive(Debug)]
pub struct ClientSession {
    /// Record layer.
    pub transport: Transport,
    /// The per-session Ed25519 key (answers challenges later).
    pub session_key: SigningKey,
    /// The server's verified licence.
    pub licence: Licence,
    /// Final transcript hash; binds later proofs to this tunnel.
    pub handshake_hash: [u8; 32],
}

// ---------------------------------------------------------------- server

/// Server has been set up and waits for message 1.
pub struct AwaitingClientHello {
    hs: snow::HandshakeState,
    frame_size: FrameSize,
    hybrid: bool,
    licence: Vec<u8>,
    delegation: Option<Vec<u8>>,
}

/// Starts a server handshake with the proxy's Noise key and its verified
/// licence; `rng` gives its ephemeral key.
pub fn server_start(
    noise: &NoiseKeypair,
    licence: &LicenceVerified,
    frame_size: FrameSize,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<AwaitingClientHello, ProtoError> {
    let prologue = prologue();
    let hs = builder(rng)?
        .local_private_key(noise.private().expose())?
        .prologue(&prologue)?
        .build_responder()?;
    Ok(AwaitingClientHello {
        hs,
        frame_size,
        hybrid: licence.is_hybrid(),
        licence: licence.encoded().to_vec(),
        delegation: licence.delegation().map(|d| d.encoded().to_vec()),
    })
}

impl AwaitingClientHello {
    /// Handles message 1; returns message 2. `rng` gives the ML-KEM
    /// encapsulation's randomness.
    pub fn handle_client_hello(
        mut self,
        msg1: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(AwaitingClientAuth, Vec<u8>), ProtoError> {
        let payload = read_msg(&mut self.hs, msg1, HELLO_LEN)?;
        let body = unpad_payload(&payload, "client hello")?;
        let mut r = Reader::new(body, "client hello");
        let version = r.u16()?;
        let frame = r.u16()?;
        let caps = r.u32()?;
        let ek_bytes = r.take(KEM_EK_LEN)?;
        r.finish()?;
        // Reserved: a client that sets a bit expects something this version
        // does not do, and a later version can give the bits a meaning only
        // if this one refuses them now. CAP_USER_CERT and
        // CAP_WORKLOAD_TOKEN are defined, one at a time.
        let Some(carries) = Carries::from_caps(caps) else {
            return Err(Malformed::Invalid {
                what: "client hello",
                why: "reserved caps bits set, or both a certificate and a token",
            }
            .into());
        };
        if version != labels::PROTOCOL_VERSION {
            return Err(ProtoError::Incompatible(format!(
                "client speaks protocol version {version}"
            )));
        }
        if frame != self.frame_size.wire() {
            return Err(ProtoError::Incompatible(format!(
                "client uses frame size {frame}, this proxy uses {}",
                self.frame_size.get()
            )));
        }
        let (ct, shared) =
            primitives::kem_encapsulate(ek_bytes, rng).ok_or(Malformed::Invalid {
                what: "client hello",
                why: "bad ML-KEM key",
            })?;
        let psk = kem_psk(shared.as_slice());

        let mut w = Writer::new();
        w.u16(labels::PROTOCOL_VERSION)
            .bytes(ct.as_slice())
            .var16(&self.licence);
        if let Some(d) = &self.delegation {
            w.var16(d);
        }
        let total = server_hello_len(self.frame_size, self.hybrid);
        let msg2 = write_msg(&mut self.hs, &w.into_vec(), total, OVERHEAD_2)?;
        self.hs.set_psk(3, psk.as_slice())?;
        let h2 = handshake_hash(&self.hs)?;
        Ok((
            AwaitingClientAuth {
                hs: self.hs,
                frame_size: self.frame_size,
                h2,
                carries,
            },
            msg2,
        ))
    }
}

/// Server sent message 2 and waits for the client's authentication.
pub struct AwaitingClientAuth {
    hs: snow::HandshakeState,
    frame_size: FrameSize,
    h2: [u8; 32],
    carries: Carries,
}

impl AwaitingClientAuth {
    /// How many bytes message 3 has (message 1 said whether it carries a
    /// user certificate or a workload token).
    pub fn message3_len(&self) -> usize {
        self.carries.message3_len(self.frame_size)
    }

    /// Handles message 3: checks the session key's possession proof and the
    /// user's SSHSIG over the transcript. `Err` is a message that breaks the
    /// protocol (no tunnel); a refused user key is [`ClientAuth::KeyRefused`].
    pub fn handle_client_auth(mut self, msg3: &[u8]) -> Result<ClientAuth, ProtoError> {
        let total = self.message3_len();
        let payload = read_msg(&mut self.hs, msg3, total)?;
        let body = unpad_payload(&payload, "client auth")?;
        let mut r = Reader::new(body, "client auth");
        let principal = r.str8(MAX_PRINCIPAL)?.to_owned();
        check_name(&principal, MAX_PRINCIPAL, "principal")?;
        let key_blob = r.var16(MAX_SSH_BLOB)?;
        let session_key = PublicKey(r.array()?);
        let pop = r.array::<64>()?;
        let sig_blob = r.var16(MAX_SSH_BLOB)?;
        // Read here, verified by `identity` under the proxy's user CAs once
        // the user key's signature (which covers these bytes) verified.
        // A workload token likewise, verified under the proxy's issuers.
        let (user_cert, token) = match self.carries {
            Carries::Nothing => (None, None),
            Carries::UserCert => (Some(r.var16(MAX_USER_CERT)?.to_vec()), None),
            Carries::Token => (None, Some(Zeroizing::new(r.var16(MAX_TOKEN)?.to_vec()))),
        };
        r.finish()?;
        if user_cert.as_ref().is_some_and(Vec::is_empty) {
            return Err(Malformed::Invalid {
                what: "client auth",
                why: "empty user certificate",
            }
            .into());
        }
        if token.as_ref().is_some_and(|t| t.is_empty()) {
            return Err(Malformed::Invalid {
                what: "client auth",
                why: "empty workload token",
            }
            .into());
        }
        let extra = user_cert.as_deref().or(token.as_deref().map(Vec::as_slice));

        let user_key =
            ssh_key::PublicKey::from_bytes(key_blob).map_err(|_| Malformed::Invalid {
                what: "client auth",
                why: "bad user public key",
            })?;
        session_key.verify(
            labels::CTX_SESSION_KEY_POP,
            &self.h2,
            &pop,
            "session key proof",
        )?;
        let verdict = userkey::verify(
            &user_key,
            labels::SSHSIG_NAMESPACE_HANDSHAKE,
            &user_signed(&self.h2, &session_key, extra),
            sig_blob,
        );

        let hash = handshake_hash(&self.hs)?;
        let transport = into_transport(&mut self.hs, &hash, self.frame_size, false)?;
        // The tunnel is up even for a refused key, so the client is told
        // why (a TERMINATE) instead of seeing its connection dropped.
        let user_sig = match verdict {
            Ok(v) => v,
            Err(why) => {
                let fp = user_key.fingerprint(ssh_key::HashAlg::Sha256);
                let ended = Ended::new(
                    EndKind::UserKeyRefused,
                    format!("principal {principal}: key {fp}: {why}"),
                );
                return Ok(ClientAuth::KeyRefused {
                    principal,
                    user_key: fp.to_string(),
                    refused: crate::identity::Refused {
                        ended,
                        transport: Box::new(transport),
                    },
                });
            }
        };
        Ok(ClientAuth::Authenticated(Box::new(ClientAuthenticated {
            principal,
            user_key,
            user_sig,
            session_key,
            user_cert,
            token,
            transport,
            handshake_hash: hash,
        })))
    }
}

/// What a well-formed message 3 came to.
#[derive(Debug)]
pub enum ClientAuth {
    /// The user key signed this handshake (boxed: it holds the tunnel).
    Authenticated(Box<ClientAuthenticated>),
    /// The user key or its signature was refused (a key type or size ztssh
    /// does not accept, SHA-1, a bad signature, a security key's missing
    /// touch). The tunnel is up: send the client the refusal's TERMINATE.
    KeyRefused {
        /// The principal the client claimed.
        principal: String,
        /// The refused key's SHA-256 fingerprint (`SHA256:…`), for the log.
        user_key: String,
        /// Why, and the tunnel to say so on.
        refused: crate::identity::Refused,
    },
}

impl ClientAuth {
    /// The authenticated client, or `None` when its key was refused.
    pub fn authenticated(self) -> Option<ClientAuthenticated> {
        match self {
            Self::Authenticated(a) => Some(*a),
            Self::KeyRefused { .. } => None,
        }
    }
}

/// A client whose user key signed this handshake. Only
/// [`AwaitingClientAuth::handle_client_auth`] makes one. Its `Debug`
/// never shows the workload token (a bearer secret).
pub struct ClientAuthenticated {
    principal: String,
    user_key: ssh_key::PublicKey,
    user_sig: UserSigVerified,
    session_key: PublicKey,
    user_cert: Option<Vec<u8>>,
    /// A bearer secret until verified; zeroized when dropped.
    token: Option<Zeroizing<Vec<u8>>>,
    /// Record layer.
    pub transport: Transport,
    /// Final transcript hash.
    pub handshake_hash: [u8; 32],
}

impl std::fmt::Debug for ClientAuthenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthenticated")
            .field("principal", &self.principal)
            .field("user_key", &self.user_key)
            .field("user_sig", &self.user_sig)
            .field("session_key", &self.session_key)
            .field("user_cert", &self.user_cert.as_ref().map(Vec::len))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ClientAuthenticated {
    /// The principal the client claims (proven by the user key; whether that
    /// key may act as this principal is the caller's policy).
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The user's OpenSSH public key that signed the transcript.
    pub fn user_key(&self) -> &ssh_key::PublicKey {
        &self.user_key
    }

    /// What the user key's signature asserted (a security key's flags).
    pub fn user_sig(&self) -> UserSigVerified {
        self.user_sig
    }

    /// The session's Ed25519 key.
    pub fn session_key(&self) -> PublicKey {
        self.session_key
    }

    /// The OpenSSH user certificate message 3 carried, bound by the user
    /// key's signature but not yet verified: `authorize` verifies it under
    /// the proxy's user CAs.
    pub fn user_cert(&self) -> Option<&[u8]> {
        self.user_cert.as_deref()
    }

    /// The workload token message 3 carried, bound by the user key's
    /// signature but not yet verified: `authorize` verifies it under the
    /// proxy's issuers.
    pub fn workload_token(&self) -> Option<&[u8]> {
        self.token.as_deref().map(Vec::as_slice)
    }
}

macro_rules! opaque_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), "(<handshake state>)"))
            }
        }
    )*};
}
opaque_debug!(
    AwaitingServerHello,
    ServerVerified,
    AwaitingClientHello,
    AwaitingClientAuth
);

// ------------------------------------------------------------- testkit

/// Hostile-peer hooks for fuzzing and tests (feature `testkit`): they build
/// handshake messages whose Noise layer is valid but whose payload is
/// whatever the caller says, so parsers behind the cryptography can be
/// reached. Never enabled in the shipped binaries.
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit {
    use super::*;

    /// Writes a message whose payload is `payload` fitted to exactly the
    /// payload length (zero-filled or cut), with no padding of its own.
    fn raw(
        hs: &mut snow::HandshakeState,
        payload: &[u8],
        total: usize,
        overhead: usize,
    ) -> Result<Vec<u8>, ProtoError> {
        let mut p = payload.to_vec();
        p.resize(total - overhead, 0);
        write_payload(hs, &p, total)
    }

    /// Message 1 carrying `payload` (the `body_len || body || zeros` part).
    pub fn client_hello_raw(
        payload: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Vec<u8>, ProtoError> {
        let throwaway = NoiseKeypair::generate(rng);
        let prologue = prologue();
        let mut hs = builder(rng)?
            .local_private_key(throwaway.private().expose())?
            .prologue(&prologue)?
            .build_initiator()?;
        raw(&mut hs, payload, HELLO_LEN, OVERHEAD_1)
    }

    /// The payload an honest client puts in message 1 (for mutation).
    pub fn honest_hello_payload(
        frame_size: FrameSize,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Vec<u8> {
        let (_, ek) = primitives::kem_generate(rng);
        let mut w = Writer::new();
        w.u16(labels::PROTOCOL_VERSION)
            .u16(frame_size.wire())
            .u32(0);
        w.bytes(&ek);
        pad_payload(&w.into_vec(), HELLO_LEN - OVERHEAD_1)
            .map(|p| p.to_vec())
            .unwrap_or_default()
    }

    impl AwaitingClientHello {
        /// Pads message 2 as under a hybrid root (`true`) or an Ed25519
        /// one, whatever the licence is: a server that presents a licence
        /// stripped of its ML-DSA half at the length a hybrid pin expects.
        pub fn pad_as_hybrid(mut self, hybrid: bool) -> Self {
            self.hybrid = hybrid;
            self
        }

        /// Reads message 1, then answers with a message 2 carrying `payload`.
        pub fn server_hello_raw(
            mut self,
            msg1: &[u8],
            payload: &[u8],
        ) -> Result<Vec<u8>, ProtoError> {
            read_msg(&mut self.hs, msg1, HELLO_LEN)?;
            let total = server_hello_len(self.frame_size, self.hybrid);
            raw(&mut self.hs, payload, total, OVERHEAD_2)
        }
    }

    impl ServerVerified {
        /// Message 3 carrying `payload` instead of the user's identity.
        pub fn client_auth_raw(mut self, payload: &[u8]) -> Result<Vec<u8>, ProtoError> {
            let total = self.extra.carries().message3_len(self.frame_size);
            raw(&mut self.hs, payload, total, OVERHEAD_3)
        }
    }
}
