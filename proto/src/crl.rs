//! The root-signed revocation list: banned principals, revoked server
//! licences (by server id), revoked certificate serials and revoked user
//! keys (by SHA-256 fingerprint).
//!
//! ```text
//! Crl = "ZTRL" ver=1|2 list_version:u64 issued:u64 next_update:u64 issuer[32]
//!       n:u16 principal:str8 * n
//!       m:u16 server_id:str8 * m
//!       k:u32 serial[16] * k
//!       [ver 2, 3] u:u32 user_key_sha256[32] * u   ; ver 2: u >= 1
//!       [ver 3]    a:u32 noise_key[32] * a          ; proxies' Noise static keys
//!                  b:u32 subca_key[32] * b          ; proxies' Sub-CA keys; a + b >= 1
//!                                                    ; (ver 4: a + b may be 0)
//!       [ver 4]    d:u32 delegated_key[32] * d      ; revoked delegations; d >= 1
//!       signature[64]   ; by the root (or a `revocations` delegation's key,
//!                       ; the delegation beside the list), context CTX_CRL
//! ```
//!
//! A delegation is revoked by its delegated key (the section above) or by
//! its serial (in the serial section, beside certificate and licence
//! serials: all are random 128-bit numbers).
//!
//! ```text
//! ```
//!
//! Each list is written in the lowest version that can hold it: one with
//! no revoked user or server keys as version 1, byte for byte as before,
//! so proxies that know only version 1 keep reading it; one with user keys
//! and no server keys as version 2.

use std::collections::HashSet;

use crate::cert::{MAX_PRINCIPAL, MAX_SERVER_ID, Serial, check_name};
use crate::codec::{Reader, Writer};
use crate::error::{AuthError, Malformed};
use crate::keys::{PublicKey, SignError, SigningKey};
use crate::labels::{self, magic};
use crate::rootkey::{RootKey, RootSigner};
use crate::time::UnixTime;

const VERSION: u8 = 1;
/// Where the issuer starts: after the magic, the format version and the
/// three u64 fields.
const ISSUER_AT: usize = 4 + 1 + 3 * 8;
/// The version that adds revoked user keys.
const VERSION_USER_KEYS: u8 = 2;
/// The version that adds revoked proxy keys (Noise static and Sub-CA).
const VERSION_SERVER_KEYS: u8 = 3;
/// Most banned principals or revoked servers in one list.
pub const MAX_NAMES: usize = 10_000;
/// Most revoked serials in one list.
pub const MAX_SERIALS: usize = 1_000_000;
/// Most revoked user keys in one list.
pub const MAX_USER_KEYS: usize = 100_000;
/// Most revoked proxy keys of each kind (Noise, Sub-CA) in one list.
pub const MAX_SERVER_KEYS: usize = 100_000;
/// The version that adds revoked delegations (by delegated key).
const VERSION_DELEGATIONS: u8 = 4;
/// The most a list a delegated key signed may raise the version above the
/// list in force (the CA tool's own bound on its counter): a stolen
/// `revocations` key cannot move the version out of the root's reach
/// (`u64::MAX`), after which no list, not even the one revoking it, loads.
pub const MAX_DELEGATED_VERSION_JUMP: u64 = 1_000_000;
/// Most revoked delegated keys in one list.
pub const MAX_DELEGATIONS: usize = 10_000;

/// What a revocation list revokes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Banned principals.
    pub principals: HashSet<String>,
    /// Revoked server licences, by server id.
    pub servers: HashSet<String>,
    /// Revoked certificate or licence serials.
    pub serials: HashSet<Serial>,
    /// Revoked user keys: SHA-256 of the key's OpenSSH wire encoding (the
    /// hash of its `SHA256:` fingerprint).
    pub user_keys: HashSet<[u8; 32]>,
    /// Revoked proxy Noise static keys: every licence for one is revoked,
    /// whatever its serial or server id.
    pub noise_keys: HashSet<[u8; 32]>,
    /// Revoked proxy Sub-CA keys, the same way.
    pub subca_keys: HashSet<[u8; 32]>,
    /// Revoked delegations, by delegated key: every delegation of that
    /// key, and so everything it signs, is refused.
    pub delegated_keys: HashSet<[u8; 32]>,
}

