//! `krl`: the CA's revoked user keys as a binary OpenSSH key revocation
//! list, for sshd's `RevokedKeys`.
//!
//! The layout is OpenSSH's `PROTOCOL.krl` (strings are `u32` length then
//! bytes, integers big-endian):
//!
//! ```text
//! KRL = "SSHKRL\n\0" format_version:u32 (=1) krl_version:u64
//!       generated_date:u64 flags:u64 (=0) reserved:string ("")
//!       comment:string
//!       section*
//! section = section_type:u8 section_data:string
//! ; section_type 1, KRL_SECTION_CERTIFICATES: section_data is
//! ;   ca_key:string (the CA's public key blob) reserved:string ("")
//! ;   cert_section_type:u8 (0x20, KRL_SECTION_CERT_SERIAL_LIST)
//! ;   cert_section_data:string (serial:u64 per revoked certificate)
//! ; section_type 5, KRL_SECTION_FINGERPRINT_SHA256: section_data is
//! ; hash:string (32 bytes, SHA-256 of the public key blob) per revoked key
//! ```
//!
//! Two sections are written, in the order `ssh-keygen -k` writes them:
//! host certificates by serial under the host CA key (certificates first),
//! then plain keys by SHA-256 fingerprint (sshd ≥ 7.9 reads it).
//! Serials go in a plain list: they are random 64-bit numbers, for which a
//! list is the smallest of the three encodings and the one ssh-keygen picks.
//! The hashes are written sorted and without duplicates, as `ssh-keygen -k`
//! writes them, so the two tools produce the same bytes for the same keys
//! (apart from `generated_date`). No signature section: sshd does not use
//! one, and `docs/OPERATOR.md` says how the file reaches sshd.

use std::collections::BTreeSet;

/// The file magic, `KRL_MAGIC` in `PROTOCOL.krl`.
pub const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
/// `KRL_FORMAT_VERSION`.
const FORMAT_VERSION: u32 = 1;
/// `KRL_SECTION_FINGERPRINT_SHA256`.
const SECTION_FINGERPRINT_SHA256: u8 = 5;
/// `KRL_SECTION_CERTIFICATES`.
const SECTION_CERTIFICATES: u8 = 1;
/// `KRL_SECTION_CERT_SERIAL_LIST`.
const CERT_SERIAL_LIST: u8 = 0x20;

/// A KRL that revokes plain keys by the SHA-256 hash of their blob.
pub struct Krl<'a> {
    /// The list's version (`krl_version`; sshd does not compare it).
    pub krl_version: u64,
    /// When it was made, in Unix seconds.
    pub generated: u64,
    /// Free text shown by `ssh-keygen -Q -l`.
    pub comment: &'a str,
    /// SHA-256 hashes of the revoked keys' OpenSSH wire encodings.
    pub sha256: &'a BTreeSet<[u8; 32]>,
    /// The CA's public key blob and the serials of the certificates it
    /// signed that are revoked (nothing is written when there are none).
    pub certs: Option<(&'a [u8], &'a BTreeSet<u64>)>,
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every string here is a 32-byte hash, a short comment, or a section of
    // at most a few million hashes: all well under 4 GiB.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Krl<'_> {
    /// The binary KRL. An empty set gives a valid KRL that revokes nothing.
    /// Serial 0 is refused: OpenSSH rejects a KRL that names it, and sshd
    /// then refuses every key.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        if self.certs.is_some_and(|(_, s)| s.contains(&0)) {
            return Err(
                "certificate serial 0 cannot be revoked: OpenSSH rejects a KRL that names it \
                 (and sshd would then refuse every key)"
                    .into(),
            );
        }
        let mut out = Vec::with_capacity(64 + self.comment.len() + 36 * self.sha256.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&self.krl_version.to_be_bytes());
        out.extend_from_slice(&self.generated.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes()); // flags
        string(&mut out, b""); // reserved
        string(&mut out, self.comment.as_bytes());
        if let Some((ca_key, serials)) = self.certs.filter(|(_, s)| !s.is_empty()) {
            let mut list = Vec::with_capacity(8 * serials.len());
            for serial in serials {
                list.extend_from_slice(&serial.to_be_bytes());
            }
            let mut section = Vec::with_capacity(list.len() + ca_key.len() + 16);
            string(&mut section, ca_key);
            string(&mut section, b""); // reserved
            section.push(CERT_SERIAL_LIST);
            string(&mut section, &list);
            out.push(SECTION_CERTIFICATES);
            string(&mut out, &section);
        }
        if !self.sha256.is_empty() {
            let mut section = Vec::with_capacity(36 * self.sha256.len());
            for hash in self.sha256 {
                string(&mut section, hash);
            }
            out.push(SECTION_FINGERPRINT_SHA256);
            string(&mut out, &section);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_krl_is_the_bare_header() {
        let set = BTreeSet::new();
        let krl = Krl {
            krl_version: 7,
            generated: 0x0102_0304,
            comment: "hi",
            sha256: &set,
            certs: Some((b"ca", &BTreeSet::new())),
        };
        let mut want = b"SSHKRL\n\0".to_vec();
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        want.extend_from_slice(&[0; 8]);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']);
        assert_eq!(krl.encode().expect("encodes"), want);
    }

    #[test]
    fn hashes_are_one_sorted_sha256_section() {
        let set: BTreeSet<[u8; 32]> = [[9u8; 32], [1u8; 32], [9u8; 32]].into_iter().collect();
        let bytes = Krl {
            krl_version: 1,
            generated: 2,
            comment: "",
            sha256: &set,
            certs: None,
        }
        .encode()
        .expect("encodes");
        let header = 8 + 4 + 8 + 8 + 8 + 4 + 4;
        let (head, rest) = bytes.split_at(header);
        assert!(head.starts_with(MAGIC));
        let mut want = vec![5u8, 0, 0, 0, 72];
        for fill in [1u8, 9] {
            want.extend_from_slice(&[0, 0, 0, 32]);
            want.extend_from_slice(&[fill; 32]);
        }
        assert_eq!(rest, want);
    }

    #[test]
    fn serial_zero_is_refused() {
        let serials: BTreeSet<u64> = [0, 5].into_iter().collect();
        let err = Krl {
            krl_version: 1,
            generated: 2,
            comment: "",
            sha256: &BTreeSet::new(),
            certs: Some((b"CAKEY", &serials)),
        }
        .encode()
        .expect_err("serial 0");
        assert!(err.contains("serial 0"), "{err}");
    }

    #[test]
    fn serials_come_first_in_a_certificate_section_under_the_ca_key() {
        let set: BTreeSet<[u8; 32]> = [[3u8; 32]].into_iter().collect();
        let serials: BTreeSet<u64> = [0x0102, 1].into_iter().collect();
        let bytes = Krl {
            krl_version: 1,
            generated: 2,
            comment: "",
            sha256: &set,
            certs: Some((b"CAKEY", &serials)),
        }
        .encode()
        .expect("encodes");
        let header = 8 + 4 + 8 + 8 + 8 + 4 + 4;
        let mut want = vec![1u8, 0, 0, 0, 34];
        want.extend_from_slice(&[0, 0, 0, 5]);
        want.extend_from_slice(b"CAKEY");
        want.extend_from_slice(&[0, 0, 0, 0, 0x20, 0, 0, 0, 16]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2]);
        want.extend_from_slice(&[5, 0, 0, 0, 36, 0, 0, 0, 32]);
        want.extend_from_slice(&[3u8; 32]);
        assert_eq!(&bytes[header..], want);
    }
}
