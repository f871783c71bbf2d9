//! The proxy's two clocks, read in one place and passed to the core.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ztssh_proto::conn::Now;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Unix seconds.
pub fn unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds on the monotonic clock.
pub fn mono_ms() -> u64 {
    u64::try_from(start().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Nanoseconds on the monotonic clock (the rate limiter's buckets).
pub fn mono_ns() -> u64 {
    u64::try_from(start().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Both clocks, for the core.
pub fn now() -> Now {
    Now {
        unix: unix(),
        mono_ms: mono_ms(),
    }
}

/// The instant a monotonic millisecond count stands for, for timers.
pub fn instant_at(mono_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(start() + Duration::from_millis(mono_ms))
}
