//! The ids of platform tokens already used ([`ReplayCache`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{RefusalKind, Refused};
use crate::time::{UnixTime, when};

/// The ids of tokens already used, each kept until its token expires.
#[derive(Debug, Default)]
pub struct ReplayCache {
    cap: usize,
    seen: BTreeMap<[u8; 32], UnixTime>,
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

    /// Records the first use of token `id`, valid until `expires`; refuses
    /// a second use, and any new token while `cap` live ones are held
    /// (it never forgets a live token to make room). Expired ids go first.
    pub fn first_use(
        &mut self,
        id: [u8; 32],
        expires: UnixTime,
        now: UnixTime,
    ) -> Result<(), Refused> {
        self.prune(now);
        if let Some(until) = self.seen.get(&id) {
            return Err(Refused::new(
                RefusalKind::Replayed,
                format!(
                    "this platform token was already used (it stays refused until it expires {}): \
                     each connection needs a fresh token from the platform",
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
                    "the proxy's replay cache holds {} live platform tokens: try again in a \
                     minute; its operator may raise the cap",
                    self.seen.len()
                ),
            ));
        }
        self.seen.insert(id, expires);
        self.by_expiry.insert((expires, id));
        Ok(())
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
