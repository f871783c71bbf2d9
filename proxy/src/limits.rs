//! Abuse limits checked when a connection is accepted, before any DH, KEM or
//! signature work: per-source penalties for repeated failures (like
//! OpenSSH's PerSourcePenalties), a per-source rate limit (governor), and
//! the half-open handshake table. Every table is bounded; a flood from many
//! addresses cannot grow memory without limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// `[limits]` in the proxy config.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// New connections per source per minute, sustained.
    pub rate_per_minute: u32,
    /// New connections a source may open at once before the rate applies.
    pub rate_burst: u32,
    /// Handshakes one source may have in progress at once.
    pub handshakes_per_source: usize,
    /// Most sources tracked by the rate limiter and by the penalty table.
    pub tracked_sources: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            rate_per_minute: 120,
            rate_burst: 20,
            handshakes_per_source: 8,
            tracked_sources: 65_536,
        }
    }
}

/// `[penalties]` in the proxy config. A failure adds its cost in seconds to
/// the source's penalty (capped at `max_secs`); once the penalty reaches
/// `threshold_secs` the source is refused until it runs out.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PenaltySettings {
    /// Off switch.
    pub enabled: bool,
    /// Garbage, a protocol error or a bad tunnel record.
    pub bad_handshake_secs: u64,
    /// Authenticated but refused: unknown key, policy, revoked identity.
    pub failed_auth_secs: u64,
    /// Handshake not finished in time (slowloris).
    pub timeout_secs: u64,
    /// Penalty at which the source starts being refused.
    pub threshold_secs: u64,
    /// Longest penalty.
    pub max_secs: u64,
    /// Networks never penalised (monitoring, bastions).
    pub exempt: Vec<String>,
}

impl Default for PenaltySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bad_handshake_secs: 2,
            failed_auth_secs: 5,
            timeout_secs: 20,
            threshold_secs: 15,
            max_secs: 600,
            exempt: Vec::new(),
        }
    }
}

/// What a source did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Garbage or a protocol violation before authentication.
    BadHandshake,
    /// Authenticated, then refused.
    FailedAuth,
    /// Too slow to finish the handshake.
    Timeout,
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

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Penalty {
    until: Instant,
    enforced: bool,
}

/// Per-source penalties.
pub struct Penalties {
    cfg: PenaltySettings,
    exempt: Vec<IpNet>,
    cap: usize,
    map: HashMap<IpAddr, Penalty>,
}

/// A penalty that has just started or grown.
#[derive(Debug, PartialEq, Eq)]
pub struct Enforced {
    /// How long the source is refused from now.
    pub secs: u64,
}

impl Penalties {
    fn new(cfg: PenaltySettings, exempt: Vec<IpNet>, cap: usize) -> Self {
        Self {
            cfg,
            exempt,
            cap,
            map: HashMap::new(),
        }
    }

    /// Seconds the source is still refused for, if it is.
    fn blocked(&mut self, key: IpAddr, now: Instant) -> Option<u64> {
        let p = self.map.get(&key)?;
        if now >= p.until {
            self.map.remove(&key);
            return None;
        }
        p.enforced.then(|| ceil_secs(p.until.duration_since(now)))
    }

    fn cost(&self, f: Failure) -> u64 {
        match f {
            Failure::BadHandshake => self.cfg.bad_handshake_secs,
            Failure::FailedAuth => self.cfg.failed_auth_secs,
            Failure::Timeout => self.cfg.timeout_secs,
        }
    }

    /// Adds a failure; returns the penalty when the source is now refused.
    fn record(&mut self, key: IpAddr, f: Failure, now: Instant) -> Option<Enforced> {
        if !self.cfg.enabled || self.exempt.iter().any(|n| n.contains(&key)) {
            return None;
        }
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            self.purge(now);
            if self.map.len() >= self.cap {
                // Full of live penalties: the newcomer goes unrecorded
                // (OpenSSH's "permissive" overflow), memory stays bounded.
                return None;
            }
        }
        let cost = Duration::from_secs(self.cost(f));
        let max = Duration::from_secs(self.cfg.max_secs);
        let threshold = Duration::from_secs(self.cfg.threshold_secs);
        let p = self.map.entry(key).or_insert(Penalty {
            until: now,
            enforced: false,
        });
        let left = p.until.saturating_duration_since(now);
        let next = (left + cost).min(max);
        p.until = now + next;
        if next >= threshold {
            p.enforced = true;
            return Some(Enforced {
                secs: ceil_secs(next),
            });
        }
        None
    }

    fn purge(&mut self, now: Instant) {
        self.map.retain(|_, p| p.until > now);
    }
}

