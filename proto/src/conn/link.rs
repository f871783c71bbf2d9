//! The record layer of one tunnel with its queues, the half both sides
//! share: the opener with the receive buffer, the sealer with the transmit
//! queue, the local side's queue and read buffer, the rekey ratchet and
//! the cover state. It decides nothing about the session; [`super::Conn`]
//! does.

use super::cover::Cover;
use super::queue::{Queue, ReadBuf};
use super::rekey::Rekeyer;
use crate::ProtoError;
use crate::control::Control;
use crate::frame::{Event, Opener, Sealer, Transport};
use crate::keys::CryptoRng;

/// A queue this full stops reading from the side that fills it.
pub const HIGH_WATER: usize = 512 * 1024;

/// The driver's random source, owned by the connection for the keys it
/// makes as it goes (rekeys, renewal keys, certificate serials). Its
/// `Debug` shows nothing of its state.
pub(super) struct DriverRng(pub(super) Box<dyn CryptoRng + Send>);

impl std::fmt::Debug for DriverRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DriverRng")
    }
}

/// The record layer of one tunnel with its queues: what both sides share.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) opener: Opener,
    pub(super) sealer: Sealer,
    pub(super) rx: ReadBuf,
    pub(super) local_rx: ReadBuf,
    /// Sealed records for the peer.
    pub(super) tx: Queue,
    /// Plaintext for the local side.
    pub(super) local: Queue,
    /// When `tx` last made progress or became non-empty.
    pub(super) tx_since_ms: u64,
    /// When `local` last made progress or became non-empty.
    local_since_ms: u64,
    /// The peer sent CLOSE.
    pub(super) peer_closed: bool,
    /// The local side reached end of stream and CLOSE was queued.
    pub(super) local_closed: bool,
    /// The event list [`Self::open`] fills, kept for its capacity.
    pub(super) scratch: Vec<Event>,
    pub(super) rk: Rekeyer,
    /// Where the rekeys' and the identity's fresh keys come from.
    pub(super) rng: DriverRng,
    pub(super) cover: Cover,
    /// [`HIGH_WATER`], or less in a fuzz target that wants its queues
    /// full after a few small writes.
    pub(super) high_water: usize,
}

/// Which queue made no progress for the write bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stall {
    /// The peer read nothing.
    Peer,
    /// The local side read nothing.
    Local,
}

impl Link {
    /// The record layer of an established tunnel; `mono_ms` is the clock,
    /// if this side knows it yet; `rng` the driver's random source.
    pub(super) fn new(t: Transport, mono_ms: Option<u64>, rng: DriverRng) -> Self {
        let f = t.opener.frame_size();
        Self {
            cover: Cover::default(),
            rk: Rekeyer::new(t.chain, t.is_client, mono_ms),
            rng,
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
    pub(super) fn open(&mut self, mono_ms: u64) -> Result<Vec<Event>, ProtoError> {
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
            let used =
                self.opener
                    .open_in_place(self.rx.data_mut(), &mut self.local.buf, &mut events)?;
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

    /// Gives back every buffer that holds nothing (called on each timer
    /// wake-up, so a session that went idle after a burst holds none).
    pub(super) fn release_idle(&mut self) {
        self.rx.release();
        self.local_rx.release();
        self.tx.release();
        self.local.release();
        if self.scratch.capacity() > 0 && self.scratch.is_empty() {
            self.scratch = Vec::new();
        }
    }

    /// Whether both directions are closed: the session is ending, so no
    /// rekey starts. A half-closed session (a download with ssh's input
    /// at its end) goes on rekeying.
    pub(super) fn both_closed(&self) -> bool {
        self.local_closed && self.peer_closed
    }

    /// Whether the peer may be read: neither the local queue nor the
    /// transmit queue (which answers to the peer's records fill) is full.
    pub(super) fn peer_room(&self) -> bool {
        self.local.len() < self.high_water && self.tx.len() < self.high_water * 2
    }

    /// Whether the local side may be read: it has not ended and the
    /// transmit queue is not full.
    pub(super) fn local_room(&self) -> bool {
        !self.local_closed && self.tx.len() < self.high_water
    }

    /// Seals everything read from the local side.
    pub(super) fn seal_data(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        if self.hold_for_cover(mono_ms)? {
            return Ok(());
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

    /// Queues one control message for the peer.
    pub(super) fn seal_control(&mut self, msg: &Control, mono_ms: u64) -> Result<(), ProtoError> {
        self.note_tx(mono_ms);
        self.sealer.seal_control(msg, &mut self.tx.buf)
    }

    /// Queues CLOSE, after any held cover data: the local side ended.
    pub(super) fn seal_close(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        self.flush_cover(mono_ms)?;
        self.cover.next_tick = None;
        self.note_tx(mono_ms);
        self.local_closed = true;
        self.sealer.seal_close(&mut self.tx.buf)
    }

    /// A record is about to be queued: an empty queue's write bound starts
    /// now.
    pub(super) fn note_tx(&mut self, mono_ms: u64) {
        if self.tx.is_empty() {
            self.tx_since_ms = mono_ms;
        }
    }

    /// `n` bytes of the transmit queue were written to the peer.
    pub(super) fn transmitted(&mut self, n: usize, mono_ms: u64) {
        if n > 0 {
            self.tx.consume(n);
            self.tx_since_ms = mono_ms;
            self.rk.switched_bytes = self.rk.switched_bytes.saturating_add(n as u64);
            if let Some(w) = self.rk.wait_mut() {
                w.progress(n, mono_ms);
            }
        }
    }

    /// `n` bytes of the local queue were written to the local side.
    pub(super) fn delivered(&mut self, n: usize, mono_ms: u64) {
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
    pub(super) fn cut(&mut self, last: Option<&Control>, mono_ms: u64) {
        self.local.clear();
        self.cover = Cover::default();
        if let Some(msg) = last {
            // Sealing fails only on nonce exhaustion: then nothing is sent.
            let _ = self.seal_control(msg, mono_ms);
        }
    }

    /// The earliest time a stalled queue hits its bound: the transmit
    /// queue, and the local queue if `local` (the sidecar does not bound
    /// ssh, which may be suspended).
    pub(super) fn stall_deadline(&self, bound_ms: u64, local: bool) -> Option<u64> {
        let tx = (!self.tx.is_empty()).then(|| self.tx_since_ms.saturating_add(bound_ms));
        let local =
            (local && !self.local.is_empty()).then(|| self.local_since_ms.saturating_add(bound_ms));
        tx.into_iter().chain(local).min()
    }

    /// Which queue, if any, made no progress for `bound_ms`.
    pub(super) fn stalled(&self, bound_ms: u64, mono_ms: u64) -> Option<Stall> {
        if !self.tx.is_empty() && mono_ms >= self.tx_since_ms.saturating_add(bound_ms) {
            return Some(Stall::Peer);
        }
        if !self.local.is_empty() && mono_ms >= self.local_since_ms.saturating_add(bound_ms) {
            return Some(Stall::Local);
        }
        None
    }
}
