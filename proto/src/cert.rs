//! Licences, licence requests and client certificates: versioned binary
//! structures with integer times, each signed over a context string.
//!
//! ```text
//! Licence      = "ZTLC" ver=1 serial[16] server_id:str8 n:u8 hostname:str8*n
//!                subca_key[32] noise_key[32] not_before:u64 not_after:u64
//!                issuer[32] signature[64]
//!                (a hybrid root's licence: the same, with the hybrid
//!                signature block in place of signature[64]; see rootkey.rs)
//! Request      = "ZTRQ" ver=1 subca_key[32] noise_key[32] created:u64 signature[64]
//! ClientCert   = "ZTCC" ver=2 serial[16] session[16] principal:str8
//!                session_key[32] issuer[32] not_before:u64 not_after:u64
//!                signature[64]
//!                (ver=1: no session field; the session serial is the serial)
//! ```

use crate::codec::{Reader, Writer};
use crate::error::{AuthError, Malformed};
use crate::keys::{CryptoRng, PublicKey, SignError, SigningKey, hex, random_bytes};
use crate::labels::{self, magic};
use crate::rootkey::{RootKey, RootSignature, RootSigner};
use crate::time::{CLOCK_SKEW, UnixTime};

const VERSION: u8 = 1;
/// Longest server id.
pub const MAX_SERVER_ID: usize = 64;
/// Most host names in one licence.
pub const MAX_HOSTNAMES: usize = 32;
/// Longest host name (DNS limit).
pub const MAX_HOSTNAME: usize = 253;
/// Longest principal name.
pub const MAX_PRINCIPAL: usize = 64;
/// Longest encoded licence (with a hybrid signature block).
pub const MAX_LICENCE_LEN: usize = 4
    + 1
    + 16
    + 1
    + MAX_SERVER_ID
    + 1
    + MAX_HOSTNAMES * (1 + MAX_HOSTNAME)
    + 32 * 3
    + 16
    + crate::rootkey::HYBRID_SIG_LEN;

/// A unique 128-bit serial number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Serial(pub [u8; 16]);

impl Serial {
    /// A fresh random serial (unique across restarts and proxies).
    pub fn random(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        Self(random_bytes(rng))
    }
}

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// Refuses a Noise static key that is not in its one canonical encoding:
/// X25519 ignores the top bit and reads values from 2^255 - 19 up as
/// 0..18 (RFC 7748), so such bytes name the same key as other bytes, and
/// would escape a revocation or the CA's refusal of that key. Honest keys
/// (computed by X25519) are always canonical.
pub fn check_noise_key(key: &[u8; 32], what: &'static str) -> Result<(), Malformed> {
    let top_bit = key[31] & 0x80 != 0;
    // 2^255 - 19 = ed ff .. ff 7f (little-endian).
    let at_least_p = key[31] == 0x7f && key[1..31].iter().all(|b| *b == 0xff) && key[0] >= 0xed;
    if top_bit || at_least_p {
        return Err(Malformed::Invalid {
            what,
            why: "the Noise key is not canonically encoded (another encoding of an X25519 key)",
        });
    }
    Ok(())
}

/// A name: 1..=max bytes of `[A-Za-z0-9._@-]`, no leading dot or dash.
pub fn check_name(name: &str, max: usize, what: &'static str) -> Result<(), Malformed> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > max {
        return Err(Malformed::Invalid {
            what,
            why: "empty or too long",
        });
    }
    if !name.chars().all(ok_char) || name.starts_with(['.', '-']) {
        return Err(Malformed::Invalid {
            what,
            why: "only letters, digits and . _ @ - are allowed",
        });
    }
    Ok(())
}

/// The rules for a host name: a licence's names, and the host a user
/// typed (ssh's `%h`), which the sidecar checks with this before it ever
/// shows it: 1 to [`MAX_HOSTNAME`] letters, digits and `. _ @ -`, not
/// starting with `.` or `-` (so no control characters, escapes or spaces).
pub fn check_host(host: &str) -> Result<(), Malformed> {
    check_name(host, MAX_HOSTNAME, "host name")
}

pub(crate) fn check_window(
    not_before: UnixTime,
    not_after: UnixTime,
    now: UnixTime,
    what: &'static str,
) -> Result<(), AuthError> {
    if now.saturating_add(CLOCK_SKEW) < not_before {
        return Err(AuthError::NotYetValid {
            what,
            secs: not_before - now,
        });
    }
    if now >= not_after {
        return Err(AuthError::Expired {
            what,
            secs: now - not_after,
        });
    }
    Ok(())
}

