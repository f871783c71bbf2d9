//! Per-source penalties for repeated failures, like OpenSSH's
//! PerSourcePenalties: what each failure costs, when a source is refused,
//! and for how long. Bounded: a table full of live penalties records no
//! newcomer. [`super::limits::Limits`] holds the table and keys it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `[penalties]` in the proxy config. A failure adds its cost in seconds to
/// the source's penalty (capped at `max_secs`); once the penalty reaches
/// `threshold_secs` the source is refused until it runs out.
///
/// Soft failures (a timeout, an eviction, a proven but unauthorized key)
/// count in a score of their own, capped one second below
/// `threshold_secs`: on their own they never lock a source out, however
/// many an attacker provokes against a shared NAT. A hard failure on top of
/// them counts in full.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PenaltySettings {
    /// Off switch.
    pub enabled: bool,
    /// Garbage, a protocol error or a bad tunnel record.
    pub bad_handshake_secs: u64,
    /// A user signature that does not verify, a key ztssh does not accept,
    /// a source the policy refuses.
    pub failed_auth_secs: u64,
    /// A soft failure: the client proved it holds its key (the signature
    /// verified), but the key is not authorized, is revoked, or the policy
    /// refuses the session. A sidecar tries up to three agent keys per
    /// login, so this must not add up to a lockout.
    pub refused_key_secs: u64,
    /// Handshake not finished in time (slowloris). Less than
    /// `threshold_secs`: one laptop that sleeps mid-handshake must not
    /// lock out its whole NAT.
    pub timeout_secs: u64,
    /// Handshake evicted from a full half-open table to make room (its
    /// network held the most pending handshakes). Less than
    /// `threshold_secs`.
    pub evicted_secs: u64,
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
            refused_key_secs: 2,
            timeout_secs: 10,
            evicted_secs: 2,
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
    /// A bad user signature or an unacceptable key; a source the policy
    /// refuses.
    FailedAuth,
    /// The key signed the handshake but was refused after (unauthorized,
    /// revoked, policy): a soft failure.
    KeyRefused,
    /// Too slow to finish the handshake (a soft failure).
    Timeout,
    /// Evicted from the full half-open table (a soft failure: the source's
    /// network held the most pending handshakes).
    Evicted,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One source's score: hard and soft failures decay (one second per
/// second) on their own; the source is refused while `refused_until` is
/// ahead.
struct Penalty {
    hard_until: Instant,
    soft_until: Instant,
    refused_until: Instant,
}

impl Penalty {
    fn expired(&self, now: Instant) -> bool {
        now >= self.hard_until && now >= self.soft_until && now >= self.refused_until
    }
}

impl Failure {
    /// Soft failures never lock a source out on their own.
    pub fn is_soft(self) -> bool {
        matches!(self, Self::KeyRefused | Self::Timeout | Self::Evicted)
    }
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
    pub(super) fn new(cfg: PenaltySettings, exempt: Vec<IpNet>, cap: usize) -> Self {
        Self {
            cfg,
            exempt,
            cap,
            map: HashMap::new(),
        }
    }

    /// Seconds the source is still refused for, if it is.
    pub(super) fn blocked(&mut self, key: IpAddr, now: Instant) -> Option<u64> {
        let p = self.map.get(&key)?;
        if p.expired(now) {
            self.map.remove(&key);
            return None;
        }
        (now < p.refused_until).then(|| ceil_secs(p.refused_until.duration_since(now)))
    }

    fn cost(&self, f: Failure) -> u64 {
        match f {
            Failure::BadHandshake => self.cfg.bad_handshake_secs,
            Failure::FailedAuth => self.cfg.failed_auth_secs,
            Failure::KeyRefused => self.cfg.refused_key_secs,
            Failure::Timeout => self.cfg.timeout_secs,
            Failure::Evicted => self.cfg.evicted_secs,
        }
    }

