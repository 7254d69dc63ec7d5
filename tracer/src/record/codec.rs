//! The byte-level encoding of recordings: LEB128 varints, zigzag for signed
//! values, and a bounds-checked cursor that turns any malformed input into
//! an error. See docs/record-format.md for the layout these build.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unexpected end of data")]
    Eof,
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    #[error("{0} out of range")]
    Range(&'static str),
    #[error("invalid UTF-8 in a string")]
    Utf8,
    #[error("undecodable {0}")]
    Corrupt(&'static str),
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A reader over a byte slice that never reads out of bounds.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.data.get(self.pos).ok_or(CodecError::Eof)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::VarintTooLong)
    }

    pub fn zigzag(&mut self) -> Result<i64, CodecError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A varint that must fit a u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| CodecError::Range(what))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Eof)?;
        let s = self.data.get(self.pos..end).ok_or(CodecError::Eof)?;
        self.pos = end;
        Ok(s)
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = usize::try_from(self.varint()?).map_err(|_| CodecError::Range("length"))?;
        if n > self.remaining() {
            return Err(CodecError::Eof);
        }
        self.take(n)
    }

    #[cfg(test)]
    pub fn string(&mut self) -> Result<String, CodecError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_string)
            .map_err(|_| CodecError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_length() {
        let values = [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        let mut out = Vec::new();
        for v in values {
            put_varint(&mut out, v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -1_000_000] {
            put_zigzag(&mut out, v);
        }
        put_bytes(&mut out, b"hog");
        let mut c = Cursor::new(&out);
        for v in values {
            assert_eq!(c.varint().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -1_000_000] {
            assert_eq!(c.zigzag().unwrap(), v);
        }
        assert_eq!(c.string().unwrap(), "hog");
        assert!(c.is_empty());
        assert_eq!(c.u8(), Err(CodecError::Eof));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(
            Cursor::new(&[0xff; 11]).varint(),
            Err(CodecError::VarintTooLong)
        );
        assert_eq!(Cursor::new(&[0x80]).varint(), Err(CodecError::Eof));
        // A length far beyond the data.
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        assert!(Cursor::new(&out).bytes().is_err());
        let mut bad = Vec::new();
        put_bytes(&mut bad, &[0xff, 0xfe]);
        assert_eq!(Cursor::new(&bad).string(), Err(CodecError::Utf8));
        let mut big = Vec::new();
        put_varint(&mut big, u64::from(u32::MAX) + 1);
        assert_eq!(Cursor::new(&big).u32("x"), Err(CodecError::Range("x")));
    }
}