/// Checks a signed object before anything in it is parsed: it must end
/// in the signature block `key`'s algorithm requires (64 bytes of Ed25519,
/// or a hybrid block); its `issuer`, found at a fixed distance before that
/// block (`issuer_from_end` bytes from the end, counted with a 64-byte
/// signature), must be `key`; and the signature must verify over every
/// byte before the block, as received. Returns those bytes. Only the
/// fixed-offset issuer and the block's header are read; length fields are
/// not.
pub(crate) fn verify_signed_tail<'a>(
    bytes: &'a [u8],
    min_len: usize,
    issuer_from_end: usize,
    key: &RootKey,
    context: &[u8],
    what: &'static str,
) -> Result<&'a [u8], crate::ProtoError> {
    if min_len < issuer_from_end || issuer_from_end < 64 + 32 {
        return Err(Malformed::Truncated(what).into());
    }
    let extra = key.signature_len() - 64;
    if bytes.len() < min_len + extra {
        if key.is_hybrid() && bytes.len() >= min_len {
            return Err(AuthError::NotHybrid(what).into());
        }
        return Err(Malformed::Truncated(what).into());
    }
    let (tbs, sig) = key.split_signed(bytes, what)?;
    let issuer_at = bytes.len() - issuer_from_end - extra;
    if bytes.get(issuer_at..issuer_at + 32) != Some(&key.id().0[..]) {
        return Err(AuthError::WrongIssuer(what).into());
    }
    key.verify(context, tbs, &sig, what)?;
    Ok(tbs)
}

/// The signature block that ends a body parsed up to `r`: the rest of the
/// bytes, Ed25519 or hybrid.
pub(crate) fn read_root_signature(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<RootSignature, Malformed> {
    let tail = r.take(r.remaining())?;
    RootSignature::from_tail(tail, what)
}

/// Checks `bytes` start with `magic` and format version 1.
pub(crate) fn check_tag(bytes: &[u8], magic: &[u8], what: &'static str) -> Result<(), Malformed> {
    check_tag_in(bytes, magic, &[VERSION], what).map(|_| ())
}

/// Checks `bytes` start with `magic` and one of `versions`; returns it.
fn check_tag_in(
    bytes: &[u8],
    magic: &[u8],
    versions: &[u8],
    what: &'static str,
) -> Result<u8, Malformed> {
    let mut r = Reader::new(bytes, what);
    r.expect(magic)?;
    let version = r.u8()?;
    if !versions.contains(&version) {
        return Err(Malformed::BadVersion { what, version });
    }
    Ok(version)
}

/// The shortest licence: one one-letter host name, a one-letter server id.
const MIN_LICENCE_LEN: usize = 4 + 1 + 16 + 2 + 1 + 2 + 32 * 3 + 16 + 64;
/// Where a licence's issuer starts, counted from its end.
const LICENCE_ISSUER_FROM_END: usize = 32 + 64;

/// The fields a root CA signs into a server licence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenceBody {
    /// Unique serial.
    pub serial: Serial,
    /// Operator's name for this proxy.
    pub server_id: String,
    /// Host names clients may use to reach it.
    pub hostnames: Vec<String>,
    /// The proxy's Sub-CA key (issues client certificates).
    pub subca_key: PublicKey,
    /// The proxy's Noise static key.
    pub noise_key: [u8; 32],
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity (exclusive).
    pub not_after: UnixTime,
    /// The root key that signed it.
    pub issuer: PublicKey,
}

/// A root-signed server licence, as decoded; not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Licence {
    /// Signed fields.
    pub body: LicenceBody,
    signature: RootSignature,
    encoded: Vec<u8>,
    /// The root's delegation to the key that signed it, when a delegated
    /// key did (set only by [`crate::delegation::verify_licence`]).
    delegation: Option<Box<crate::delegation::Delegation>>,
}

/// A licence that verified under the pinned root at a given time. Only
/// [`Licence::verify`] makes one, and a proxy can only start a handshake
/// with one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenceVerified(Licence);

impl LicenceVerified {
    /// The verified licence.
    pub fn licence(&self) -> &Licence {
        &self.0
    }
}

#[cfg(any(test, feature = "testkit"))]
impl LicenceVerified {
    /// Takes any licence as verified, so tests can play a server with an
    /// expired, foreign or forged licence. Never in binaries.
    #[doc(hidden)]
    pub fn assume(licence: Licence) -> Self {
        Self(licence)
    }
}

impl std::ops::Deref for LicenceVerified {
    type Target = Licence;
    fn deref(&self) -> &Licence {
        &self.0
    }
}

impl LicenceBody {
    fn encode_tbs(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(magic::LICENCE)
            .u8(VERSION)
            .bytes(&self.serial.0)
            .str8(&self.server_id);
        w.u8(u8::try_from(self.hostnames.len()).unwrap_or(u8::MAX));
        for h in &self.hostnames {
            w.str8(h);
        }
        w.bytes(&self.subca_key.0).bytes(&self.noise_key);
        w.u64(self.not_before)
            .u64(self.not_after)
            .bytes(&self.issuer.0);
        w.into_vec()
    }

