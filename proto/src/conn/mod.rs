//! One established tunnel, with no IO and no clock, in the spirit of
//! quinn-proto's `Connection`: one type, [`Conn`], for both sides, the
//! proxy's [`ServerConn`] and the sidecar's [`ClientConn`]. Each owns the
//! record opener with its receive buffer, the sealer with its transmit
//! queue, the queue of plaintext for the local side (sshd, or ssh's
//! stdout) and the identity machine. Drivers only move bytes and pass
//! time in ([`Now`], the same way on both sides); every decision is taken
//! here.
//!
//! Call order, for a driver of either side:
//! 1. While [`Conn::wants_peer`], read from the peer into
//!    [`Conn::recv_buf`] and pass the count to `handle_peer_read` (or pass
//!    a slice to `handle_peer`); at end of stream call `handle_peer_eof`.
//! 2. While [`Conn::wants_local`], read from the local side into
//!    [`Conn::local_buf`] and pass the count to [`Conn::handle_local_read`];
//!    at end of stream call `handle_local_eof`.
//! 3. Write [`Conn::poll_transmit`] to the peer and report progress with
//!    `transmitted`; write [`Conn::poll_local`] to the local side and
//!    report progress with `delivered`. Once `local_finished`, shut down
//!    the local side's write direction.
//! 4. When the monotonic clock reaches `poll_timeout`, call
//!    `handle_timeout`.
//! 5. After every call, drain [`Conn::poll_event`]. On the proxy's
//!    [`ServerEvent::Terminated`] close the local side *at once*, whatever
//!    write is pending: from that moment [`Conn::poll_local`] is empty
//!    forever, so no byte reaches the local side after the decision. Then
//!    flush [`Conn::poll_transmit`] (it ends with the TERMINATE) until
//!    [`ServerEvent::Closed`], which comes at the latest
//!    [`TERMINATE_GRACE_MS`] after the decision, however the client reads.
//!    The sidecar's last event is [`ClientConnEvent::Ended`].
//!
//! No call waits for anything, so a peer that stops reading cannot delay a
//! decision: timers, revocations and proof checks act on the state, and the
//! driver carries out the result while its writes are still blocked.
//!
//! Backpressure: the peer is read only while the local queue is below
//! [`HIGH_WATER`] and the local side only while the transmit queue is; a
//! queue that makes no progress for the write bound ends the session.
//!
//! Layout: [`Conn`] and the methods both sides share are here; `link`
//! holds the record layer with its queues (`queue`), the rekey ratchet
//! (`rekey`) and cover traffic (`cover`); `server` and `client` hold what
//! only one side does (identity, how a session ends, extra timers).

mod client;
mod cover;
mod link;
mod queue;
mod rekey;
mod server;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

pub use client::{
    CLIENT_WRITE_BOUND_MS, ClientConn, ClientConnEvent, ClientEnd, ClientSide, EXPIRY_GRACE_MS,
    MAX_RENEWAL_SIGNATURES_PER_HOUR, RENEW_REPLY_MS, RENEW_RETRY_MS,
};
pub use cover::{COVER_CADENCE_MS, COVER_LINGER_MS, CoverTraffic};
pub use link::HIGH_WATER;
pub use queue::MAX_BATCH;
pub use rekey::{
    DEFAULT_REKEY_AFTER_BYTES, DEFAULT_REKEY_AFTER_SECS, MIN_REKEY_GAP_BYTES, MIN_REKEY_GAP_MS,
    REKEY_MAX_MS, REKEY_REPLY_MS, RekeyPolicy,
};
pub use server::{
    CLOSE_GRACE_MS, FLUSH_AFTER_CLOSE_MS, ServerConn, ServerEvent, ServerSide, TERMINATE_GRACE_MS,
};

use crate::control::Control;
use crate::time::UnixTime;
use link::{Link, Stall};
use sealed::{Fault, Hooks};

/// The time, as the driver passes it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Wall clock, Unix seconds (certificate windows; the sidecar's core
    /// does not read it).
    pub unix: UnixTime,
    /// Monotonic clock, milliseconds (every timer).
    pub mono_ms: u64,
}

/// One side of a tunnel: [`ServerSide`] (the proxy) or [`ClientSide`] (the
/// sidecar). It cannot be implemented outside this crate.
pub trait Side: Hooks + std::fmt::Debug {
    /// What [`Conn::poll_event`] returns.
    type Event: std::fmt::Debug;
    /// The identity machine of this side.
    type Identity: std::fmt::Debug;
}

mod sealed {
    use super::{Conn, Now, Side};
    use crate::ProtoError;

