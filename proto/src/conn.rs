//! One established tunnel, with no IO and no clock: [`ServerConn`] for the
//! proxy and [`ClientConn`] for the sidecar, in the spirit of quinn-proto's
//! `Connection`. Each owns the record opener with its receive buffer, the
//! sealer with its transmit queue, the queue of plaintext for the local
//! side (sshd, or ssh's stdout) and the identity machine. Drivers only move
//! bytes and pass time in; every decision is taken here.
//!
//! Call order, for a driver of either side:
//! 1. While [`ServerConn::wants_peer`], read from the peer into
//!    [`ServerConn::recv_buf`] and pass the count to
//!    [`ServerConn::handle_peer_read`] (or pass a slice to
//!    [`ServerConn::handle_peer`]); at end of stream call
//!    [`ServerConn::handle_peer_eof`].
//! 2. While [`ServerConn::wants_local`], read from the local side into
//!    [`ServerConn::local_buf`] and pass the count to
//!    [`ServerConn::handle_local_read`]; at end of stream call
//!    [`ServerConn::handle_local_eof`].
//! 3. Write [`ServerConn::poll_transmit`] to the peer and report progress
//!    with [`ServerConn::transmitted`]; write [`ServerConn::poll_local`] to
//!    the local side and report progress with [`ServerConn::delivered`].
//!    Once [`ServerConn::local_finished`], shut down the local side's write
//!    direction.
//! 4. When the monotonic clock reaches [`ServerConn::poll_timeout`], call
//!    [`ServerConn::handle_timeout`].
//! 5. After every call, drain [`ServerConn::poll_event`]. On
//!    [`ServerEvent::Terminated`] close the local side *at once*, whatever
//!    write is pending: from that moment [`ServerConn::poll_local`] is
//!    empty forever, so no byte reaches the local side after the decision.
//!    Then flush [`ServerConn::poll_transmit`] (it ends with the TERMINATE)
//!    until [`ServerEvent::Closed`], which comes at the latest
//!    [`TERMINATE_GRACE_MS`] after the decision, however the client reads.
//!
//! No call waits for anything, so a peer that stops reading cannot delay a
//! decision: timers, revocations and proof checks act on the state, and the
//! driver carries out the result while its writes are still blocked.
//!
//! Backpressure: the peer is read only while the local queue is below
//! [`HIGH_WATER`] and the local side only while the transmit queue is; a
//! queue that makes no progress for the write bound ends the session.

use crate::ProtoError;
use crate::control::{Control, TerminateCode};
use crate::end::{EndKind, Ended, Termination};
use crate::frame::{Event, Opener, Sealer, Transport};
use crate::identity::{
    Authority, Authorized, ClientEvent, ClientIdentity, Handled, Refused, ServerIdentity, Timing,
};
use crate::keys::SigningKey;
use crate::rekey::{self, Chain, RekeyMsg};
use crate::time::UnixTime;
use zeroize::Zeroizing;

/// Largest read batch from either side.
pub const MAX_BATCH: usize = 256 * 1024;
/// Smallest read buffer; it grows to [`MAX_BATCH`] while reads fill it, so
/// an idle session holds little memory.
const MIN_BATCH: usize = 4096;
/// A queue this full stops reading from the side that fills it.
pub const HIGH_WATER: usize = 512 * 1024;
/// How long the proxy waits for the client's CLOSE once its own CLOSE
/// (after sshd closed) was written.
pub const CLOSE_GRACE_MS: u64 = 2000;
/// How long, at least, a client has to read sshd's last output once sshd
/// closed (the write bound, if longer): a slow but steady reader (a mobile
/// link ending `scp` or `git clone`) gets its whole tail, a trickle cannot
/// hold the connection for ever. Identity timers keep running meanwhile.
pub const FLUSH_AFTER_CLOSE_MS: u64 = 60_000;
/// How long, from the decision, a killed session's TERMINATE has to reach
/// the client: then the connection closes, whatever its progress.
pub const TERMINATE_GRACE_MS: u64 = 1000;
/// How long a sidecar waits for a CERT after sending RENEW.
pub const RENEW_REPLY_MS: u64 = 15_000;
/// How long a sidecar waits before retrying a failed renewal.
pub const RENEW_RETRY_MS: u64 = 5_000;
/// The sidecar's write bound until a challenge names the deadline.
pub const CLIENT_WRITE_BOUND_MS: u64 = 20_000;
/// How long a rekey under way may go without progress once our INIT (or
/// REPLY) was handed to the socket: no byte from the peer and none taken by
/// the socket. Then the session ends. The timer does not run while records
/// queued before the INIT are still being written (a slow link), which
/// the write bound covers.
pub const REKEY_REPLY_MS: u64 = 60_000;
/// How long a rekey under way may take at most, however the link makes
/// progress, from when our INIT (or REPLY) was handed to the socket: a peer
/// that reads and sends but never answers is closed.
pub const REKEY_MAX_MS: u64 = 600_000;
/// A peer's INIT must come at least this many record bytes (sent and
/// received) after our last key switch...
pub const MIN_REKEY_GAP_BYTES: u64 = 512 * 1024;
/// ...or at least this long after it; otherwise it is refused. Both are half
/// the smallest [`RekeyPolicy`] (1 MiB, 1 s), and an honest initiator's
/// count is never above ours (it restarts no earlier than our switch), so
/// no allowed policy trips it.
pub const MIN_REKEY_GAP_MS: u64 = 500;
/// Default `rekey_after_secs`.
pub const DEFAULT_REKEY_AFTER_SECS: u64 = 3600;
/// Default `rekey_after_bytes` (1 GiB).
pub const DEFAULT_REKEY_AFTER_BYTES: u64 = 1 << 30;

/// When this side starts a rekey: after `after_secs` on one set of keys or
/// `after_bytes` of records (both directions) under them, whichever first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Seconds on one set of keys.
    pub after_secs: u64,
    /// Record bytes, sent and received, on one set of keys.
    pub after_bytes: u64,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        Self {
            after_secs: DEFAULT_REKEY_AFTER_SECS,
            after_bytes: DEFAULT_REKEY_AFTER_BYTES,
        }
    }
}

impl RekeyPolicy {
    /// Checks the bounds: 1 s to 1 day, 1 MiB to
    /// [`crate::frame::MAX_REKEY_AFTER_BYTES`].
    pub fn new(after_secs: u64, after_bytes: u64) -> Result<Self, String> {
        if !(1..=86_400).contains(&after_secs) {
            return Err(format!(
                "rekey_after_secs = {after_secs}: must be between 1 and 86400"
            ));
        }
        let max = crate::frame::MAX_REKEY_AFTER_BYTES;
        if !((1 << 20)..=max).contains(&after_bytes) {
            return Err(format!(
                "rekey_after_bytes = {after_bytes}: must be between 1048576 (1 MiB) and {max} (16 GiB)"
            ));
        }
        Ok(Self {
            after_secs,
            after_bytes,
        })
    }
}

/// Cover traffic for interactive sessions (`cover_traffic` on both sides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CoverTraffic {
    /// Every record goes out when there is something to send.
    #[default]
    Off,
    /// After a small write, records go out only on a fixed cadence
    /// ([`COVER_CADENCE_MS`]) for [`COVER_LINGER_MS`] after the last one, as
    /// PAD when there is no data; a write larger than one record goes out
    /// at once (bulk transfers are unaffected).
    Interactive,
}

impl CoverTraffic {
    /// Parses the setting: `"off"` or `"interactive"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "interactive" => Ok(Self::Interactive),
            other => Err(format!(
                "cover_traffic = {other:?}: use \"off\" or \"interactive\""
            )),
        }
    }
}

/// The cadence of cover records.
pub const COVER_CADENCE_MS: u64 = 20;
/// How long cover records go on after the last small write.
pub const COVER_LINGER_MS: u64 = 3000;

