//! The byte queues of a tunnel: what waits to be written (sealed records
//! for the peer, plaintext for the local side) and the read buffer that
//! takes the local side's bytes. Neither `Debug` shows the bytes.

/// Largest read batch from either side.
pub const MAX_BATCH: usize = 256 * 1024;
/// Smallest read buffer; it grows to [`MAX_BATCH`] while reads fill it, so
/// an idle session holds little memory.
const MIN_BATCH: usize = 4096;

/// Bytes waiting to be written, consumed from the front (plaintext for
/// sshd or ssh, or sealed records): its `Debug` shows the length only.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) buf: Vec<u8>,
    start: usize,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("len", &self.len()).finish()
    }
}

impl Queue {
    pub(super) fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= MAX_BATCH && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    pub(super) fn clear(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
    }
}

/// A read buffer that grows while reads fill it (sshd's or ssh's bytes on
/// the local side): its `Debug` shows the lengths only.
pub(super) struct ReadBuf {
    buf: Vec<u8>,
    pub(super) filled: usize,
    /// Reads land in whole multiples of this.
    unit: usize,
}

impl std::fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuf")
            .field("filled", &self.filled)
            .field("capacity", &self.buf.len())
            .finish()
    }
}

impl ReadBuf {
    pub(super) fn new(unit: usize) -> Self {
        Self {
            buf: vec![0; MIN_BATCH.div_ceil(unit).max(2) * unit],
            filled: 0,
            unit,
        }
    }

    pub(super) fn spare(&mut self) -> &mut [u8] {
        let filled = self.filled;
        self.buf.get_mut(filled..).unwrap_or_default()
    }

    pub(super) fn filled(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
        let max = (MAX_BATCH / self.unit).max(2) * self.unit;
        if self.filled == self.buf.len() && self.buf.len() < max {
            let grown = (self.buf.len() * 4).min(max);
            self.buf.resize(grown, 0);
        }
    }

    pub(super) fn data(&self) -> &[u8] {
        self.buf.get(..self.filled).unwrap_or_default()
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}
