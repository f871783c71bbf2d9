//! The root-signed revocation list: banned principals, revoked server
//! licences (by server id), revoked certificate serials and revoked user
//! keys (by SHA-256 fingerprint).
//!
//! ```text
//! Crl = "ZTRL" ver=1|2 list_version:u64 issued:u64 next_update:u64 issuer[32]
//!       n:u16 principal:str8 * n
//!       m:u16 server_id:str8 * m
//!       k:u32 serial[16] * k
//!       [ver 2 only] u:u32 user_key_sha256[32] * u   ; u >= 1
//!       signature[64]   ; by the root, context CTX_CRL
//! ```
//!
//! A list with no revoked user keys is written as version 1, byte for byte
//! as before, so proxies that know only version 1 keep reading it.

use std::collections::HashSet;

use crate::cert::{MAX_PRINCIPAL, MAX_SERVER_ID, Serial, check_name};
use crate::codec::{Reader, Writer};
use crate::error::{AuthError, Malformed};
use crate::keys::{PublicKey, SigningKey};
use crate::labels::{self, magic};
use crate::time::UnixTime;

const VERSION: u8 = 1;
/// The version that adds revoked user keys.
const VERSION_USER_KEYS: u8 = 2;
/// Most banned principals or revoked servers in one list.
pub const MAX_NAMES: usize = 10_000;
/// Most revoked serials in one list.
pub const MAX_SERIALS: usize = 1_000_000;
/// Most revoked user keys in one list.
pub const MAX_USER_KEYS: usize = 100_000;

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
}

impl Revocations {
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
}

fn sorted<T: Ord + Clone>(set: &HashSet<T>) -> Vec<T> {
    let mut v: Vec<T> = set.iter().cloned().collect();
    v.sort();
    v
}

impl Crl {
    fn tbs(&self) -> Vec<u8> {
        let version = if self.revoked.user_keys.is_empty() {
            VERSION
        } else {
            VERSION_USER_KEYS
        };
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
        if version == VERSION_USER_KEYS {
            let keys = sorted(&self.revoked.user_keys);
            w.u32(u32::try_from(keys.len()).unwrap_or(u32::MAX));
            for k in keys {
                w.bytes(&k);
            }
        }
        w.into_vec()
    }

    /// Signs and encodes the list with the root key.
    pub fn sign(&self, root: &SigningKey) -> Result<Vec<u8>, Malformed> {
        let too_many = self.revoked.principals.len() > MAX_NAMES
            || self.revoked.servers.len() > MAX_NAMES
            || self.revoked.serials.len() > MAX_SERIALS
            || self.revoked.user_keys.len() > MAX_USER_KEYS;
        if too_many {
            return Err(Malformed::Invalid {
                what: "revocation list",
                why: "too many entries",
            });
        }
        if root.public() != self.issuer {
            return Err(Malformed::Invalid {
                what: "revocation list",
                why: "issuer is not the signing key",
            });
        }
        let mut out = self.tbs();
        let sig = root.sign(labels::CTX_CRL, &out);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Parses the list and verifies it was signed by `root`.
    pub fn decode_verified(bytes: &[u8], root: &PublicKey) -> Result<Self, crate::ProtoError> {
        let mut r = Reader::new(bytes, "revocation list");
        r.expect(magic::CRL)?;
        let version = r.u8()?;
        if version != VERSION && version != VERSION_USER_KEYS {
            return Err(Malformed::BadVersion {
                what: "revocation list",
                version,
            }
            .into());
        }
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
            }
            .into());
        }
        let mut serials = HashSet::with_capacity(count);
        for _ in 0..count {
            serials.insert(Serial(r.array()?));
        }
        let user_keys = if version == VERSION_USER_KEYS {
            read_user_keys(&mut r)?
        } else {
            HashSet::new()
        };
        let signature = r.array::<64>()?;
        r.finish()?;
        if issuer != *root {
            return Err(AuthError::WrongIssuer("revocation list").into());
        }
        let crl = Self {
            list_version,
            issued,
            next_update,
            issuer,
            revoked: Revocations {
                principals,
                servers,
                serials,
                user_keys,
            },
        };
        let tbs = crl.tbs();
        if tbs.len() + 64 != bytes.len() {
            // Duplicate entries or unsorted input would change the encoding.
            return Err(Malformed::Invalid {
                what: "revocation list",
                why: "not in canonical form",
            }
            .into());
        }
        root.verify(labels::CTX_CRL, &tbs, &signature, "revocation list")?;
        Ok(crl)
    }

    /// Whether the list is past its next-update time.
    pub fn is_stale(&self, now: UnixTime) -> bool {
        now >= self.next_update
    }
}

fn read_user_keys(r: &mut Reader<'_>) -> Result<HashSet<[u8; 32]>, Malformed> {
    let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    if count > MAX_USER_KEYS || count.saturating_mul(32) > r.remaining() {
        return Err(Malformed::TooLong {
            what: "revocation list user keys",
            len: count,
            max: MAX_USER_KEYS,
        });
    }
    let mut out = HashSet::with_capacity(count);
    for _ in 0..count {
        out.insert(r.array()?);
    }
    Ok(out)
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
    let mut out = HashSet::with_capacity(n);
    for _ in 0..n {
        let name = r.str8(max)?;
        check_name(name, max, "revoked name")?;
        out.insert(name.to_owned());
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
        }
    }

    #[test]
    fn round_trip_verify_and_forgery() {
        let root = SigningKey::generate(&mut TestRng);
        let crl = sample(&root, 3);
        let bytes = crl.sign(&root).expect("sign");
        assert_eq!(
            Crl::decode_verified(&bytes, &root.public()).expect("verify"),
            crl
        );
        assert!(!crl.is_stale(199) && crl.is_stale(200));

        let other = SigningKey::generate(&mut TestRng);
        let e = Crl::decode_verified(&bytes, &other.public()).expect_err("foreign root");
        assert!(
            e.to_string().contains("not issued by the trusted key"),
            "{e}"
        );
        let forged = sample(&other, 3).sign(&other).expect("sign");
        assert!(Crl::decode_verified(&forged, &root.public()).is_err());

        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(Crl::decode_verified(&flipped, &root.public()).is_err());
        for cut in 0..bytes.len() {
            assert!(
                Crl::decode_verified(&bytes[..cut], &root.public()).is_err(),
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
        assert_eq!(Crl::decode_verified(&v2, &root.public()).expect("v2"), crl);
        // A version 2 list with no user keys is not canonical.
        let mut empty = sample(&root, 3);
        empty.revoked.user_keys.clear();
        let mut tbs = empty.tbs();
        tbs[4] = 2;
        tbs.extend_from_slice(&0u32.to_be_bytes());
        let sig = root.sign(labels::CTX_CRL, &tbs);
        tbs.extend_from_slice(&sig);
        assert!(Crl::decode_verified(&tbs, &root.public()).is_err());
        // A huge user-key count is refused before allocating.
        let mut huge = v2.clone();
        let at = v2.len() - 64 - 2 * 32 - 4;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Crl::decode_verified(&huge, &root.public()).is_err());
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let root = SigningKey::generate(&mut TestRng);
        let mut bytes = sample(&root, 1).sign(&root).expect("sign");
        // The serial count sits after the header, the two name lists; overwrite it.
        let pos = 4 + 1 + 24 + 32 + 2 + 1 + 7 + 2 + 1 + 4;
        bytes[pos..pos + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Crl::decode_verified(&bytes, &root.public()).is_err());
    }
}
