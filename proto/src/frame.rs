//! Uniform records. After the handshake every byte on the wire belongs to a
//! record of exactly `F` bytes, all of it AEAD output:
//!
//! ```text
//! plaintext (F - 16 bytes) = type:u8 | flags:u8 | len:u16 | data[len] | zero padding
//! record    (F bytes)      = AES-256-GCM(plaintext) with the implicit Noise nonce
//! ```
//!
//! Each direction keeps its own counter; the receiver expects exactly the
//! next nonce, so a dropped, replayed, reordered or altered record fails the
//! tag and the connection closes.

use crate::codec::Reader;
use crate::error::{Malformed, ProtoError};

/// Tag length of the AEAD.
pub const TAG_LEN: usize = 16;
/// Record header length (type, flags, len).
pub const HEADER_LEN: usize = 4;
/// Smallest allowed frame size.
pub const MIN_FRAME: usize = 1024;
/// Largest allowed frame size.
pub const MAX_FRAME: usize = 16_384;
/// Default frame size.
pub const DEFAULT_FRAME: usize = 1024;

/// A validated frame size `F`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSize(u16);

impl FrameSize {
    /// Validates `F`: 1024 to 16384 bytes, a multiple of 16 (every control message fits one record).
    pub fn new(f: usize) -> Result<Self, Malformed> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&f) || !f.is_multiple_of(16) {
            return Err(Malformed::Invalid {
                what: "frame size",
                why: "must be a multiple of 16 between 1024 and 16384",
            });
        }
        u16::try_from(f).map(Self).map_err(|_| Malformed::Invalid {
            what: "frame size",
            why: "too large",
        })
    }

    /// `F` in bytes.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }

    /// `F` as sent in the hello and prologue.
    pub fn wire(self) -> u16 {
        self.0
    }

    /// Most data bytes one record carries.
    pub fn max_data(self) -> usize {
        self.get() - TAG_LEN - HEADER_LEN
    }
}

impl Default for FrameSize {
    fn default() -> Self {
        Self(1024)
    }
}

/// Record types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// SSH bytes.
    Data = 1,
    /// A control message.
    Control = 2,
    /// Cover traffic; ignored.
    Pad = 3,
    /// An in-band rekey message (or a fragment of one).
    Rekey = 4,
    /// No more DATA in this direction (a half-close).
    Close = 5,
}

impl RecordType {
    fn from_u8(v: u8) -> Result<Self, Malformed> {
        Ok(match v {
            1 => Self::Data,
            2 => Self::Control,
            3 => Self::Pad,
            4 => Self::Rekey,
            5 => Self::Close,
            _ => {
                return Err(Malformed::Invalid {
                    what: "record",
                    why: "unknown record type",
                });
            }
        })
    }
}

pub use crate::control::{Control, MAX_REASON, TerminateCode, sanitize};

/// An event out of [`Opener::open_all`] other than data.
#[derive(Clone, Debug, PartialEq, Eq)]
// Events are short-lived and few per read; boxing would cost an allocation
// per control message for no gain.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A control message.
    Control(Control),
    /// The peer half-closed its direction.
    Close,
    /// A complete REKEY message (opening paused right after it).
    Rekey(crate::rekey::RekeyMsg),
}

/// Records one key may carry in one direction. A sender rekeys long
/// before (`rekey_after_bytes` is at most [`MAX_REKEY_AFTER_BYTES`]); a peer
/// that sends more under one key is closed. At `F` = 1024 that is 64 GiB,
/// far below the 2^64 nonces, and well inside AES-GCM's bounds.
pub const MAX_RECORDS_PER_KEY: u64 = 1 << 26;
/// The largest `rekey_after_bytes` a side may be configured with: it leaves
/// a margin of 3/4 of [`MAX_RECORDS_PER_KEY`] records (at least 48 GiB)
/// for the rekey's round trip.
pub const MAX_REKEY_AFTER_BYTES: u64 = 16 << 30;

/// An established tunnel's record layer, split into halves that can live in
/// separate tasks, with the chaining secret for the first rekey.
#[derive(Debug)]
pub struct Transport {
    /// Outgoing half.
    pub sealer: Sealer,
    /// Incoming half.
    pub opener: Opener,
    /// Whether this side is the client (the Noise initiator).
    pub(crate) is_client: bool,
    /// The chaining secret the first rekey derives from.
    pub(crate) chain: crate::rekey::Chain,
}

/// One direction's AES-256-GCM key (ring), nonce `0^32 || n:u64` as in
/// Noise's AESGCM. ring does not wipe its expanded key schedule on drop;
/// the raw key bytes this crate holds are zeroized.
pub(crate) struct RecordKey(ring::aead::LessSafeKey);

