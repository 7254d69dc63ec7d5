//! Chunk compression (format versions 2 and 3).
//!
//! A version-2 or -3 chunk's payload starts with a codec byte:
//!
//! ```text
//! payload = 0  raw_len:varint  raw           rows (version 1's layout), stored
//!         | 1  raw_len:varint  zstd          rows, one zstd frame of exactly raw_len bytes
//!         | 2  part{31}  bits                by column (version 3 only; columns.rs)
//! part    = 0                                empty
//!         | 1  len:varint  bytes             stored
//!         | 2  raw_len:varint  len:varint  zstd
//! ```
//!
//! The chunk's CRC covers these compressed bytes, so damage is found
//! before anything is decompressed, and the framing, the torn-tail rule
//! and resynchronisation are those of version 1. Each chunk is
//! compressed on its own, and each part of a chunk by column on its own
//! (its own entropy tables): any chunk still decodes without the others.
//! What a reader gets back is the row payload, or, for a chunk by column,
//! its records decoded straight from the columns (columns.rs), the same
//! records the row payload decodes to.

use super::MAX_CHUNK;
use super::codec::{CodecError, Cursor, put_varint};
use super::columns::{Columnizer, decode_columns, from_columns, parts_count};

/// The payload is stored as it is.
pub const CODEC_NONE: u8 = 0;
/// The payload is one zstd frame.
pub const CODEC_ZSTD: u8 = 1;
/// The payload laid out by column, in parts (version 3).
pub const CODEC_COLUMNS: u8 = 2;

/// A columnar payload's part: none.
const PART_EMPTY: u8 = 0;
/// A part as it is: `len:varint bytes`.
const PART_STORED: u8 = 1;
/// A part as one zstd frame: `raw_len:varint len:varint frame`.
const PART_ZSTD: u8 = 2;

/// Row payloads up to this size are also compressed as rows, and stored
/// so when that is smaller.
const SMALL: usize = 8 << 10;

/// zstd's level: 3 (its default) is within a few percent of the ratio of
/// level 9 on recordings, at several times the speed (docs/benchmarks.md).
const LEVEL: i32 = 3;

/// Compresses payloads, reusing one zstd context (a context costs an
/// allocation of about a megabyte).
pub struct Compressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    buf: Vec<u8>,
    columnizer: Columnizer,
    parts: Vec<Vec<u8>>,
    bits: Vec<u8>,
    rows: Vec<u8>,
}

impl Default for Compressor {
    fn default() -> Self {
        Self {
            // Without a context (it could not be allocated) chunks are
            // stored uncompressed, which every reader reads.
            zstd: zstd::bulk::Compressor::new(LEVEL).ok(),
            buf: Vec::new(),
            columnizer: Columnizer::default(),
            parts: Vec::new(),
            bits: Vec::new(),
            rows: Vec::new(),
        }
    }
}

impl Compressor {
    /// The version-3 payload of the row payload `raw`: laid out by
    /// column, each part compressed on its own when that is smaller.
    pub fn frame(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        self.frame_with(raw, out, raw.len() <= SMALL);
    }

    /// [`Self::frame`], always by column (if the payload allows), for
    /// tests of that layout whatever the chunk's size.
    #[cfg(test)]
    pub fn frame_columns(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        self.frame_with(raw, out, false);
    }

    /// By column, then also as rows if `try_rows`, keeping the smaller.
    fn frame_with(&mut self, raw: &[u8], out: &mut Vec<u8>, try_rows: bool) {
        let (mut parts, mut bits) = (
            std::mem::take(&mut self.parts),
            std::mem::take(&mut self.bits),
        );
        bits.clear();
        let start = out.len();
        // Rows as they are if the payload is not what the columnizer
        // knows (it always is: this is a safety net, still readable).
        match self.columnizer.columns(raw, &mut parts, &mut bits) {
            Ok(()) => {
                out.push(CODEC_COLUMNS);
                for p in &parts {
                    self.part(p, out);
                }
                out.extend_from_slice(&bits);
                // A few records do not pay for the parts' own frames:
                // rows in one frame may be smaller (a quiet second).
                if try_rows {
                    let mut rows = std::mem::take(&mut self.rows);
                    rows.clear();
                    self.frame_as(CODEC_NONE, raw, &mut rows);
                    if rows.len() < out.len() - start {
                        out.truncate(start);
                        out.extend_from_slice(&rows);
                    }
                    self.rows = rows;
                }
            }
            Err(_) => {
                out.truncate(start);
                self.frame_as(CODEC_NONE, raw, out);
            }
        }
        self.parts = parts;
        self.bits = bits;
    }