    fn validate(&self) -> Result<(), Malformed> {
        check_name(&self.server_id, MAX_SERVER_ID, "licence server id")?;
        if self.hostnames.is_empty() || self.hostnames.len() > MAX_HOSTNAMES {
            return Err(Malformed::Invalid {
                what: "licence",
                why: "needs 1 to 32 host names",
            });
        }
        for h in &self.hostnames {
            check_host(h)?;
        }
        if self.not_after <= self.not_before {
            return Err(Malformed::Invalid {
                what: "licence",
                why: "not_after is not after not_before",
            });
        }
        Ok(())
    }

    /// Signs the body with the root key.
    pub fn sign(self, root: &SigningKey) -> Result<Licence, Malformed> {
        self.sign_with(root)
            .map_err(|e| e.into_malformed("licence"))
    }

    /// Signs the body with the root's key wherever it is held.
    pub fn sign_with(self, root: &(impl RootSigner + ?Sized)) -> Result<Licence, SignError> {
        self.validate()?;
        if root.root_key().id() != self.issuer {
            return Err(Malformed::Invalid {
                what: "licence",
                why: "issuer is not the signing key",
            }
            .into());
        }
        let tbs = self.encode_tbs();
        let signature = root.try_sign_root(labels::CTX_LICENCE, &tbs)?;
        let mut encoded = tbs;
        signature.encode_into(&mut encoded);
        Ok(Licence {
            body: self,
            signature,
            encoded,
            delegation: None,
        })
    }
}

impl Licence {
    /// Parses an encoded licence (does not verify it).
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > MAX_LICENCE_LEN {
            return Err(Malformed::TooLong {
                what: "licence",
                len: bytes.len(),
                max: MAX_LICENCE_LEN,
            });
        }
        let mut r = Reader::new(bytes, "licence");
        r.expect(magic::LICENCE)?;
        let version = r.u8()?;
        if version != VERSION {
            return Err(Malformed::BadVersion {
                what: "licence",
                version,
            });
        }
        let serial = Serial(r.array()?);
        let server_id = r.str8(MAX_SERVER_ID)?.to_owned();
        let count = usize::from(r.u8()?);
        if count > MAX_HOSTNAMES {
            return Err(Malformed::TooLong {
                what: "licence host list",
                len: count,
                max: MAX_HOSTNAMES,
            });
        }
        let mut hostnames = Vec::with_capacity(count);
        for _ in 0..count {
            hostnames.push(r.str8(MAX_HOSTNAME)?.to_owned());
        }
        let subca_key = PublicKey(r.array()?);
        let noise_key = r.array()?;
        check_noise_key(&noise_key, "licence")?;
        let not_before = r.u64()?;
        let not_after = r.u64()?;
        let issuer = PublicKey(r.array()?);
        let signature = read_root_signature(&mut r, "licence")?;
        r.finish()?;
        let body = LicenceBody {
            serial,
            server_id,
            hostnames,
            subca_key,
            noise_key,
            not_before,
            not_after,
            issuer,
        };
        body.validate()?;
        Ok(Self {
            body,
            signature,
            encoded: bytes.to_vec(),
            delegation: None,
        })
    }

    /// Verifies a received licence against the pinned root, then parses
    /// it and checks its validity window: the way to take a licence from
    /// anyone else. The issuer (at a fixed offset from the end) and the
    /// root's signature over the bytes as received are checked before any
    /// field is parsed.
    pub fn decode_verified(
        bytes: &[u8],
        root: &RootKey,
        now: UnixTime,
    ) -> Result<LicenceVerified, crate::ProtoError> {
        Ok(Self::decode_signed_by(bytes, root)?.verify(root, now)?)
    }

    /// Verifies that `root` signed a licence, then parses it, whatever its
    /// validity window: for the CA, which revokes the keys of a licence
    /// it issued, expired or not. Never a reason to use the licence.
    pub fn decode_signed_by(bytes: &[u8], root: &RootKey) -> Result<Self, crate::ProtoError> {
        if bytes.len() > MAX_LICENCE_LEN {
            return Err(Malformed::TooLong {
                what: "licence",
                len: bytes.len(),
                max: MAX_LICENCE_LEN,
            }
            .into());
        }
        check_tag(bytes, magic::LICENCE, "licence")?;
        verify_signed_tail(
            bytes,
            MIN_LICENCE_LEN,
            LICENCE_ISSUER_FROM_END,
            root,
            labels::CTX_LICENCE,
            "server licence",
        )?;
        Ok(Self::decode(bytes)?)
    }

    /// The exact encoded bytes.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Whether it carries a hybrid (Ed25519 + ML-DSA-65) signature.
    pub fn is_hybrid(&self) -> bool {
        self.signature.algorithm() == crate::rootkey::Algorithm::Ed25519MlDsa65
    }

    /// The delegation under which a delegated key signed this licence;
    /// `None` when the root signed it.
    pub fn delegation(&self) -> Option<&crate::delegation::Delegation> {
        self.delegation.as_deref()
    }

    /// When the licence stops being usable: its own end, or its
    /// delegation's if that comes first.
    pub fn usable_until(&self) -> UnixTime {
        self.delegation().map_or(self.body.not_after, |d| {
            d.body.not_after.min(self.body.not_after)
        })
    }

    /// Takes a licence whose signature was checked under `delegation`'s
    /// key (by [`crate::delegation::verify_chain`]) as verified, once its
    /// own window holds at `now`.
    pub(crate) fn into_verified(
        mut self,
        delegation: Option<crate::delegation::Delegation>,
        now: UnixTime,
    ) -> Result<LicenceVerified, AuthError> {
        check_window(
            self.body.not_before,
            self.body.not_after,
            now,
            "server licence",
        )?;
        self.delegation = delegation.map(Box::new);
        Ok(LicenceVerified(self))
    }

    /// Checks issuer, signature and validity window against the pinned root.
    pub fn verify(&self, root: &RootKey, now: UnixTime) -> Result<LicenceVerified, AuthError> {
        if self.body.issuer != root.id() {
            return Err(AuthError::WrongIssuer("server licence"));
        }
        let tbs_len = self.encoded.len().saturating_sub(self.signature.len());
        let tbs = self.encoded.get(..tbs_len).unwrap_or_default();
        root.verify(labels::CTX_LICENCE, tbs, &self.signature, "server licence")?;
        check_window(
            self.body.not_before,
            self.body.not_after,
            now,
            "server licence",
        )?;
        Ok(LicenceVerified(self.clone()))
    }

    /// Whether `host` is one of the licence's names (ASCII case-insensitive).
    pub fn covers(&self, host: &str) -> bool {
        self.body
            .hostnames
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// A proxy's request for a licence: its Sub-CA and Noise keys, signed by the Sub-CA key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenceRequest {
    /// Sub-CA public key.
    pub subca_key: PublicKey,
    /// Noise static public key.
    pub noise_key: [u8; 32],
    /// When it was made.
    pub created: UnixTime,
    signature: [u8; 64],
}