impl Revocations {
    /// Which of `licence`'s keys is revoked, if one is: `"Noise"` or
    /// `"Sub-CA"`.
    pub fn revoked_licence_key(&self, licence: &crate::cert::LicenceBody) -> Option<&'static str> {
        if self.noise_keys.contains(&licence.noise_key) {
            Some("Noise")
        } else if self.subca_keys.contains(&licence.subca_key.0) {
            Some("Sub-CA")
        } else {
            None
        }
    }

    /// Why `delegation` is revoked, if it is: by its key or its serial.
    pub fn revoked_delegation(
        &self,
        delegation: &crate::delegation::DelegationBody,
    ) -> Option<&'static str> {
        if self.delegated_keys.contains(&delegation.key.0) {
            Some("its delegated key is revoked")
        } else if self.serials.contains(&delegation.serial) {
            Some("its serial is revoked")
        } else {
            None
        }
    }

    /// Whether every entry of `other` is also in `self`.
    pub fn contains_all(&self, other: &Revocations) -> bool {
        other.principals.is_subset(&self.principals)
            && other.servers.is_subset(&self.servers)
            && other.serials.is_subset(&self.serials)
            && other.user_keys.is_subset(&self.user_keys)
            && other.noise_keys.is_subset(&self.noise_keys)
            && other.subca_keys.is_subset(&self.subca_keys)
            && other.delegated_keys.is_subset(&self.delegated_keys)
    }

    /// Whether `key` is revoked.
    pub fn revokes_user_key(&self, key: &ssh_key::PublicKey) -> bool {
        !self.user_keys.is_empty()
            && key
                .fingerprint(ssh_key::HashAlg::Sha256)
                .sha256()
                .is_some_and(|h| self.user_keys.contains(&h))
    }
}

/// A decoded revocation list; [`Crl::decode_verified`] checks the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crl {
    /// Monotonic list version; proxies refuse to go backwards.
    pub list_version: u64,
    /// When it was signed.
    pub issued: UnixTime,
    /// When a newer list is due; after this the list is stale.
    pub next_update: UnixTime,
    /// The root that signed it.
    pub issuer: PublicKey,
    /// The entries.
    pub revoked: Revocations,
    /// The root's delegation to the key that signed the list, when a
    /// delegated key did (set by [`crate::delegation::verify_chain`]; never
    /// encoded in the list: it travels beside it).
    pub delegation: Option<crate::delegation::Delegation>,
}

fn sorted<T: Ord + Clone>(set: &HashSet<T>) -> Vec<T> {
    let mut v: Vec<T> = set.iter().cloned().collect();
    v.sort();
    v
}

impl Crl {
    /// The lowest format version that holds the list.
    fn version(&self) -> u8 {
        let r = &self.revoked;
        if !r.delegated_keys.is_empty() {
            VERSION_DELEGATIONS
        } else if !r.noise_keys.is_empty() || !r.subca_keys.is_empty() {
            VERSION_SERVER_KEYS
        } else if !r.user_keys.is_empty() {
            VERSION_USER_KEYS
        } else {
            VERSION
        }
    }

    fn tbs(&self) -> Vec<u8> {
        let version = self.version();
        let mut w = Writer::new();
        w.bytes(magic::CRL)
            .u8(version)
            .u64(self.list_version)
            .u64(self.issued)
            .u64(self.next_update);
        w.bytes(&self.issuer.0);
        for names in [&self.revoked.principals, &self.revoked.servers] {
            w.u16(u16::try_from(names.len()).unwrap_or(u16::MAX));
            for n in sorted(names) {
                w.str8(&n);
            }
        }
        let serials: Vec<[u8; 16]> = sorted(&self.revoked.serials.iter().map(|s| s.0).collect());
        w.u32(u32::try_from(serials.len()).unwrap_or(u32::MAX));
        for s in serials {
            w.bytes(&s);
        }
        let r = &self.revoked;
        let sections: &[&HashSet<[u8; 32]>] = match version {
            VERSION_USER_KEYS => &[&r.user_keys],
            VERSION_SERVER_KEYS => &[&r.user_keys, &r.noise_keys, &r.subca_keys],
            VERSION_DELEGATIONS => &[
                &r.user_keys,
                &r.noise_keys,
                &r.subca_keys,
                &r.delegated_keys,
            ],
            _ => &[],
        };
        for keys in sections {
            let keys = sorted(keys);
            w.u32(u32::try_from(keys.len()).unwrap_or(u32::MAX));
            for k in keys {
                w.bytes(&k);
            }
        }
        w.into_vec()
    }

