//! A KRL writer for tests and fuzzing (the reader's round-trip oracle):
//! it writes whatever it is told, valid or not, section by section.
//! Never in a binary (`testkit` or `cfg(test)` only).

use super::{FORMAT_VERSION, MAGIC};

/// A certificate subsection: its type and its data.
pub type Sub = (u8, Vec<u8>);

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Writes a KRL.
#[derive(Debug)]
pub struct KrlWriter {
    out: Vec<u8>,
}

impl KrlWriter {
    /// The header.
    pub fn new(krl_version: u64, generated: u64, comment: &[u8]) -> Self {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&krl_version.to_be_bytes());
        out.extend_from_slice(&generated.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        string(&mut out, b"");
        string(&mut out, comment);
        Self { out }
    }

    /// Any section.
    pub fn section(&mut self, kind: u8, data: &[u8]) -> &mut Self {
        self.out.push(kind);
        string(&mut self.out, data);
        self
    }

    /// A certificate section under `ca` (its public key blob; empty: any CA).
    pub fn certs(&mut self, ca: &[u8], subs: &[Sub]) -> &mut Self {
        let mut data = Vec::new();
        string(&mut data, ca);
        string(&mut data, b"");
        for (kind, sub) in subs {
            data.push(*kind);
            string(&mut data, sub);
        }
        self.section(super::SECTION_CERTIFICATES, &data)
    }

    /// A section of explicit key blobs.
    pub fn keys(&mut self, blobs: &[Vec<u8>]) -> &mut Self {
        let data = strings(blobs.iter().map(Vec::as_slice));
        self.section(super::SECTION_EXPLICIT_KEY, &data)
    }

    /// A section of SHA-1 fingerprints.
    pub fn sha1(&mut self, hashes: &[[u8; 20]]) -> &mut Self {
        let data = strings(hashes.iter().map(|h| &h[..]));
        self.section(super::SECTION_SHA1, &data)
    }

    /// A section of SHA-256 fingerprints.
    pub fn sha256(&mut self, hashes: &[[u8; 32]]) -> &mut Self {
        let data = strings(hashes.iter().map(|h| &h[..]));
        self.section(super::SECTION_SHA256, &data)
    }

    /// The KRL.
    pub fn finish(&self) -> Vec<u8> {
        self.out.clone()
    }
}

fn strings<'a>(items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut data = Vec::new();
    for item in items {
        string(&mut data, item);
    }
    data
}

/// A serial list subsection.
pub fn serial_list(serials: &[u64]) -> Sub {
    let data = serials.iter().flat_map(|s| s.to_be_bytes()).collect();
    (super::CERT_SERIAL_LIST, data)
}

/// A serial range subsection.
pub fn serial_range(lo: u64, hi: u64) -> Sub {
    let mut data = lo.to_be_bytes().to_vec();
    data.extend_from_slice(&hi.to_be_bytes());
    (super::CERT_SERIAL_RANGE, data)
}

/// A serial bitmap subsection: `offset + i` for each `i` in `bits`
/// (each below 16,384), as a minimal mpint.
pub fn serial_bitmap(offset: u64, bits: &[u16]) -> Sub {
    let top = bits.iter().map(|&b| usize::from(b)).max();
    let mut number = vec![0u8; top.map_or(0, |t| t / 8 + 1)];
    let n = number.len();
    for &b in bits {
        let b = usize::from(b);
        if let Some(byte) = number.get_mut(n - 1 - b / 8) {
            *byte |= 1 << (b % 8);
        }
    }
    if number.first().is_some_and(|b| b & 0x80 != 0) {
        number.insert(0, 0);
    }
    let mut data = offset.to_be_bytes().to_vec();
    string(&mut data, &number);
    (super::CERT_SERIAL_BITMAP, data)
}

/// A key id subsection.
pub fn key_ids(ids: &[&[u8]]) -> Sub {
    (super::CERT_KEY_ID, strings(ids.iter().copied()))
}

/// An extension's data (a section of type 255, or subsection 0x39).
pub fn extension(name: &[u8], critical: bool, contents: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    string(&mut data, name);
    data.push(u8::from(critical));
    string(&mut data, contents);
    data
}

/// The SHA-1 hash a KRL lists a key blob by.
pub fn sha1_of(blob: &[u8]) -> [u8; 20] {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, blob);
    let mut out = [0; 20];
    out.copy_from_slice(d.as_ref());
    out
}

/// The SHA-256 hash a KRL lists a key blob by.
pub fn sha256_of(blob: &[u8]) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(blob).into()
}
