//! The byte queues of a tunnel: what waits to be written (sealed records
//! for the peer, plaintext for the local side) and the read buffer that
//! takes the local side's bytes. Neither `Debug` shows the bytes.

/// Largest read batch from either side.
pub const MAX_BATCH: usize = 256 * 1024;
/// Smallest read buffer; it grows to [`MAX_BATCH`] while reads fill it.
const MIN_BATCH: usize = 4096;
/// An emptied queue keeps a buffer up to this size while its session is
/// busy (a bulk transfer refills it at once); a smaller one is given back
/// as soon as it empties, and any empty one at [`Queue::release`].
const KEEP_WHILE_BUSY: usize = 64 * 1024;

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
            if self.buf.capacity() > KEEP_WHILE_BUSY {
                self.buf.clear();
            } else {
                self.buf = Vec::new();
            }
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

    /// Gives the buffer back if the queue is empty (an idle session holds
    /// no queue capacity).
    pub(super) fn release(&mut self) {
        if self.is_empty() {
            self.clear();
        }
    }
}

/// A read buffer that grows while reads fill it: it is allocated when a
/// read needs it and given back once emptied at its smallest size (or at
/// [`ReadBuf::release`], whatever its size), so an idle session holds none.
/// Its `Debug` shows the lengths only.
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
            buf: Vec::new(),
            filled: 0,
            unit,
        }
    }

    /// The size a buffer starts at: whole units, at least [`MIN_BATCH`].
    fn smallest(&self) -> usize {
        MIN_BATCH.div_ceil(self.unit).max(2) * self.unit
    }

    pub(super) fn spare(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; self.smallest()];
        }
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

    pub(super) fn data_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(..self.filled).unwrap_or_default()
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
        if self.filled == 0 && self.buf.len() <= self.smallest() {
            self.buf = Vec::new();
        }
    }

    /// Gives the buffer back if it holds nothing.
    pub(super) fn release(&mut self) {
        if self.filled == 0 {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_buffer_exists_only_while_it_holds_bytes() {
        let mut r = ReadBuf::new(1024);
        assert_eq!(r.buf.capacity(), 0, "an idle session holds no read buffer");
        assert_eq!(r.spare().len(), 4096);
        r.filled(100);
        assert_eq!(r.data().len(), 100);
        r.consume(100);
        assert_eq!(
            r.buf.capacity(),
            0,
            "emptied at its smallest size: given back"
        );
        // A bulk read grows it; emptied, it is kept for the next read…
        r.spare();
        r.filled(4096);
        assert!(r.buf.len() > 4096);
        r.consume(4096);
        assert!(r.buf.capacity() > 4096);
        // …until the session's timer gives it back.
        r.release();
        assert_eq!(r.buf.capacity(), 0);
        // Nothing is given back while it holds bytes.
        r.spare();
        r.filled(10);
        r.release();
        assert_eq!(r.data().len(), 10);
    }

    #[test]
    fn an_emptied_queue_keeps_only_a_bulk_buffer_and_only_until_released() {
        let mut q = Queue::default();
        q.buf.extend_from_slice(&[1; 1000]);
        q.consume(1000);
        assert_eq!(q.buf.capacity(), 0);
        q.buf.extend_from_slice(&vec![1; KEEP_WHILE_BUSY + 1]);
        q.consume(KEEP_WHILE_BUSY + 1);
        assert!(
            q.buf.capacity() > KEEP_WHILE_BUSY,
            "a bulk transfer keeps it"
        );
        q.release();
        assert_eq!(q.buf.capacity(), 0);
        q.buf.extend_from_slice(&[1; 10]);
        q.release();
        assert_eq!(q.len(), 10, "a queue with bytes keeps them");
    }
}