impl LicenceRequest {
    fn tbs(subca_key: &PublicKey, noise_key: &[u8; 32], created: UnixTime) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(magic::REQUEST)
            .u8(VERSION)
            .bytes(&subca_key.0)
            .bytes(noise_key)
            .u64(created);
        w.into_vec()
    }

    /// Makes a request signed by the Sub-CA key (proof of possession).
    pub fn new(subca: &SigningKey, noise_key: [u8; 32], created: UnixTime) -> Self {
        let subca_key = subca.public();
        let signature = subca.sign(
            labels::CTX_LICENCE_REQUEST,
            &Self::tbs(&subca_key, &noise_key, created),
        );
        Self {
            subca_key,
            noise_key,
            created,
            signature,
        }
    }

    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Self::tbs(&self.subca_key, &self.noise_key, self.created);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Checks the proof of possession, then parses the request. The
    /// layout is fixed, so the Sub-CA key and the signature are found
    /// without parsing, and the signature is verified over the bytes as
    /// received.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, crate::ProtoError> {
        const LEN: usize = 4 + 1 + 32 + 32 + 8 + 64;
        check_tag(bytes, magic::REQUEST, "licence request")?;
        if bytes.len() != LEN {
            return Err(if bytes.len() < LEN {
                Malformed::Truncated("licence request")
            } else {
                Malformed::TrailingBytes {
                    what: "licence request",
                    count: bytes.len() - LEN,
                }
            }
            .into());
        }
        let key_at = 4 + 1;
        let subca_key = PublicKey(
            bytes
                .get(key_at..key_at + 32)
                .and_then(|k| k.try_into().ok())
                .ok_or(Malformed::Truncated("licence request"))?,
        );
        // Self-signed: the key inside is the issuer, 32 + 8 + 64 bytes from the end.
        verify_signed_tail(
            bytes,
            LEN,
            LEN - key_at,
            &RootKey::Ed25519(subca_key),
            labels::CTX_LICENCE_REQUEST,
            "licence request",
        )?;
        let mut r = Reader::new(bytes, "licence request");
        r.take(key_at + 32)?;
        let noise_key = r.array()?;
        check_noise_key(&noise_key, "licence request")?;
        let created = r.u64()?;
        let signature = r.array()?;
        r.finish()?;
        Ok(Self {
            subca_key,
            noise_key,
            created,
            signature,
        })
    }
}

/// A short-lived client certificate issued by a proxy's Sub-CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// Unique serial.
    pub serial: Serial,
    /// The session's serial: the serial of the session's first
    /// certificate, carried (signed) by every certificate of the session,
    /// so revoking it ends the session however often it has renewed.
    pub session: Serial,
    /// Who the session is.
    pub principal: String,
    /// The session's Ed25519 key.
    pub session_key: PublicKey,
    /// The Sub-CA that issued it.
    pub issuer: PublicKey,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity (exclusive).
    pub not_after: UnixTime,
    signature: [u8; 64],
    /// The format version it was encoded in (1: no session field).
    version: u8,
}

