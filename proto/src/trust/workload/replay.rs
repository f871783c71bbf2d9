//! The ids of platform tokens already used ([`ReplayCache`]), each with
//! the key that first presented it.

use std::collections::{BTreeMap, BTreeSet};

use super::{RefusalKind, Refused};

/// Which key presented a token: SHA-256 over the OpenSSH key's wire form.
pub type KeyId = [u8; 32];

/// The [`KeyId`] of `key`.
pub fn key_id(key: &ssh_key::PublicKey) -> KeyId {
    use sha2::Digest;
    let blob = key.to_bytes().unwrap_or_default();
    sha2::Sha256::digest(&blob).into()
}
use crate::time::{UnixTime, when};

/// The ids of tokens already used, each kept until its token expires,
/// with the key that first presented it.
#[derive(Debug, Default)]
pub struct ReplayCache {
    cap: usize,
    seen: BTreeMap<[u8; 32], (UnixTime, KeyId)>,
    by_expiry: BTreeSet<(UnixTime, [u8; 32])>,
}

impl ReplayCache {
    /// A cache of at most `cap` live tokens.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            ..Self::default()
        }
    }

    /// Records the first use of token `id`, valid until `expires`, by the
    /// key `key` (the one that signed the handshake). The same key may use
    /// it again (a pod's second connection with its projected token, a
    /// job's retry); any other key is refused: a token read from a log
    /// comes without the workload's key. Any new token is refused while
    /// `cap` live ones are held (a live token is never forgotten to make
    /// room). Expired ids go first.
    pub fn first_use(
        &mut self,
        id: [u8; 32],
        key: KeyId,
        expires: UnixTime,
        now: UnixTime,
    ) -> Result<(), Refused> {
        self.prune(now);
        if let Some((until, first)) = self.seen.get(&id) {
            if *first == key {
                return Ok(());
            }
            return Err(Refused::new(
                RefusalKind::Replayed,
                format!(
                    "this platform token was already used with another key (it stays refused \
                     until it expires {}): a token is good only with the key that first \
                     presented it; get a fresh token from the platform",
                    when(*until, now)
                ),
            ));
        }
        if expires <= now {
            return Ok(());
        }
        if self.seen.len() >= self.cap {
            return Err(Refused::new(
                RefusalKind::ReplayCacheFull,
                format!(
                    "the proxy's record of used platform tokens is full ({} live): try again \
                     once some expire; its operator can lower the issuers' \
                     max_token_lifetime_secs",
                    self.seen.len()
                ),
            ));
        }
        self.seen.insert(id, (expires, key));
        self.by_expiry.insert((expires, id));
        Ok(())
    }

    /// Whether it holds token `id`.
    pub fn holds(&self, id: &[u8; 32]) -> bool {
        self.seen.contains_key(id)
    }

    /// One line of the record kept on disk for token `id` (what
    /// [`Self::restore`] reads back): `ID KEY EXPIRES`, hex and seconds.
    pub fn line(&self, id: &[u8; 32]) -> Option<String> {
        let (expires, key) = self.seen.get(id)?;
        Some(format!("{} {} {expires}\n", hex(id), hex(key)))
    }

    /// The whole record, one [`Self::line`] per live token.
    pub fn lines(&self) -> String {
        self.seen
            .iter()
            .map(|(id, (expires, key))| format!("{} {} {expires}\n", hex(id), hex(key)))
            .collect()
    }

    /// Reads back a record written by [`Self::line`]: the live tokens it
    /// holds go in (up to the cap), the expired and any line that does not
    /// read are left out. Returns how many lines were left out as unreadable.
    pub fn restore(&mut self, text: &str, now: UnixTime) -> usize {
        let mut bad = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut f = line.split(' ');
            let parsed = (|| {
                let id = unhex(f.next()?)?;
                let key = unhex(f.next()?)?;
                let expires: UnixTime = f.next()?.parse().ok()?;
                f.next().is_none().then_some((id, key, expires))
            })();
            match parsed {
                Some((id, key, expires)) if expires > now && self.seen.len() < self.cap => {
                    if let Some((old, _)) = self.seen.insert(id, (expires, key)) {
                        self.by_expiry.remove(&(old, id));
                    }
                    self.by_expiry.insert((expires, id));
                }
                Some(_) => {}
                None => bad += 1,
            }
        }
        bad
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn prune(&mut self, now: UnixTime) {
        while let Some(&(expires, id)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&id);
        }
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