/// Small writes held for the next cover tick. Its `Debug` shows how much
/// is pending, never the bytes.
#[derive(Default)]
struct Cover {
    mode: CoverTraffic,
    /// Data waiting for the next tick (at most one record's worth).
    pending: Vec<u8>,
    /// The next tick, while the cover window is open.
    next_tick: Option<u64>,
    /// The window closes at the first tick after this (and once `pending`
    /// is empty).
    until: u64,
}

/// Where a rekey stands. Its `Debug` names the state only (one holds a
/// key).
enum RekeyState {
    Idle,
    /// Our INIT is queued; the peer's REPLY switches both directions.
    AwaitingReply(crate::rekey::Pending, Wait),
    /// Our REPLY is queued and our direction switched; the peer's FINISH
    /// switches its direction to this key.
    AwaitingFinish(Zeroizing<[u8; 32]>, Wait),
}

/// The timer of a rekey under way (see [`REKEY_REPLY_MS`]).
#[derive(Clone, Copy, Debug)]
struct Wait {
    /// Bytes of the transmit queue, up to the end of our INIT or REPLY,
    /// not yet handed to the socket.
    unsent: usize,
    /// When the last of them was.
    sent_at: Option<u64>,
    /// The last progress: bytes taken by the socket or read from the peer.
    progress_at: u64,
}

impl Wait {
    fn new(unsent: usize, mono_ms: u64) -> Self {
        Self {
            unsent,
            sent_at: (unsent == 0).then_some(mono_ms),
            progress_at: mono_ms,
        }
    }

    /// When the rekey ends the session, once our message is out.
    fn deadline(&self) -> Option<u64> {
        self.sent_at.map(|sent| {
            let idle = self.progress_at.max(sent).saturating_add(REKEY_REPLY_MS);
            idle.min(sent.saturating_add(REKEY_MAX_MS))
        })
    }

    /// `n` bytes were written to the peer (or read from it, `n` = 0).
    fn progress(&mut self, n: usize, mono_ms: u64) {
        self.unsent = self.unsent.saturating_sub(n);
        if self.unsent == 0 && self.sent_at.is_none() {
            self.sent_at = Some(mono_ms);
        }
        self.progress_at = self.progress_at.max(mono_ms);
    }
}

/// The rekey ratchet of one tunnel (see [`crate::rekey`]).
#[derive(Debug)]
struct Rekeyer {
    chain: Chain,
    is_client: bool,
    policy: RekeyPolicy,
    state: RekeyState,
    /// Rekeys completed (both directions switched).
    epoch: u64,
    /// When the current keys started (monotonic ms); the sidecar's core
    /// learns its clock at the first call that passes it.
    since_ms: Option<u64>,
    /// Record bytes sent and received under them.
    bytes: u64,
    /// Rekeys completed and not yet reported as events.
    unreported: u32,
    /// When our send key last switched (or the session started): a peer's
    /// INIT too soon after it is refused.
    switched_ms: Option<u64>,
    /// Record bytes written and read since.
    switched_bytes: u64,
    /// Whether that check is on (tests that force rekeys turn it off).
    guard: bool,
}

/// The time, as the driver passes it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Wall clock, Unix seconds (certificate windows).
    pub unix: UnixTime,
    /// Monotonic clock, milliseconds (every timer).
    pub mono_ms: u64,
}

/// Bytes waiting to be written, consumed from the front (plaintext for
/// sshd or ssh, or sealed records): its `Debug` shows the length only.
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    start: usize,
}

impl std::fmt::Debug for RekeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Idle => "Idle",
            Self::AwaitingReply(..) => "AwaitingReply",
            Self::AwaitingFinish(..) => "AwaitingFinish",
        })
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("len", &self.len()).finish()
    }
}

impl std::fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuf")
            .field("filled", &self.filled)
            .field("capacity", &self.buf.len())
            .finish()
    }
}

impl std::fmt::Debug for Cover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cover")
            .field("mode", &self.mode)
            .field("pending", &self.pending.len())
            .field("next_tick", &self.next_tick)
            .field("until", &self.until)
            .finish()
    }
}

impl Queue {
    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= MAX_BATCH && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn clear(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
    }
}

/// A read buffer that grows while reads fill it (sshd's or ssh's bytes on
/// the local side): its `Debug` shows the lengths only.
struct ReadBuf {
    buf: Vec<u8>,
    filled: usize,
    /// Reads land in whole multiples of this.
    unit: usize,
}

impl ReadBuf {
    fn new(unit: usize) -> Self {
        Self {
            buf: vec![0; MIN_BATCH.div_ceil(unit).max(2) * unit],
            filled: 0,
            unit,
        }
    }

    fn spare(&mut self) -> &mut [u8] {
        let filled = self.filled;
        self.buf.get_mut(filled..).unwrap_or_default()
    }

    fn filled(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
        let max = (MAX_BATCH / self.unit).max(2) * self.unit;
        if self.filled == self.buf.len() && self.buf.len() < max {
            let grown = (self.buf.len() * 4).min(max);
            self.buf.resize(grown, 0);
        }
    }

