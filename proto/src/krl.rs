//! A reader for OpenSSH key revocation lists (KRLs), as `ssh-keygen -k`
//! and SSH CAs write them (OpenSSH's `PROTOCOL.krl`), and the question sshd
//! asks of one: is this key, or this certificate, revoked?
//!
//! ```text
//! KRL     = "SSHKRL\n\0" format_version:u32 (=1) krl_version:u64
//!           generated_date:u64 flags:u64 reserved:string comment:string
//!           section*
//! section = type:u8 data:string
//!   1  certificates: ca_key:string (empty: any CA) reserved:string
//!                    (subtype:u8 subdata:string)*
//!        0x20 serial list    serial:u64 ...
//!        0x21 serial range   lo:u64 hi:u64
//!        0x22 serial bitmap  offset:u64 bitmap:mpint (bit i: offset + i)
//!        0x23 key ids        key_id:string ...
//!        0x39 extension      name:string critical:u8 contents:string
//!   2  explicit keys:        public_key_blob:string ...
//!   3  SHA-1 fingerprints:   hash:string (20 bytes) ...
//!   4  signature:            refused (see below)
//!   5  SHA-256 fingerprints: hash:string (32 bytes) ...
//!   255 extension:           name:string critical:u8 contents:string
//! ```
//!
//! What is accepted and refused follows OpenSSH's `krl.c`, so that ztssh
//! and sshd agree on every KRL both read: serial 0 or a range with lo > hi
//! refuses the whole KRL (sshd then refuses every key); an unknown section
//! or a critical extension refuses it; a non-critical extension is
//! skipped. Two choices of our own, both refusals: a **signature section**
//! (OpenSSH ≥ 9.4 refuses signed KRLs too, and never had a way to pin the
//! signer for sshd; a KRL is trusted for where it comes from, see
//! `docs/THREAT_MODEL.md`), and a CA key ztssh cannot parse (a certificate
//! or an unknown key type; OpenSSH compares such keys, ztssh would have to
//! guess). Both are reported; the KRL in force stays.
//!
//! Memory stays proportional to what the KRL states, not to what it
//! revokes: serial ranges are kept as ranges, single serials as one sorted
//! vector per CA, a bitmap as runs of set bits; everything is searched by
//! binary search. [`MAX_KRL_BYTES`] and [`MAX_SERIAL_ENTRIES`] cap the rest.

use std::collections::BTreeMap;

use ssh_key::encoding::{Decode, Encode};
use ssh_key::public::KeyData;
use thiserror::Error;

use crate::codec::Reader;

mod superset;
#[cfg(any(test, feature = "testkit"))]
pub mod write;

pub use superset::Unrevoked;

/// The file magic.
pub const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
/// The only format version there is.
pub const FORMAT_VERSION: u32 = 1;
/// The largest KRL read: a hundred thousand SHA-256 hashes take 3.6 MB,
/// a hundred thousand serials 0.8 MB.
pub const MAX_KRL_BYTES: usize = 24 << 20;
/// The most serial entries (single serials plus ranges, over every CA) one
/// KRL may hold once decoded: a bitmap section expands to one entry per run
/// of set bits, so a small KRL could otherwise ask for much memory.
pub const MAX_SERIAL_ENTRIES: usize = 4_000_000;
/// The largest bitmap OpenSSH reads (`SSHBUF_MAX_BIGNUM`), in bytes.
const MAX_BITMAP_BYTES: usize = 2048;

/// Section: certificates under one CA (or any CA).
pub const SECTION_CERTIFICATES: u8 = 1;
/// Section: explicit public key blobs.
pub const SECTION_EXPLICIT_KEY: u8 = 2;
/// Section: SHA-1 fingerprints of key blobs.
pub const SECTION_SHA1: u8 = 3;
/// Section: a signature (refused).
pub const SECTION_SIGNATURE: u8 = 4;
/// Section: SHA-256 fingerprints of key blobs.
pub const SECTION_SHA256: u8 = 5;
/// Section: an extension.
pub const SECTION_EXTENSION: u8 = 255;
/// Certificate subsection: a list of serials.
pub const CERT_SERIAL_LIST: u8 = 0x20;
/// Certificate subsection: a range of serials.
pub const CERT_SERIAL_RANGE: u8 = 0x21;
/// Certificate subsection: a bitmap of serials.
pub const CERT_SERIAL_BITMAP: u8 = 0x22;
/// Certificate subsection: key ids.
pub const CERT_KEY_ID: u8 = 0x23;
/// Certificate subsection: an extension.
pub const CERT_EXTENSION: u8 = 0x39;

