//! A platform's key set (JWKS): [`KeySet::from_json`] keeps the keys
//! ztssh verifies with and says which it skipped; [`KeysInForce`] is a set
//! with its age.

use std::sync::Arc;

use base64ct::{Base64UrlUnpadded, Encoding};
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Alg, MAX_KID};
use crate::time::UnixTime;

/// Bytes of a JWKS document accepted.
pub const MAX_JWKS: usize = 64 * 1024;
/// Usable keys kept per JWKS; a document with more is refused.
pub const MAX_KEYS: usize = 32;
/// Smallest RSA key of a key set kept (smaller ones are skipped).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA key of a key set kept.
pub const MAX_RSA_BITS: usize = 8192;

/// One usable key of a key set.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) kid: String,
    pub(super) alg: Alg,
    pub(super) decoding: DecodingKey,
    /// SHA-256 over the key type and its public components: the same `kid`
    /// with other key material is another key.
    pub(super) fingerprint: [u8; 32],
}

/// A platform's signing keys (its JWKS), as [`KeySet::from_json`] kept them.
#[derive(Clone)]
pub struct KeySet {
    pub(super) keys: Vec<Key>,
    skipped: Vec<String>,
}

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`). Keys without a `kid`,
    /// not for signing, of a type or curve ztssh does not verify with, or
    /// RSA keys under [`MIN_RSA_BITS`], are skipped ([`KeySet::skipped`]);
    /// a usable type with broken parameters is an error, and so is a set
    /// with no usable key or more than [`MAX_KEYS`].
    pub fn from_json(bytes: &[u8]) -> Result<KeySet, String> {
        if bytes.len() > MAX_JWKS {
            return Err(format!(
                "the key set is {} bytes, more than the {MAX_JWKS} accepted: is this the \
                 platform's JWKS URL?",
                bytes.len()
            ));
        }
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("the key set is not JSON ({e}): is this the JWKS URL?"))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err("the key set has no \"keys\" array: is this the JWKS URL?".into());
        };
        let mut set = KeySet {
            keys: Vec::new(),
            skipped: Vec::new(),
        };
        for (n, entry) in list.iter().enumerate() {
            match read_jwk(entry)? {
                Ok(key) => set.keys.push(key),
                Err(why) => set.skipped.push(format!("key {}: {why}", n + 1)),
            }
        }
        if set.keys.len() > MAX_KEYS {
            return Err(format!(
                "the key set has {} usable keys, more than the {MAX_KEYS} kept",
                set.keys.len()
            ));
        }
        if set.keys.is_empty() {
            return Err(format!(
                "no usable key in the key set ({} skipped: {}): ztssh verifies RS256 (RSA of at \
                 least {MIN_RSA_BITS} bits), ES256 (P-256) and EdDSA (Ed25519) keys with a kid",
                set.skipped.len(),
                set.skipped.join("; ")
            ));
        }
        Ok(set)
    }

    /// How many keys of the document were skipped.
    pub fn skipped(&self) -> usize {
        self.skipped.len()
    }

    /// Why each skipped key was skipped, for the operator's log.
    pub fn skipped_why(&self) -> &[String] {
        &self.skipped
    }

    /// The `kid`s of the usable keys, in document order.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// How many usable keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no usable key (never, for one from `from_json`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(super) fn holds(&self, kid: &str, fingerprint: &[u8; 32]) -> bool {
        self.keys
            .iter()
            .any(|k| k.kid == kid && &k.fingerprint == fingerprint)
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

/// One JWK: `Err` for a broken document, `Ok(Err(why))` for a key skipped.
fn read_jwk(entry: &Value) -> Result<Result<Key, String>, String> {
    let str_field = |name: &str| entry.get(name).and_then(Value::as_str);
    let Some(kid) = str_field("kid").filter(|k| !k.is_empty() && k.len() <= MAX_KID) else {
        return Ok(Err("no kid (or one longer than 256 bytes)".into()));
    };
    if let Some(usage) = entry.get("use")
        && usage.as_str() != Some("sig")
    {
        return Ok(Err(format!(
            "kid {kid} is not for signatures (use {usage})"
        )));
    }
    let material = match str_field("kty") {
        Some("RSA") => rsa_material(entry, kid)?,
        Some("EC") => match str_field("crv") {
            Some("P-256") => ec_material(entry, kid)?,
            crv => return Ok(Err(format!("kid {kid}: EC curve {crv:?} not supported"))),
        },
        Some("OKP") => match str_field("crv") {
            Some("Ed25519") => ed_material(entry, kid)?,
            crv => return Ok(Err(format!("kid {kid}: OKP curve {crv:?} not supported"))),
        },
        kty => return Ok(Err(format!("kid {kid}: key type {kty:?} not supported"))),
    };
    let (alg, decoding, parts) = match material {
        Ok(m) => m,
        Err(why) => return Ok(Err(why)),
    };
    if let Some(stated) = entry.get("alg")
        && stated.as_str() != Some(alg.name())
    {
        return Ok(Err(format!(
            "kid {kid}: alg {stated} is not one ztssh verifies with this key type"
        )));
    }
    let mut h = Sha256::new();
    h.update(alg.name().as_bytes());
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    Ok(Ok(Key {
        kid: kid.to_owned(),
        alg,
        decoding,
        fingerprint: h.finalize().into(),
    }))
}

/// A usable key (algorithm, key, components) or why it is skipped.
type Material = Result<(Alg, DecodingKey, Vec<Vec<u8>>), String>;

fn component(entry: &Value, kid: &str, name: &str) -> Result<Vec<u8>, String> {
    let text = entry.get(name).and_then(Value::as_str).ok_or_else(|| {
        format!("the key set's key {kid} has no {name:?}: the document is broken")
    })?;
    Base64UrlUnpadded::decode_vec(text).map_err(|_| {
        format!(
            "the key set's key {kid} has a {name:?} that is not base64url: the document is broken"
        )
    })
}

fn rsa_material(entry: &Value, kid: &str) -> Result<Material, String> {
    let n = component(entry, kid, "n")?;
    let e = component(entry, kid, "e")?;
    let n = strip_zeros(&n);
    let e = strip_zeros(&e);
    let bits = n.first().map_or(0, |b| {
        n.len() * 8 - usize::try_from(b.leading_zeros()).unwrap_or(8)
    });
    if bits < MIN_RSA_BITS {
        return Ok(Err(format!(
            "kid {kid}: RSA key of {bits} bits, under {MIN_RSA_BITS}"
        )));
    }
    let e_value = e.iter().try_fold(0u64, |acc, b| {
        acc.checked_mul(256).map(|a| a | u64::from(*b))
    });
    let e_ok = e_value.is_some_and(|v| v >= 3 && v % 2 == 1 && v <= u64::from(u32::MAX));
    if bits > MAX_RSA_BITS || !e_ok || n.last().is_none_or(|b| b % 2 == 0) {
        return Err(format!(
            "the key set's RSA key {kid} is not a usable public key ({bits} bits): the document \
             is broken"
        ));
    }
    let decoding = DecodingKey::from_rsa_raw_components(n, e);
    Ok(Ok((Alg::Rs256, decoding, vec![n.to_vec(), e.to_vec()])))
}

fn ec_material(entry: &Value, kid: &str) -> Result<Material, String> {
    let x = component(entry, kid, "x")?;
    let y = component(entry, kid, "y")?;
    if x.len() != 32 || y.len() != 32 {
        return Err(format!(
            "the key set's P-256 key {kid} has coordinates of {} and {} bytes, not 32",
            x.len(),
            y.len()
        ));
    }
    let point = [&[4u8][..], &x, &y].concat();
    let decoding = DecodingKey::from_ec_der(&point);
    usable(&decoding, Alg::Es256, kid)?;
    Ok(Ok((Alg::Es256, decoding, vec![point])))
}

fn ed_material(entry: &Value, kid: &str) -> Result<Material, String> {
    let x = component(entry, kid, "x")?;
    if x.len() != 32 {
        return Err(format!(
            "the key set's Ed25519 key {kid} is {} bytes, not 32",
            x.len()
        ));
    }
    let decoding = DecodingKey::from_ed_der(&x);
    usable(&decoding, Alg::EdDsa, kid)?;
    Ok(Ok((Alg::EdDsa, decoding, vec![x])))
}

/// Whether the backend takes `key` for `alg` (a point on the curve): it
/// builds a verifier before it looks at the (empty) signature.
fn usable(key: &DecodingKey, alg: Alg, kid: &str) -> Result<(), String> {
    jsonwebtoken::crypto::verify("", b"", key, alg.jwt())
        .map(|_| ())
        .map_err(|_| format!("the key set's key {kid} is not a valid {alg} public key"))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// An issuer's key set in force: when it was fetched, and how long it may
/// serve before it counts as stale.
#[derive(Clone, Debug)]
pub struct KeysInForce {
    /// The keys.
    pub set: Arc<KeySet>,
    /// When they were fetched (or the pinned file read).
    pub fetched: UnixTime,
    /// Seconds after `fetched` from which they are stale; `None` for a
    /// pinned file, never stale.
    pub max_age_secs: Option<u64>,
}

impl KeysInForce {
    /// Whether they may no longer be used at `now`.
    pub fn stale(&self, now: UnixTime) -> bool {
        self.max_age_secs
            .is_some_and(|age| now >= self.fetched.saturating_add(age))
    }
}
