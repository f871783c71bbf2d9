//! The one bounded reader and writer for every untrusted byte.
//!
//! All multi-byte integers are big-endian. Variable-length fields carry an
//! explicit length prefix and a per-field cap; [`Reader::finish`] rejects
//! trailing bytes. Nothing here indexes or unwraps.

use crate::error::Malformed;

/// A cursor over untrusted input that never reads past its end.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`; `what` names the structure in error messages.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn truncated(&self) -> Malformed {
        Malformed::Truncated(self.what)
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(self.truncated());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(u8::from_be_bytes(self.array::<1>()?))
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array::<4>()?))
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }

    /// Reads a u16-length-prefixed byte string of at most `max` bytes.
    pub fn var16(&mut self, max: usize) -> Result<&'a [u8], Malformed> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(Malformed::TooLong {
                what: self.what,
                len,
                max,
            });
        }
        self.take(len)
    }

    /// Reads a u8-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str8(&mut self, max: usize) -> Result<&'a str, Malformed> {
        let len = usize::from(self.u8()?);
        if len > max {
            return Err(Malformed::TooLong {
                what: self.what,
                len,
                max,
            });
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| Malformed::BadUtf8(self.what))
    }

    /// Checks a fixed magic value.
    pub fn expect(&mut self, magic: &[u8]) -> Result<(), Malformed> {
        if self.take(magic.len())? != magic {
            return Err(Malformed::BadMagic(self.what));
        }
        Ok(())
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Takes everything that is left and says whether it is all zero
    /// (padding). The bytes are OR-folded, not compared one by one: the
    /// loop vectorizes, and a fuzzer's comparison hooks see one comparison
    /// instead of one per byte of a kilobyte of padding.
    pub fn rest_is_zero(&mut self) -> bool {
        self.rest().iter().fold(0u8, |acc, &b| acc | b) == 0
    }

    /// Ends reading; fails if any byte is left over.
    pub fn finish(self) -> Result<(), Malformed> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed::TrailingBytes {
                what: self.what,
                count: self.buf.len(),
            })
        }
    }
}

/// An append-only encoder; the length caps mirror [`Reader`]'s.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a u16-length-prefixed byte string.
    ///
    /// Callers validate lengths when building values; an over-long field is
    /// a programming error and is truncated to the cap so that the reader
    /// rejects it rather than the writer panicking.
    pub fn var16(&mut self, b: &[u8]) -> &mut Self {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.bytes(b.get(..usize::from(len)).unwrap_or_default())
    }

    /// Appends a u8-length-prefixed string (see [`Writer::var16`] on caps).
    pub fn str8(&mut self, s: &str) -> &mut Self {
        let len = u8::try_from(s.len()).unwrap_or(u8::MAX);
        self.u8(len);
        self.bytes(s.as_bytes().get(..usize::from(len)).unwrap_or_default())
    }

    /// The encoded bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let mut w = Writer::new();
        w.u8(7)
            .u16(513)
            .u32(70_000)
            .u64(1 << 40)
            .var16(b"abc")
            .str8("hé");
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(513));
        assert_eq!(r.u32(), Ok(70_000));
        assert_eq!(r.u64(), Ok(1 << 40));
        assert_eq!(r.var16(3), Ok(&b"abc"[..]));
        assert_eq!(r.str8(8), Ok("hé"));
        assert_eq!(r.finish(), Ok(()));

        let mut extra = bytes.clone();
        extra.push(0);
        let mut r = Reader::new(&extra, "test");
        r.take(bytes.len()).expect("prefix");
        assert_eq!(
            r.finish(),
            Err(Malformed::TrailingBytes {
                what: "test",
                count: 1
            })
        );
    }

    #[test]
    fn caps_and_truncation() {
        let mut w = Writer::new();
        w.var16(&[1; 10]);
        let bytes = w.into_vec();
        assert_eq!(
            Reader::new(&bytes, "t").var16(9),
            Err(Malformed::TooLong {
                what: "t",
                len: 10,
                max: 9
            })
        );
        assert_eq!(
            Reader::new(&bytes[..5], "t").var16(10),
            Err(Malformed::Truncated("t"))
        );
        assert_eq!(
            Reader::new(&[0xff, 0xfe], "t").u32(),
            Err(Malformed::Truncated("t"))
        );
        assert_eq!(
            Reader::new(&[1, 0xff], "t").str8(4),
            Err(Malformed::BadUtf8("t"))
        );
    }
}
