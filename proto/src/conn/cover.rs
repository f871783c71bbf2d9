//! Cover traffic for interactive sessions: small writes held for a fixed
//! cadence of records, PAD when there is nothing to send, for a while
//! after the last one.

use super::link::Link;
use crate::ProtoError;

/// The cadence of cover records.
pub const COVER_CADENCE_MS: u64 = 20;
/// How long cover records go on after the last small write.
pub const COVER_LINGER_MS: u64 = 3000;

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

/// Small writes held for the next cover tick. Its `Debug` shows how much
/// is pending, never the bytes.
#[derive(Default)]
pub(super) struct Cover {
    pub(super) mode: CoverTraffic,
    /// Data waiting for the next tick (at most one record's worth).
    pending: Vec<u8>,
    /// The next tick, while the cover window is open.
    pub(super) next_tick: Option<u64>,
    /// The window closes at the first tick after this (and once `pending`
    /// is empty).
    until: u64,
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

impl Link {
    /// Holds what was read from the local side for the next tick of the
    /// cover window (opened now, with a first tick at once, if it was
    /// closed), if cover traffic is on and it is a small write; otherwise
    /// returns false and the caller seals it at once.
    pub(super) fn hold_for_cover(&mut self, mono_ms: u64) -> Result<bool, ProtoError> {
        let max = self.sealer.frame_size().max_data();
        let n = self.local_rx.filled;
        if self.cover.mode != CoverTraffic::Interactive
            || n == 0
            || self.cover.pending.len() + n > max
        {
            return Ok(false);
        }
        self.cover.pending.extend_from_slice(self.local_rx.data());
        self.local_rx.consume(n);
        self.cover.until = mono_ms.saturating_add(COVER_LINGER_MS);
        self.cover.next_tick.get_or_insert(mono_ms);
        self.cover_tick(mono_ms)?;
        Ok(true)
    }

    /// Seals held cover data at once (before bulk data or a CLOSE).
    pub(super) fn flush_cover(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
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
    pub(super) fn cover_tick(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
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
}