    /// Signs and encodes the list with the root key (or a delegated key:
    /// the issuer is whichever key signs).
    pub fn sign(&self, root: &SigningKey) -> Result<Vec<u8>, Malformed> {
        self.sign_with(root)
            .map_err(|e| e.into_malformed("revocation list"))
    }

    /// [`Crl::sign`] with the key wherever it is held.
    pub fn sign_with(&self, root: &(impl RootSigner + ?Sized)) -> Result<Vec<u8>, SignError> {
        let too_many = self.revoked.principals.len() > MAX_NAMES
            || self.revoked.servers.len() > MAX_NAMES
            || self.revoked.serials.len() > MAX_SERIALS
            || self.revoked.user_keys.len() > MAX_USER_KEYS
            || self.revoked.noise_keys.len() > MAX_SERVER_KEYS
            || self.revoked.subca_keys.len() > MAX_SERVER_KEYS
            || self.revoked.delegated_keys.len() > MAX_DELEGATIONS;
        if too_many {
            return Err(Malformed::Invalid {
                what: "revocation list",
                why: "too many entries",
            }
            .into());
        }
        if root.root_key().id() != self.issuer {
            return Err(Malformed::Invalid {
                what: "revocation list",
                why: "issuer is not the signing key",
            }
            .into());
        }
        let mut out = self.tbs();
        let sig = root.try_sign_root(labels::CTX_CRL, &out)?;
        sig.encode_into(&mut out);
        Ok(out)
    }

    /// Verifies that `root` signed the list, then parses it.
    ///
    /// Nothing the signature covers is parsed before it verifies: the
    /// format tag and the issuer sit at fixed offsets and the signature is
    /// the last 64 bytes, so a forged list (the list server is not trusted)
    /// costs one signature check, whatever it claims to hold. The signature
    /// is over the bytes as received; the parse then requires them to be
    /// canonical (every set strictly ascending, version 2 only with user
    /// keys), as [`Crl::sign`] writes them.
    pub fn decode_verified(bytes: &[u8], root: &RootKey) -> Result<Self, crate::ProtoError> {
        let (tbs, signature) = root.split_signed(bytes, "revocation list")?;
        if tbs.len() < ISSUER_AT + 32 {
            return Err(Malformed::Truncated("revocation list").into());
        }
        let mut r = Reader::new(tbs, "revocation list");
        r.expect(magic::CRL)?;
        let version = r.u8()?;
        if ![
            VERSION,
            VERSION_USER_KEYS,
            VERSION_SERVER_KEYS,
            VERSION_DELEGATIONS,
        ]
        .contains(&version)
        {
            return Err(Malformed::BadVersion {
                what: "revocation list",
                version,
            }
            .into());
        }
        if tbs.get(ISSUER_AT..ISSUER_AT + 32) != Some(&root.id().0[..]) {
            return Err(AuthError::WrongIssuer("revocation list").into());
        }
        root.verify(labels::CTX_CRL, tbs, &signature, "revocation list")?;
        Ok(Self::decode_signed(r, version)?)
    }