    /// One part of a columnar payload: empty, stored, or zstd.
    fn part(&mut self, p: &[u8], out: &mut Vec<u8>) {
        if p.is_empty() {
            out.push(PART_EMPTY);
            return;
        }
        if let Some(z) = &mut self.zstd {
            self.buf.clear();
            self.buf.reserve(zstd::zstd_safe::compress_bound(p.len()));
            if z.compress_to_buffer(p, &mut self.buf).is_ok() && self.buf.len() + 2 < p.len() {
                out.push(PART_ZSTD);
                put_varint(out, p.len() as u64);
                put_varint(out, self.buf.len() as u64);
                out.extend_from_slice(&self.buf);
                return;
            }
        }
        out.push(PART_STORED);
        put_varint(out, p.len() as u64);
        out.extend_from_slice(p);
    }

    /// The version-2 payload of `raw` (rows), for tests of old files.
    #[cfg(test)]
    pub fn frame_v2(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        self.frame_as(CODEC_NONE, raw, out);
    }

    /// `data` under `codec` (stored), or under `codec + 1` (zstd) when
    /// that is smaller.
    fn frame_as(&mut self, codec: u8, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        if let Some(z) = &mut self.zstd {
            self.buf.clear();
            self.buf
                .reserve(zstd::zstd_safe::compress_bound(data.len()));
            if z.compress_to_buffer(data, &mut self.buf).is_ok() && self.buf.len() < data.len() {
                out.push(codec + 1);
                put_varint(out, data.len() as u64);
                out.extend_from_slice(&self.buf);
                return;
            }
        }
        out.truncate(start);
        out.push(codec);
        put_varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }
}

/// Decompresses payloads into one reused buffer. Its zstd context is made
/// at the first compressed chunk: a version-1 file never needs one.
#[derive(Default)]
pub struct Decompressor {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    buf: Vec<u8>,
    rows: Vec<u8>,
    spans: Vec<Span>,
}

/// A chunk payload as [`Decompressor::unframe_records`] gives it.
pub enum Unframed<'a> {
    /// The row payload, to decode.
    Rows(&'a [u8]),
    /// A chunk by column, decoded straight into records.
    Records(super::decode::Decoded),
}

impl Decompressor {
    /// The row payload (version 1's layout) of a `payload` of a file of
    /// format `version` (2 or 3; columns only in 3). Nothing larger than
    /// the stated length, nor than [`MAX_CHUNK`], is ever produced.
    pub fn unframe<'a>(
        &'a mut self,
        payload: &'a [u8],
        version: u16,
    ) -> Result<&'a [u8], CodecError> {
        let Self {
            zstd,
            buf,
            rows,
            spans,
        } = self;
        match split(payload, version, zstd, buf, spans)? {
            Split::Rows(raw) => Ok(raw),
            Split::Columns(parts, bits) => {
                from_columns(&parts, bits, rows)?;
                Ok(rows)
            }
        }
    }

    /// As [`Self::unframe`], but a chunk by column (of `count` records
    /// from `base_ts`) whose rows would take at most `max_rows` bytes is
    /// decoded straight from its columns into records, never built as
    /// rows. Any other, or one the column decoder refuses, is given as
    /// rows, so what it decodes to (or why not) is the row decoder's.
    pub fn unframe_records<'a>(
        &'a mut self,
        payload: &'a [u8],
        version: u16,
        base_ts: u64,
        count: u32,
        max_rows: usize,
    ) -> Result<Unframed<'a>, CodecError> {
        let Self {
            zstd,
            buf,
            rows,
            spans,
        } = self;
        match split(payload, version, zstd, buf, spans)? {
            Split::Rows(raw) => Ok(Unframed::Rows(raw)),
            Split::Columns(parts, bits) => {
                match decode_columns(&parts, bits, base_ts, count, max_rows) {
                    Ok(d) => Ok(Unframed::Records(d)),
                    Err(_) => {
                        from_columns(&parts, bits, rows)?;
                        Ok(Unframed::Rows(rows))
                    }
                }
            }
        }
    }
}

/// A payload's layout: its rows, or its columnar parts and bits.
enum Split<'a> {
    Rows(&'a [u8]),
    Columns(Vec<&'a [u8]>, &'a [u8]),
}

