//! Accept-time admission: the cheap checks that run before any
//! cryptography, cheapest first. A refused socket is closed at once and
//! nothing is read from it. A connection from a source whose handshakes
//! are at their cap waits in line instead (bounded, with a deadline).

pub mod halfopen;
pub mod limits;
pub mod penalties;
mod rate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::ops::metrics::Metrics;
use crate::trust::authority::Authority;
use limits::{Admitted, Failure, Limits, Refusal};

/// A connection that passed every accept-time check.
pub struct Admission {
    /// Its place under `max_connections`.
    pub permit: OwnedSemaphorePermit,
    /// Its place in the half-open handshake table, or in line for one.
    pub admitted: Admitted,
}

/// Runs the accept-time checks for `peer`, with the policy of the
/// `authority` in force; counts and logs a refusal.
pub fn admit(
    limits: &Limits,
    metrics: &Metrics,
    authority: &watch::Receiver<Arc<Authority>>,
    conns: &Arc<Semaphore>,
    peer: SocketAddr,
) -> Result<Admission, Refusal> {
    let checked = check(limits, metrics, authority, conns, peer);
    if let Err(why) = checked {
        metrics.refused.with_label_values(&[why.label()]).inc();
    }
    checked
}

fn check(
    limits: &Limits,
    metrics: &Metrics,
    authority: &watch::Receiver<Arc<Authority>>,
    conns: &Arc<Semaphore>,
    peer: SocketAddr,
) -> Result<Admission, Refusal> {
    let Ok(permit) = Arc::clone(conns).try_acquire_owned() else {
        // One warning per 10 s at most: an unauthenticated flood at the cap
        // must not fill the log queue (the metric counts every refusal).
        static LAST_WARN_MS: AtomicU64 = AtomicU64::new(0);
        let now = crate::ops::clock::mono_ms().saturating_add(10_000);
        let last = LAST_WARN_MS.load(Ordering::Relaxed);
        if now >= last.saturating_add(10_000)
            && LAST_WARN_MS
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(event = "connection_refused", peer = %peer, reason = "max_connections",
                "too many connections (max_connections); further refusals for 10s are counted in ztssh_connections_refused_total only");
        } else {
            debug!(event = "connection_refused", peer = %peer, reason = "max_connections", "too many connections");
        }
        return Err(Refusal::MaxConnections);
    };
    if let Some(secs) = limits.penalised(peer.ip()) {
        // Debug only: a flood must not become a log flood; the metric
        // and the source_penalised event tell the story.
        debug!(event = "connection_refused", peer = %peer, reason = "penalised", penalty_secs = secs, "source is serving a penalty");
        return Err(Refusal::Penalised);
    }
    if let Err(why) = authority.borrow().policy.admit_source(peer.ip()) {
        info!(event = "connection_refused", peer = %peer, reason = "policy_source", detail = %why, "{why}");
        penalise(limits, metrics, peer, Failure::FailedAuth);
        return Err(Refusal::PolicySource);
    }
    let admitted = limits.admit(peer.ip()).inspect_err(|why| {
        debug!(event = "connection_refused", peer = %peer, reason = why.label(), "refused before the handshake");
    })?;
    if let Admitted::Ready {
        evicted: Some(e), ..
    } = &admitted
    {
        debug!(
            event = "handshake_evicted",
            source = %e.source,
            block_held = e.block_held,
            "handshake table full; evicted the oldest pending handshake of the network holding the most"
        );
    }
    Ok(Admission { permit, admitted })
}

/// Records a failure against the source and says so when it now serves a
/// penalty.
pub fn penalise(limits: &Limits, metrics: &Metrics, peer: SocketAddr, f: Failure) {
    if let Some(p) = limits.fail(peer.ip(), f) {
        metrics.penalties.inc();
        warn!(
            event = "source_penalised",
            source = %limits::source_key(peer.ip()),
            secs = p.secs,
            "source refused for the next {}s after repeated failures",
            p.secs
        );
    }
}