struct Pending {
    id: u64,
    key: IpAddr,
    evict: Arc<Notify>,
}

/// Handshakes in progress. When the table is full the oldest handshake is
/// evicted rather than the newcomer refused: a real client finishes its
/// handshake in a few round trips, so idle sockets cannot hold the door shut.
struct HalfOpen {
    cap: usize,
    per_source: usize,
    next_id: u64,
    queue: VecDeque<Pending>,
    by_source: HashMap<IpAddr, usize>,
}

impl HalfOpen {
    fn remove(&mut self, id: u64) {
        if let Some(pos) = self.queue.iter().position(|p| p.id == id) {
            let gone = self.queue.remove(pos);
            if let Some(g) = gone {
                self.forget(g.key);
            }
        }
    }

    fn forget(&mut self, key: IpAddr) {
        if let Some(n) = self.by_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&key);
            }
        }
    }
}

/// A slot in the half-open table, released on drop. `evicted` fires when a
/// newer connection took the slot.
pub struct HandshakeSlot {
    table: Arc<Mutex<HalfOpen>>,
    id: u64,
    evict: Arc<Notify>,
}

impl HandshakeSlot {
    /// Completes when this handshake has been evicted.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        lock(&self.table).remove(self.id);
    }
}

/// All accept-time limits.
pub struct Limits {
    penalties: Mutex<Penalties>,
    rate: DefaultKeyedRateLimiter<IpAddr>,
    overflow: DefaultDirectRateLimiter,
    tracked: usize,
    half_open: Arc<Mutex<HalfOpen>>,
}

/// What `admit` decided.
pub struct Admitted {
    /// The new handshake's slot.
    pub slot: HandshakeSlot,
    /// Whether an older handshake was evicted to make room.
    pub evicted_other: bool,
}

impl Limits {
    /// Builds the limits; `max_handshakes` is the half-open cap.
    pub fn new(
        l: &LimitSettings,
        p: &PenaltySettings,
        exempt: Vec<IpNet>,
        max_handshakes: usize,
    ) -> Self {
        let burst = NonZeroU32::new(l.rate_burst).unwrap_or(NonZeroU32::MIN);
        let per_minute = NonZeroU32::new(l.rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            penalties: Mutex::new(Penalties::new(p.clone(), exempt, l.tracked_sources)),
            rate: RateLimiter::keyed(quota),
            overflow: RateLimiter::direct(quota),
            tracked: l.tracked_sources,
            half_open: Arc::new(Mutex::new(HalfOpen {
                cap: max_handshakes,
                per_source: l.handshakes_per_source,
                next_id: 0,
                queue: VecDeque::new(),
                by_source: HashMap::new(),
            })),
        }
    }

    /// Seconds `peer` is still refused for, if it serves a penalty.
    pub fn penalised(&self, peer: IpAddr) -> Option<u64> {
        lock(&self.penalties).blocked(source_key(peer), Instant::now())
    }