    /// Adds a failure; returns the penalty when the source is now refused.
    pub(super) fn record(&mut self, key: IpAddr, f: Failure, now: Instant) -> Option<Enforced> {
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
        // Soft failures alone top out one second below the threshold.
        let soft_cap = threshold.saturating_sub(Duration::from_secs(1)).min(max);
        let p = self.map.entry(key).or_insert(Penalty {
            hard_until: now,
            soft_until: now,
            refused_until: now,
        });
        let mut hard = p.hard_until.saturating_duration_since(now);
        let mut soft = p.soft_until.saturating_duration_since(now);
        if f.is_soft() {
            soft = (soft + cost).min(soft_cap.max(soft));
        } else {
            hard = (hard + cost).min(max);
        }
        let total = (hard + soft).min(max);
        if total >= threshold {
            // Refused for the whole score, which from now on decays as one
            // (hard) penalty.
            p.hard_until = now + total;
            p.soft_until = now;
            p.refused_until = p.refused_until.max(now + total);
            return Some(Enforced {
                secs: ceil_secs(p.refused_until.duration_since(now)),
            });
        }
        p.hard_until = now + hard;
        p.soft_until = now + soft;
        None
    }

    /// Sources with a penalty on record.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn purge(&mut self, now: Instant) {
        self.map.retain(|_, p| !p.expired(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
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
            Some(Enforced { secs: 26 })
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
    fn penalty_table_is_bounded() {
        let mut p = Penalties::new(PenaltySettings::default(), Vec::new(), 100);
        let t = Instant::now();
        for i in 0..10_000u32 {
            p.record(IpAddr::V4(i.into()), Failure::Timeout, t);
        }
        assert_eq!(p.map.len(), 100);
        // Once those expire, new sources are recorded again.
        let later = t + Duration::from_secs(30);
        assert_eq!(p.record(ip("198.51.100.1"), Failure::Timeout, later), None);
        assert!(
            p.record(ip("198.51.100.1"), Failure::FailedAuth, later)
                .is_some()
        );
        assert_eq!(p.map.len(), 1);
    }

    #[test]
    fn soft_failures_alone_never_lock_a_source_out() {
        // An attacker with many networks keeps a corporate NAT the fullest
        // one in the half-open table, so its handshakes are the ones
        // evicted, again and again; its users time out and try keys the
        // proxy does not authorize.
        let mut p = Penalties::new(PenaltySettings::default(), Vec::new(), 16);
        let t = Instant::now();
        let nat = ip("192.0.2.9");
        for i in 0..100 {
            assert_eq!(p.record(nat, Failure::Evicted, t), None, "eviction {i}");
            assert_eq!(p.blocked(nat, t), None);
        }
        for i in 0..10 {
            assert_eq!(p.record(nat, Failure::Timeout, t), None, "timeout {i}");
            assert_eq!(p.record(nat, Failure::KeyRefused, t), None, "key {i}");
        }
        assert_eq!(p.blocked(nat, t), None);
        // The soft score sits one second under the threshold: one hard
        // failure on top counts as documented (2 s of garbage: 14 + 2).
        assert_eq!(
            p.record(nat, Failure::BadHandshake, t),
            Some(Enforced { secs: 16 })
        );
        assert_eq!(p.blocked(nat, t), Some(16));
        // The soft score decays like the rest: ten seconds later the same
        // garbage is not enough.
        let other = ip("192.0.2.10");
        for _ in 0..100 {
            assert_eq!(p.record(other, Failure::Evicted, t), None);
        }
        let later = t + Duration::from_secs(10);
        assert_eq!(p.record(other, Failure::BadHandshake, later), None);
        assert_eq!(p.blocked(other, later), None);
        // Hard failures alone still lock out, and so do hard ones with a
        // timeout's cost on top (7 × 2 s + 10 s).
        let third = ip("192.0.2.11");
        for _ in 0..7 {
            assert_eq!(p.record(third, Failure::BadHandshake, t), None);
        }
        assert_eq!(
            p.record(third, Failure::Timeout, t),
            Some(Enforced { secs: 24 })
        );
        // Even a soft cost larger than the threshold is capped when alone.
        let mut big = Penalties::new(
            PenaltySettings {
                timeout_secs: 100,
                ..PenaltySettings::default()
            },
            Vec::new(),
            16,
        );
        for _ in 0..5 {
            assert_eq!(big.record(nat, Failure::Timeout, t), None);
        }
        assert_eq!(big.blocked(nat, t), None);
    }
}
