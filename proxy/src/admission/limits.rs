//! Abuse limits checked when a connection is accepted, before any DH, KEM or
//! signature work: per-source penalties for repeated failures
//! ([`crate::admission::penalties`]), a per-source rate limit charged for
//! failures ([`crate::admission::rate`]), and the half-open handshake table
//! ([`crate::admission::halfopen`]), fair between networks, with a bounded
//! queue per source in front of it. Every table is bounded; a flood from
//! many addresses cannot grow memory without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::admission::halfopen::{Entry, HalfOpen, QueueCaps};
pub use crate::admission::halfopen::{Evicted, HandshakeSlot, QueueTicket};
use crate::admission::penalties::Penalties;
pub use crate::admission::penalties::{Enforced, Failure, PenaltySettings};
use crate::admission::rate::{Bucket, Rate};
use crate::ops::clock;

/// `[limits]` in the proxy config.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Failed connections per source per minute, sustained: a connection
    /// takes a token when its handshake starts and gives it back unless
    /// it fails.
    pub rate_per_minute: u32,
    /// Tokens a source starts with (connections whose handshake is in
    /// progress hold one each).
    pub rate_burst: u32,
    /// Handshakes one source (IPv4 address, IPv6 /64) may have in
    /// progress at once.
    pub handshakes_per_source: usize,
    /// Handshakes one IPv6 /56 (IPv4 /24) may have in progress at once;
    /// unset: a quarter of `max_handshakes`, at least `handshakes_per_source`.
    pub handshakes_per_56: Option<usize>,
    /// Handshakes one IPv6 /48 (IPv4 /16) may have in progress at once;
    /// unset: half of `max_handshakes`, at least `handshakes_per_56`.
    pub handshakes_per_48: Option<usize>,
    /// Most sources tracked by the rate limiter and by the penalty table.
    pub tracked_sources: usize,
    /// Connections one source may have waiting for a handshake slot (once
    /// its networks hold their caps); past it, refused.
    pub queue_per_source: usize,
    /// Connections waiting for a handshake slot, from all sources (at most
    /// half of `max_connections`: each holds a connection slot).
    pub max_queued: usize,
    /// Seconds a connection may wait for a handshake slot.
    pub queue_timeout_secs: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            rate_per_minute: 120,
            rate_burst: 20,
            handshakes_per_source: 8,
            handshakes_per_56: None,
            handshakes_per_48: None,
            tracked_sources: 65_536,
            queue_per_source: 256,
            max_queued: 512,
            queue_timeout_secs: 10,
        }
    }
}

impl LimitSettings {
    /// The half-open caps per source, /56 and /48 for a table of
    /// `max_handshakes`, defaults filled in.
    pub fn network_caps(&self, max_handshakes: usize) -> [usize; 3] {
        let source = self.handshakes_per_source;
        let site = self
            .handshakes_per_56
            .unwrap_or_else(|| (max_handshakes / 4).max(source));
        let block = self
            .handshakes_per_48
            .unwrap_or_else(|| (max_handshakes / 2).max(site));
        [source, site, block]
    }

    /// These settings with the queue held to at most half of
    /// `max_connections` (each waiting connection holds a connection
    /// slot, so a queue of idle sockets cannot take them all), and one
    /// source's share to at most the whole queue.
    pub fn queue_bounded(&self, max_connections: usize) -> Self {
        let max_queued = self.max_queued.min(max_connections / 2);
        Self {
            max_queued,
            queue_per_source: self.queue_per_source.min(max_queued),
            ..self.clone()
        }
    }
}

/// Why a connection was refused at accept time (the metric label): every
/// accept-time refusal there is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The proxy already holds `max_connections` connections.
    MaxConnections,
    /// The source is serving a penalty.
    Penalised,
    /// The policy admits no connection from this source.
    PolicySource,
    /// The source exceeded its connection rate.
    RateLimited,
    /// The source already has its share of handshakes in progress.
    SourceHandshakes,
    /// The source's /56 or /48 (IPv4 /24 or /16) already has its share of
    /// handshakes in progress.
    NetworkHandshakes,
    /// The connection waited `queue_timeout_secs` for a handshake slot.
    QueueTimeout,
}

