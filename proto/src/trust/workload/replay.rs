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
    seen: BTreeMap<[u8; 32], Seen>,
    by_expiry: BTreeSet<(UnixTime, [u8; 32])>,
    /// Live tokens per workload ([`owner_id`]), each at most
    /// [`MAX_LIVE_PER_WORKLOAD`].
    per_owner: BTreeMap<[u8; 32], usize>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    expires: UnixTime,
    key: KeyId,
    owner: [u8; 32],
}

/// Live tokens the workloads of one rule may hold in the record: far more
/// than its jobs open connections within a token's lifetime, and a small
/// share of the record, so that a job minting tokens in a loop cannot fill
/// it for the other rules' workloads.
pub const MAX_LIVE_PER_WORKLOAD: usize = 1024;

/// Whose share a token counts against: SHA-256 over its `iss` and the
/// rule it matched (principal and claims, as configured). Not its `sub`,
/// which a workload may vary at will (a GitHub repository's own subject
/// template with the run id in it; a namespace's new service accounts).
pub fn owner_id(iss: &str, rule: &super::Rule) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(iss.as_bytes());
    field(rule.principal.as_bytes());
    for (path, glob) in &rule.claims {
        field(path.as_bytes());
        field(glob.as_bytes());
    }
    h.finalize().into()
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
        owner: [u8; 32],
        expires: UnixTime,
        now: UnixTime,
    ) -> Result<(), Refused> {
        self.prune(now);
        if let Some(seen) = self.seen.get(&id) {
            if seen.key == key {
                return Ok(());
            }
            let until = &seen.expires;
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
        let live = self.per_owner.get(&owner).copied().unwrap_or(0);
        if live >= MAX_LIVE_PER_WORKLOAD {
            return Err(Refused::new(
                RefusalKind::ReplayCacheFull,
                format!(
                    "this workload already has {live} live tokens recorded on this proxy, the \
                     most one workload may: reuse a token with its key rather than mint one per \
                     connection, or try again once some expire"
                ),
            ));
        }
        self.insert(
            id,
            Seen {
                expires,
                key,
                owner,
            },
        );
        Ok(())
    }

    fn insert(&mut self, id: [u8; 32], seen: Seen) {
        if let Some(old) = self.seen.insert(id, seen) {
            self.by_expiry.remove(&(old.expires, id));
            self.forget_owner(old.owner);
        }
        self.by_expiry.insert((seen.expires, id));
        *self.per_owner.entry(seen.owner).or_default() += 1;
    }

    fn forget_owner(&mut self, owner: [u8; 32]) {
        if let Some(n) = self.per_owner.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(&owner);
            }
        }
    }

    /// Whether [`Self::first_use`] would refuse token `id` for `key` as a
    /// replay, without recording anything: a token another key holds is
    /// refused at authorization, before the session takes anything.
    pub fn check(&self, id: &[u8; 32], key: &KeyId, now: UnixTime) -> Result<(), Refused> {
        match self.seen.get(id) {
            Some(s) if s.expires > now && s.key != *key => Err(Refused::new(
                RefusalKind::Replayed,
                format!(
                    "this platform token was already used with another key (it stays refused \
                     until it expires {}): a token is good only with the key that first \
                     presented it; get a fresh token from the platform",
                    when(s.expires, now)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether it holds token `id`.
    pub fn holds(&self, id: &[u8; 32]) -> bool {
        self.seen.contains_key(id)
    }

    /// One line of the record kept on disk for token `id` (what
    /// [`Self::restore`] reads back): `ID KEY OWNER EXPIRES`, hex and
    /// seconds.
    pub fn line(&self, id: &[u8; 32]) -> Option<String> {
        self.seen.get(id).map(|s| line(id, s))
    }

    /// The whole record, one [`Self::line`] per live token.
    pub fn lines(&self) -> String {
        self.seen.iter().map(|(id, s)| line(id, s)).collect()
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
                let owner = unhex(f.next()?)?;
                let expires: UnixTime = f.next()?.parse().ok()?;
                f.next().is_none().then_some((
                    id,
                    Seen {
                        expires,
                        key,
                        owner,
                    },
                ))
            })();
            match parsed {
                Some((id, seen)) if seen.expires > now && self.seen.len() < self.cap => {
                    self.insert(id, seen);
                }
                Some(_) => {}
                None => bad += 1,
            }
        }
        bad
    }

    /// Forgets the tokens that expired by `now`.
    pub fn prune_expired(&mut self, now: UnixTime) {
        self.prune(now);
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
            if let Some(old) = self.seen.remove(&id) {
                self.forget_owner(old.owner);
            }
        }
    }
}

fn line(id: &[u8; 32], s: &Seen) -> String {
    format!(
        "{} {} {} {}\n",
        hex(id),
        hex(&s.key),
        hex(&s.owner),
        s.expires
    )
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
        let pair = text.get(2 * i..2 * i + 2)?;
        if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *o = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}