    /// Parses the signed bytes after the format version, which
    /// [`Crl::decode_verified`] has checked the root signed.
    fn decode_signed(mut r: Reader<'_>, version: u8) -> Result<Self, Malformed> {
        let list_version = r.u64()?;
        let issued = r.u64()?;
        let next_update = r.u64()?;
        let issuer = PublicKey(r.array()?);
        let principals = read_names(&mut r, MAX_PRINCIPAL)?;
        let servers = read_names(&mut r, MAX_SERVER_ID)?;
        let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if count > MAX_SERIALS || count.saturating_mul(16) > r.remaining() {
            return Err(Malformed::TooLong {
                what: "revocation list serials",
                len: count,
                max: MAX_SERIALS,
            });
        }
        let serials = read_ascending(&mut r, count, |r| {
            let raw = r.take(16)?;
            Ok((raw, Serial(to_array(raw)?)))
        })?;
        let user_keys = if version >= VERSION_USER_KEYS {
            read_keys(&mut r, MAX_USER_KEYS, "revocation list user keys")?
        } else {
            HashSet::new()
        };
        let (noise_keys, subca_keys) = if version >= VERSION_SERVER_KEYS {
            (
                read_keys(&mut r, MAX_SERVER_KEYS, "revocation list Noise keys")?,
                read_keys(&mut r, MAX_SERVER_KEYS, "revocation list Sub-CA keys")?,
            )
        } else {
            (HashSet::new(), HashSet::new())
        };
        let delegated_keys = if version == VERSION_DELEGATIONS {
            read_keys(&mut r, MAX_DELEGATIONS, "revocation list delegated keys")?
        } else {
            HashSet::new()
        };
        r.finish()?;
        // Each version exists for what it adds: a list is canonical only
        // in the lowest version that holds it.
        let lowest = match version {
            VERSION_USER_KEYS => !user_keys.is_empty(),
            VERSION_SERVER_KEYS => !noise_keys.is_empty() || !subca_keys.is_empty(),
            VERSION_DELEGATIONS => !delegated_keys.is_empty(),
            _ => true,
        };
        if !lowest {
            return Err(NOT_CANONICAL);
        }
        Ok(Self {
            list_version,
            issued,
            next_update,
            issuer,
            revoked: Revocations {
                principals,
                servers,
                serials,
                user_keys,
                noise_keys,
                subca_keys,
                delegated_keys,
            },
            delegation: None,
        })
    }

    /// Whether the list is past its next-update time.
    pub fn is_stale(&self, now: UnixTime) -> bool {
        now >= self.next_update
    }
}

fn read_keys(
    r: &mut Reader<'_>,
    max: usize,
    what: &'static str,
) -> Result<HashSet<[u8; 32]>, Malformed> {
    let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    if count > max || count.saturating_mul(32) > r.remaining() {
        return Err(Malformed::TooLong {
            what,
            len: count,
            max,
        });
    }
    read_ascending(r, count, |r| {
        let raw = r.take(32)?;
        Ok((raw, to_array(raw)?))
    })
}

fn read_names(r: &mut Reader<'_>, max: usize) -> Result<HashSet<String>, Malformed> {
    let n = usize::from(r.u16()?);
    if n > MAX_NAMES {
        return Err(Malformed::TooLong {
            what: "revocation list names",
            len: n,
            max: MAX_NAMES,
        });
    }
    read_ascending(r, n, |r| {
        let name = r.str8(max)?;
        check_name(name, max, "revoked name")?;
        Ok((name.as_bytes(), name.to_owned()))
    })
}

const NOT_CANONICAL: Malformed = Malformed::Invalid {
    what: "revocation list",
    why: "not in canonical form",
};

fn to_array<const N: usize>(raw: &[u8]) -> Result<[u8; N], Malformed> {
    raw.try_into()
        .map_err(|_| Malformed::Truncated("revocation list"))
}