/// Why a KRL was refused. Each message says what is wrong and, where the
/// operator can act, what to do.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KrlError {
    /// Not a KRL at all.
    #[error("not an OpenSSH KRL (no SSHKRL magic); write one with ssh-keygen -k")]
    NotKrl,
    /// Larger than [`MAX_KRL_BYTES`].
    #[error("the KRL is {0} bytes, more than the {MAX_KRL_BYTES}-byte cap")]
    TooLarge(usize),
    /// The bytes end early or do not parse.
    #[error("the KRL is malformed: {0}")]
    Malformed(String),
    /// Something OpenSSH refuses too (its KRL would make sshd refuse every key).
    #[error("the KRL is invalid: {0} (OpenSSH refuses it too)")]
    Invalid(String),
    /// Something ztssh refuses by choice.
    #[error("the KRL is not accepted: {0}")]
    Unsupported(String),
}

fn malformed(what: impl Into<String>) -> KrlError {
    KrlError::Malformed(what.into())
}

/// The certificates revoked under one CA key (or under any CA).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertScope {
    /// Single revoked serials, sorted, no duplicates.
    serials: Vec<u64>,
    /// Revoked serial ranges `(lo, hi)`, inclusive, sorted and merged.
    ranges: Vec<(u64, u64)>,
    /// Revoked key ids, sorted, no duplicates.
    key_ids: Vec<Vec<u8>>,
}

impl CertScope {
    fn revokes_serial(&self, serial: u64) -> bool {
        if self.serials.binary_search(&serial).is_ok() {
            return true;
        }
        // The last range starting at or below the serial.
        let i = self.ranges.partition_point(|&(lo, _)| lo <= serial);
        i > 0 && self.ranges.get(i - 1).is_some_and(|&(_, hi)| serial <= hi)
    }

    fn revokes_key_id(&self, key_id: &[u8]) -> bool {
        self.key_ids
            .binary_search_by(|k| k.as_slice().cmp(key_id))
            .is_ok()
    }

    /// How many serials and ranges it holds (for logs).
    pub fn serial_entries(&self) -> usize {
        self.serials.len() + self.ranges.len()
    }

    fn normalize(&mut self) {
        self.serials.sort_unstable();
        self.serials.dedup();
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(lo, hi) in &self.ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.ranges = merged;
        self.key_ids.sort_unstable();
        self.key_ids.dedup();
    }
}

/// Which rule of a KRL revokes a key or certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KrlHit {
    /// The key's SHA-1 fingerprint is listed.
    Sha1,
    /// The key's SHA-256 fingerprint is listed.
    Sha256,
    /// The key itself is listed.
    Key,
    /// The certificate's key id, under its CA.
    KeyId,
    /// The certificate's key id, under any CA.
    KeyIdAnyCa,
    /// The certificate's serial, under its CA.
    Serial,
    /// The certificate's serial, under any CA.
    SerialAnyCa,
    /// The CA key that signed the certificate is revoked as a key.
    CaKey,
    /// The key could not be encoded to be looked up (never for a key that
    /// parsed); counted as revoked, so that a lookup never fails open.
    Unencodable,
}

impl KrlHit {
    /// A few words for a user or an operator.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Sha1 => "its SHA-1 fingerprint",
            Self::Sha256 => "its SHA-256 fingerprint",
            Self::Key => "the key itself",
            Self::KeyId => "the certificate's key id",
            Self::KeyIdAnyCa => "the certificate's key id (under any CA)",
            Self::Serial => "the certificate's serial",
            Self::SerialAnyCa => "the certificate's serial (under any CA)",
            Self::CaKey => "the CA key that signed the certificate",
            Self::Unencodable => "a key that cannot be encoded to be looked up",
        }
    }
}

