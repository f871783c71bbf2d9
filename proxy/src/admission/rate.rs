//! The per-source rate limit, charged for failures: a connection takes a
//! token when it is admitted, and gives it back when it ends without a
//! failure (a session accepted, a refusal that is not the client's fault)
//! or when it is put in line instead of getting a handshake slot. Honest
//! logins, however many at once, leave the bucket full; garbage, bad keys
//! and idle sockets empty it exactly as the `governor` bucket this
//! replaces did (governor 0.10 has no way to give a token back).
//!
//! A token bucket as GCRA, with governor's arithmetic: each source keeps
//! the time its bucket will be full again (`tat`); a token costs
//! `interval`, and a source may be at most `burst` tokens ahead. Times are
//! nanoseconds on a monotonic clock the caller reads (IO-free: the tests
//! drive it). A clock that goes back only makes a source look further
//! ahead (never a free token); arithmetic that would overflow refuses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Per-source token buckets, bounded: once `tracked` sources are held,
/// sources not yet known share one overflow bucket.
pub(super) struct Rate {
    /// Nanoseconds one token costs.
    interval: u64,
    /// How far ahead of now a source may be: `interval * burst`.
    limit: u64,
    tracked: usize,
    map: HashMap<IpAddr, u64>,
    overflow: Option<u64>,
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
        // 60e9 / u32::MAX is 13: never zero.
        let interval = 60_000_000_000 / u64::from(per_minute.max(1));
        Self {
            interval,
            limit: interval.saturating_mul(u64::from(burst.max(1))),
            tracked,
            map: HashMap::new(),
            overflow: None,
        }
    }

    /// Takes a token for `key` at `now` (nanoseconds); `Err` carries how
    /// long until one is back.
    pub(super) fn take(&mut self, key: IpAddr, now: u64) -> Result<Bucket, Duration> {
        let bucket = if self.map.len() >= self.tracked && !self.map.contains_key(&key) {
            Bucket::Overflow
        } else {
            Bucket::Source(key)
        };
        let tat = match bucket {
            Bucket::Source(k) => self.map.get(&k).copied(),
            Bucket::Overflow => self.overflow,
        };
        // At the end of the clock's range: refuse rather than wrap.
        let Some(tat) = tat.map_or(now, |t| t.max(now)).checked_add(self.interval) else {
            return Err(Duration::MAX);
        };
        let ahead = tat - now;
        if ahead > self.limit {
            return Err(Duration::from_nanos(ahead - self.limit));
        }
        match bucket {
            Bucket::Source(k) => {
                self.map.insert(k, tat);
            }
            Bucket::Overflow => self.overflow = Some(tat),
        }
        Ok(bucket)
    }

    /// Gives a token back: the bucket is where it would be had the token
    /// never been taken (a source that was behind stays at `now`). A
    /// bucket forgotten meanwhile (full again) stays forgotten.
    pub(super) fn refund(&mut self, bucket: Bucket, now: u64) {
        let tat = match bucket {
            Bucket::Source(k) => self.map.get_mut(&k),
            Bucket::Overflow => self.overflow.as_mut(),
        };
        if let Some(t) = tat {
            *t = t.saturating_sub(self.interval).max(now);
        }
    }

    /// Forgets sources whose bucket is full again.
    pub(super) fn purge(&mut self, now: u64) {
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

    const SEC: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn refunded_tokens_never_run_out_and_kept_ones_do() {
        let mut r = Rate::new(1, 3, 16);
        let t = 1000 * SEC;
        let k = ip("192.0.2.1");
        // Two hundred honest logins, one after another or all at once (up
        // to the burst): each token comes back.
        for _ in 0..200 {
            let b = r.take(k, t).expect("honest");
            r.refund(b, t);
        }
        let mut held = Vec::new();
        for _ in 0..200 {
            held.push(r.take(k, t).expect("three at once"));
            held.push(r.take(k, t).expect("three at once"));
            held.push(r.take(k, t).expect("three at once"));
            assert!(r.take(k, t).is_err(), "a fourth at once");
            for b in held.drain(..) {
                r.refund(b, t);
            }
        }
        // Failures keep theirs: the burst, then a minute per token.
        for _ in 0..3 {
            r.take(k, t).expect("burst");
        }
        let wait = r.take(k, t).expect_err("empty");
        assert_eq!(wait, Duration::from_secs(60));
        assert!(r.take(k, t + 60 * SEC).is_ok());
        // Another source has its own bucket; full buckets are forgotten.
        assert!(r.take(ip("192.0.2.2"), t).is_ok());
        r.purge(t + 3600 * SEC);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_refund_gives_back_exactly_one_token_and_no_credit() {
        let mut r = Rate::new(60, 2, 16);
        let k = ip("192.0.2.1");
        // A refund to a bucket that is already full (behind now) gives no
        // credit: still only the burst at once.
        let b = r.take(k, 100 * SEC).expect("one");
        r.refund(b, 100 * SEC);
        r.refund(b, 100 * SEC);
        r.refund(Bucket::Source(ip("192.0.2.9")), 100 * SEC);
        let _kept = [r.take(k, 100 * SEC), r.take(k, 100 * SEC)];
        assert!(r.take(k, 100 * SEC).is_err());
        // A refund long after the take: the bucket is full, no more.
        let mut r = Rate::new(60, 2, 16);
        let b = r.take(k, 100 * SEC).expect("one");
        r.refund(b, 500 * SEC);
        let _kept = [r.take(k, 500 * SEC), r.take(k, 500 * SEC)];
        assert!(r.take(k, 500 * SEC).is_err());
        // A token refunded to a bucket forgotten meanwhile does not bring
        // it back.
        let mut r = Rate::new(60, 2, 16);
        let b = r.take(k, 100 * SEC).expect("one");
        r.purge(200 * SEC);
        r.refund(b, 200 * SEC);
        assert_eq!(r.len(), 0);
    }

    /// governor 0.10's GCRA (gcra.rs `test_and_update`), written out: the
    /// bucket the proxy used before, which charged every connection.
    struct Governor {
        t: u64,
        tau: u64,
        tat: Option<u64>,
    }

    impl Governor {
        fn check(&mut self, t0: u64) -> bool {
            let tat = self.tat.unwrap_or(t0);
            if t0 < tat.saturating_sub(self.tau) {
                return false;
            }
            self.tat = Some(tat.max(t0) + self.t);
            true
        }
    }

    #[test]
    fn a_source_that_only_fails_is_slowed_exactly_as_governor_slowed_it() {
        for (per_minute, burst) in [(120, 20), (1, 1), (1, 3), (7, 5), (6000, 50)] {
            let mut r = Rate::new(per_minute, burst, 16);
            let t = 60_000_000_000 / u64::from(per_minute);
            let mut g = Governor {
                t,
                tau: t * u64::from(burst - 1),
                tat: None,
            };
            let k = ip("198.51.100.7");
            // Attempts at uneven times over ten minutes; none refunded.
            let mut now = 5 * SEC;
            let (mut allowed, mut refused) = (0, 0);
            for i in 0..5000u64 {
                now += (i * 7919) % (2 * t / 3 + 1);
                let ours = r.take(k, now).is_ok();
                assert_eq!(
                    ours,
                    g.check(now),
                    "{per_minute}/min burst {burst}: attempt {i} at {now}"
                );
                if ours {
                    allowed += 1;
                } else {
                    refused += 1;
                }
            }
            // Both ways were exercised: the burst, then the rate.
            assert!(allowed >= burst && refused > 0, "{allowed} {refused}");
        }
    }

    #[test]
    fn a_clock_that_goes_back_never_gives_a_token() {
        let mut r = Rate::new(1, 3, 16);
        let k = ip("192.0.2.1");
        for _ in 0..3 {
            r.take(k, 1000 * SEC).expect("burst");
        }
        // Earlier than before: the source only looks further ahead.
        assert!(r.take(k, 10 * SEC).is_err());
        assert!(r.take(k, 0).is_err());
        // A refund read at an earlier time gives one token back, no more.
        r.refund(Bucket::Source(k), 10 * SEC);
        assert!(r.take(k, 1000 * SEC).is_ok());
        assert!(r.take(k, 1000 * SEC).is_err());
    }

    #[test]
    fn the_end_of_the_clock_refuses_and_never_wraps() {
        let k = ip("192.0.2.1");
        let mut r = Rate::new(1, 3, 16);
        // Within the last interval of u64: the next full time overflows.
        assert_eq!(r.take(k, u64::MAX - 1), Err(Duration::MAX));
        assert_eq!(r.take(k, u64::MAX), Err(Duration::MAX));
        // Just before: the burst, then refused (no wrap to a time long
        // past, which would read as a full bucket).
        let now = u64::MAX - 3 * 60 * SEC;
        for _ in 0..3 {
            r.take(k, now).expect("burst");
        }
        assert!(r.take(k, now).is_err());
        r.refund(Bucket::Source(k), u64::MAX);
        r.purge(u64::MAX);
        // The largest settings do not overflow either.
        let mut wide = Rate::new(u32::MAX, u32::MAX, 16);
        assert!(wide.take(k, 0).is_ok());
        let mut slow = Rate::new(1, u32::MAX, 16);
        assert_eq!(slow.limit, u64::MAX);
        assert!(slow.take(k, 0).is_ok());
    }
}