/// Reads `count` entries, each encoded strictly greater (byte order) than
/// the one before: the order [`Crl::sign`] writes, so a duplicate or an
/// unsorted list, which is not the canonical encoding of any set, is
/// refused. `read` returns an entry's encoding and its value.
fn read_ascending<'a, T: std::hash::Hash + Eq>(
    r: &mut Reader<'a>,
    count: usize,
    mut read: impl FnMut(&mut Reader<'a>) -> Result<(&'a [u8], T), Malformed>,
) -> Result<HashSet<T>, Malformed> {
    let mut out = HashSet::with_capacity(count);
    let mut last: Option<&[u8]> = None;
    for _ in 0..count {
        let (raw, item) = read(r)?;
        if last.is_some_and(|l| l >= raw) {
            return Err(NOT_CANONICAL);
        }
        last = Some(raw);
        out.insert(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::TestRng;

    fn sample(root: &SigningKey, version: u64) -> Crl {
        let mut revoked = Revocations::default();
        revoked.principals.insert("mallory".into());
        revoked.servers.insert("web9".into());
        revoked.serials.insert(Serial([9; 16]));
        Crl {
            list_version: version,
            issued: 100,
            next_update: 200,
            issuer: root.public(),
            revoked,
            delegation: None,
        }
    }

    #[test]
    fn round_trip_verify_and_forgery() {
        let root = SigningKey::generate(&mut TestRng);
        let crl = sample(&root, 3);
        let bytes = crl.sign(&root).expect("sign");
        assert_eq!(
            Crl::decode_verified(&bytes, &root.public().into()).expect("verify"),
            crl
        );
        assert!(!crl.is_stale(199) && crl.is_stale(200));

        let other = SigningKey::generate(&mut TestRng);
        let e = Crl::decode_verified(&bytes, &other.public().into()).expect_err("foreign root");
        assert!(
            e.to_string().contains("not issued by the trusted key"),
            "{e}"
        );
        let forged = sample(&other, 3).sign(&other).expect("sign");
        assert!(Crl::decode_verified(&forged, &root.public().into()).is_err());

        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(Crl::decode_verified(&flipped, &root.public().into()).is_err());
        for cut in 0..bytes.len() {
            assert!(
                Crl::decode_verified(&bytes[..cut], &root.public().into()).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn user_keys_make_a_version_2_list_and_only_then() {
        let root = SigningKey::generate(&mut TestRng);
        let v1 = sample(&root, 1).sign(&root).expect("sign");
        assert_eq!(v1[4], 1, "no user keys: still version 1");
        let mut crl = sample(&root, 2);
        crl.revoked.user_keys.insert([5; 32]);
        crl.revoked.user_keys.insert([3; 32]);
        let v2 = crl.sign(&root).expect("sign");
        assert_eq!(v2[4], 2);
        assert_eq!(v2.len(), v1.len() + 4 + 64);
        assert_eq!(
            Crl::decode_verified(&v2, &root.public().into()).expect("v2"),
            crl
        );
        // A version 2 list with no user keys is not canonical.
        let mut empty = sample(&root, 3);
        empty.revoked.user_keys.clear();
        let mut tbs = empty.tbs();
        tbs[4] = 2;
        tbs.extend_from_slice(&0u32.to_be_bytes());
        let sig = root.sign(labels::CTX_CRL, &tbs);
        tbs.extend_from_slice(&sig);
        assert!(Crl::decode_verified(&tbs, &root.public().into()).is_err());
        // A huge user-key count is refused before allocating.
        let mut huge = v2.clone();
        let at = v2.len() - 64 - 2 * 32 - 4;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Crl::decode_verified(&huge, &root.public().into()).is_err());
    }

    #[test]
    fn server_keys_make_a_version_3_list_and_only_then() {
        let root = SigningKey::generate(&mut TestRng);
        let mut crl = sample(&root, 4);
        crl.revoked.noise_keys.insert([8; 32]);
        let v3 = crl.sign(&root).expect("sign");
        assert_eq!(v3[4], 3);
        assert_eq!(
            Crl::decode_verified(&v3, &root.public().into()).expect("v3"),
            crl
        );
        // With user keys and Sub-CA keys too, still one list.
        crl.revoked.user_keys.insert([1; 32]);
        crl.revoked.subca_keys.insert([2; 32]);
        crl.revoked.subca_keys.insert([0; 32]);
        let v3 = crl.sign(&root).expect("sign");
        assert_eq!(v3[4], 3);
        assert_eq!(
            Crl::decode_verified(&v3, &root.public().into()).expect("v3"),
            crl
        );
        // A version 3 list with no server keys is not canonical, even
        // signed by the root.
        let mut no_keys = sample(&root, 5);
        no_keys.revoked.user_keys.insert([1; 32]);
        let mut tbs = no_keys.tbs();
        tbs[4] = 3;
        tbs.extend_from_slice(&0u32.to_be_bytes());
        tbs.extend_from_slice(&0u32.to_be_bytes());
        let sig = root.sign(labels::CTX_CRL, &tbs);
        tbs.extend_from_slice(&sig);
        let e = Crl::decode_verified(&tbs, &root.public().into()).expect_err("not canonical");
        assert!(e.to_string().contains("canonical"), "{e}");
        // A forged version 3 list is refused on its signature.
        let mut forged = v3.clone();
        let n = forged.len();
        forged[n - 70] ^= 1;
        assert!(bad_signature(
            &Crl::decode_verified(&forged, &root.public().into()).expect_err("forged")
        ));
        // A huge key count is refused before allocating.
        let mut huge = v3.clone();
        let at = v3.len() - 64 - 2 * 32 - 4;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let sig = root.sign(labels::CTX_CRL, &huge[..n - 64]);
        huge[n - 64..].copy_from_slice(&sig);
        assert!(matches!(
            Crl::decode_verified(&huge, &root.public().into()),
            Err(crate::ProtoError::Malformed(Malformed::TooLong { .. }))
        ));
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let root = SigningKey::generate(&mut TestRng);
        let mut bytes = sample(&root, 1).sign(&root).expect("sign");
        // The serial count sits after the header, the two name lists; overwrite it.
        let pos = 4 + 1 + 24 + 32 + 2 + 1 + 7 + 2 + 1 + 4;
        bytes[pos..pos + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Crl::decode_verified(&bytes, &root.public().into()).is_err());
    }

    /// A list as an untrusted list server could make it: the pinned root
    /// as issuer, `serials` sequential serials, and a random signature.
    fn forged(root: &SigningKey, serials: u32, names: u16) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(magic::CRL).u8(VERSION).u64(7).u64(100).u64(200);
        w.bytes(&root.public().0);
        w.u16(names);
        for i in 0..names {
            w.str8(&format!("user{i:05}"));
        }
        w.u16(0).u32(serials);
        let mut out = w.into_vec();
        out.reserve_exact(serials as usize * 16 + 64);
        for i in 0..u128::from(serials) {
            out.extend_from_slice(&i.to_be_bytes());
        }
        out.extend_from_slice(&crate::keys::random_bytes::<64>(&mut TestRng));
        out
    }

    fn bad_signature(e: &crate::ProtoError) -> bool {
        e.to_string() == "revocation list: signature does not verify"
    }

    #[test]
    fn a_forged_list_is_refused_on_its_signature_before_it_is_parsed() {
        let root = SigningKey::generate(&mut TestRng);
        // The issue's list: a million serials, a random signature.
        let huge = forged(&root, 1_000_000, 0);
        let e = Crl::decode_verified(&huge, &root.public().into()).expect_err("forged");
        assert!(bad_signature(&e), "{e}");
        // Bodies that the parser refuses, each behind a bad signature: the
        // signature's error is the one reported, so the parser never ran.
        let mut malformed = Vec::new();
        // More serials claimed than present (and past the cap).
        let mut short = forged(&root, 10, 0);
        short[ISSUER_AT + 32 + 4..ISSUER_AT + 32 + 8].copy_from_slice(&u32::MAX.to_be_bytes());
        malformed.push(short);
        // Duplicates and disorder (not canonical).
        let mut dup = forged(&root, 3, 0);
        let first = ISSUER_AT + 32 + 8;
        let copy: [u8; 16] = dup[first..first + 16].try_into().expect("16");
        dup[first + 16..first + 32].copy_from_slice(&copy);
        malformed.push(dup);
        // A name with a forbidden character, and a trailing byte.
        let mut name = forged(&root, 1, 2);
        let at = ISSUER_AT + 32 + 2 + 1;
        name[at] = b' ';
        malformed.push(name);
        let mut trailing = forged(&root, 1, 0);
        trailing.insert(trailing.len() - 64, 0);
        malformed.push(trailing);
        // An unknown section count where the user keys would be.
        let mut v2 = forged(&root, 2, 0);
        v2[4] = VERSION_USER_KEYS;
        malformed.push(v2);
        for (i, bytes) in malformed.iter().enumerate() {
            let e = Crl::decode_verified(bytes, &root.public().into()).expect_err("forged");
            assert!(bad_signature(&e), "case {i}: {e}");
        }
        // The same malformed bodies, signed by the root, reach the parser
        // and are refused by it.
        for (i, bytes) in malformed.iter().enumerate() {
            let mut signed = bytes[..bytes.len() - 64].to_vec();
            let sig = root.sign(labels::CTX_CRL, &signed);
            signed.extend_from_slice(&sig);
            let e = Crl::decode_verified(&signed, &root.public().into()).expect_err("malformed");
            assert!(
                !bad_signature(&e) && !e.to_string().contains("not issued by"),
                "case {i}: {e}"
            );
        }
    }

    #[test]
    fn around_the_order_other_issuers_sizes_and_truncations() {
        let root = SigningKey::generate(&mut TestRng);
        let other = SigningKey::generate(&mut TestRng);
        // Another issuer, whatever the size: refused on the issuer alone.
        for (serials, names) in [(0, 0), (1, 1), (1_000_000, 10_000), (1_100_000, 0)] {
            let bytes = forged(&other, serials, names);
            let e = Crl::decode_verified(&bytes, &root.public().into()).expect_err("other issuer");
            assert!(
                e.to_string().contains("not issued by the trusted key"),
                "{e}"
            );
        }
        // The root as issuer, over the caps and under them, a random
        // signature: the signature is what refuses them.
        for (serials, names) in [(0, 0), (1, 1), (1_100_000, 0), (0, 10_001), (16, u16::MAX)] {
            let bytes = forged(&root, serials, names);
            let e = Crl::decode_verified(&bytes, &root.public().into()).expect_err("forged");
            assert!(bad_signature(&e), "{serials} {names}: {e}");
        }
        // A genuine list's signature on other bytes does not verify: the
        // signature covers exactly the bytes received.
        let genuine = sample(&root, 3).sign(&root).expect("sign");
        let mut moved = forged(&root, 1, 0);
        let n = moved.len();
        moved[n - 64..].copy_from_slice(&genuine[genuine.len() - 64..]);
        assert!(bad_signature(
            &Crl::decode_verified(&moved, &root.public().into()).expect_err("moved signature")
        ));
        // Too short to hold a header, an issuer and a signature, or
        // another structure's magic: refused before any key is used.
        for len in [0, 64, ISSUER_AT + 32 + 63] {
            let e = Crl::decode_verified(&genuine[..len.min(genuine.len())], &root.public().into())
                .expect_err("short");
            assert!(e.to_string().contains("truncated"), "{len}: {e}");
        }
        let mut licence_magic = genuine.clone();
        licence_magic[..4].copy_from_slice(magic::LICENCE);
        assert!(Crl::decode_verified(&licence_magic, &root.public().into()).is_err());
        // And a list the root did sign still decodes, at the caps too.
        let mut full = sample(&root, 4);
        full.revoked.serials = (0..MAX_SERIALS as u128)
            .map(|i| Serial(i.to_be_bytes()))
            .collect();
        let bytes = full.sign(&root).expect("sign");
        assert_eq!(
            Crl::decode_verified(&bytes, &root.public().into()).expect("full"),
            full
        );
    }

    /// The forged list's cost, measured in a process of its own (the test
    /// binary again, running only the helper below): refusing it may cost
    /// one copy of its signed bytes (Ed25519 verifies one contiguous
    /// message: the context string, then the bytes), and nothing like the
    /// sets, their sorted copies and the re-encoding (about 130 MB for a
    /// 21.7 MB list before the fix).
    #[test]
    fn a_forged_huge_list_takes_no_memory_to_refuse() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "crl::tests::forged_list_peak_memory_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ZTSSH_CRL_MEMORY_HELPER", "1")
            .output()
            .expect("run the helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let number = |label: &str| -> u64 {
            stdout
                .split_once(label)
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {label} in {stdout}"))
        };
        let (grew, size) = (number("peak grew by KiB:"), number("list KiB:"));
        assert!(
            grew < size + 4 * 1024,
            "refusing a forged list of {size} KiB grew the peak by {grew} KiB"
        );
    }

    fn peak_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .expect("/proc/self/status")
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    #[test]
    #[ignore = "run by a_forged_huge_list_takes_no_memory_to_refuse in a process of its own"]
    fn forged_list_peak_memory_helper() {
        if std::env::var_os("ZTSSH_CRL_MEMORY_HELPER").is_none() {
            return;
        }
        let root = SigningKey::generate(&mut TestRng);
        let huge = forged(&root, 1_000_000, 0);
        let before = peak_kib();
        let e = Crl::decode_verified(&huge, &root.public().into()).expect_err("forged");
        let after = peak_kib();
        assert!(bad_signature(&e), "{e}");
        println!(
            "list KiB: {} peak grew by KiB: {}",
            huge.len() / 1024,
            after.saturating_sub(before)
        );
    }
}