impl RecordKey {
    pub(crate) fn new(key: &[u8; 32]) -> Result<Self, ProtoError> {
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .map(|k| Self(ring::aead::LessSafeKey::new(k)))
            .map_err(|_| ProtoError::Internal("record key"))
    }

    fn nonce(n: u64) -> ring::aead::Nonce {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_be_bytes());
        ring::aead::Nonce::assume_unique_for_key(b)
    }
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<record key>")
    }
}

impl Transport {
    /// The record layer from the handshake's split keys (`c2s`, `s2c`) and
    /// its final hash.
    pub(crate) fn new(
        c2s: &[u8; 32],
        s2c: &[u8; 32],
        h: &[u8; 32],
        f: FrameSize,
        is_client: bool,
    ) -> Result<Self, ProtoError> {
        let (tx, rx) = if is_client { (c2s, s2c) } else { (s2c, c2s) };
        Ok(Self {
            sealer: Sealer {
                key: RecordKey::new(tx)?,
                nonce: 0,
                limit: MAX_RECORDS_PER_KEY,
                f,
            },
            opener: Opener {
                key: RecordKey::new(rx)?,
                nonce: 0,
                total: 0,
                f,
                closed: false,
                terminated: false,
                rekey_tag: 0,
                rekey_body: Vec::new(),
                rekey_ready: false,
            },
            is_client,
            chain: crate::rekey::Chain::initial(h, c2s, s2c)?,
        })
    }
}

/// Seals outgoing records, each in place at the end of the caller's
/// queue: it holds no buffer of its own. Its `Debug` shows the counters.
pub struct Sealer {
    key: RecordKey,
    nonce: u64,
    /// Records allowed under one key ([`MAX_RECORDS_PER_KEY`]; tests lift
    /// it to play a peer that ignores it).
    limit: u64,
    f: FrameSize,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .field("limit", &self.limit)
            .field("f", &self.f)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The frame size.
    pub fn frame_size(&self) -> FrameSize {
        self.f
    }

    /// Records sealed under the current key.
    pub fn records_under_key(&self) -> u64 {
        self.nonce
    }

    #[cfg(test)]
    pub(crate) fn jump_nonce(&mut self, n: u64) {
        self.nonce = n;
    }

    /// Lets this sealer go past [`MAX_RECORDS_PER_KEY`], as a hostile
    /// peer's would.
    #[cfg(test)]
    pub(crate) fn lift_limit(&mut self) {
        self.limit = u64::MAX;
    }

    /// Switches to a new key; the next record is sealed under it with
    /// nonce 0. The old key is dropped.
    pub(crate) fn install(&mut self, key: &[u8; 32]) -> Result<(), ProtoError> {
        self.key = RecordKey::new(key)?;
        self.nonce = 0;
        Ok(())
    }

    /// Encrypts the record plaintext that fills `out[start..]` (exactly
    /// `F - 16` bytes) in place and appends its tag. On failure `out` is
    /// cut back to `start`: no plaintext is left in the queue.
    fn encrypt_tail(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), ProtoError> {
        debug_assert_eq!(out.len() - start, self.f.get() - TAG_LEN);
        if self.nonce >= self.limit {
            out.truncate(start);
            return Err(ProtoError::PeerMisbehaved(
                "record limit for one key reached without a rekey",
            ));
        }
        let Some(body) = out.get_mut(start..) else {
            return Err(ProtoError::Internal("seal"));
        };
        let sealed = self.key.0.seal_in_place_separate_tag(
            RecordKey::nonce(self.nonce),
            ring::aead::Aad::empty(),
            body,
        );
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                self.nonce += 1;
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(ProtoError::Internal("seal"))
            }
        }
    }

    fn seal(&mut self, kind: RecordType, data: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.seal_parts(kind, &[data], out)
    }

    fn seal_parts(
        &mut self,
        kind: RecordType,
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtoError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = u16::try_from(total).map_err(|_| ProtoError::Internal("record too long"))?;
        if total > self.f.max_data() {
            return Err(ProtoError::Internal("record data exceeds frame"));
        }
        // The plaintext is written straight into the queue and sealed there.
        let start = out.len();
        out.reserve(self.f.get());
        out.extend_from_slice(&[kind as u8, 0]);
        out.extend_from_slice(&len.to_be_bytes());
        for p in parts {
            out.extend_from_slice(p);
        }
        out.resize(start + self.f.get() - TAG_LEN, 0);
        self.encrypt_tail(out, start)
    }

    /// Seals `data` into as few full records as possible; only the last is padded.
    pub fn seal_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.reserve(data.len().div_ceil(self.f.max_data()) * self.f.get());
        for chunk in data.chunks(self.f.max_data()) {
            self.seal(RecordType::Data, chunk, out)?;
        }
        Ok(())
    }

    /// Seals a control message.
    pub fn seal_control(&mut self, msg: &Control, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.seal(RecordType::Control, &msg.encode(), out)
    }

    /// Seals a PAD record (cover traffic).
    pub fn seal_pad(&mut self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.seal(RecordType::Pad, &[], out)
    }

    /// Seals a CLOSE record: no more data in this direction.
    pub fn seal_close(&mut self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.seal(RecordType::Close, &[], out)
    }

    /// Seals a REKEY message as consecutive REKEY records, each
    /// `tag:u8 || the next fragment of the body` (FINISH: the tag alone).
    pub fn seal_rekey(
        &mut self,
        msg: &crate::rekey::RekeyMsg,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtoError> {
        let (tag, body) = msg.parts();
        if body.is_empty() {
            return self.seal(RecordType::Rekey, &[tag], out);
        }
        for chunk in body.chunks(self.f.max_data() - 1) {
            self.seal_parts(RecordType::Rekey, &[&[tag], chunk], out)?;
        }
        Ok(())
    }
}