impl Refusal {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::Penalised => "penalised",
            Self::PolicySource => "policy_source",
            Self::RateLimited => "rate_limited",
            Self::SourceHandshakes => "source_handshakes",
            Self::NetworkHandshakes => "network_handshakes",
            Self::QueueTimeout => "queue_timeout",
        }
    }
}

/// The key a source is tracked under: its canonical address, with IPv6
/// truncated to its /64 (one customer's allocation).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// All accept-time limits.
pub struct Limits {
    penalties: Mutex<Penalties>,
    rate: Mutex<Rate>,
    half_open: Arc<Mutex<HalfOpen>>,
    queue_timeout: Duration,
}

/// A rate-limit token a connection holds from the start of its handshake;
/// [`Limits::refund`] gives it back when the connection ends without a
/// failure. Dropped, it stays spent.
#[must_use = "refund the token unless the connection failed"]
pub struct RateToken(Bucket);

/// What `admit` decided.
pub enum Admitted {
    /// A slot now, its rate token, and the older handshake evicted to make
    /// room, if one was.
    Ready {
        /// The new handshake's slot.
        slot: HandshakeSlot,
        /// Its rate token.
        token: RateToken,
        /// The handshake evicted for it.
        evicted: Option<Evicted>,
    },
    /// A place in the source's queue; the token is taken once it is let in
    /// ([`Limits::take_token`]).
    Queued(QueueTicket),
}

impl Limits {
    /// Builds the limits; `max_handshakes` is the half-open cap.
    pub fn new(
        l: &LimitSettings,
        p: &PenaltySettings,
        exempt: Vec<IpNet>,
        max_handshakes: usize,
    ) -> Self {
        let queue = QueueCaps {
            per_source: l.queue_per_source,
            total: l.max_queued,
        };
        Self {
            penalties: Mutex::new(Penalties::new(p.clone(), exempt, l.tracked_sources)),
            rate: Mutex::new(Rate::new(
                l.rate_per_minute,
                l.rate_burst,
                l.tracked_sources,
            )),
            half_open: Arc::new(Mutex::new(HalfOpen::new(
                max_handshakes,
                l.network_caps(max_handshakes),
                queue,
            ))),
            queue_timeout: Duration::from_secs(l.queue_timeout_secs),
        }
    }

    /// Seconds `peer` is still refused for, if it serves a penalty.
    pub fn penalised(&self, peer: IpAddr) -> Option<u64> {
        lock(&self.penalties).blocked(source_key(peer), Instant::now())
    }

    /// The accept-time checks after [`Self::penalised`]: a rate token,
    /// then a slot in the half-open table or a place in line for one. No
    /// cryptography happens before a slot and a token.
    ///
    /// The token comes first, as before refunds: a source with an empty
    /// bucket is refused before it can evict anyone's handshake, and a
    /// connection refused by a cap keeps its token spent. One put in line
    /// gives its token back at once and takes one when it is let in
    /// ([`Self::take_token`]), so waiting costs nothing.
    pub fn admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let token = self.take_token(peer)?;
        match crate::admission::halfopen::admit(&self.half_open, peer)? {
            Entry::Ready(slot, evicted) => Ok(Admitted::Ready {
                slot,
                token,
                evicted,
            }),
            Entry::Queued(ticket) => {
                self.refund(token);
                Ok(Admitted::Queued(ticket))
            }
        }
    }

    /// A rate token for `peer`, or `RateLimited`.
    pub fn take_token(&self, peer: IpAddr) -> Result<RateToken, Refusal> {
        lock(&self.rate)
            .take(source_key(peer), clock::mono_ns())
            .map(RateToken)
            .map_err(|_| Refusal::RateLimited)
    }

    /// Gives a token back: its connection ended without a failure.
    pub fn refund(&self, token: RateToken) {
        lock(&self.rate).refund(token.0, clock::mono_ns());
    }

    /// How long a connection may wait in line for a handshake slot.
    pub fn queue_timeout(&self) -> Duration {
        self.queue_timeout
    }

    /// Records a failure; returns the penalty if the source is now refused.
    pub fn fail(&self, peer: IpAddr, f: Failure) -> Option<Enforced> {
        lock(&self.penalties).record(source_key(peer), f, Instant::now())
    }

    /// Forgets expired penalties and idle rate-limit state. Call every few
    /// seconds.
    pub fn housekeep(&self) {
        lock(&self.penalties).purge(Instant::now());
        lock(&self.rate).purge(clock::mono_ns());
    }

    /// Sources tracked (penalties, rate limiter), for the gauges.
    pub fn tracked(&self) -> (usize, usize) {
        (lock(&self.penalties).len(), lock(&self.rate).len())
    }

    /// Connections waiting for a handshake slot.
    pub fn queued(&self) -> usize {
        lock(&self.half_open).queued()
    }

    /// Handshakes in progress.
    pub fn half_open(&self) -> usize {
        lock(&self.half_open).len()
    }
}

