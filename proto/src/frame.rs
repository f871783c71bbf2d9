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

use std::sync::Arc;

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
    /// Reserved for in-band rekey; rejected by this version.
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
}

/// An established tunnel's record layer, split into halves that can live in
/// separate tasks.
#[derive(Debug)]
pub struct Transport {
    /// Outgoing half.
    pub sealer: Sealer,
    /// Incoming half.
    pub opener: Opener,
}

struct Keys(snow::StatelessTransportState);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<transport keys>")
    }
}

impl Transport {
    pub(crate) fn new(
        state: snow::StatelessTransportState,
        f: FrameSize,
        _initiator: bool,
    ) -> Self {
        let keys = Arc::new(Keys(state));
        Self {
            sealer: Sealer {
                keys: Arc::clone(&keys),
                nonce: 0,
                f,
                plain: vec![0; f.get() - TAG_LEN],
            },
            opener: Opener {
                keys,
                nonce: 0,
                f,
                plain: vec![0; f.get() - TAG_LEN],
                closed: false,
                terminated: false,
            },
        }
    }
}

/// Seals outgoing records.
#[derive(Debug)]
pub struct Sealer {
    keys: Arc<Keys>,
    nonce: u64,
    f: FrameSize,
    plain: Vec<u8>,
}

impl Sealer {
    /// The frame size.
    pub fn frame_size(&self) -> FrameSize {
        self.f
    }

    fn seal(&mut self, kind: RecordType, data: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let len = u16::try_from(data.len()).map_err(|_| ProtoError::Internal("record too long"))?;
        if data.len() > self.f.max_data() {
            return Err(ProtoError::Internal("record data exceeds frame"));
        }
        let end = HEADER_LEN + data.len();
        self.plain[0] = kind as u8;
        self.plain[1] = 0;
        self.plain[2..4].copy_from_slice(&len.to_be_bytes());
        self.plain[HEADER_LEN..end].copy_from_slice(data);
        // Only the padding needs zeroing; the rest was just written.
        self.plain[end..].fill(0);
        let start = out.len();
        out.resize(start + self.f.get(), 0);
        let n = self
            .keys
            .0
            .write_message(self.nonce, &self.plain, &mut out[start..])?;
        debug_assert_eq!(n, self.f.get());
        self.nonce = self
            .nonce
            .checked_add(1)
            .ok_or(ProtoError::PeerMisbehaved("nonce space exhausted"))?;
        Ok(())
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
}

#[cfg(feature = "testkit")]
impl Sealer {
    /// Seals an arbitrary record plaintext (fitted to `F - 16` bytes), so
    /// tests and fuzzers can reach the record parser behind the AEAD.
    #[doc(hidden)]
    pub fn seal_plaintext_raw(
        &mut self,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtoError> {
        let mut p = plain.to_vec();
        p.resize(self.f.get() - TAG_LEN, 0);
        let start = out.len();
        out.resize(start + self.f.get(), 0);
        self.keys
            .0
            .write_message(self.nonce, &p, &mut out[start..])?;
        self.nonce += 1;
        Ok(())
    }
}

/// Opens incoming records.
#[derive(Debug)]
pub struct Opener {
    keys: Arc<Keys>,
    nonce: u64,
    f: FrameSize,
    plain: Vec<u8>,
    /// A CLOSE was opened: no more DATA may follow.
    closed: bool,
    /// A TERMINATE was opened: nothing after it is opened at all.
    terminated: bool,
}

impl Opener {
    /// The frame size.
    pub fn frame_size(&self) -> FrameSize {
        self.f
    }

    /// Records opened so far.
    pub fn records_opened(&self) -> u64 {
        self.nonce
    }

    /// Opens every complete record at the front of `input`: DATA is appended
    /// to `data`, everything else to `events`. Returns how many bytes were
    /// consumed (a multiple of `F`). Any failure is fatal for the connection.
    ///
    /// Order is kept where it matters: DATA after a CLOSE is an error, and
    /// nothing after a TERMINATE is opened (it is the last event; the
    /// caller acts on it, whatever bytes follow).
    pub fn open_all(
        &mut self,
        input: &[u8],
        data: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<usize, ProtoError> {
        let f = self.f.get();
        let mut consumed = 0;
        for record in input.chunks_exact(f) {
            if self.terminated {
                break;
            }
            self.open_one(record, data, events)?;
            consumed += f;
        }
        Ok(consumed)
    }

    fn open_one(
        &mut self,
        record: &[u8],
        data: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtoError> {
        let n = self
            .keys
            .0
            .read_message(self.nonce, record, &mut self.plain)?;
        self.nonce = self
            .nonce
            .checked_add(1)
            .ok_or(ProtoError::PeerMisbehaved("nonce space exhausted"))?;
        let mut r = Reader::new(self.plain.get(..n).unwrap_or_default(), "record");
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
        if r.rest().iter().any(|&b| b != 0) {
            return Err(Malformed::Invalid {
                what: "record",
                why: "non-zero padding",
            }
            .into());
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
                return Err(ProtoError::PeerMisbehaved(
                    "REKEY is not supported by this version",
                ));
            }
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