#[cfg(any(test, feature = "testkit"))]
impl Sealer {
    /// Seals an arbitrary record plaintext (fitted to `F - 16` bytes), so
    /// tests and fuzzers can reach the record parser behind the AEAD.
    #[doc(hidden)]
    pub fn seal_plaintext_raw(
        &mut self,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtoError> {
        let room = self.f.get() - TAG_LEN;
        let n = plain.len().min(room);
        let start = out.len();
        out.extend_from_slice(&plain[..n]);
        out.resize(start + room, 0);
        self.encrypt_tail(out, start)
    }
}

/// Opens incoming records, in place in the caller's receive buffer. Its
/// `Debug` leaves out the REKEY message in reassembly.
pub struct Opener {
    key: RecordKey,
    /// Records opened under the current key (the next nonce).
    nonce: u64,
    /// Records opened in all.
    total: u64,
    f: FrameSize,
    /// A CLOSE was opened: no more DATA may follow.
    closed: bool,
    /// A TERMINATE was opened: nothing after it is opened at all.
    terminated: bool,
    /// The REKEY message being reassembled (0: none).
    rekey_tag: u8,
    rekey_body: Vec<u8>,
    /// A REKEY message completed: opening pauses until the connection
    /// core has acted on it (it may switch this opener's key).
    rekey_ready: bool,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("nonce", &self.nonce)
            .field("total", &self.total)
            .field("f", &self.f)
            .field("closed", &self.closed)
            .field("terminated", &self.terminated)
            .field("rekey_tag", &self.rekey_tag)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// The frame size.
    pub fn frame_size(&self) -> FrameSize {
        self.f
    }

    /// Records opened so far.
    pub fn records_opened(&self) -> u64 {
        self.total
    }

    #[cfg(test)]
    pub(crate) fn jump_nonce(&mut self, n: u64) {
        self.nonce = n;
    }

    /// Switches to a new key; the next record must be sealed under it with
    /// nonce 0. The old key is dropped.
    pub(crate) fn install(&mut self, key: &[u8; 32]) -> Result<(), ProtoError> {
        self.key = RecordKey::new(key)?;
        self.nonce = 0;
        Ok(())
    }