/// A decoded KRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Krl {
    /// The list's version: ztssh only ever replaces a KRL by one with a
    /// higher version, or the same version revoking more ([`offer`]; sshd
    /// does not look at it).
    pub krl_version: u64,
    /// When it was made (Unix seconds), as its writer says.
    pub generated: u64,
    /// The header's flags (no flag is defined; OpenSSH ignores them).
    pub flags: u64,
    /// Free text, as `ssh-keygen -Q -l` shows it (lossy UTF-8).
    pub comment: String,
    /// Certificate scopes by CA key blob (re-encoded canonically); the
    /// empty blob is the scope of any CA.
    scopes: BTreeMap<Vec<u8>, CertScope>,
    /// Revoked plain key blobs, sorted.
    keys: Vec<Vec<u8>>,
    /// Revoked SHA-1 fingerprints of key blobs, sorted.
    sha1: Vec<[u8; 20]>,
    /// Revoked SHA-256 fingerprints of key blobs, sorted.
    sha256: Vec<[u8; 32]>,
}

/// Reads a `u32`-length string.
fn string<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], KrlError> {
    let len = r.u32().map_err(|e| malformed(e.to_string()))?;
    let len = usize::try_from(len).map_err(|_| malformed("a string longer than memory"))?;
    r.take(len).map_err(|e| malformed(e.to_string()))
}

/// A C string as OpenSSH's `sshbuf_get_cstring` reads it: no NUL inside.
fn cstring<'a>(r: &mut Reader<'a>, what: &str) -> Result<&'a [u8], KrlError> {
    let s = string(r)?;
    if s.contains(&0) {
        return Err(KrlError::Invalid(format!("{what} contains a NUL byte")));
    }
    Ok(s)
}

fn u8_of(r: &mut Reader<'_>) -> Result<u8, KrlError> {
    r.u8().map_err(|e| malformed(e.to_string()))
}

fn u64_of(r: &mut Reader<'_>) -> Result<u64, KrlError> {
    r.u64().map_err(|e| malformed(e.to_string()))
}

/// A public key blob re-encoded as OpenSSH compares keys.
fn key_blob(key: &KeyData) -> Option<Vec<u8>> {
    key.encode_vec().ok()
}

/// An extension (a section or a certificate subsection): refused when
/// critical, as OpenSSH does, skipped otherwise.
fn extension(data: &[u8], where_: &str) -> Result<(), KrlError> {
    let mut r = Reader::new(data, "KRL extension");
    let name = cstring(&mut r, "an extension name")?;
    let critical = u8_of(&mut r)?;
    string(&mut r)?;
    if r.remaining() != 0 {
        return Err(KrlError::Invalid(format!("{where_} has trailing data")));
    }
    if critical != 0 {
        return Err(KrlError::Invalid(format!(
            "{where_} \"{}\" is critical and not understood; publish the KRL without it",
            String::from_utf8_lossy(name).escape_debug()
        )));
    }
    Ok(())
}

struct Parser {
    krl: Krl,
    serial_entries: usize,
}

impl Parser {
    fn count(&mut self, n: usize) -> Result<(), KrlError> {
        self.serial_entries = self.serial_entries.saturating_add(n);
        if self.serial_entries > MAX_SERIAL_ENTRIES {
            return Err(KrlError::Unsupported(format!(
                "it holds more than {MAX_SERIAL_ENTRIES} serial entries; \
                 revoke consecutive serials as ranges"
            )));
        }
        Ok(())
    }

    fn certificates(&mut self, data: &[u8]) -> Result<(), KrlError> {
        let mut r = Reader::new(data, "KRL certificate section");
        let ca = string(&mut r)?;
        string(&mut r)?; // reserved
        let scope_key = if ca.is_empty() {
            Vec::new()
        } else {
            let mut blob = ca;
            let key = KeyData::decode(&mut blob)
                .ok()
                .filter(|_| blob.is_empty())
                .ok_or_else(|| {
                    KrlError::Unsupported(
                        "a certificate section names a CA key ztssh cannot read \
                         (not a plain public key of a known type)"
                            .into(),
                    )
                })?;
            key_blob(&key).ok_or_else(|| malformed("a CA key that cannot be re-encoded"))?
        };
        let mut scope = self.krl.scopes.remove(&scope_key).unwrap_or_default();
        let done = self.cert_subsections(&mut r, &mut scope);
        self.krl.scopes.insert(scope_key, scope);
        done
    }