    /// Why the shared half ends a session; each side words it.
    pub enum Fault {
        /// A record could not be sealed (or a rekey started).
        Record(ProtoError),
        /// The peer's bytes did not open or broke the record protocol.
        Open(ProtoError),
        /// A rekey under way ran out of time.
        Rekey(String),
        /// The peer read nothing for the write bound.
        PeerStalled,
        /// The local side read nothing for the write bound.
        LocalStalled,
    }

    /// What the shared half asks of a side.
    pub trait Hooks: Sized {
        /// Whether a local queue that makes no progress ends the session.
        const BOUNDS_LOCAL: bool;
        /// The event for a completed rekey.
        fn rekeyed(count: u64) -> <Self as Side>::Event
        where
            Self: Side;
        /// The session ended: it takes no more input.
        fn is_over(&self) -> bool;
        /// Whether the peer may be read (queues aside).
        fn reads_peer(&self) -> bool;
        /// Whether the local side may be read (queues aside).
        fn reads_local(&self) -> bool;
        /// Whether the local queue was dropped for good.
        fn local_cut(&self) -> bool;
        /// The local side sent its first bytes (or more).
        fn heard_local(&mut self) {}
        /// Ends the session for `fault`.
        fn fail(conn: &mut Conn<Self>, fault: Fault, now: Now)
        where
            Self: Side;
    }
}

/// One side of one tunnel after the handshake: the record layer, the
/// identity machine and the events for the driver. See the module docs
/// for the call order.
#[derive(Debug)]
pub struct Conn<S: Side> {
    link: Link,
    identity: S::Identity,
    write_bound_ms: u64,
    events: VecDeque<S::Event>,
    side: S,
}

impl<S: Side> Conn<S> {
    fn with(link: Link, identity: S::Identity, write_bound_ms: u64, side: S) -> Self {
        Self {
            link,
            identity,
            write_bound_ms,
            events: VecDeque::new(),
            side,
        }
    }

    /// The identity state (principal, serial, proof counts).
    pub fn identity(&self) -> &S::Identity {
        &self.identity
    }

    /// Sets when this side starts a rekey (default [`RekeyPolicy::default`]);
    /// the schedule restarts at `now`.
    pub fn set_rekey_policy(&mut self, policy: RekeyPolicy, now: Now) {
        self.link.rk.policy = policy;
        self.link.rk.since_ms = Some(now.mono_ms);
    }

    /// Rekeys completed on this session.
    pub fn rekeys(&self) -> u64 {
        self.link.rk.epoch
    }

    /// Sets the cover traffic mode (default off).
    pub fn set_cover_traffic(&mut self, mode: CoverTraffic) {
        self.link.cover.mode = mode;
    }

    /// Turns off the refusal of a peer's INIT that comes too soon (tests
    /// that force rekeys at any point).
    #[cfg(any(test, feature = "testkit"))]
    #[doc(hidden)]
    pub fn allow_fast_rekeys(&mut self) {
        self.link.rk.guard = false;
    }

    /// Lowers [`HIGH_WATER`] for this connection (fuzz targets: a few
    /// small writes then fill a queue, instead of half a megabyte each).
    #[cfg(any(test, feature = "testkit"))]
    #[doc(hidden)]
    pub fn set_high_water(&mut self, bytes: usize) {
        self.link.high_water = bytes.clamp(1, HIGH_WATER);
    }

    /// Starts a rekey now if none is under way (tests and fuzzers).
    #[cfg(any(test, feature = "testkit"))]
    #[doc(hidden)]
    pub fn start_rekey(&mut self, now: Now) {
        if !self.side.is_over()
            && let Err(e) = self.link.force_rekey(now.mono_ms)
        {
            S::fail(self, Fault::Record(e), now);
        }
    }

    /// Queues the events for rekeys completed since the last call.
    fn report_rekeys(&mut self) {
        for _ in 0..std::mem::take(&mut self.link.rk.unreported) {
            self.events.push_back(S::rekeyed(self.link.rk.epoch));
        }
    }

    /// Whether the driver should read from the peer now.
    pub fn wants_peer(&self) -> bool {
        self.side.reads_peer() && self.link.peer_room()
    }

    /// Whether the driver should read from the local side now.
    pub fn wants_local(&self) -> bool {
        self.side.reads_local() && self.link.local_room()
    }