/// Decompresses what `payload` holds: its rows, or each part of its
/// columns (in the payload or, decompressed, in `buf`).
fn split<'a>(
    payload: &'a [u8],
    version: u16,
    zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
    buf: &'a mut Vec<u8>,
    spans: &mut Vec<Span>,
) -> Result<Split<'a>, CodecError> {
    let mut c = Cursor::new(payload);
    let codec = c.u8()?;
    match codec {
        CODEC_NONE | CODEC_ZSTD => {
            let raw_len = raw_len(&mut c)?;
            let data = c.take(c.remaining())?;
            data_of(zstd, buf, codec == CODEC_ZSTD, raw_len, data).map(Split::Rows)
        }
        CODEC_COLUMNS if version >= 3 => {
            buf.clear();
            spans.clear();
            for _ in 0..parts_count() {
                let span = match c.u8()? {
                    PART_EMPTY => Span::Payload(0, 0),
                    PART_STORED => {
                        let n = raw_len(&mut c)?;
                        let at = c.pos();
                        c.take(n)?;
                        Span::Payload(at, at + n)
                    }
                    PART_ZSTD => {
                        let n = raw_len(&mut c)?;
                        let len = raw_len(&mut c)?;
                        let frame = c.take(len)?;
                        let at = buf.len();
                        if at + n > MAX_CHUNK {
                            return Err(CodecError::Range("uncompressed length"));
                        }
                        // The writer's frames state their size: a part
                        // whose frame says otherwise is refused before
                        // `n` bytes are set aside for it (a few damaged
                        // bytes must not cost a 16 MiB fill each).
                        let stated = zstd::zstd_safe::get_frame_content_size(frame);
                        if !matches!(stated, Ok(Some(size)) if size == n as u64) {
                            return Err(CodecError::Corrupt("zstd part size"));
                        }
                        buf.resize(at + n, 0);
                        decompress(zstd, frame, &mut buf[at..])?;
                        Span::Buf(at, at + n)
                    }
                    _ => return Err(CodecError::Range("part")),
                };
                spans.push(span);
            }
            let bits = c.take(c.remaining())?;
            let buf: &'a [u8] = buf;
            let parts = spans
                .iter()
                .map(|s| match *s {
                    Span::Payload(a, b) => &payload[a..b],
                    Span::Buf(a, b) => &buf[a..b],
                })
                .collect();
            Ok(Split::Columns(parts, bits))
        }
        _ => Err(CodecError::Range("codec")),
    }
}

/// Where a decoded part is.
#[derive(Clone, Copy)]
enum Span {
    Payload(usize, usize),
    Buf(usize, usize),
}

/// A length that no chunk exceeds.
fn raw_len(c: &mut Cursor<'_>) -> Result<usize, CodecError> {
    usize::try_from(c.varint()?)
        .ok()
        .filter(|&n| n <= MAX_CHUNK)
        .ok_or(CodecError::Range("uncompressed length"))
}

/// Decompresses one zstd frame into exactly `out`.
fn decompress(
    ctx: &mut Option<zstd::bulk::Decompressor<'static>>,
    frame: &[u8],
    out: &mut [u8],
) -> Result<(), CodecError> {
    if ctx.is_none() {
        *ctx = zstd::bulk::Decompressor::new().ok();
    }
    let z = ctx.as_mut().ok_or(CodecError::Corrupt("no zstd context"))?;
    let n = z
        .decompress_to_buffer(frame, out)
        .map_err(|_| CodecError::Corrupt("zstd data"))?;
    if n != out.len() {
        return Err(CodecError::Range("uncompressed length"));
    }
    Ok(())
}

/// `data` itself, or decompressed into `buf`: exactly `raw_len` bytes.
fn data_of<'a>(
    ctx: &mut Option<zstd::bulk::Decompressor<'static>>,
    buf: &'a mut Vec<u8>,
    compressed: bool,
    raw_len: usize,
    data: &'a [u8],
) -> Result<&'a [u8], CodecError> {
    if !compressed {
        return if data.len() == raw_len {
            Ok(data)
        } else {
            Err(CodecError::Range("uncompressed length"))
        };
    }
    if ctx.is_none() {
        *ctx = zstd::bulk::Decompressor::new().ok();
    }
    let z = ctx.as_mut().ok_or(CodecError::Corrupt("no zstd context"))?;
    buf.clear();
    buf.reserve(raw_len);
    // Writes into the buffer's capacity only: a frame claiming more than
    // raw_len fails instead of growing it.
    let n = z
        .decompress_to_buffer(data, buf)
        .map_err(|_| CodecError::Corrupt("zstd data"))?;
    if n != raw_len || buf.len() != raw_len {
        return Err(CodecError::Range("uncompressed length"));
    }
    Ok(buf)
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
            assert_eq!(d.unframe(&out, 3).unwrap(), raw);
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
        assert!(d.unframe(&short, 3).is_err());
        // Larger than any chunk may be.
        let mut big = vec![CODEC_ZSTD];
        put_varint(&mut big, (MAX_CHUNK + 1) as u64);
        assert!(d.unframe(&big, 3).is_err());
        // Stored bytes that do not match their length, an unknown codec,
        // and random bytes posing as zstd.
        let mut none = vec![CODEC_NONE];
        put_varint(&mut none, 5);
        none.extend_from_slice(b"abc");
        assert!(d.unframe(&none, 3).is_err());
        assert!(d.unframe(&[9, 0], 3).is_err());
        assert!(d.unframe(&[], 3).is_err());
        let mut state = 1u32;
        for len in 0..200 {
            let mut g = vec![CODEC_ZSTD];
            put_varint(&mut g, 1000);
            for _ in 0..len {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                g.push((state >> 16) as u8);
            }
            assert!(d.unframe(&g, 3).is_err());
        }
    }
}