    fn cert_subsections(
        &mut self,
        r: &mut Reader<'_>,
        scope: &mut CertScope,
    ) -> Result<(), KrlError> {
        while r.remaining() > 0 {
            let kind = u8_of(r)?;
            let data = string(r)?;
            let mut s = Reader::new(data, "KRL certificate subsection");
            match kind {
                CERT_SERIAL_LIST => {
                    if data.len() % 8 != 0 {
                        return Err(malformed("a serial list is not a whole number of serials"));
                    }
                    self.count(data.len() / 8)?;
                    while s.remaining() > 0 {
                        let serial = u64_of(&mut s)?;
                        if serial == 0 {
                            return Err(KrlError::Invalid("it revokes serial 0".into()));
                        }
                        scope.serials.push(serial);
                    }
                }
                CERT_SERIAL_RANGE => {
                    let (lo, hi) = (u64_of(&mut s)?, u64_of(&mut s)?);
                    if lo == 0 || lo > hi {
                        return Err(KrlError::Invalid(format!(
                            "it revokes the serial range {lo}-{hi}"
                        )));
                    }
                    self.count(1)?;
                    scope.ranges.push((lo, hi));
                }
                CERT_SERIAL_BITMAP => {
                    let offset = u64_of(&mut s)?;
                    let bits = string(&mut s)?;
                    self.bitmap(offset, bits, scope)?;
                }
                CERT_KEY_ID => {
                    while s.remaining() > 0 {
                        scope.key_ids.push(cstring(&mut s, "a key id")?.to_vec());
                    }
                }
                CERT_EXTENSION => {
                    extension(s.rest(), "a certificate extension")?;
                }
                other => {
                    return Err(KrlError::Invalid(format!(
                        "unknown certificate subsection type {other:#04x}"
                    )));
                }
            }
            if s.remaining() > 0 {
                return Err(malformed("a certificate subsection has trailing data"));
            }
        }
        Ok(())
    }

    /// An mpint bitmap, as OpenSSH's `sshbuf_get_bignum2_bytes_direct`
    /// reads it: not negative, at most 2048 bytes after one sign byte,
    /// leading zeros dropped. Bit i (from the least significant) revokes
    /// `offset + i`; runs of set bits become ranges.
    fn bitmap(&mut self, offset: u64, bits: &[u8], scope: &mut CertScope) -> Result<(), KrlError> {
        if bits.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(KrlError::Invalid("a serial bitmap is negative".into()));
        }
        if bits.len() > MAX_BITMAP_BYTES + 1
            || (bits.len() == MAX_BITMAP_BYTES + 1 && bits.first() != Some(&0))
        {
            return Err(KrlError::Invalid("a serial bitmap is too large".into()));
        }
        let start = bits.iter().position(|&b| b != 0).unwrap_or(bits.len());
        let bits = bits.get(start..).unwrap_or_default();
        let Some(&top) = bits.first() else {
            return Ok(());
        };
        // The number of bits: OpenSSH refuses a bitmap whose last bit
        // (set or not) lies past 2^64 - 1.
        let nbits = (bits.len() as u64 - 1) * 8 + u64::from(8 - top.leading_zeros());
        if offset.checked_add(nbits - 1).is_none() {
            return Err(KrlError::Invalid("a serial bitmap wraps past 2^64".into()));
        }
        let bit = |i: u64| -> bool {
            let byte = bits.len() - 1 - (i / 8) as usize;
            bits.get(byte).is_some_and(|b| b >> (i % 8) & 1 == 1)
        };
        let mut i = 0;
        while i < nbits {
            if !bit(i) {
                i += 1;
                continue;
            }
            let lo = i;
            while i < nbits && bit(i) {
                i += 1;
            }
            let (first, last) = (offset + lo, offset + i - 1);
            if first == 0 {
                return Err(KrlError::Invalid("it revokes serial 0".into()));
            }
            self.count(1)?;
            if first == last {
                scope.serials.push(first);
            } else {
                scope.ranges.push((first, last));
            }
        }
        Ok(())
    }

    fn section(&mut self, kind: u8, data: &[u8]) -> Result<(), KrlError> {
        match kind {
            SECTION_CERTIFICATES => self.certificates(data),
            SECTION_EXPLICIT_KEY => {
                let mut r = Reader::new(data, "KRL explicit key section");
                while r.remaining() > 0 {
                    self.krl.keys.push(string(&mut r)?.to_vec());
                }
                Ok(())
            }
            SECTION_SHA1 => hashes(data, &mut self.krl.sha1, "SHA-1"),
            SECTION_SHA256 => hashes(data, &mut self.krl.sha256, "SHA-256"),
            SECTION_SIGNATURE => Err(KrlError::Unsupported(
                "it carries a signature section (OpenSSH 9.4 and later refuse signed KRLs too); \
                 publish it unsigned, over a channel you trust"
                    .into(),
            )),
            SECTION_EXTENSION => extension(data, "an extension section"),
            other => Err(KrlError::Invalid(format!("unknown section type {other}"))),
        }
    }
}