/// The client certificate version that carries the session serial.
const CERT_VERSION_SESSION: u8 = 2;

impl ClientCert {
    fn tbs(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(magic::CLIENT_CERT).u8(self.version);
        w.bytes(&self.serial.0);
        if self.version >= CERT_VERSION_SESSION {
            w.bytes(&self.session.0);
        }
        w.str8(&self.principal);
        w.bytes(&self.session_key.0)
            .bytes(&self.issuer.0)
            .u64(self.not_before)
            .u64(self.not_after);
        w.into_vec()
    }

    /// The same certificate in format 1 (no session field), re-signed by
    /// `subca`: what a proxy that predates session serials issues (tests).
    #[cfg(test)]
    pub(crate) fn as_format_1(&self, subca: &SigningKey) -> Self {
        let mut v1 = self.clone();
        v1.version = VERSION;
        v1.session = v1.serial;
        v1.signature = subca.sign(labels::CTX_CLIENT_CERT, &v1.tbs());
        v1
    }

    /// Whether the certificate carries a session serial of its own
    /// (format 2); a format 1 certificate's session serial is its serial.
    pub fn carries_session(&self) -> bool {
        self.version >= CERT_VERSION_SESSION
    }

    /// Issues a certificate signed by `subca`, with a serial from `rng`,
    /// for the session whose serial is `session` (`None`: a new session,
    /// whose serial is this first certificate's).
    pub fn issue(
        subca: &SigningKey,
        principal: &str,
        session: Option<Serial>,
        session_key: PublicKey,
        not_before: UnixTime,
        ttl: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Self, Malformed> {
        check_name(principal, MAX_PRINCIPAL, "principal")?;
        let not_after =
            not_before
                .checked_add(ttl)
                .filter(|_| ttl > 0)
                .ok_or(Malformed::Invalid {
                    what: "certificate",
                    why: "ttl is zero or overflows",
                })?;
        let serial = Serial::random(rng);
        let mut cert = Self {
            version: CERT_VERSION_SESSION,
            serial,
            session: session.unwrap_or(serial),
            principal: principal.to_owned(),
            session_key,
            issuer: subca.public(),
            not_before,
            not_after,
            signature: [0; 64],
        };
        cert.signature = subca.sign(labels::CTX_CLIENT_CERT, &cert.tbs());
        Ok(cert)
    }

    /// Encodes the certificate.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.tbs();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses a certificate (does not verify it).
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes, "client certificate");
        r.expect(magic::CLIENT_CERT)?;
        let version = r.u8()?;
        if version != VERSION && version != CERT_VERSION_SESSION {
            return Err(Malformed::BadVersion {
                what: "client certificate",
                version,
            });
        }
        let serial = Serial(r.array()?);
        let session = if version == CERT_VERSION_SESSION {
            Serial(r.array()?)
        } else {
            serial
        };
        let principal = r.str8(MAX_PRINCIPAL)?.to_owned();
        check_name(&principal, MAX_PRINCIPAL, "principal")?;
        let session_key = PublicKey(r.array()?);
        let issuer = PublicKey(r.array()?);
        let not_before = r.u64()?;
        let not_after = r.u64()?;
        let signature = r.array()?;
        r.finish()?;
        if not_after <= not_before {
            return Err(Malformed::Invalid {
                what: "client certificate",
                why: "not_after is not after not_before",
            });
        }
        Ok(Self {
            version,
            serial,
            session,
            principal,
            session_key,
            issuer,
            not_before,
            not_after,
            signature,
        })
    }

    /// Verifies a received certificate's issuer and Sub-CA signature, then
    /// parses it: the way to take a certificate from anyone else. Like
    /// [`ClientCert::verify_signature`], the validity window is left to the
    /// caller. Nothing is parsed before the signature verifies over the
    /// bytes as received (the issuer sits at a fixed offset from the end).
    pub fn decode_verified(bytes: &[u8], subca: &PublicKey) -> Result<Self, crate::ProtoError> {
        const MIN_LEN: usize = 4 + 1 + 16 + 2 + 32 + 32 + 16 + 64;
        const MAX_LEN: usize = MIN_LEN - 1 + MAX_PRINCIPAL + 16;
        if bytes.len() > MAX_LEN {
            return Err(Malformed::TooLong {
                what: "client certificate",
                len: bytes.len(),
                max: MAX_LEN,
            }
            .into());
        }
        check_tag_in(
            bytes,
            magic::CLIENT_CERT,
            &[VERSION, CERT_VERSION_SESSION],
            "client certificate",
        )?;
        verify_signed_tail(
            bytes,
            MIN_LEN,
            32 + 16 + 64,
            &RootKey::Ed25519(*subca),
            labels::CTX_CLIENT_CERT,
            "client certificate",
        )?;
        Ok(Self::decode(bytes)?)
    }

    /// Checks only the validity window: for a certificate the caller issued
    /// itself and compares byte for byte, the signature adds nothing.
    pub fn check_window(&self, now: UnixTime) -> Result<(), AuthError> {
        check_window(self.not_before, self.not_after, now, "client certificate")
    }

    /// Checks issuer, signature and validity window.
    pub fn verify(&self, subca: &PublicKey, now: UnixTime) -> Result<(), AuthError> {
        self.verify_signature(subca)?;
        check_window(self.not_before, self.not_after, now, "client certificate")
    }

    /// Checks issuer and signature only: for the client, whose clock may
    /// differ from the issuing proxy's (the window is the proxy's).
    pub fn verify_signature(&self, subca: &PublicKey) -> Result<(), AuthError> {
        if self.issuer != *subca {
            return Err(AuthError::WrongIssuer("client certificate"));
        }
        subca.verify(
            labels::CTX_CLIENT_CERT,
            &self.tbs(),
            &self.signature,
            "client certificate",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NoiseKeypair;
    use crate::keys::TestRng;

    pub(crate) fn licence(
        root: &SigningKey,
        hosts: &[&str],
        nb: u64,
        na: u64,
    ) -> (Licence, SigningKey, NoiseKeypair) {
        let subca = SigningKey::generate(&mut TestRng);
        let noise = NoiseKeypair::generate(&mut TestRng);
        let body = LicenceBody {
            serial: Serial::random(&mut TestRng),
            server_id: "web1".into(),
            hostnames: hosts.iter().map(|h| (*h).to_owned()).collect(),
            subca_key: subca.public(),
            noise_key: noise.public(),
            not_before: nb,
            not_after: na,
            issuer: root.public(),
        };
        (body.sign(root).expect("sign"), subca, noise)
    }

    #[test]
    fn licence_round_trip_and_checks() {
        let root = SigningKey::generate(&mut TestRng);
        let (lic, _, _) = licence(&root, &["web1", "web1.example.com"], 1000, 1000 + 86_400);
        let back = Licence::decode(lic.encoded()).expect("decode");
        assert_eq!(back, lic);
        assert!(back.verify(&root.public().into(), 2000).is_ok());
        assert!(back.covers("WEB1.example.com"));
        assert!(!back.covers("web2"));
        assert_eq!(
            back.verify(&root.public().into(), 1000 + 86_400 + 3 * 3600)
                .err(),
            Some(AuthError::Expired {
                what: "server licence",
                secs: 3 * 3600
            })
        );
        assert!(matches!(
            back.verify(&root.public().into(), 100),
            Err(AuthError::NotYetValid { .. })
        ));
        let other = SigningKey::generate(&mut TestRng);
        assert_eq!(
            back.verify(&other.public().into(), 2000).err(),
            Some(AuthError::WrongIssuer("server licence"))
        );
    }

    #[test]
    fn forged_licence_fails() {
        let root = SigningKey::generate(&mut TestRng);
        let (lic, _, _) = licence(&root, &["web1"], 0, 10_000);
        let mut bytes = lic.encoded().to_vec();
        // Flip a bit in not_after (just before issuer and signature).
        let pos = bytes.len() - 64 - 32 - 1;
        bytes[pos] ^= 1;
        let forged = Licence::decode(&bytes).expect("still parses");
        assert_eq!(
            forged.verify(&root.public().into(), 5).err(),
            Some(AuthError::BadSignature("server licence"))
        );
        // A forger who changes the issuer to their own key is refused by the pin.
        let evil = SigningKey::generate(&mut TestRng);
        let (evil_lic, _, _) = licence(&evil, &["web1"], 0, 10_000);
        assert_eq!(
            evil_lic.verify(&root.public().into(), 5).err(),
            Some(AuthError::WrongIssuer("server licence"))
        );
    }

    #[test]
    fn licence_decode_rejects_garbage() {
        assert!(Licence::decode(b"").is_err());
        assert!(Licence::decode(b"ZTLC\x02").is_err());
        assert!(Licence::decode(&[0u8; 300]).is_err());
        let root = SigningKey::generate(&mut TestRng);
        let (lic, _, _) = licence(&root, &["web1"], 0, 10);
        let mut long = lic.encoded().to_vec();
        long.push(0);
        assert!(matches!(
            Licence::decode(&long),
            Err(Malformed::TrailingBytes { .. })
        ));
        for cut in 0..lic.encoded().len() {
            assert!(
                Licence::decode(&lic.encoded()[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_noise_key_in_another_encoding_of_the_same_x25519_key_is_refused() {
        // X25519 ignores the top bit of a public key (RFC 7748), so K and
        // K | 2^255 are one key: a licence or request naming the second
        // would escape a revocation, or the CA's refusal, of the first.
        let root = SigningKey::generate(&mut TestRng);
        let (lic, _, _) = licence(&root, &["web1"], 0, 10_000);
        let mut body = lic.body.clone();
        body.noise_key[31] |= 0x80;
        if let Ok(other) = body.sign(&root) {
            assert!(Licence::decode(other.encoded()).is_err());
            assert!(Licence::decode_verified(other.encoded(), &root.public().into(), 5).is_err());
        }
        let subca = SigningKey::generate(&mut TestRng);
        let mut key = lic.body.noise_key;
        key[31] |= 0x80;
        let req = LicenceRequest::new(&subca, key, 99);
        assert!(LicenceRequest::decode_verified(&req.encode()).is_err());
        // The 19 values at or above 2^255 - 19 are other encodings of 0..18.
        let mut high = [0xff; 32];
        high[31] = 0x7f;
        high[0] = 0xed;
        let req = LicenceRequest::new(&subca, high, 99);
        assert!(LicenceRequest::decode_verified(&req.encode()).is_err());
        high[0] = 0xec;
        let req = LicenceRequest::new(&subca, high, 99);
        assert!(LicenceRequest::decode_verified(&req.encode()).is_ok());
    }

    #[test]
    fn request_proves_possession() {
        let subca = SigningKey::generate(&mut TestRng);
        let req = LicenceRequest::new(&subca, [7; 32], 99);
        let back = LicenceRequest::decode_verified(&req.encode()).expect("verify");
        assert_eq!(back, req);
        let mut bad = req.encode();
        bad[10] ^= 0x80;
        assert!(LicenceRequest::decode_verified(&bad).is_err());
    }

    #[test]
    fn client_cert_round_trip() {
        let subca = SigningKey::generate(&mut TestRng);
        let session = SigningKey::generate(&mut TestRng);
        let cert = ClientCert::issue(
            &subca,
            "alice",
            None,
            session.public(),
            100,
            300,
            &mut TestRng,
        )
        .expect("issue");
        let back = ClientCert::decode(&cert.encode()).expect("decode");
        assert_eq!(back, cert);
        assert!(back.verify(&subca.public(), 200).is_ok());
        assert!(matches!(
            back.verify(&subca.public(), 400),
            Err(AuthError::Expired { .. })
        ));
        assert!(back.verify(&session.public(), 200).is_err());
        assert!(
            ClientCert::issue(
                &subca,
                "bad name",
                None,
                session.public(),
                0,
                1,
                &mut TestRng
            )
            .is_err()
        );
        // An inverted window (which would underflow lifetime arithmetic) is refused at decode.
        let mut inverted = cert.encode();
        let nb = inverted.len() - 64 - 16;
        inverted[nb..nb + 8].copy_from_slice(&1_000u64.to_be_bytes());
        assert!(matches!(
            ClientCert::decode(&inverted),
            Err(Malformed::Invalid { .. })
        ));
    }

    #[test]
    fn every_certificate_of_a_session_carries_its_signed_session_serial() {
        let subca = SigningKey::generate(&mut TestRng);
        let key = SigningKey::generate(&mut TestRng).public();
        let first =
            ClientCert::issue(&subca, "alice", None, key, 100, 300, &mut TestRng).expect("first");
        assert_eq!(
            first.session, first.serial,
            "a new session is named by its first serial"
        );
        let renewed = ClientCert::issue(
            &subca,
            "alice",
            Some(first.session),
            key,
            200,
            300,
            &mut TestRng,
        )
        .expect("renewed");
        assert_ne!(renewed.serial, first.serial);
        assert_eq!(renewed.session, first.serial);
        let bytes = renewed.encode();
        assert_eq!(bytes[4], 2, "format version 2 carries the session serial");
        assert_eq!(
            ClientCert::decode_verified(&bytes, &subca.public()).expect("genuine"),
            renewed
        );
        // The session serial is signed: claiming another session breaks
        // the Sub-CA's signature.
        let mut other = bytes.clone();
        other[4 + 1 + 16] ^= 1;
        let back = ClientCert::decode(&other).expect("parses");
        assert_ne!(back.session, renewed.session);
        assert!(back.verify_signature(&subca.public()).is_err());
        assert!(ClientCert::decode_verified(&other, &subca.public()).is_err());
        // A version 1 certificate (no session field) still reads: its
        // session serial is its own serial.
        let mut v1 = renewed.clone();
        v1.version = VERSION;
        v1.signature = subca.sign(labels::CTX_CLIENT_CERT, &v1.tbs());
        let v1_bytes = v1.encode();
        assert_eq!(v1_bytes.len(), bytes.len() - 16);
        let back = ClientCert::decode_verified(&v1_bytes, &subca.public()).expect("v1");
        assert_eq!(back.session, back.serial);
        assert_eq!(back.serial, renewed.serial);
    }

    fn is_bad_signature(e: &crate::ProtoError, what: &str) -> bool {
        e.to_string() == format!("{what}: signature does not verify")
    }

    #[test]
    fn licences_and_certificates_are_verified_before_they_are_parsed() {
        let root = SigningKey::generate(&mut TestRng);
        let (lic, subca, _) = licence(&root, &["web1"], 0, 10_000);
        let good = lic.encoded().to_vec();
        assert_eq!(
            Licence::decode_verified(&good, &root.public().into(), 5)
                .expect("genuine")
                .licence(),
            &lic
        );
        // Bodies the parser refuses (a host count past the cap, a server id
        // with a space), each with a random signature: the
        // signature's error is reported, so the parser never ran.
        let mut too_many_hosts = good.clone();
        too_many_hosts[4 + 1 + 16 + 1 + 4] = 200;
        let mut bad_id = good.clone();
        bad_id[4 + 1 + 16 + 1] = b' ';
        for (i, mut bytes) in [too_many_hosts, bad_id].into_iter().enumerate() {
            assert!(Licence::decode(&bytes).is_err(), "case {i} parses");
            let n = bytes.len();
            bytes[n - 64..].copy_from_slice(&random_bytes::<64>(&mut TestRng));
            let e = Licence::decode_verified(&bytes, &root.public().into(), 5).expect_err("forged");
            assert!(is_bad_signature(&e, "server licence"), "case {i}: {e}");
            // Signed by the root, the same body reaches the parser.
            let sig = root.sign(labels::CTX_LICENCE, &bytes[..n - 64]);
            bytes[n - 64..].copy_from_slice(&sig);
            let e =
                Licence::decode_verified(&bytes, &root.public().into(), 5).expect_err("malformed");
            assert!(
                matches!(e, crate::ProtoError::Malformed(_)),
                "case {i}: {e}"
            );
        }
        // A byte more before the signature moves the issuer: refused on
        // it, before any field is parsed, even signed by the root.
        let mut trailing = good.clone();
        trailing.insert(good.len() - 64, 0);
        let n = trailing.len();
        let sig = root.sign(labels::CTX_LICENCE, &trailing[..n - 64]);
        trailing[n - 64..].copy_from_slice(&sig);
        assert!(matches!(
            Licence::decode_verified(&trailing, &root.public().into(), 5),
            Err(crate::ProtoError::Auth(AuthError::WrongIssuer(_)))
        ));
        // Another issuer: refused on the issuer, before the signature.
        let evil = SigningKey::generate(&mut TestRng);
        let (evil_lic, _, _) = licence(&evil, &["web1"], 0, 10_000);
        assert!(matches!(
            Licence::decode_verified(evil_lic.encoded(), &root.public().into(), 5),
            Err(crate::ProtoError::Auth(AuthError::WrongIssuer(
                "server licence"
            )))
        ));
        // The window is still checked, after the signature.
        assert!(matches!(
            Licence::decode_verified(&good, &root.public().into(), 20_000),
            Err(crate::ProtoError::Auth(AuthError::Expired { .. }))
        ));
        // Too long, too short, another magic: refused without a key.
        let long = vec![0; MAX_LICENCE_LEN + 1];
        assert!(Licence::decode_verified(&long, &root.public().into(), 5).is_err());
        for cut in 0..good.len() {
            assert!(Licence::decode_verified(&good[..cut], &root.public().into(), 5).is_err());
        }

        // Client certificates, the same way.
        let session = SigningKey::generate(&mut TestRng);
        let cert = ClientCert::issue(
            &subca,
            "alice",
            None,
            session.public(),
            100,
            300,
            &mut TestRng,
        )
        .expect("issue");
        let bytes = cert.encode();
        assert_eq!(
            ClientCert::decode_verified(&bytes, &subca.public()).expect("genuine"),
            cert
        );
        let mut bad_name = bytes.clone();
        bad_name[4 + 1 + 16 + 16 + 1] = b' ';
        assert!(ClientCert::decode(&bad_name).is_err());
        let n = bad_name.len();
        bad_name[n - 64..].copy_from_slice(&random_bytes::<64>(&mut TestRng));
        let e = ClientCert::decode_verified(&bad_name, &subca.public()).expect_err("forged");
        assert!(is_bad_signature(&e, "client certificate"), "{e}");
        assert!(matches!(
            ClientCert::decode_verified(&bytes, &session.public()),
            Err(crate::ProtoError::Auth(AuthError::WrongIssuer(
                "client certificate"
            )))
        ));
        for cut in 0..bytes.len() {
            assert!(ClientCert::decode_verified(&bytes[..cut], &subca.public()).is_err());
        }

        // Requests: the proof of possession is checked over the bytes as
        // received, before the rest is read.
        let req = LicenceRequest::new(&subca, [7; 32], 99).encode();
        let mut forged = req.clone();
        let n = forged.len();
        forged[n - 64..].copy_from_slice(&random_bytes::<64>(&mut TestRng));
        let e = LicenceRequest::decode_verified(&forged).expect_err("forged");
        assert!(is_bad_signature(&e, "licence request"), "{e}");
        let mut long = req.clone();
        long.push(0);
        assert!(LicenceRequest::decode_verified(&long).is_err());
    }
}
