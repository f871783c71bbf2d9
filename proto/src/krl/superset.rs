//! Whether one KRL revokes everything another does: `ssh-keygen -k -u`
//! adds to a KRL in place and keeps its `krl_version` unless told
//! otherwise (`-z`), so a same-version KRL is accepted when it only adds.
//! Everything is compared as sshd would look it up: a key listed by blob
//! stays revoked if the new KRL lists its blob or either fingerprint; a
//! serial or key id under a CA stays revoked if the new KRL revokes it
//! under that CA or under any CA, or revokes the CA key itself.

use ssh_key::public::KeyData;
use ssh_key::{Fingerprint, HashAlg};

use super::{CertScope, Krl};

/// What a KRL would un-revoke, compared with the one in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrevoked {
    /// The first entry it would un-revoke, in words.
    pub first: String,
    /// How many entries of the KRL in force it would un-revoke.
    pub count: usize,
}

impl std::fmt::Display for Unrevoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.count {
            0 | 1 => write!(f, "{}", self.first),
            n => write!(f, "{} (and {} more)", self.first, n - 1),
        }
    }
}

/// `SHA256:...` of a key blob, as `ssh-keygen -l` shows it.
fn blob_fingerprint(blob: &[u8]) -> String {
    let mut rest = blob;
    match <KeyData as ssh_key::encoding::Decode>::decode(&mut rest) {
        Ok(k) => Fingerprint::new(HashAlg::Sha256, &k).to_string(),
        Err(_) => {
            Fingerprint::Sha256(<sha2::Sha256 as sha2::Digest>::digest(blob).into()).to_string()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn under(ca: &[u8]) -> String {
    if ca.is_empty() {
        "under any CA".into()
    } else {
        format!("under CA {}", blob_fingerprint(ca))
    }
}

/// Serial intervals, sorted and merged (adjacent ones joined).
fn intervals<'a>(scopes: impl Iterator<Item = &'a CertScope>) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = Vec::new();
    for s in scopes {
        all.extend(s.serials.iter().map(|&x| (x, x)));
        all.extend_from_slice(&s.ranges);
    }
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (lo, hi) in all {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// The end of the merged interval of `intervals` holding `x`, if any.
fn end_of(intervals: &[(u64, u64)], x: u64) -> Option<u64> {
    let i = intervals.partition_point(|&(l, _)| l <= x);
    i.checked_sub(1)
        .and_then(|i| intervals.get(i))
        .and_then(|&(_, h)| (x <= h).then_some(h))
}

/// Whether `[lo, hi]` lies within the union of two merged interval lists
/// (a CA's own and the any-CA scope's). Each step jumps past a whole
/// interval of one list, and two steps in a row never come from the same
/// list (merged intervals do not touch), so the walk is bounded by the
/// smaller list's intervals inside `[lo, hi]`, plus one.
fn covered(here: &[(u64, u64)], any: &[(u64, u64)], lo: u64, hi: u64) -> bool {
    let mut at = lo;
    loop {
        let Some(end) = end_of(here, at).max(end_of(any, at)) else {
            return false;
        };
        if end >= hi {
            return true;
        }
        at = end + 1;
    }
}

#[derive(Default)]
struct Tally {
    first: Option<String>,
    count: usize,
}

impl Tally {
    fn miss(&mut self, what: impl FnOnce() -> String) {
        self.count = self.count.saturating_add(1);
        if self.first.is_none() {
            self.first = Some(what());
        }
    }
}

impl Krl {
    /// What `self` would un-revoke of `old` (`None`: it revokes everything
    /// `old` revokes, and maybe more).
    pub fn unrevokes(&self, old: &Krl) -> Option<Unrevoked> {
        let mut t = Tally::default();
        self.keys_kept(old, &mut t);
        // The any-CA scope's serials, merged once: every CA's scope is
        // checked against them (merging them again per CA scope let a KRL
        // with many CA scopes and a large any-CA scope hold the reload
        // task for hours).
        let any = intervals(self.scopes.get(&[][..]).into_iter());
        for (ca, scope) in &old.scopes {
            self.scope_kept(ca, scope, &any, &mut t);
        }
        t.first.map(|first| Unrevoked {
            first,
            count: t.count,
        })
    }

    fn keys_kept(&self, old: &Krl, t: &mut Tally) {
        for blob in &old.keys {
            if self.revokes_blob(blob).is_none() {
                t.miss(|| format!("the key {}", blob_fingerprint(blob)));
            }
        }
        let sha1_of_keys: Vec<[u8; 20]> = {
            let mut v: Vec<[u8; 20]> = self
                .keys
                .iter()
                .filter_map(|b| {
                    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
                        .as_ref()
                        .try_into()
                        .ok()
                })
                .collect();
            v.sort_unstable();
            v
        };
        for h in &old.sha1 {
            if self.sha1.binary_search(h).is_err() && sha1_of_keys.binary_search(h).is_err() {
                t.miss(|| format!("the key with SHA-1 fingerprint {}", hex(h)));
            }
        }
        let sha256_of_keys: Vec<[u8; 32]> = {
            let mut v: Vec<[u8; 32]> = self
                .keys
                .iter()
                .map(|b| <sha2::Sha256 as sha2::Digest>::digest(b).into())
                .collect();
            v.sort_unstable();
            v
        };
        for h in &old.sha256 {
            if self.sha256.binary_search(h).is_err() && sha256_of_keys.binary_search(h).is_err() {
                t.miss(|| format!("the key {}", Fingerprint::Sha256(*h)));
            }
        }
    }

    fn scope_kept(&self, ca: &[u8], old: &CertScope, any_serials: &[(u64, u64)], t: &mut Tally) {
        // Revoking the CA key revokes every certificate it signed.
        if !ca.is_empty() && self.revokes_blob(ca).is_some() {
            return;
        }
        let here = self.scopes.get(ca);
        let any = if ca.is_empty() {
            None
        } else {
            self.scopes.get(&[][..])
        };
        let now = [here, any];
        for id in &old.key_ids {
            if !now.iter().flatten().any(|s| s.revokes_key_id(id)) {
                t.miss(|| {
                    format!(
                        "key id \"{}\" {}",
                        String::from_utf8_lossy(id).escape_debug(),
                        under(ca)
                    )
                });
            }
        }
        let have = intervals(here.into_iter());
        // Under any CA, the any-CA scope is `here` itself.
        let any_serials = if ca.is_empty() { &[][..] } else { any_serials };
        for &s in &old.serials {
            if !covered(&have, any_serials, s, s) {
                t.miss(|| format!("serial {s} {}", under(ca)));
            }
        }
        for &(lo, hi) in &old.ranges {
            if !covered(&have, any_serials, lo, hi) {
                t.miss(|| format!("serials {lo}-{hi} {}", under(ca)));
            }
        }
    }
}