fn hashes<const N: usize>(data: &[u8], out: &mut Vec<[u8; N]>, what: &str) -> Result<(), KrlError> {
    let mut r = Reader::new(data, "KRL fingerprint section");
    while r.remaining() > 0 {
        let h = string(&mut r)?;
        let h: [u8; N] = h.try_into().map_err(|_| {
            KrlError::Invalid(format!(
                "a {what} fingerprint of {} bytes, not {N}",
                h.len()
            ))
        })?;
        out.push(h);
    }
    Ok(())
}

impl Krl {
    /// Decodes a binary KRL (never panics; everything is bounded).
    pub fn decode(bytes: &[u8]) -> Result<Self, KrlError> {
        if bytes.len() > MAX_KRL_BYTES {
            return Err(KrlError::TooLarge(bytes.len()));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(KrlError::NotKrl);
        }
        let mut r = Reader::new(bytes.get(MAGIC.len()..).unwrap_or_default(), "KRL header");
        let version = r.u32().map_err(|e| malformed(e.to_string()))?;
        if version != FORMAT_VERSION {
            return Err(KrlError::Invalid(format!(
                "format version {version} (only {FORMAT_VERSION} exists)"
            )));
        }
        let krl_version = u64_of(&mut r)?;
        let generated = u64_of(&mut r)?;
        let flags = u64_of(&mut r)?;
        string(&mut r)?; // reserved
        let comment = String::from_utf8_lossy(cstring(&mut r, "the comment")?).into_owned();
        let mut p = Parser {
            krl: Krl {
                krl_version,
                generated,
                flags,
                comment,
                scopes: BTreeMap::new(),
                keys: Vec::new(),
                sha1: Vec::new(),
                sha256: Vec::new(),
            },
            serial_entries: 0,
        };
        while r.remaining() > 0 {
            let kind = u8_of(&mut r)?;
            let data = string(&mut r)?;
            p.section(kind, data)?;
        }
        let mut krl = p.krl;
        for scope in krl.scopes.values_mut() {
            scope.normalize();
        }
        krl.keys.sort_unstable();
        krl.keys.dedup();
        krl.sha1.sort_unstable();
        krl.sha1.dedup();
        krl.sha256.sort_unstable();
        krl.sha256.dedup();
        Ok(krl)
    }

    /// Whether a plain key is revoked, as sshd decides it for a key that is
    /// not a certificate: by SHA-1 or SHA-256 fingerprint of its blob, or
    /// the blob itself.
    pub fn revokes_key(&self, key: &KeyData) -> Option<KrlHit> {
        let Some(blob) = key_blob(key) else {
            return Some(KrlHit::Unencodable);
        };
        self.revokes_blob(&blob)
    }

