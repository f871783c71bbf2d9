//! The root-signed revocation list: banned principals, revoked server
//! licences (by server id) and revoked certificate serials.
//!
//! ```text
//! Crl = "ZTRL" ver=1 list_version:u64 issued:u64 next_update:u64 issuer[32]
//!       n:u16 principal:str8 * n
//!       m:u16 server_id:str8 * m
//!       k:u32 serial[16] * k
//!       signature[64]   ; by the root, context CTX_CRL
//! ```

use std::collections::HashSet;

use crate::cert::{MAX_PRINCIPAL, MAX_SERVER_ID, Serial, check_name};
use crate::codec::{Reader, Writer};
use crate::error::{AuthError, Malformed};
use crate::keys::{PublicKey, SigningKey};
use crate::labels::{self, magic};
use crate::time::UnixTime;

const VERSION: u8 = 1;
/// Most banned principals or revoked servers in one list.
pub const MAX_NAMES: usize = 10_000;
/// Most revoked serials in one list.
pub const MAX_SERIALS: usize = 1_000_000;

/// What a revocation list revokes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Banned principals.
    pub principals: HashSet<String>,
    /// Revoked server licences, by server id.
    pub servers: HashSet<String>,
    /// Revoked certificate or licence serials.
    pub serials: HashSet<Serial>,
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
        let mut w = Writer::new();
        w.bytes(magic::CRL)
            .u8(VERSION)
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
        w.into_vec()
    }

    /// Signs and encodes the list with the root key.
    pub fn sign(&self, root: &SigningKey) -> Result<Vec<u8>, Malformed> {
        let too_many = self.revoked.principals.len() > MAX_NAMES
            || self.revoked.servers.len() > MAX_NAMES
            || self.revoked.serials.len() > MAX_SERIALS;
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
        if version != VERSION {
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
        let root = SigningKey::generate();
        let crl = sample(&root, 3);
        let bytes = crl.sign(&root).expect("sign");
        assert_eq!(
            Crl::decode_verified(&bytes, &root.public()).expect("verify"),
            crl
        );
        assert!(!crl.is_stale(199) && crl.is_stale(200));

        let other = SigningKey::generate();
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
    fn huge_counts_are_rejected_before_allocating() {
        let root = SigningKey::generate();
        let mut bytes = sample(&root, 1).sign(&root).expect("sign");
        // The serial count sits after the header, the two name lists; overwrite it.
        let pos = 4 + 1 + 24 + 32 + 2 + 1 + 7 + 2 + 1 + 4;
        bytes[pos..pos + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Crl::decode_verified(&bytes, &root.public()).is_err());
    }
}