    /// The accept-time checks after [`Self::penalised`]: rate, then the
    /// half-open table. No cryptography happens before this returns `Ok`.
    pub fn admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let key = source_key(peer);
        if !self.rate_ok(key) {
            return Err(Refusal::RateLimited);
        }
        let mut t = lock(&self.half_open);
        if t.by_source.get(&key).copied().unwrap_or(0) >= t.per_source {
            return Err(Refusal::SourceHandshakes);
        }
        let mut evicted_other = false;
        if t.queue.len() >= t.cap
            && let Some(oldest) = t.queue.pop_front()
        {
            t.forget(oldest.key);
            oldest.evict.notify_one();
            evicted_other = true;
        }
        let id = t.next_id;
        t.next_id = t.next_id.wrapping_add(1);
        let evict = Arc::new(Notify::new());
        t.queue.push_back(Pending {
            id,
            key,
            evict: Arc::clone(&evict),
        });
        *t.by_source.entry(key).or_insert(0) += 1;
        drop(t);
        Ok(Admitted {
            slot: HandshakeSlot {
                table: Arc::clone(&self.half_open),
                id,
                evict,
            },
            evicted_other,
        })
    }

    /// Per-source rate; once the table holds `tracked` sources, unknown
    /// and known sources alike share one overflow bucket until housekeeping
    /// forgets the idle ones.
    fn rate_ok(&self, key: IpAddr) -> bool {
        if self.rate.len() >= self.tracked {
            return self.overflow.check().is_ok();
        }
        self.rate.check_key(&key).is_ok()
    }

    /// Records a failure; returns the penalty if the source is now refused.
    pub fn fail(&self, peer: IpAddr, f: Failure) -> Option<Enforced> {
        lock(&self.penalties).record(source_key(peer), f, Instant::now())
    }

    /// Forgets expired penalties and idle rate-limit state. Call every few
    /// seconds.
    pub fn housekeep(&self) {
        lock(&self.penalties).purge(Instant::now());
        self.rate.retain_recent();
        self.rate.shrink_to_fit();
    }

    /// Sources tracked (penalties, rate limiter), for the gauges.
    pub fn tracked(&self) -> (usize, usize) {
        (lock(&self.penalties).map.len(), self.rate.len())
    }

    /// Handshakes in progress.
    pub fn half_open(&self) -> usize {
        lock(&self.half_open).queue.len()
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
    fn penalties_grow_with_each_failure_and_cap() {
        let mut p = Penalties::new(PenaltySettings::default(), Vec::new(), 16);
        let t = Instant::now();
        let k = ip("192.0.2.1");
        // Seven bad handshakes (2 s each) stay under the 15 s threshold.
        for _ in 0..7 {
            assert_eq!(p.record(k, Failure::BadHandshake, t), None);
            assert_eq!(p.blocked(k, t), None);
        }
        assert_eq!(
            p.record(k, Failure::BadHandshake, t),
            Some(Enforced { secs: 16 })
        );
        assert_eq!(p.blocked(k, t), Some(16));
        assert_eq!(
            p.record(k, Failure::Timeout, t),
            Some(Enforced { secs: 36 })
        );
        for _ in 0..100 {
            p.record(k, Failure::Timeout, t);
        }
        assert_eq!(p.blocked(k, t), Some(600));
        // It runs out, and then the source is forgotten.
        assert_eq!(p.blocked(k, t + Duration::from_secs(601)), None);
        assert!(p.map.is_empty());
        // Another source is unaffected.
        assert_eq!(p.blocked(ip("192.0.2.2"), t), None);
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
        assert!(l.fail(ip("192.0.2.7"), Failure::Timeout).is_some());
        assert_eq!(l.penalised(ip("192.0.2.7")), Some(20));
        assert_eq!(l.penalised(ip("192.0.2.8")), None);
    }

    #[test]
    fn penalty_table_is_bounded() {
        let mut p = Penalties::new(PenaltySettings::default(), Vec::new(), 100);
        let t = Instant::now();
        for i in 0..10_000u32 {
            p.record(IpAddr::V4(i.into()), Failure::Timeout, t);
        }
        assert_eq!(p.map.len(), 100);
        // Once those expire, new sources are recorded again.
        let later = t + Duration::from_secs(30);
        assert!(
            p.record(ip("198.51.100.1"), Failure::Timeout, later)
                .is_some()
        );
        assert_eq!(p.map.len(), 1);
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
    fn full_half_open_table_evicts_the_oldest_handshake() {
        let l = limits(
            LimitSettings {
                handshakes_per_source: 2,
                ..LimitSettings::default()
            },
            PenaltySettings::default(),
            3,
        );
        let a = l.admit(ip("192.0.2.1")).expect("a");
        let b = l.admit(ip("192.0.2.2")).expect("b");
        let c = l.admit(ip("192.0.2.3")).expect("c");
        assert!(!a.evicted_other && !b.evicted_other && !c.evicted_other);
        let d = l.admit(ip("192.0.2.4")).expect("d");
        assert!(d.evicted_other);
        assert_eq!(l.half_open(), 3);
        // `a` was told; `b` was not.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), a.slot.evicted())
                .await
                .expect("a evicted");
            assert!(
                tokio::time::timeout(Duration::from_millis(10), b.slot.evicted())
                    .await
                    .is_err()
            );
        });
        // Dropping the evicted slot changes nothing; dropping a live one frees it.
        drop(a);
        assert_eq!(l.half_open(), 3);
        drop(b);
        assert_eq!(l.half_open(), 2);
        // One source may hold only its share.
        let e1 = l.admit(ip("192.0.2.9")).expect("e1");
        let e2 = l.admit(ip("192.0.2.9")).expect("e2");
        assert!(matches!(
            l.admit(ip("192.0.2.9")),
            Err(Refusal::SourceHandshakes)
        ));
        drop((c, d, e1, e2));
        assert_eq!(l.half_open(), 0);
        assert!(lock(&l.half_open).by_source.is_empty());
    }
}