    /// Where to read the peer's bytes to.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        self.link.rx.spare()
    }

    /// Where to read the local side's bytes to.
    pub fn local_buf(&mut self) -> &mut [u8] {
        self.link.local_rx.spare()
    }

    /// Sealed bytes for the peer.
    pub fn poll_transmit(&self) -> &[u8] {
        self.link.tx.pending()
    }

    /// Plaintext for the local side; empty for good once the session was
    /// killed (the proxy's side also once it closed). After the sidecar's
    /// normal end the rest is still to be written.
    pub fn poll_local(&self) -> &[u8] {
        if self.side.local_cut() {
            return &[];
        }
        self.link.local.pending()
    }

    /// Copies `bytes` into the receive buffer and hands each batch to
    /// `read` (the side's `handle_peer_read`).
    fn feed_peer(&mut self, mut bytes: &[u8], mut read: impl FnMut(&mut Self, usize)) {
        while !bytes.is_empty() && !self.side.is_over() {
            let spare = self.link.rx.spare();
            let n = spare.len().min(bytes.len());
            if n == 0 {
                // A full buffer takes nothing more (it cannot be, but the
                // loop must not turn on that).
                return;
            }
            spare[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            read(self, n);
        }
    }

    /// `n` bytes were read into [`Self::recv_buf`]: opens them and hands
    /// each event to `on` while the session lasts. False if nothing was
    /// opened: the session was over, or ended on a bad record.
    fn open_peer(
        &mut self,
        n: usize,
        now: Now,
        mut on: impl FnMut(&mut Self, &crate::frame::Event),
    ) -> bool {
        if self.side.is_over() {
            return false;
        }
        self.link.rx.filled(n);
        let events = match self.link.open(now.mono_ms) {
            Ok(e) => e,
            Err(e) => {
                S::fail(self, Fault::Open(e), now);
                return false;
            }
        };
        for ev in &events {
            if self.side.is_over() {
                break;
            }
            on(self, ev);
        }
        self.link.scratch = events;
        true
    }

    /// `n` bytes from the local side were read into [`Self::local_buf`].
    pub fn handle_local_read(&mut self, n: usize, now: Now) {
        if self.side.is_over() || n == 0 {
            return;
        }
        self.side.heard_local();
        self.link.local_rx.filled(n);
        if let Err(e) = self.link.seal_data(now.mono_ms) {
            S::fail(self, Fault::Record(e), now);
        }
    }

    /// The local side's bytes, copied and handled (for tests and fuzzers).
    pub fn handle_local(&mut self, mut bytes: &[u8], now: Now) {
        while !bytes.is_empty() && !self.side.is_over() {
            let spare = self.link.local_rx.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.handle_local_read(n, now);
        }
    }

    /// The local side ended: queues CLOSE for the peer. False if it was
    /// queued before, the session is over, or sealing ended it.
    fn close_local(&mut self, now: Now) -> bool {
        if self.side.is_over() || self.link.local_closed {
            return false;
        }
        if let Err(e) = self.link.seal_close(now.mono_ms) {
            S::fail(self, Fault::Record(e), now);
            return false;
        }
        true
    }

    /// Queues a control message for the peer.
    fn seal(&mut self, msg: &Control, now: Now) {
        if let Err(e) = self.link.seal_control(msg, now.mono_ms) {
            S::fail(self, Fault::Record(e), now);
        }
    }

    /// The earliest of the record layer's timers: a stalled queue, the
    /// rekey schedule or bound, the next cover tick.
    fn link_timeout(&self) -> Option<u64> {
        let stall = self
            .link
            .stall_deadline(self.write_bound_ms, S::BOUNDS_LOCAL);
        [stall, self.link.rekey_deadline(), self.link.cover.next_tick]
            .into_iter()
            .flatten()
            .min()
    }

    /// Drives the record layer's timers; false if that ended the session.
    fn handle_link_timeout(&mut self, now: Now) -> bool {
        // Every timer wake-up gives back what an idle session does not use.
        self.link.release_idle();
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        let fault = match self.link.stalled(self.write_bound_ms, now.mono_ms) {
            Some(Stall::Peer) => Some(Fault::PeerStalled),
            Some(Stall::Local) if S::BOUNDS_LOCAL => Some(Fault::LocalStalled),
            _ => None,
        };
        let fault = fault
            .or_else(|| self.link.rekey_timeout(now.mono_ms).err().map(Fault::Rekey))
            .or_else(|| self.link.cover_tick(now.mono_ms).err().map(Fault::Record));
        match fault {
            Some(fault) => {
                S::fail(self, fault, now);
                false
            }
            None => true,
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<S::Event> {
        self.events.pop_front()
    }

    /// Moves this side's send counter and the peer's receive counter to
    /// `n`, to reach the per-key record limit in a test.
    #[cfg(test)]
    pub(crate) fn jump_nonces<P: Side>(&mut self, peer: &mut Conn<P>, n: u64) {
        self.link.sealer.jump_nonce(n);
        peer.link.opener.jump_nonce(n);
    }

    /// Moves this side's receive counter by `n` records.
    #[cfg(test)]
    pub(crate) fn link_opener_jump(&mut self, n: u64) {
        self.link.opener.jump_nonce(n);
    }

    /// Lets this side's sealer go past the record limit, as a hostile
    /// peer's would.
    #[cfg(test)]
    pub(crate) fn lift_record_limit(&mut self) {
        self.link.sealer.lift_limit();
    }
}
