//! The per-source rate limit, charged for failures: a connection takes a
//! token when it enters the handshake table, and gives it back when it
//! ends without a failure (a session accepted, a refusal that is not the
//! client's fault). Honest logins, however many at once, leave the bucket
//! full; garbage, bad keys and idle sockets empty it.
//!
//! A token bucket as GCRA: each source keeps the time its bucket will be
//! full again (`tat`); a token costs `interval`, and a source may be at
//! most `burst` tokens ahead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Per-source token buckets, bounded: once `tracked` sources are held,
/// sources not yet known share one overflow bucket.
pub(super) struct Rate {
    interval: Duration,
    burst: u32,
    tracked: usize,
    map: HashMap<IpAddr, Instant>,
    overflow: Option<Instant>,
}

/// Which bucket a token came from, to give it back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bucket {
    /// The source's own.
    Source(IpAddr),
    /// The shared overflow bucket.
    Overflow,
}

impl Rate {
    pub(super) fn new(per_minute: u32, burst: u32, tracked: usize) -> Self {
        Self {
            interval: Duration::from_secs(60) / per_minute.max(1),
            burst: burst.max(1),
            tracked,
            map: HashMap::new(),
            overflow: None,
        }
    }

    /// Takes a token for `key`; `Err` carries how long until one is back.
    pub(super) fn take(&mut self, key: IpAddr, now: Instant) -> Result<Bucket, Duration> {
        let bucket = if self.map.len() >= self.tracked && !self.map.contains_key(&key) {
            Bucket::Overflow
        } else {
            Bucket::Source(key)
        };
        let tat = match bucket {
            Bucket::Source(k) => self.map.get(&k).copied(),
            Bucket::Overflow => self.overflow,
        };
        let tat = tat.map_or(now, |t| t.max(now)) + self.interval;
        let limit = self.interval * self.burst;
        let ahead = tat.duration_since(now);
        if ahead > limit {
            return Err(ahead - limit);
        }
        match bucket {
            Bucket::Source(k) => {
                self.map.insert(k, tat);
            }
            Bucket::Overflow => self.overflow = Some(tat),
        }
        Ok(bucket)
    }

    /// Gives a token back.
    pub(super) fn refund(&mut self, bucket: Bucket, now: Instant) {
        let tat = match bucket {
            Bucket::Source(k) => self.map.get_mut(&k),
            Bucket::Overflow => self.overflow.as_mut(),
        };
        if let Some(t) = tat {
            *t = t.checked_sub(self.interval).unwrap_or(now).max(now);
        }
    }

    /// Forgets sources whose bucket is full again.
    pub(super) fn purge(&mut self, now: Instant) {
        self.map.retain(|_, tat| *tat > now);
        self.map.shrink_to_fit();
    }

    /// Sources held.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn refunded_tokens_never_run_out_and_kept_ones_do() {
        let mut r = Rate::new(1, 3, 16);
        let t = Instant::now();
        let k = ip("192.0.2.1");
        // Two hundred honest logins, one after another or all at once (up
        // to the burst): each token comes back.
        for _ in 0..200 {
            let b = r.take(k, t).expect("honest");
            r.refund(b, t);
        }
        // Failures keep theirs: the burst, then a minute per token.
        for _ in 0..3 {
            r.take(k, t).expect("burst");
        }
        let wait = r.take(k, t).expect_err("empty");
        assert_eq!(wait, Duration::from_secs(60));
        assert!(r.take(k, t + Duration::from_secs(60)).is_ok());
        // Another source has its own bucket; full buckets are forgotten.
        assert!(r.take(ip("192.0.2.2"), t).is_ok());
        r.purge(t + Duration::from_secs(3600));
        assert_eq!(r.len(), 0);
    }
}
