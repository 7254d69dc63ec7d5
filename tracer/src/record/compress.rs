//! Chunk compression (format version 2).
//!
//! A version-2 chunk's payload is a codec byte, the length of the
//! uncompressed payload, and the data:
//!
//! ```text
//! payload = codec:u8  raw_len:varint  data
//! codec 0: data is the payload as version 1 lays it out
//! codec 1: data is zstd, and decompresses to exactly raw_len such bytes
//! ```
//!
//! The chunk's CRC covers these compressed bytes, so damage is found
//! before anything is decompressed, and the framing, the torn-tail rule
//! and resynchronisation are those of version 1. Each chunk is
//! compressed on its own: any chunk still decodes without the others.

use super::MAX_CHUNK;
use super::codec::{CodecError, Cursor, put_varint};

/// The payload is stored as it is.
pub const CODEC_NONE: u8 = 0;
/// The payload is one zstd frame.
pub const CODEC_ZSTD: u8 = 1;

/// zstd's level: 3 (its default) is within a few percent of the ratio of
/// level 9 on recordings, at several times the speed (docs/benchmarks.md).
const LEVEL: i32 = 3;

/// Compresses payloads, reusing one zstd context (a context costs an
/// allocation of about a megabyte).
pub struct Compressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    buf: Vec<u8>,
}

impl Default for Compressor {
    fn default() -> Self {
        Self {
            // Without a context (it could not be allocated) chunks are
            // stored uncompressed, which every reader reads.
            zstd: zstd::bulk::Compressor::new(LEVEL).ok(),
            buf: Vec::new(),
        }
    }
}

impl Compressor {
    /// The version-2 payload of `raw`: compressed when that is smaller.
    pub fn frame(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        if let Some(z) = &mut self.zstd {
            self.buf.clear();
            self.buf.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            if z.compress_to_buffer(raw, &mut self.buf).is_ok() && self.buf.len() < raw.len() {
                out.push(CODEC_ZSTD);
                put_varint(out, raw.len() as u64);
                out.extend_from_slice(&self.buf);
                return;
            }
        }
        out.truncate(start);
        out.push(CODEC_NONE);
        put_varint(out, raw.len() as u64);
        out.extend_from_slice(raw);
    }
}

/// Decompresses payloads into one reused buffer. Its zstd context is made
/// at the first compressed chunk: a version-1 file never needs one.
#[derive(Default)]
pub struct Decompressor {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    buf: Vec<u8>,
}

impl Decompressor {
    /// The uncompressed payload of a version-2 `payload`. Nothing larger
    /// than the stated length, nor than [`MAX_CHUNK`], is ever produced.
    pub fn unframe<'a>(&'a mut self, payload: &'a [u8]) -> Result<&'a [u8], CodecError> {
        let mut c = Cursor::new(payload);
        let codec = c.u8()?;
        let raw_len = usize::try_from(c.varint()?)
            .ok()
            .filter(|&n| n <= MAX_CHUNK)
            .ok_or(CodecError::Range("uncompressed length"))?;
        let data = c.take(c.remaining())?;
        match codec {
            CODEC_NONE if data.len() == raw_len => Ok(data),
            CODEC_NONE => Err(CodecError::Range("uncompressed length")),
            CODEC_ZSTD => {
                if self.zstd.is_none() {
                    self.zstd = zstd::bulk::Decompressor::new().ok();
                }
                let z = self
                    .zstd
                    .as_mut()
                    .ok_or(CodecError::Corrupt("no zstd context"))?;
                self.buf.clear();
                self.buf.reserve(raw_len);
                // Writes into the buffer's capacity only: a frame claiming
                // more than raw_len fails instead of growing it.
                let n = z
                    .decompress_to_buffer(data, &mut self.buf)
                    .map_err(|_| CodecError::Corrupt("zstd data"))?;
                if n != raw_len || self.buf.len() != raw_len {
                    return Err(CodecError::Range("uncompressed length"));
                }
                Ok(&self.buf)
            }
            _ => Err(CodecError::Range("codec")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_compressed_or_not() {
        let mut c = Compressor::default();
        let mut d = Decompressor::default();
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        for raw in [&b""[..], b"x", &text] {
            let mut out = Vec::new();
            c.frame(raw, &mut out);
            assert_eq!(d.unframe(&out).unwrap(), raw);
        }
        let mut out = Vec::new();
        c.frame(&text, &mut out);
        assert_eq!(out[0], CODEC_ZSTD);
        assert!(out.len() < text.len() / 4, "{} bytes", out.len());
    }

    #[test]
    fn lies_about_lengths_and_garbage_are_errors() {
        let mut c = Compressor::default();
        let mut d = Decompressor::default();
        let raw = vec![7u8; 100_000];
        let mut out = Vec::new();
        c.frame(&raw, &mut out);
        // A stated length smaller than the frame's content: refused, not grown.
        let mut short = vec![CODEC_ZSTD];
        put_varint(&mut short, 10);
        short.extend_from_slice(&out[4..]);
        assert!(d.unframe(&short).is_err());
        // Larger than any chunk may be.
        let mut big = vec![CODEC_ZSTD];
        put_varint(&mut big, (MAX_CHUNK + 1) as u64);
        assert!(d.unframe(&big).is_err());
        // Stored bytes that do not match their length, an unknown codec,
        // and random bytes posing as zstd.
        let mut none = vec![CODEC_NONE];
        put_varint(&mut none, 5);
        none.extend_from_slice(b"abc");
        assert!(d.unframe(&none).is_err());
        assert!(d.unframe(&[9, 0]).is_err());
        assert!(d.unframe(&[]).is_err());
        let mut state = 1u32;
        for len in 0..200 {
            let mut g = vec![CODEC_ZSTD];
            put_varint(&mut g, 1000);
            for _ in 0..len {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                g.push((state >> 16) as u8);
            }
            assert!(d.unframe(&g).is_err());
        }
    }
}