    fn revokes_blob(&self, blob: &[u8]) -> Option<KrlHit> {
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, blob);
        if sha1
            .as_ref()
            .try_into()
            .is_ok_and(|h: [u8; 20]| self.sha1.binary_search(&h).is_ok())
        {
            return Some(KrlHit::Sha1);
        }
        let sha256: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(blob).into();
        if self.sha256.binary_search(&sha256).is_ok() {
            return Some(KrlHit::Sha256);
        }
        if self
            .keys
            .binary_search_by(|k| k.as_slice().cmp(blob))
            .is_ok()
        {
            return Some(KrlHit::Key);
        }
        None
    }

    /// Whether a certificate is revoked, as sshd decides it: its key (as a
    /// plain key), its key id or serial under `ca_key` or under any CA
    /// (serial 0 is never revoked by serial), or `ca_key` itself as a
    /// plain key.
    pub fn revokes_cert(
        &self,
        ca_key: &KeyData,
        serial: u64,
        key_id: &str,
        key: &KeyData,
    ) -> Option<KrlHit> {
        if let Some(hit) = self.revokes_key(key) {
            return Some(hit);
        }
        let Some(ca) = key_blob(ca_key) else {
            return Some(KrlHit::Unencodable);
        };
        let scoped = [(ca.as_slice(), false), (&[][..], true)];
        for (blob, any) in scoped {
            let Some(scope) = self.scopes.get(blob) else {
                continue;
            };
            if scope.revokes_key_id(key_id.as_bytes()) {
                return Some(if any {
                    KrlHit::KeyIdAnyCa
                } else {
                    KrlHit::KeyId
                });
            }
            if serial != 0 && scope.revokes_serial(serial) {
                return Some(if any {
                    KrlHit::SerialAnyCa
                } else {
                    KrlHit::Serial
                });
            }
        }
        self.revokes_blob(&ca).map(|_| KrlHit::CaKey)
    }

    /// The heap memory the decoded KRL holds, in bytes (vector capacities
    /// and the map's keys; the map's own nodes are not counted).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let scopes: usize = self
            .scopes
            .iter()
            .map(|(ca, s)| {
                ca.capacity()
                    + size_of::<CertScope>()
                    + s.serials.capacity() * size_of::<u64>()
                    + s.ranges.capacity() * size_of::<(u64, u64)>()
                    + s.key_ids
                        .iter()
                        .map(|k| k.capacity() + size_of::<Vec<u8>>())
                        .sum::<usize>()
            })
            .sum();
        scopes
            + self
                .keys
                .iter()
                .map(|k| k.capacity() + size_of::<Vec<u8>>())
                .sum::<usize>()
            + self.sha1.capacity() * 20
            + self.sha256.capacity() * 32
            + self.comment.capacity()
    }

    /// Counts for logs: (CA scopes, serial entries, key ids, keys and
    /// fingerprints).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let serials = self.scopes.values().map(CertScope::serial_entries).sum();
        let ids = self.scopes.values().map(|s| s.key_ids.len()).sum();
        let keys = self.keys.len() + self.sha1.len() + self.sha256.len();
        (self.scopes.len(), serials, ids, keys)
    }
}

/// What to do with a KRL offered to replace the one in force. KRLs are
/// unsigned, so the version is all that stops a replayed older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KrlUpdate {
    /// Newer (or none in force): it replaces the KRL in force.
    Replace,
    /// The same version revoking everything the one in force does and
    /// more (`ssh-keygen -k -u` keeps the version): it replaces it. A
    /// replay of an older KRL of this version can never look like this.
    Grown,
    /// The same version revoking the same things (regenerated, say):
    /// nothing changes.
    Same,
    /// The same version un-revoking something: refused, since a replayed
    /// older KRL of the same version would look just like it. The CA must
    /// raise the version (`ssh-keygen -k -z VERSION`) to withdraw a
    /// revocation.
    Changed {
        /// The version of both.
        version: u64,
        /// What it would un-revoke.
        unrevokes: Unrevoked,
    },
    /// Older: refused (no rollback).
    Rollback {
        /// The version in force.
        loaded: u64,
        /// The version offered.
        offered: u64,
    },
}

impl KrlUpdate {
    /// Whether the offered KRL goes into force.
    pub fn replaces(&self) -> bool {
        matches!(self, Self::Replace | Self::Grown)
    }
}

/// Only a newer KRL, or one of the same version that only adds
/// revocations, replaces the one in force (`current`; none yet, and any
/// KRL replaces it); see [`KrlUpdate`].
pub fn offer(current: Option<&Krl>, offered: &Krl) -> KrlUpdate {
    let Some(cur) = current else {
        return KrlUpdate::Replace;
    };
    match offered.krl_version.cmp(&cur.krl_version) {
        std::cmp::Ordering::Greater => KrlUpdate::Replace,
        std::cmp::Ordering::Less => KrlUpdate::Rollback {
            loaded: cur.krl_version,
            offered: offered.krl_version,
        },
        std::cmp::Ordering::Equal if cur.same_revocations(offered) => KrlUpdate::Same,
        std::cmp::Ordering::Equal => match offered.unrevokes(cur) {
            None => KrlUpdate::Grown,
            Some(unrevokes) => KrlUpdate::Changed {
                version: cur.krl_version,
                unrevokes,
            },
        },
    }
}

impl Krl {
    /// Whether two KRLs revoke exactly the same (header fields aside).
    pub fn same_revocations(&self, other: &Krl) -> bool {
        self.scopes == other.scopes
            && self.keys == other.keys
            && self.sha1 == other.sha1
            && self.sha256 == other.sha256
    }
}

#[cfg(test)]
#[path = "krl_tests.rs"]
mod tests;