    /// Opens every complete record at the front of `input`: DATA is appended
    /// to `data`, everything else to `events`. Returns how many bytes were
    /// consumed (a multiple of `F`). Any failure is fatal for the connection.
    ///
    /// Order is kept where it matters: DATA after a CLOSE is an error, and
    /// nothing after a TERMINATE is opened (it is the last event; the
    /// caller acts on it, whatever bytes follow). Opening stops right after
    /// a complete REKEY message ([`Event::Rekey`]): the records after it
    /// may be under a new key, which the caller installs before calling
    /// again with the rest.
    ///
    /// This takes a copy of `input` (tests and fuzz targets); the
    /// connection opens in its own buffer with [`Self::open_in_place`].
    pub fn open_all(
        &mut self,
        input: &[u8],
        data: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<usize, ProtoError> {
        let whole = input.len() - input.len() % self.f.get();
        let mut copy = input.get(..whole).unwrap_or_default().to_vec();
        self.open_in_place(&mut copy, data, events)
    }

    /// [`Self::open_all`] decrypting in `input` itself: the bytes of every
    /// record it consumed are left as plaintext, the rest as received.
    pub fn open_in_place(
        &mut self,
        input: &mut [u8],
        data: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<usize, ProtoError> {
        let f = self.f.get();
        let mut consumed = 0;
        self.rekey_ready = false;
        for record in input.chunks_exact_mut(f) {
            if self.terminated || self.rekey_ready {
                break;
            }
            self.open_one(record, data, events)?;
            consumed += f;
        }
        Ok(consumed)
    }

    fn open_one(
        &mut self,
        record: &mut [u8],
        data: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtoError> {
        if self.nonce >= MAX_RECORDS_PER_KEY {
            return Err(ProtoError::PeerMisbehaved(
                "peer sent more records under one key than allowed without a rekey",
            ));
        }
        let plain = self
            .key
            .0
            .open_in_place(
                RecordKey::nonce(self.nonce),
                ring::aead::Aad::empty(),
                record,
            )
            .map_err(|_| ProtoError::Noise(snow::Error::Decrypt))?;
        self.nonce += 1;
        self.total += 1;
        let mut r = Reader::new(plain, "record");
        let kind = RecordType::from_u8(r.u8()?)?;
        if r.u8()? != 0 {
            return Err(Malformed::Invalid {
                what: "record",
                why: "unknown flags",
            }
            .into());
        }
        let len = usize::from(r.u16()?);
        if len > self.f.max_data() {
            return Err(Malformed::TooLong {
                what: "record",
                len,
                max: self.f.max_data(),
            }
            .into());
        }
        let body = r.take(len)?;
        if !r.rest_is_zero() {
            return Err(Malformed::Invalid {
                what: "record",
                why: "non-zero padding",
            }
            .into());
        }
        if self.rekey_tag != 0 && kind != RecordType::Rekey {
            return Err(ProtoError::PeerMisbehaved(
                "a REKEY message was interrupted by another record",
            ));
        }
        match kind {
            // An empty DATA record carries nothing; cover traffic is PAD.
            RecordType::Data if len == 0 => {
                return Err(Malformed::Invalid {
                    what: "record",
                    why: "empty DATA",
                }
                .into());
            }
            RecordType::Data if self.closed => {
                return Err(ProtoError::PeerMisbehaved("DATA after CLOSE"));
            }
            RecordType::Data => data.extend_from_slice(body),
            RecordType::Control => {
                let msg = Control::decode(body)?;
                self.terminated = matches!(msg, Control::Terminate { .. });
                events.push(Event::Control(msg));
            }
            RecordType::Pad if len == 0 => {}
            RecordType::Close if len == 0 => {
                self.closed = true;
                events.push(Event::Close);
            }
            RecordType::Pad | RecordType::Close => {
                return Err(Malformed::Invalid {
                    what: "record",
                    why: "PAD or CLOSE with data",
                }
                .into());
            }
            RecordType::Rekey => {
                let body = body.to_vec();
                self.rekey_fragment(&body, events)?;
            }
        }
        Ok(())
    }

    /// One REKEY record: `tag:u8 || fragment`. A message's records are
    /// consecutive and carry the same tag; it is complete at its length.
    fn rekey_fragment(&mut self, body: &[u8], events: &mut Vec<Event>) -> Result<(), ProtoError> {
        use crate::rekey::RekeyMsg;
        let bad = |why| Malformed::Invalid {
            what: "REKEY record",
            why,
        };
        let (&tag, fragment) = body.split_first().ok_or(bad("empty"))?;
        let want = RekeyMsg::body_len(tag).ok_or(bad("unknown REKEY message"))?;
        if self.rekey_tag != 0 && self.rekey_tag != tag {
            return Err(bad("REKEY message type changed mid-message").into());
        }
        if (want > 0 && fragment.is_empty()) || self.rekey_body.len() + fragment.len() > want {
            return Err(bad("REKEY fragment of the wrong length").into());
        }
        self.rekey_tag = tag;
        self.rekey_body.extend_from_slice(fragment);
        if self.rekey_body.len() == want {
            let msg = RekeyMsg::from_parts(tag, &self.rekey_body)?;
            // Given back, not cleared: a rekey comes once in hours.
            self.rekey_body = Vec::new();
            self.rekey_tag = 0;
            self.rekey_ready = true;
            events.push(Event::Rekey(msg));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_size_bounds() {
        assert!(FrameSize::new(1024).is_ok());
        assert!(FrameSize::new(1008).is_err());
        assert!(FrameSize::new(1000).is_err());
        assert!(FrameSize::new(32_768).is_err());
        assert_eq!(FrameSize::default().max_data(), 1004);
    }
}