/// Live sessions per principal, for the policy's `max_sessions`. Entries
/// exist only while a session does, so the table is bounded by
/// `max_connections`.
#[derive(Clone, Default)]
pub struct PrincipalSessions(Arc<Mutex<HashMap<String, u32>>>);

/// One counted session; uncounted on drop.
pub struct SessionHold {
    table: PrincipalSessions,
    principal: String,
}

impl PrincipalSessions {
    /// Counts a new session for `principal`, unless it already holds `max`.
    /// `Err` carries the number it holds.
    pub fn try_hold(&self, principal: &str, max: Option<u32>) -> Result<SessionHold, u32> {
        let mut t = lock(&self.0);
        let n = t.get(principal).copied().unwrap_or(0);
        if max.is_some_and(|m| n >= m) {
            return Err(n);
        }
        t.insert(principal.to_owned(), n + 1);
        Ok(SessionHold {
            table: self.clone(),
            principal: principal.to_owned(),
        })
    }
}

impl Drop for SessionHold {
    fn drop(&mut self) {
        let mut t = lock(&self.table.0);
        if let Some(n) = t.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn limits(l: LimitSettings, p: PenaltySettings, max_hs: usize) -> Limits {
        let exempt = p.exempt.iter().map(|s| s.parse().expect("net")).collect();
        Limits::new(&l, &p, exempt, max_hs)
    }

    #[test]
    fn sources_are_keyed_by_ipv4_or_ipv6_slash_64() {
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_key(ip("2001:db8:1:2::1")),
            source_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:2::1")),
            source_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn exempt_networks_and_the_off_switch_are_never_penalised() {
        let cfg = PenaltySettings {
            exempt: vec!["10.0.0.0/8".into()],
            ..PenaltySettings::default()
        };
        let l = limits(LimitSettings::default(), cfg, 8);
        for _ in 0..50 {
            assert_eq!(l.fail(ip("10.1.1.1"), Failure::Timeout), None);
        }
        assert_eq!(l.penalised(ip("10.1.1.1")), None);
        let off = limits(
            LimitSettings::default(),
            PenaltySettings {
                enabled: false,
                ..PenaltySettings::default()
            },
            8,
        );
        for _ in 0..50 {
            assert_eq!(off.fail(ip("192.0.2.1"), Failure::Timeout), None);
        }
    }

    #[test]
    fn penalised_sources_are_refused_at_accept() {
        let l = limits(LimitSettings::default(), PenaltySettings::default(), 8);
        assert!(l.fail(ip("192.0.2.7"), Failure::Timeout).is_none());
        assert!(l.fail(ip("192.0.2.7"), Failure::FailedAuth).is_none());
        assert!(l.fail(ip("192.0.2.7"), Failure::FailedAuth).is_some());
        assert_eq!(l.penalised(ip("192.0.2.7")), Some(20));
        assert_eq!(l.penalised(ip("192.0.2.8")), None);
    }

    #[test]
    fn rate_limit_applies_per_source_after_the_burst() {
        let l = limits(
            LimitSettings {
                rate_per_minute: 1,
                rate_burst: 3,
                handshakes_per_source: 100,
                ..LimitSettings::default()
            },
            PenaltySettings::default(),
            1000,
        );
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(l.admit(ip("192.0.2.1")).expect("burst"));
        }
        assert!(matches!(
            l.admit(ip("192.0.2.1")),
            Err(Refusal::RateLimited)
        ));
        assert!(l.admit(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn rate_limiter_memory_is_bounded_under_a_flood_of_sources() {
        let l = limits(
            LimitSettings {
                tracked_sources: 1000,
                ..LimitSettings::default()
            },
            PenaltySettings::default(),
            100_000,
        );
        let mut admitted = 0;
        for i in 0..20_000u32 {
            if let Ok(a) = l.admit(IpAddr::V4((0x0a00_0000 + i).into())) {
                admitted += 1;
                drop(a);
            }
        }
        let (_, rate) = l.tracked();
        assert!(rate <= 1001, "rate table holds {rate}");
        // Past the cap, newcomers share the overflow bucket (20 burst).
        assert!(admitted <= 1000 + 20 + 1, "admitted {admitted}");
        assert!(admitted >= 1000);
    }

    #[test]
    fn sessions_per_principal_are_counted_and_released() {
        let s = PrincipalSessions::default();
        let a = s.try_hold("alice", Some(2)).expect("first");
        let b = s.try_hold("alice", Some(2)).expect("second");
        assert_eq!(s.try_hold("alice", Some(2)).err(), Some(2));
        let other = s.try_hold("bob", Some(1)).expect("bob");
        drop(a);
        let c = s.try_hold("alice", Some(2)).expect("after release");
        drop((b, c, other));
        assert!(lock(&s.0).is_empty());
        // Without a limit every session is still counted.
        let many: Vec<_> = (0..100)
            .filter_map(|_| s.try_hold("carol", None).ok())
            .collect();
        assert_eq!(many.len(), 100);
    }

    #[test]
    fn one_timeout_never_reaches_the_threshold() {
        // An office NAT: one laptop sleeps mid-handshake.
        let l = limits(LimitSettings::default(), PenaltySettings::default(), 8);
        assert_eq!(l.fail(ip("192.0.2.7"), Failure::Timeout), None);
        assert_eq!(l.penalised(ip("192.0.2.7")), None);
        // An eviction is a soft failure too: counted, never enough alone.
        assert_eq!(l.fail(ip("192.0.2.8"), Failure::Evicted), None);
        assert_eq!(l.penalised(ip("192.0.2.8")), None);
    }

    #[test]
    fn known_sources_keep_their_own_bucket_once_the_table_is_full() {
        let l = limits(
            LimitSettings {
                tracked_sources: 16,
                rate_per_minute: 1,
                rate_burst: 2,
                handshakes_per_source: 100,
                ..LimitSettings::default()
            },
            PenaltySettings::default(),
            100_000,
        );
        let user = ip("198.51.100.1");
        drop(l.admit(user).expect("user's first"));
        // New sources fill the table and drain the shared overflow bucket.
        for i in 0..100u32 {
            drop(l.admit(IpAddr::V4((0x0a00_0000 + i).into())));
        }
        assert!(l.tracked().1 >= 16);
        assert!(matches!(
            l.admit(ip("203.0.113.1")),
            Err(Refusal::RateLimited)
        ));
        // The user is known: its own bucket still has its second token.
        assert!(
            l.admit(user).is_ok(),
            "a known source fell into the overflow bucket"
        );
    }

    #[test]
    fn the_half_open_table_is_fair_between_networks() {
        // No queue: a network at its cap is refused at once.
        let l = limits(
            LimitSettings {
                handshakes_per_source: 2,
                rate_burst: 1000,
                queue_per_source: 0,
                max_queued: 0,
                ..LimitSettings::default()
            },
            PenaltySettings::default(),
            8,
        );
        // Defaults: 2 per /56 (a quarter of 8), 4 per /48 (half).
        assert_eq!(LimitSettings::default().network_caps(64), [8, 16, 32]);
        let user = l.admit(ip("2001:db8:1::1")).expect("user");
        let mut flood = Vec::new();
        let mut refused = 0;
        // 250 /64s of 2001:db8:2:4400::/56.
        for i in 0..250u16 {
            match l.admit(ip(&format!("2001:db8:2:{:x}::1", 0x4400 + i))) {
                Ok(a) => flood.push(a),
                Err(Refusal::NetworkHandshakes) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(flood.len(), 2, "one /56 holds its cap");
        assert_eq!(refused, 248);
        assert!(
            flood
                .iter()
                .all(|a| matches!(a, Admitted::Ready { evicted: None, .. }))
        );
        assert_eq!(l.half_open(), 3);
        drop((user, flood));
        assert_eq!(l.half_open(), 0);
    }

    #[test]
    fn a_rate_limited_source_evicts_no_one() {
        // A full table of two: the next handshake from elsewhere evicts
        // the oldest (the user's, on a tie), unless its bucket is empty.
        let l = limits(
            LimitSettings {
                rate_burst: 1,
                handshakes_per_source: 2,
                ..LimitSettings::default()
            },
            PenaltySettings::default(),
            2,
        );
        let Ok(Admitted::Ready { slot: user, .. }) = l.admit(ip("192.0.2.1")) else {
            panic!("user")
        };
        let Ok(Admitted::Ready { slot: flood, .. }) = l.admit(ip("198.51.100.1")) else {
            panic!("flood's one token")
        };
        for _ in 0..20 {
            assert!(matches!(
                l.admit(ip("198.51.100.1")),
                Err(Refusal::RateLimited)
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let evicted = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), user.evicted())
                .await
                .is_ok()
        });
        assert!(!evicted, "a source with an empty bucket evicted the user");
        assert_eq!(l.half_open(), 2);
        drop((user, flood));
    }

    #[test]
    fn the_queue_is_bounded_per_source_in_all_and_by_half_the_connections() {
        let settings = LimitSettings {
            handshakes_per_source: 2,
            queue_per_source: 3,
            max_queued: 512,
            ..LimitSettings::default()
        };
        // max_connections 10: at most 5 wait, in all.
        let bounded = settings.queue_bounded(10);
        assert_eq!((bounded.max_queued, bounded.queue_per_source), (5, 3));
        assert_eq!(settings.queue_bounded(4).queue_per_source, 2);
        assert_eq!(LimitSettings::default().queue_bounded(1024).max_queued, 512);
        assert_eq!(LimitSettings::default().queue_bounded(100).max_queued, 50);
        let l = limits(bounded, PenaltySettings::default(), 64);
        let a = ip("192.0.2.1");
        let mut held = Vec::new();
        for want_ready in [true, true, false, false, false] {
            let got = l.admit(a).expect("a slot or a place in line");
            assert_eq!(matches!(got, Admitted::Ready { .. }), want_ready);
            held.push(got);
        }
        // The source's share of the queue is full.
        assert!(matches!(l.admit(a), Err(Refusal::SourceHandshakes)));
        // Another source waits too, up to the total of 5.
        let b = ip("198.51.100.1");
        for _ in 0..2 {
            held.push(l.admit(b).expect("b's slots"));
        }
        for _ in 0..2 {
            let waiting = l.admit(b).expect("b in line");
            assert!(matches!(waiting, Admitted::Queued(_)));
            held.push(waiting);
        }
        assert_eq!(l.queued(), 5);
        assert!(matches!(l.admit(b), Err(Refusal::SourceHandshakes)));
        // A third source is not in line at all: it still gets a slot.
        assert!(matches!(
            l.admit(ip("203.0.113.1")),
            Ok(Admitted::Ready { .. })
        ));
        drop(held);
        assert_eq!((l.queued(), l.half_open()), (0, 0));
    }

    #[test]
    fn two_hundred_logins_at_once_from_one_source_all_get_in_with_the_defaults() {
        let l = Arc::new(limits(
            LimitSettings::default(),
            PenaltySettings::default(),
            64,
        ));
        let src = ip("192.0.2.50");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let done = rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..200 {
                let l = Arc::clone(&l);
                let admitted = l.admit(src).expect("never refused");
                tasks.push(tokio::spawn(async move {
                    let (slot, token) = match admitted {
                        Admitted::Ready { slot, token, .. } => (slot, token),
                        Admitted::Queued(ticket) => {
                            let slot = ticket.wait(l.queue_timeout()).await.expect("let in");
                            (slot, l.take_token(src).expect("a token"))
                        }
                    };
                    tokio::task::yield_now().await;
                    // The handshake succeeded: the token comes back.
                    l.refund(token);
                    drop(slot);
                }));
            }
            let mut done = 0;
            for t in tasks {
                t.await.expect("task");
                done += 1;
            }
            done
        });
        assert_eq!(done, 200);
        assert_eq!(l.half_open(), 0);
        assert_eq!(l.queued(), 0);
        // Failures still empty the bucket: the default burst, then refused.
        let mut held = Vec::new();
        for _ in 0..8 {
            match l.admit(src) {
                Ok(Admitted::Ready { slot, .. }) => held.push(slot),
                _ => panic!("slot"),
            }
        }
        drop(held);
        for _ in 0..12 {
            assert!(matches!(l.admit(src), Ok(Admitted::Ready { .. })));
        }
        assert!(matches!(l.admit(src), Err(Refusal::RateLimited)));
    }
}