    fn data(&self) -> &[u8] {
        self.buf.get(..self.filled).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// The record layer of one tunnel with its queues: what both sides share.
#[derive(Debug)]
struct Link {
    opener: Opener,
    sealer: Sealer,
    rx: ReadBuf,
    local_rx: ReadBuf,
    /// Sealed records for the peer.
    tx: Queue,
    /// Plaintext for the local side.
    local: Queue,
    /// When `tx` last made progress or became non-empty.
    tx_since_ms: u64,
    /// When `local` last made progress or became non-empty.
    local_since_ms: u64,
    /// The peer sent CLOSE.
    peer_closed: bool,
    /// The local side reached end of stream and CLOSE was queued.
    local_closed: bool,
    scratch: Vec<Event>,
    rk: Rekeyer,
    cover: Cover,
    /// [`HIGH_WATER`], or less in a fuzz target that wants its queues
    /// full after a few small writes.
    high_water: usize,
}

impl Link {
    fn new(t: Transport, mono_ms: Option<u64>) -> Self {
        let f = t.opener.frame_size();
        Self {
            cover: Cover::default(),
            rk: Rekeyer {
                chain: t.chain,
                is_client: t.is_client,
                policy: RekeyPolicy::default(),
                state: RekeyState::Idle,
                epoch: 0,
                since_ms: mono_ms,
                bytes: 0,
                unreported: 0,
                switched_ms: mono_ms,
                switched_bytes: 0,
                guard: true,
            },
            rx: ReadBuf::new(f.get()),
            local_rx: ReadBuf::new(t.sealer.frame_size().max_data()),
            opener: t.opener,
            sealer: t.sealer,
            tx: Queue::default(),
            local: Queue::default(),
            tx_since_ms: 0,
            local_since_ms: 0,
            peer_closed: false,
            local_closed: false,
            scratch: Vec::new(),
            high_water: HIGH_WATER,
        }
    }

    /// Opens every whole record received; DATA goes to the local queue.
    fn open(&mut self, mono_ms: u64) -> Result<Vec<Event>, ProtoError> {
        let was_empty = self.local.is_empty();
        self.rk.since_ms.get_or_insert(mono_ms);
        self.rk.switched_ms.get_or_insert(mono_ms);
        if let Some(w) = self.rk.wait_mut()
            && !self.rx.data().is_empty()
        {
            w.progress(0, mono_ms);
        }
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        loop {
            let used = self
                .opener
                .open_all(self.rx.data(), &mut self.local.buf, &mut events)?;
            self.rx.consume(used);
            self.rk.bytes = self.rk.bytes.saturating_add(used as u64);
            self.rk.switched_bytes = self.rk.switched_bytes.saturating_add(used as u64);
            // Opening pauses after a complete REKEY message: act on it (it
            // may switch the opener's key) and open the rest.
            if !matches!(events.last(), Some(Event::Rekey(_))) {
                break;
            }
            if let Some(Event::Rekey(msg)) = events.pop() {
                self.on_rekey(msg, mono_ms)?;
            }
        }
        if was_empty && !self.local.is_empty() {
            self.local_since_ms = mono_ms;
        }
        Ok(events)
    }

    /// Acts on a complete REKEY message from the peer.
    fn on_rekey(&mut self, msg: RekeyMsg, mono_ms: u64) -> Result<(), ProtoError> {
        let rk = &mut self.rk;
        let state = std::mem::replace(&mut rk.state, RekeyState::Idle);
        match (msg, state) {
            // Both sides started at once: the client's INIT wins. The
            // client ignores the server's (the server answers the
            // client's); the server drops its own and answers.
            (RekeyMsg::Init(_), RekeyState::AwaitingReply(pending, at)) if rk.is_client => {
                rk.state = RekeyState::AwaitingReply(pending, at);
                Ok(())
            }
            (RekeyMsg::Init(init), RekeyState::Idle | RekeyState::AwaitingReply(..)) => {
                // Each INIT costs an ML-KEM encapsulation and an X25519
                // multiplication: a peer that asks far more often than any
                // allowed policy would is refused.
                let since = rk
                    .switched_ms
                    .map_or(u64::MAX, |t| mono_ms.saturating_sub(t));
                if rk.guard && rk.switched_bytes < MIN_REKEY_GAP_BYTES && since < MIN_REKEY_GAP_MS {
                    return Err(ProtoError::PeerMisbehaved(
                        "REKEY INIT too soon: less than 512 KiB and 0.5 s after the last rekey",
                    ));
                }
                let (keys, reply) = rekey::respond(&rk.chain, rk.epoch, !rk.is_client, &init)?;
                let (tx, rx) = keys.split(rk.is_client);
                // The REPLY goes under the old key; our records after it
                // under the new one.
                self.note_tx(mono_ms);
                self.sealer.seal_rekey(&reply, &mut self.tx.buf)?;
                self.sealer.install(&tx)?;
                let wait = Wait::new(self.tx.len(), mono_ms);
                let rk = &mut self.rk;
                rk.chain = keys.chain;
                rk.switched(mono_ms);
                rk.state = RekeyState::AwaitingFinish(rx, wait);
                Ok(())
            }
            (RekeyMsg::Reply(reply), RekeyState::AwaitingReply(pending, _)) => {
                let keys = pending.complete(&rk.chain, rk.epoch, rk.is_client, &reply)?;
                let (tx, rx) = keys.split(rk.is_client);
                // The peer's records after its REPLY are under the new key;
                // ours after the FINISH.
                self.opener.install(&rx)?;
                self.note_tx(mono_ms);
                self.sealer
                    .seal_rekey(&RekeyMsg::Finish, &mut self.tx.buf)?;
                self.sealer.install(&tx)?;
                self.rk.chain = keys.chain;
                self.rk.switched(mono_ms);
                self.rk.completed(mono_ms);
                Ok(())
            }
            (RekeyMsg::Finish, RekeyState::AwaitingFinish(rx, _)) => {
                self.opener.install(&rx)?;
                self.rk.completed(mono_ms);
                Ok(())
            }
            (RekeyMsg::Init(_), RekeyState::AwaitingFinish(..)) => Err(ProtoError::PeerMisbehaved(
                "REKEY INIT before the FINISH of the last rekey",
            )),
            (RekeyMsg::Reply(_), _) => Err(ProtoError::PeerMisbehaved("unexpected REKEY REPLY")),
            (RekeyMsg::Finish, _) => Err(ProtoError::PeerMisbehaved("unexpected REKEY FINISH")),
        }
    }

    /// Whether both directions are closed: the session is ending, so no
    /// rekey starts. A half-closed session (a download with ssh's input
    /// at its end) goes on rekeying.
    fn both_closed(&self) -> bool {
        self.local_closed && self.peer_closed
    }

    /// Starts a rekey if one is due and none is under way (and the session
    /// is not ending).
    fn maybe_rekey(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        let both_closed = self.both_closed();
        let rk = &mut self.rk;
        rk.since_ms.get_or_insert(mono_ms);
        rk.switched_ms.get_or_insert(mono_ms);
        if !matches!(rk.state, RekeyState::Idle) || both_closed {
            return Ok(());
        }
        if rk.bytes < rk.policy.after_bytes && rk.due_by_time().is_none_or(|t| mono_ms < t) {
            return Ok(());
        }
        let (pending, init) = rekey::start();
        self.note_tx(mono_ms);
        self.sealer.seal_rekey(&init, &mut self.tx.buf)?;
        self.rk.state = RekeyState::AwaitingReply(pending, Wait::new(self.tx.len(), mono_ms));
        Ok(())
    }

    /// Starts a rekey now, whatever the schedule (tests and fuzzers).
    #[cfg(any(test, feature = "testkit"))]
    fn force_rekey(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        self.rk.bytes = self.rk.policy.after_bytes;
        let (closed_l, closed_p) = (self.local_closed, self.peer_closed);
        self.local_closed = false;
        self.peer_closed = false;
        let r = self.maybe_rekey(mono_ms);
        self.local_closed = closed_l;
        self.peer_closed = closed_p;
        r
    }

    /// When the rekey timer next fires: a due rekey, or the bound on one
    /// under way.
    fn rekey_deadline(&self) -> Option<u64> {
        let rk = &self.rk;
        match rk.state {
            RekeyState::Idle if self.both_closed() => None,
            RekeyState::Idle => rk.due_by_time(),
            RekeyState::AwaitingReply(_, w) | RekeyState::AwaitingFinish(_, w) => w.deadline(),
        }
    }

    /// Drives the rekey timers; an error ends the session.
    fn rekey_timeout(&mut self, mono_ms: u64) -> Result<(), String> {
        if let RekeyState::AwaitingReply(_, w) | RekeyState::AwaitingFinish(_, w) = self.rk.state {
            let Some(sent) = w.sent_at else {
                return Ok(());
            };
            if mono_ms >= sent.saturating_add(REKEY_MAX_MS) {
                return Err(format!(
                    "the peer did not complete a rekey within {}s",
                    REKEY_MAX_MS / 1000
                ));
            }
            if w.deadline().is_some_and(|at| mono_ms >= at) {
                return Err(format!(
                    "the peer made no progress on a rekey for {}s",
                    REKEY_REPLY_MS / 1000
                ));
            }
            return Ok(());
        }
        self.maybe_rekey(mono_ms).map_err(|e| e.to_string())
    }

    /// Seals everything read from the local side.
    fn seal_data(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        let max = self.sealer.frame_size().max_data();
        let n = self.local_rx.filled;
        if self.cover.mode == CoverTraffic::Interactive
            && n > 0
            && self.cover.pending.len() + n <= max
        {
            // A small write: held for the next tick of the cover window
            // (opened now, with a first tick at once, if it was closed).
            self.cover.pending.extend_from_slice(self.local_rx.data());
            self.local_rx.consume(n);
            self.cover.until = mono_ms.saturating_add(COVER_LINGER_MS);
            self.cover.next_tick.get_or_insert(mono_ms);
            return self.cover_tick(mono_ms);
        }
        self.flush_cover(mono_ms)?;
        self.note_tx(mono_ms);
        let before = self.tx.buf.len();
        self.sealer
            .seal_data(self.local_rx.data(), &mut self.tx.buf)?;
        let all = self.local_rx.filled;
        self.local_rx.consume(all);
        let sealed = (self.tx.buf.len() - before) as u64;
        self.rk.bytes = self.rk.bytes.saturating_add(sealed);
        self.maybe_rekey(mono_ms)
    }

    fn seal_control(&mut self, msg: &Control, mono_ms: u64) -> Result<(), ProtoError> {
        self.note_tx(mono_ms);
        self.sealer.seal_control(msg, &mut self.tx.buf)
    }

    /// Seals held cover data at once (before bulk data or a CLOSE).
    fn flush_cover(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        if self.cover.pending.is_empty() {
            return Ok(());
        }
        self.note_tx(mono_ms);
        let held = std::mem::take(&mut self.cover.pending);
        let r = self.sealer.seal_data(&held, &mut self.tx.buf);
        self.cover.pending = held;
        self.cover.pending.clear();
        r
    }

    /// Sends the cover record due at `mono_ms`, if any: the held data, or
    /// PAD. Missed ticks (a late driver) are skipped, not sent in a burst.
    fn cover_tick(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        let Some(tick) = self.cover.next_tick.filter(|&t| t <= mono_ms) else {
            return Ok(());
        };
        if self.local_closed {
            self.cover.next_tick = None;
            return self.flush_cover(mono_ms);
        }
        self.note_tx(mono_ms);
        if self.cover.pending.is_empty() {
            self.sealer.seal_pad(&mut self.tx.buf)?;
        } else {
            self.flush_cover(mono_ms)?;
        }
        let behind = (mono_ms - tick) / COVER_CADENCE_MS;
        let next = tick.saturating_add((behind + 1) * COVER_CADENCE_MS);
        self.cover.next_tick = (next <= self.cover.until).then_some(next);
        Ok(())
    }

    fn seal_close(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        self.flush_cover(mono_ms)?;
        self.cover.next_tick = None;
        self.note_tx(mono_ms);
        self.local_closed = true;
        self.sealer.seal_close(&mut self.tx.buf)
    }

    fn note_tx(&mut self, mono_ms: u64) {
        if self.tx.is_empty() {
            self.tx_since_ms = mono_ms;
        }
    }

    fn transmitted(&mut self, n: usize, mono_ms: u64) {
        if n > 0 {
            self.tx.consume(n);
            self.tx_since_ms = mono_ms;
            self.rk.switched_bytes = self.rk.switched_bytes.saturating_add(n as u64);
            if let Some(w) = self.rk.wait_mut() {
                w.progress(n, mono_ms);
            }
        }
    }

    fn delivered(&mut self, n: usize, mono_ms: u64) {
        if n > 0 {
            self.local.consume(n);
            self.local_since_ms = mono_ms;
        }
    }

    /// Drops everything for the local side, for good, and queues `last`
    /// behind the records already sealed for the peer. Those stay: each
    /// took the next nonce, so the peer could not open `last` without them,
    /// and dropping them to reuse their nonces would risk two ciphertexts
    /// under one nonce. They carry what sshd sent before the decision
    /// (bounded by the transmit high-water mark), never anything for sshd.
    fn cut(&mut self, last: Option<&Control>, mono_ms: u64) {
        self.local.clear();
        self.cover = Cover::default();
        if let Some(msg) = last {
            // Sealing fails only on nonce exhaustion: then nothing is sent.
            let _ = self.seal_control(msg, mono_ms);
        }
    }

    /// The earliest time a stalled queue hits its bound.
    fn stall_deadline(&self, bound_ms: u64) -> Option<u64> {
        let tx = (!self.tx.is_empty()).then(|| self.tx_since_ms.saturating_add(bound_ms));
        let local = (!self.local.is_empty()).then(|| self.local_since_ms.saturating_add(bound_ms));
        tx.into_iter().chain(local).min()
    }

    /// Which queue, if any, made no progress for `bound_ms`.
    fn stalled(&self, bound_ms: u64, mono_ms: u64) -> Option<Stall> {
        if !self.tx.is_empty() && mono_ms >= self.tx_since_ms.saturating_add(bound_ms) {
            return Some(Stall::Peer);
        }
        if !self.local.is_empty() && mono_ms >= self.local_since_ms.saturating_add(bound_ms) {
            return Some(Stall::Local);
        }
        None
    }
}

impl Rekeyer {
    /// The timer of the rekey under way, if any.
    fn wait_mut(&mut self) -> Option<&mut Wait> {
        match &mut self.state {
            RekeyState::Idle => None,
            RekeyState::AwaitingReply(_, w) | RekeyState::AwaitingFinish(_, w) => Some(w),
        }
    }

    /// Our send key switched: the gap a peer's next INIT must leave
    /// starts now.
    fn switched(&mut self, mono_ms: u64) {
        self.switched_ms = Some(mono_ms);
        self.switched_bytes = 0;
    }

    /// When the current keys are due for a rekey by age (none until the
    /// clock is known).
    fn due_by_time(&self) -> Option<u64> {
        self.since_ms
            .map(|t| t.saturating_add(self.policy.after_secs.saturating_mul(1000)))
    }

    /// Both directions are on the new keys: count it and restart the
    /// schedule.
    fn completed(&mut self, mono_ms: u64) {
        self.state = RekeyState::Idle;
        self.epoch += 1;
        self.since_ms = Some(mono_ms);
        self.bytes = 0;
        self.unreported = self.unreported.saturating_add(1);
    }
}

impl rekey::NewKeys {
    /// (send, receive) keys for this side.
    fn split(&self, is_client: bool) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
        let (c2s, s2c) = (self.c2s.clone(), self.s2c.clone());
        if is_client { (c2s, s2c) } else { (s2c, c2s) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stall {
    Peer,
    Local,
}

// ---------------------------------------------------------------- server

/// What happened on the proxy's side of a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A proof verified.
    ProofOk {
        /// The challenge's sequence number.
        seq: u64,
    },
    /// A challenge went out.
    Challenged {
        /// Its sequence number.
        seq: u64,
    },
    /// A renewal verified and a new certificate went out.
    Renewed,
    /// A rekey completed: both directions are on new keys, the old ones
    /// are gone.
    Rekeyed {
        /// Rekeys completed on this session so far.
        count: u64,
    },
    /// A renewal came too early and was ignored; the session goes on.
    RenewRefused {
        /// Why.
        reason: String,
        /// Which early renewal this is for the current certificate (1 for
        /// the first; past [`crate::identity::MAX_EARLY_RENEWALS`] the
        /// session ends instead).
        nth: u32,
    },
    /// The client half-closed its direction.
    PeerClosed,
    /// The session was killed: close the local side now. It is the last
    /// event but [`ServerEvent::Closed`].
    Terminated(Ended),
    /// Both directions closed normally, or the session was killed and its
    /// TERMINATE flushed as far as it will go: close everything.
    Closed,
}

/// The proxy's side of one tunnel after authorization.
#[derive(Debug)]
pub struct ServerConn {
    link: Link,
    identity: ServerIdentity,
    write_bound_ms: u64,
    events: std::collections::VecDeque<ServerEvent>,
    ended: Option<Ended>,
    /// Once sshd closed: until when the client may take to read everything
    /// up to our CLOSE (the write bound from sshd's end, however it reads).
    flush_until: Option<u64>,
    /// Once our CLOSE (after sshd closed) was written: until when the
    /// client may still send its CLOSE.
    close_grace_until: Option<u64>,
    /// Once killed: when the connection closes, whether or not the
    /// TERMINATE has been read by then.
    terminate_until: Option<u64>,
    /// The client closed TCP (after a CLOSE, or after sshd closed).
    peer_eof: bool,
    closed: bool,
}

impl ServerConn {
    /// Issues the first certificate to an authorized session and queues
    /// ACCEPT and CERT. The caller admitted the session against its cap
    /// and connected to sshd before this.
    pub fn accept(
        authorized: Authorized,
        server_id: &str,
        subca: &SigningKey,
        authority: &dyn Authority,
        timing: Timing,
        now: Now,
    ) -> Result<Self, Refused> {
        let started =
            ServerIdentity::start(authorized, subca, authority, timing, now.unix, now.mono_ms)?;
        let mut conn = Self {
            link: Link::new(started.transport, Some(now.mono_ms)),
            identity: started.identity,
            write_bound_ms: u64::from(timing.deadline_secs) * 1000,
            events: Default::default(),
            ended: None,
            flush_until: None,
            close_grace_until: None,
            terminate_until: None,
            peer_eof: false,
            closed: false,
        };
        let accept = Control::Accept {
            server_id: server_id.to_owned(),
        };
        for msg in [&accept, &started.cert] {
            if let Err(e) = conn.link.seal_control(msg, now.mono_ms) {
                conn.end(Ended::new(EndKind::IssueFailed, e.to_string()), now);
                break;
            }
        }
        Ok(conn)
    }

    /// The identity state (principal, serial, proof counts).
    pub fn identity(&self) -> &ServerIdentity {
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

    #[cfg(test)]
    pub(crate) fn link_opener_jump(&mut self, n: u64) {
        self.link.opener.jump_nonce(n);
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
        if self.ended.is_none()
            && let Err(e) = self.link.force_rekey(now.mono_ms)
        {
            self.end(Ended::new(EndKind::BadRecord, e.to_string()), now);
        }
    }

    fn report_rekeys(&mut self) {
        for _ in 0..std::mem::take(&mut self.link.rk.unreported) {
            self.events.push_back(ServerEvent::Rekeyed {
                count: self.link.rk.epoch,
            });
        }
    }

    /// Why the session ended, once it has.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Whether the driver should read from the client now.
    pub fn wants_peer(&self) -> bool {
        !self.closed
            && !self.peer_eof
            && self.ended.is_none()
            && self.link.local.len() < self.link.high_water
            && self.link.tx.len() < self.link.high_water * 2
    }

    /// Whether the driver should read from sshd now.
    pub fn wants_local(&self) -> bool {
        self.ended.is_none() && !self.link.local_closed && self.link.tx.len() < self.link.high_water
    }

    /// Where to read the client's bytes to.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        self.link.rx.spare()
    }

    /// Where to read sshd's bytes to.
    pub fn local_buf(&mut self) -> &mut [u8] {
        self.link.local_rx.spare()
    }

    /// Sealed bytes for the client.
    pub fn poll_transmit(&self) -> &[u8] {
        self.link.tx.pending()
    }

    /// `n` bytes of [`Self::poll_transmit`] were written.
    pub fn transmitted(&mut self, n: usize, now: Now) {
        self.link.transmitted(n, now.mono_ms);
        // The client's grace to CLOSE starts once our CLOSE, and all the
        // data before it, has been written.
        if self.link.local_closed && self.link.tx.is_empty() && self.close_grace_until.is_none() {
            self.close_grace_until = Some(now.mono_ms.saturating_add(CLOSE_GRACE_MS));
        }
        self.check_closed();
    }

    /// Plaintext for sshd; always empty once the session was killed or
    /// closed.
    pub fn poll_local(&self) -> &[u8] {
        if self.ended.is_some() || self.closed {
            return &[];
        }
        self.link.local.pending()
    }

    /// `n` bytes of [`Self::poll_local`] were written.
    pub fn delivered(&mut self, n: usize, now: Now) {
        self.link.delivered(n, now.mono_ms);
        self.check_closed();
    }

    /// Whether sshd's write direction should be shut down: the client sent
    /// CLOSE and everything before it was delivered.
    pub fn local_finished(&self) -> bool {
        self.ended.is_none() && self.link.peer_closed && self.link.local.is_empty()
    }

    /// The client's bytes, copied into the receive buffer and handled.
    pub fn handle_peer(
        &mut self,
        mut bytes: &[u8],
        subca: &SigningKey,
        authority: &dyn Authority,
        now: Now,
    ) {
        while !bytes.is_empty() && self.ended.is_none() {
            let spare = self.link.rx.spare();
            let n = spare.len().min(bytes.len());
            if n == 0 {
                return;
            }
            spare[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.handle_peer_read(n, subca, authority, now);
        }
    }

    /// `n` bytes were read into [`Self::recv_buf`].
    pub fn handle_peer_read(
        &mut self,
        n: usize,
        subca: &SigningKey,
        authority: &dyn Authority,
        now: Now,
    ) {
        if self.ended.is_some() {
            return;
        }
        self.link.rx.filled(n);
        let events = match self.link.open(now.mono_ms) {
            Ok(e) => e,
            Err(e) => {
                return self.end(
                    Ended::new(EndKind::BadRecord, format!("client sent a bad record: {e}")),
                    now,
                );
            }
        };
        for ev in &events {
            if self.ended.is_some() {
                break;
            }
            match ev {
                Event::Close => {
                    self.link.peer_closed = true;
                    self.events.push_back(ServerEvent::PeerClosed);
                }
                Event::Control(Control::Terminate { reason, .. }) => {
                    let reason = format!("client ended the session: {reason}");
                    self.end(Ended::new(EndKind::ClientTerminated, reason), now);
                }
                Event::Control(msg) => self.on_control(msg.clone(), subca, authority, now),
                // Handled by the link as it opens.
                Event::Rekey(_) => {}
            }
        }
        self.link.scratch = events;
        self.report_rekeys();
        self.check_closed();
    }

    fn on_control(
        &mut self,
        msg: Control,
        subca: &SigningKey,
        authority: &dyn Authority,
        now: Now,
    ) {
        let handled = self
            .identity
            .handle(msg, subca, authority, now.unix, now.mono_ms);
        let (reply, event) = match handled {
            Err(e) => return self.end(e, now),
            Ok(Handled::Proved(ack)) => {
                let seq = match &ack {
                    Control::Ack { seq } => *seq,
                    _ => 0,
                };
                (ack, ServerEvent::ProofOk { seq })
            }
            Ok(Handled::Renewed(cert)) => (cert, ServerEvent::Renewed),
            Ok(Handled::RenewRefused { reason, nth }) => {
                self.events
                    .push_back(ServerEvent::RenewRefused { reason, nth });
                return;
            }
        };
        self.events.push_back(event);
        self.seal(&reply, now);
    }

    fn seal(&mut self, msg: &Control, now: Now) {
        if let Err(e) = self.link.seal_control(msg, now.mono_ms) {
            self.end(Ended::new(EndKind::BadRecord, e.to_string()), now);
        }
    }

    /// The client closed TCP.
    pub fn handle_peer_eof(&mut self, now: Now) {
        if self.ended.is_some() || self.closed {
            return;
        }
        // ssh kills its ProxyCommand once sshd is done: after the client's
        // CLOSE, or once sshd closed, that is a normal end (once what the
        // client sent before has reached sshd).
        if self.link.peer_closed || self.link.local_closed {
            self.peer_eof = true;
            return self.check_closed();
        }
        self.end(
            Ended::new(
                EndKind::ClientVanished,
                "client vanished without closing the tunnel",
            ),
            now,
        );
    }

    /// `n` bytes from sshd were read into [`Self::local_buf`].
    pub fn handle_local_read(&mut self, n: usize, now: Now) {
        if self.ended.is_some() || n == 0 {
            return;
        }
        self.link.local_rx.filled(n);
        if let Err(e) = self.link.seal_data(now.mono_ms) {
            self.end(Ended::new(EndKind::BadRecord, e.to_string()), now);
        }
    }

    /// sshd's bytes, copied and handled (for tests and fuzzers).
    pub fn handle_local(&mut self, mut bytes: &[u8], now: Now) {
        while !bytes.is_empty() && self.ended.is_none() {
            let spare = self.link.local_rx.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.handle_local_read(n, now);
        }
    }

    /// sshd closed its side: CLOSE goes to the client, which has the write
    /// bound to read it (and everything before it) and then a short grace
    /// to close its side too.
    pub fn handle_local_eof(&mut self, now: Now) {
        if self.ended.is_some() || self.link.local_closed {
            return;
        }
        if let Err(e) = self.link.seal_close(now.mono_ms) {
            return self.end(Ended::new(EndKind::BadRecord, e.to_string()), now);
        }
        let bound = self.write_bound_ms.max(FLUSH_AFTER_CLOSE_MS);
        self.flush_until = Some(now.mono_ms.saturating_add(bound));
        self.check_closed();
    }

    /// The local side failed.
    pub fn handle_local_error(&mut self, error: &str, now: Now) {
        let reason = format!("upstream sshd connection lost: {error}");
        self.end(Ended::new(EndKind::UpstreamIo, reason), now);
    }

    /// The client socket failed. After a kill, the TERMINATE can no longer
    /// leave: the tunnel closes.
    pub fn handle_peer_error(&mut self, error: &str, now: Now) {
        if self.ended.is_some() {
            self.link.tx.clear();
            return self.finish();
        }
        let reason = format!("client connection lost: {error}");
        self.end(Ended::new(EndKind::ClientIo, reason), now);
    }

    /// Ends the session from outside (e.g. shutdown).
    pub fn close(&mut self, ended: Ended, now: Now) {
        self.end(ended, now);
    }

    /// When [`Self::handle_timeout`] must next be called (monotonic ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        if self.ended.is_some() {
            return self.terminate_until.filter(|_| !self.link.tx.is_empty());
        }
        let id = Some(self.identity.next_wakeup());
        let stall = self.link.stall_deadline(self.write_bound_ms);
        let rekey = self.link.rekey_deadline();
        let cover = self.link.cover.next_tick;
        [
            id,
            stall,
            self.flush_deadline(),
            self.close_grace_until,
            rekey,
            cover,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drives the timers: challenges, proof deadlines, certificate expiry,
    /// the write bound, the flush after sshd closed, the close grace and
    /// the TERMINATE's grace. `nonce` must be fresh random bytes.
    pub fn handle_timeout(&mut self, now: Now, nonce: [u8; 32]) {
        if self.closed {
            return;
        }
        if self.ended.is_some() {
            // The TERMINATE gets a short grace from the decision, not from
            // the last write progress: a client that reads a byte now and
            // then cannot hold the connection.
            if self.terminate_until.is_some_and(|t| now.mono_ms >= t) {
                self.link.tx.clear();
                self.finish();
            }
            return;
        }
        if self.flush_deadline().is_some_and(|t| now.mono_ms >= t) {
            let reason = format!(
                "client did not read sshd's last output within {}s of sshd closing; connection closed",
                self.write_bound_ms.max(FLUSH_AFTER_CLOSE_MS) / 1000
            );
            return self.end(Ended::new(EndKind::ClientStalled, reason), now);
        }
        match self.link.stalled(self.write_bound_ms, now.mono_ms) {
            Some(Stall::Peer) => {
                let reason = format!(
                    "client read nothing for {}s; connection closed",
                    self.write_bound_ms / 1000
                );
                return self.end(Ended::new(EndKind::ClientStalled, reason), now);
            }
            Some(Stall::Local) => {
                let reason = format!(
                    "sshd read nothing for {}s; connection closed",
                    self.write_bound_ms / 1000
                );
                return self.end(Ended::new(EndKind::UpstreamStalled, reason), now);
            }
            None => {}
        }
        if let Err(e) = self.link.rekey_timeout(now.mono_ms) {
            return self.end(Ended::new(EndKind::BadRecord, e), now);
        }
        if let Err(e) = self.link.cover_tick(now.mono_ms) {
            return self.end(Ended::new(EndKind::BadRecord, e.to_string()), now);
        }
        match self.identity.poll(now.unix, now.mono_ms, nonce) {
            Err(e) => return self.end(e, now),
            Ok(Some(challenge)) => {
                if let Control::Challenge { seq, .. } = &challenge {
                    self.events.push_back(ServerEvent::Challenged { seq: *seq });
                }
                self.seal(&challenge, now);
            }
            Ok(None) => {}
        }
        if self.close_grace_until.is_some_and(|t| now.mono_ms >= t) {
            // The client did not CLOSE in time after sshd did: end normally.
            self.link.tx.clear();
            self.finish();
        }
    }

    /// Until when the client may still be reading what came before our
    /// CLOSE: only while that CLOSE is unwritten and the client is there.
    fn flush_deadline(&self) -> Option<u64> {
        let flushing = self.close_grace_until.is_none() && !self.peer_eof;
        self.flush_until.filter(|_| flushing)
    }

    /// Re-checks the session against a new authority (revocation list,
    /// principals, policy), at once.
    pub fn recheck(&mut self, authority: &dyn Authority, now: Now) {
        if self.ended.is_some() || self.closed {
            return;
        }
        if let Err(e) = self.identity.recheck(authority, now.unix) {
            self.end(e, now);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    fn end(&mut self, ended: Ended, now: Now) {
        if self.ended.is_some() || self.closed {
            return;
        }
        let terminate = ended.kind.tells_client().then(|| Control::Terminate {
            code: ended.code(),
            reason: ended.reason.clone(),
        });
        self.link.cut(terminate.as_ref(), now.mono_ms);
        if terminate.is_none() {
            self.link.tx.clear();
        }
        self.terminate_until = Some(now.mono_ms.saturating_add(TERMINATE_GRACE_MS));
        self.events
            .push_back(ServerEvent::Terminated(ended.clone()));
        self.ended = Some(ended);
        self.check_closed();
    }

    fn check_closed(&mut self) {
        if self.closed {
            return;
        }
        let l = &self.link;
        let delivered = l.local.is_empty();
        let done = if self.ended.is_some() {
            l.tx.is_empty()
        } else if self.peer_eof {
            delivered
        } else {
            l.peer_closed && l.local_closed && delivered && l.tx.is_empty()
        };
        if done {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(ServerEvent::Closed);
        }
    }
}

// ---------------------------------------------------------------- client

/// Why a sidecar's session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEnd {
    /// The proxy refused the session before accepting it.
    Refused(Termination),
    /// The proxy refused the user key before accepting the session (the
    /// key is not authorized for the principal, or not acceptable at all;
    /// code [`TerminateCode::NotAuthorized`]): another key may do, on a new
    /// connection.
    KeyRefused(Termination),
    /// The proxy ended an accepted session.
    Terminated(Termination),
    /// A record failed to open or broke the protocol.
    Integrity(String),
    /// The proxy broke the continuous-identity protocol.
    Protocol(String),
    /// The connection closed without an end-of-session record.
    Lost,
    /// The proxy read nothing for longer than the write bound.
    Stalled(u64),
}

/// What happened on the sidecar's side of a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientConnEvent {
    /// The proxy accepted the session and connected to its sshd.
    Accepted,
    /// A certificate was installed.
    CertInstalled {
        /// Its serial.
        serial: crate::cert::Serial,
        /// Its lifetime in seconds.
        ttl_secs: u64,
        /// Whether it replaced an earlier one.
        renewed: bool,
    },
    /// A challenge was answered.
    Answered {
        /// Its sequence number.
        seq: u64,
    },
    /// A proof was acknowledged.
    Acked {
        /// Its sequence number.
        seq: u64,
    },
    /// A renewal failed; it will be retried.
    RenewalFailed {
        /// Why.
        error: String,
        /// Seconds the current certificate has left.
        left_secs: u64,
    },
    /// The proxy closed its direction: close ssh's input side.
    PeerClosed,
    /// A rekey completed: both directions are on new keys.
    Rekeyed {
        /// Rekeys completed on this session so far.
        count: u64,
    },
    /// The session is over. It is the last event.
    Ended(Option<ClientEnd>),
    /// A control message left unhandled (test clients in manual mode only).
    #[doc(hidden)]
    Control(Control),
}

#[derive(Debug, PartialEq, Eq)]
enum Renewal {
    Idle,
    /// The user key is signing [`ClientConn::poll_sign`]'s data.
    Signing,
    /// RENEW sent at this time; waiting for CERT.
    Sent(u64),
    /// Retry at this time.
    RetryAt(u64),
}

/// The sidecar's side of one tunnel after the handshake.
#[derive(Debug)]
pub struct ClientConn {
    link: Link,
    identity: ClientIdentity,
    accepted: bool,
    renewal: Renewal,
    to_sign: Option<Vec<u8>>,
    write_bound_ms: u64,
    events: std::collections::VecDeque<ClientConnEvent>,
    done: bool,
    /// Ended by an error: nothing more reaches ssh.
    failed: bool,
    /// Test clients: surface control messages instead of handling them.
    manual: bool,
    /// Read nothing from ssh until the proxy accepts (another key may
    /// have to be tried on a new connection, which needs ssh's first
    /// bytes).
    hold: bool,
}

impl ClientConn {
    /// Starts on an established tunnel; `identity` holds the session key.
    pub fn new(transport: Transport, identity: ClientIdentity) -> Self {
        Self {
            link: Link::new(transport, None),
            identity,
            accepted: false,
            renewal: Renewal::Idle,
            to_sign: None,
            write_bound_ms: CLIENT_WRITE_BOUND_MS,
            events: Default::default(),
            done: false,
            failed: false,
            manual: false,
            hold: false,
        }
    }

    /// Holds ssh's input until the proxy accepts the session: when the
    /// sidecar may still try another user key on a new connection, ssh's
    /// first bytes must not be spent on this one.
    pub fn hold_until_accepted(&mut self, on: bool) {
        self.hold = on;
    }

    /// The identity state.
    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    /// Whether the proxy accepted the session.
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    /// Sets when this side starts a rekey (default [`RekeyPolicy::default`]);
    /// the schedule restarts at `mono_ms`.
    pub fn set_rekey_policy(&mut self, policy: RekeyPolicy, mono_ms: u64) {
        self.link.rk.policy = policy;
        self.link.rk.since_ms = Some(mono_ms);
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
    pub fn start_rekey(&mut self, mono_ms: u64) {
        if !self.done
            && let Err(e) = self.link.force_rekey(mono_ms)
        {
            self.end(Some(ClientEnd::Integrity(e.to_string())));
        }
    }

    /// Moves this side's send counter and the server's receive counter
    /// to `n`, to reach the per-key record limit in a test.
    #[cfg(test)]
    pub(crate) fn jump_nonces(&mut self, server: &mut ServerConn, n: u64) {
        self.link.sealer.jump_nonce(n);
        server.link.opener.jump_nonce(n);
    }

    /// Lets this side's sealer go past the record limit, as a hostile
    /// peer's would.
    #[cfg(test)]
    pub(crate) fn lift_record_limit(&mut self) {
        self.link.sealer.lift_limit();
    }

    fn report_rekeys(&mut self) {
        for _ in 0..std::mem::take(&mut self.link.rk.unreported) {
            self.events.push_back(ClientConnEvent::Rekeyed {
                count: self.link.rk.epoch,
            });
        }
    }

    /// Whether the session is over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the driver should read from the proxy now.
    pub fn wants_peer(&self) -> bool {
        !self.done
            && self.link.local.len() < self.link.high_water
            && self.link.tx.len() < self.link.high_water * 2
    }

    /// Whether the driver should read ssh's input now.
    pub fn wants_local(&self) -> bool {
        !self.done
            && (self.accepted || !self.hold)
            && !self.link.local_closed
            && self.link.tx.len() < self.link.high_water
    }

    /// Where to read the proxy's bytes to.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        self.link.rx.spare()
    }

    /// Where to read ssh's bytes to.
    pub fn local_buf(&mut self) -> &mut [u8] {
        self.link.local_rx.spare()
    }

    /// Sealed bytes for the proxy.
    pub fn poll_transmit(&self) -> &[u8] {
        self.link.tx.pending()
    }

    /// `n` bytes of [`Self::poll_transmit`] were written.
    pub fn transmitted(&mut self, n: usize, mono_ms: u64) {
        self.link.transmitted(n, mono_ms);
    }

    /// Plaintext for ssh. After a normal end the rest is still to be
    /// written; after an error, nothing.
    pub fn poll_local(&self) -> &[u8] {
        if self.failed {
            return &[];
        }
        self.link.local.pending()
    }

    /// `n` bytes of [`Self::poll_local`] were written.
    pub fn delivered(&mut self, n: usize, mono_ms: u64) {
        self.link.delivered(n, mono_ms);
    }

    /// Whether ssh's side should be closed: the proxy sent CLOSE and
    /// everything before it was delivered.
    pub fn local_finished(&self) -> bool {
        self.link.peer_closed && self.link.local.is_empty()
    }

    /// The proxy's bytes, copied into the receive buffer and handled.
    pub fn handle_peer(&mut self, mut bytes: &[u8], mono_ms: u64) {
        while !bytes.is_empty() && !self.done {
            let spare = self.link.rx.spare();
            let n = spare.len().min(bytes.len());
            if n == 0 {
                // A full buffer takes nothing more (it cannot be, but the
                // loop must not turn on that).
                return;
            }
            spare[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.handle_peer_read(n, mono_ms);
        }
    }

    /// `n` bytes were read into [`Self::recv_buf`].
    pub fn handle_peer_read(&mut self, n: usize, mono_ms: u64) {
        if self.done {
            return;
        }
        self.link.rx.filled(n);
        let events = match self.link.open(mono_ms) {
            Ok(e) => e,
            Err(e) => return self.end(Some(ClientEnd::Integrity(e.to_string()))),
        };
        for ev in &events {
            if self.done {
                break;
            }
            self.on_event(ev, mono_ms);
        }
        self.link.scratch = events;
        if !self.done {
            self.report_rekeys();
        }
    }

    fn on_event(&mut self, ev: &Event, mono_ms: u64) {
        if let (true, Event::Control(msg)) = (self.manual, ev) {
            self.events.push_back(ClientConnEvent::Control(msg.clone()));
            // ACCEPT and TERMINATE still change the state: after a
            // TERMINATE nothing more is opened, so the session is over.
            if !matches!(msg, Control::Accept { .. } | Control::Terminate { .. }) {
                return;
            }
        }
        match ev {
            Event::Close => {
                self.link.peer_closed = true;
                self.events.push_back(ClientConnEvent::PeerClosed);
            }
            Event::Control(Control::Accept { .. }) => {
                self.accepted = true;
                if !self.manual {
                    self.events.push_back(ClientConnEvent::Accepted);
                }
            }
            Event::Control(Control::Terminate { code, reason }) => {
                // Nothing after TERMINATE reaches ssh.
                self.link.local.clear();
                let told = Termination::new(*code, reason.clone());
                let end = if self.accepted {
                    ClientEnd::Terminated(told)
                } else if *code == TerminateCode::NotAuthorized {
                    ClientEnd::KeyRefused(told)
                } else {
                    ClientEnd::Refused(told)
                };
                self.end(Some(end));
            }
            Event::Control(msg) => self.on_control(msg, mono_ms),
            // Handled by the link as it opens.
            Event::Rekey(_) => {}
        }
    }

    fn on_control(&mut self, msg: &Control, mono_ms: u64) {
        if let Control::Challenge { deadline_secs, .. } = msg {
            self.write_bound_ms =
                (u64::from(*deadline_secs) * 1000).clamp(1000, CLIENT_WRITE_BOUND_MS);
        }
        match self.identity.handle(msg, mono_ms) {
            Err(e) => self.end(Some(ClientEnd::Protocol(e))),
            Ok(ClientEvent::Reply(reply)) => {
                if let Control::Proof { seq, .. } = &reply {
                    self.events
                        .push_back(ClientConnEvent::Answered { seq: *seq });
                }
                self.seal(&reply, mono_ms);
            }
            Ok(ClientEvent::CertInstalled {
                serial,
                ttl_secs,
                renewed,
            }) => {
                self.renewal = Renewal::Idle;
                self.events.push_back(ClientConnEvent::CertInstalled {
                    serial,
                    ttl_secs,
                    renewed,
                });
            }
            Ok(ClientEvent::Acked(seq)) => self.events.push_back(ClientConnEvent::Acked { seq }),
        }
    }

    fn seal(&mut self, msg: &Control, mono_ms: u64) {
        if let Err(e) = self.link.seal_control(msg, mono_ms) {
            self.end(Some(ClientEnd::Integrity(e.to_string())));
        }
    }

    /// The proxy closed TCP. After its CLOSE, that is a normal end.
    pub fn handle_peer_eof(&mut self) {
        let end = (!self.link.peer_closed).then_some(ClientEnd::Lost);
        self.end(end);
    }

    /// `n` bytes of ssh's input were read into [`Self::local_buf`].
    pub fn handle_local_read(&mut self, n: usize, mono_ms: u64) {
        if self.done || n == 0 {
            return;
        }
        self.link.local_rx.filled(n);
        if let Err(e) = self.link.seal_data(mono_ms) {
            self.end(Some(ClientEnd::Integrity(e.to_string())));
        }
    }

    /// ssh's input, copied and handled.
    pub fn handle_local(&mut self, mut bytes: &[u8], mono_ms: u64) {
        while !bytes.is_empty() && !self.done {
            let spare = self.link.local_rx.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.handle_local_read(n, mono_ms);
        }
    }

    /// ssh's input ended (or ssh is going away): CLOSE goes to the proxy.
    pub fn handle_local_eof(&mut self, mono_ms: u64) {
        if self.done || self.link.local_closed {
            return;
        }
        if let Err(e) = self.link.seal_close(mono_ms) {
            self.end(Some(ClientEnd::Integrity(e.to_string())));
        }
    }

    /// Queues any control message (tests and tools that misbehave on
    /// purpose use this; the sidecar never does).
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn queue_control_raw(&mut self, msg: &Control, mono_ms: u64) {
        self.seal(msg, mono_ms);
    }

    /// Test clients: surface every control message as
    /// [`ClientConnEvent::Control`] instead of handling it, so a test can
    /// answer, replay or forge by hand through [`Self::identity_mut`].
    #[cfg(any(test, feature = "testkit"))]
    #[doc(hidden)]
    pub fn set_manual(&mut self, on: bool) {
        self.manual = on;
    }

    /// The identity machine, for test clients in manual mode.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn identity_mut(&mut self) -> &mut ClientIdentity {
        &mut self.identity
    }

    /// Seals with the next nonce but hands the bytes back instead of
    /// queueing them, so a test can alter them before sending.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn seal_detached(&mut self, f: impl FnOnce(&mut Sealer, &mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut self.link.sealer, &mut out);
        out
    }

    /// Queues an arbitrary record plaintext (see
    /// [`Sealer::seal_plaintext_raw`]).
    #[cfg(any(test, feature = "testkit"))]
    #[doc(hidden)]
    pub fn queue_plaintext_raw(&mut self, plain: &[u8], mono_ms: u64) {
        self.link.note_tx(mono_ms);
        let _ = self
            .link
            .sealer
            .seal_plaintext_raw(plain, &mut self.link.tx.buf);
    }

    /// The data the user key must sign for a renewal that is due now.
    /// Call [`Self::handle_signature`] with the result.
    pub fn poll_sign(&mut self) -> Option<Vec<u8>> {
        self.to_sign.take()
    }

    /// The user key's SSHSIG over [`Self::poll_sign`]'s data, or why there
    /// is none.
    pub fn handle_signature(&mut self, sig: Result<Vec<u8>, String>, mono_ms: u64) {
        if self.done || self.renewal != Renewal::Signing {
            return;
        }
        match sig.and_then(|s| self.identity.renew(s)) {
            Ok(renew) => {
                self.renewal = Renewal::Sent(mono_ms);
                self.seal(&renew, mono_ms);
            }
            Err(error) => self.renewal_failed(error, mono_ms),
        }
    }

    fn renewal_failed(&mut self, error: String, mono_ms: u64) {
        self.identity.abandon_renewal();
        self.renewal = Renewal::RetryAt(mono_ms.saturating_add(RENEW_RETRY_MS));
        let left_secs = self
            .identity
            .expires_at()
            .map_or(0, |at| at.saturating_sub(mono_ms) / 1000);
        self.events
            .push_back(ClientConnEvent::RenewalFailed { error, left_secs });
    }

    /// When [`Self::handle_timeout`] must next be called (monotonic ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.done {
            return None;
        }
        let renewal = match self.renewal {
            Renewal::Idle if self.accepted => self.identity.renew_at(),
            Renewal::Idle | Renewal::Signing => None,
            Renewal::Sent(at) => Some(at.saturating_add(RENEW_REPLY_MS)),
            Renewal::RetryAt(at) => Some(at.max(self.identity.renew_at().unwrap_or(at))),
        };
        // Only the proxy not reading ends the session (ssh may be
        // suspended), so only that queue is a timer.
        let stall = (!self.link.tx.is_empty())
            .then(|| self.link.tx_since_ms.saturating_add(self.write_bound_ms));
        let rekey = self.link.rekey_deadline();
        let cover = self.link.cover.next_tick;
        renewal
            .into_iter()
            .chain(stall)
            .chain(rekey)
            .chain(cover)
            .min()
    }

    /// Drives the timers: renewal, its retry, and the write bound.
    pub fn handle_timeout(&mut self, mono_ms: u64) {
        if self.done {
            return;
        }
        if self.link.stalled(self.write_bound_ms, mono_ms) == Some(Stall::Peer) {
            return self.end(Some(ClientEnd::Stalled(self.write_bound_ms / 1000)));
        }
        if let Err(e) = self.link.rekey_timeout(mono_ms) {
            return self.end(Some(ClientEnd::Protocol(e)));
        }
        if let Err(e) = self.link.cover_tick(mono_ms) {
            return self.end(Some(ClientEnd::Integrity(e.to_string())));
        }
        match self.renewal {
            Renewal::Sent(at) if mono_ms >= at.saturating_add(RENEW_REPLY_MS) => {
                let secs = RENEW_REPLY_MS / 1000;
                return self
                    .renewal_failed(format!("the proxy did not answer within {secs}s"), mono_ms);
            }
            Renewal::RetryAt(at) if mono_ms < at => return,
            Renewal::Idle | Renewal::RetryAt(_) => {}
            Renewal::Signing | Renewal::Sent(_) => return,
        }
        if self.accepted && self.identity.renewal_due(mono_ms) {
            match self.identity.renewal_data() {
                // A security key within its re-verification interval: the
                // session keys alone vouch for the renewal, no touch.
                Ok(_) if !self.identity.user_sig_needed() => {
                    self.renewal = Renewal::Signing;
                    self.handle_signature(Ok(Vec::new()), mono_ms);
                }
                Ok(data) => {
                    self.to_sign = Some(data);
                    self.renewal = Renewal::Signing;
                }
                Err(e) => self.renewal_failed(e, mono_ms),
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientConnEvent> {
        self.events.pop_front()
    }

    fn end(&mut self, end: Option<ClientEnd>) {
        if self.done {
            return;
        }
        self.done = true;
        self.failed = end.is_some();
        self.events.push_back(ClientConnEvent::Ended(end));
    }
}
