//! The streaming reader: a recording's records in file order, with one
//! chunk in memory at a time, so a recording of any length is read in
//! bounded memory.
//!
//! [`Stream`] walks the chunks with the rules of docs/record-format.md: a
//! chunk whose checksum or decoding fails is damage, skipped and counted,
//! and reading resumes at the next chunk magic; a file that ends inside a
//! chunk with no chunk after has a torn tail; checksum work on failing
//! candidates is capped, so any file costs time linear in its size. What
//! it found accumulates in [`Stream::info`] as it goes. [`Sorted`] puts
//! the records in time order through a bounded reorder window.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::compress::{Decompressor, Unframed};
use super::decode::Records;
use super::reader::{Damage, ReadError, Recording, header_at};
use super::{CHUNK_HEADER, CHUNK_MAGIC, MAX_CHUNK, Record};

/// Bytes read from the file at a time.
const BLOCK: usize = 1 << 20;
/// Chunks up to this size (uncompressed) are decoded at once; larger ones
/// (never written by memtrace, which flushes at 256 KiB) are checked
/// first and then decoded a record at a time.
pub(super) const EAGER_BYTES: usize = 1 << 20;
/// Damage entries kept one by one; past this they are summed in one.
pub const MAX_DAMAGE_LISTED: usize = 1000;
/// Distinct cgroup paths kept; past this, ids show as `#id`.
pub const MAX_CGROUPS: usize = 1 << 18;

/// Bytes that can be read at any offset: a file, or bytes in memory.
pub trait Source: Send {
    fn size(&self) -> u64;
    /// Reads at `offset`; returns how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Source for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl Source for Arc<[u8]> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let at = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - at);
        buf[..n].copy_from_slice(&self[at..at + n]);
        Ok(n)
    }
}

/// A recording that can be opened as often as a consumer needs passes.
#[derive(Clone, Debug)]
pub enum Input {
    File(PathBuf),
    Bytes(Arc<[u8]>),
}

impl Input {
    /// A stream over the records, positioned at the first chunk.
    pub fn open(&self) -> Result<Stream, ReadError> {
        let src: Box<dyn Source> = match self {
            Self::File(path) => {
                let io = |source| ReadError::Io {
                    path: path.display().to_string(),
                    source,
                };
                // Not a FIFO or a device: those could be read forever.
                let meta = std::fs::metadata(path).map_err(io)?;
                if !meta.is_file() {
                    return Err(io(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a regular file",
                    )));
                }
                Box::new(std::fs::File::open(path).map_err(io)?)
            }
            Self::Bytes(b) => Box::new(b.clone()),
        };
        let name = match self {
            Self::File(path) => path.display().to_string(),
            Self::Bytes(_) => "(bytes)".into(),
        };
        Stream::new(src, &name)
    }
}

/// A window of the file's bytes.
struct Window {
    src: Box<dyn Source>,
    size: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    off: u64,
}

impl Window {
    /// The bytes `[at, at + len)`, fewer at the end of the file.
    fn get(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let want = (len as u64).min(self.size.saturating_sub(at)) as usize;
        let have = at >= self.off && at + want as u64 <= self.off + self.buf.len() as u64;
        if !have {
            // Keep what overlaps, read the rest in large blocks.
            if at >= self.off && at <= self.off + self.buf.len() as u64 {
                self.buf.drain(..(at - self.off) as usize);
            } else {
                self.buf.clear();
            }
            self.off = at;
            let target = want.max(BLOCK).min(self.size.saturating_sub(at) as usize);
            while self.buf.len() < target {
                let from = self.buf.len();
                self.buf.resize(target, 0);
                let n = self.src.read_at(&mut self.buf[from..], at + from as u64)?;
                self.buf.truncate(from + n);
                if n == 0 {
                    break;
                }
            }
        }
        let start = (at - self.off) as usize;
        let end = (start + want).min(self.buf.len());
        Ok(&self.buf[start..end])
    }

    /// The first chunk magic at or after `from`.
    fn next_magic(&mut self, mut from: u64) -> io::Result<Option<u64>> {
        while from < self.size {
            let block = self.get(from, BLOCK)?;
            if block.len() < CHUNK_MAGIC.len() {
                return Ok(None);
            }
            if let Some(i) = block
                .windows(CHUNK_MAGIC.len())
                .position(|w| w == CHUNK_MAGIC)
            {
                return Ok(Some(from + i as u64));
            }
            // The magic may straddle blocks.
            from += (block.len() - (CHUNK_MAGIC.len() - 1)) as u64;
        }
        Ok(None)
    }
}

/// The records of the chunk being handed out.
enum Current {
    Empty,
    Eager(std::vec::IntoIter<Record>),
    /// A large chunk, already checked whole.
    Lazy {
        raw: Vec<u8>,
        records: Records,
    },
}

enum Bad {
    /// The file ends inside this chunk, and no chunk follows.
    Torn,
    Damaged(String),
    /// Checksumming failed candidates has cost more than any real damage
    /// could; the rest is reported damaged unread.
    GaveUp,
    Io(io::Error),
}

impl From<io::Error> for Bad {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A recording's records in file order.
pub struct Stream {
    window: Window,
    /// Where the next chunk may start.
    pos: u64,
    version: u16,
    /// Bytes still allowed to be checksummed for failing candidates.
    budget: u64,
    done: bool,
    current: Current,
    decompressor: Decompressor,
    info: Recording,
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

impl Stream {
    fn new(src: Box<dyn Source>, name: &str) -> Result<Self, ReadError> {
        let size = src.size();
        let mut window = Window {
            src,
            size,
            buf: Vec::new(),
            off: 0,
        };
        let io = |source| ReadError::Io {
            path: name.to_string(),
            source,
        };
        // The header is a few KiB of JSON: one that does not fit in the
        // first block is damaged (never a read of what its length claims).
        let head = window.get(0, BLOCK).map_err(io)?;
        let (version, header, end) = header_at(head)?;
        let info = Recording {
            header,
            bytes: size,
            ..Default::default()
        };
        Ok(Self {
            window,
            pos: end as u64,
            version,
            budget: size.saturating_mul(4).saturating_add(MAX_CHUNK as u64),
            done: false,
            current: Current::Empty,
            decompressor: Decompressor::default(),
            info,
        })
    }

    /// The format version of the file.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// What was read so far: header, cgroup paths, chunks, damage, span
    /// (its `records` stay empty).
    pub fn info(&self) -> &Recording {
        &self.info
    }

    pub fn into_info(self) -> Recording {
        self.info
    }

    /// Reads on to the end, keeping nothing but [`Self::info`].
    pub fn scan(mut self) -> Recording {
        while self.next().is_some() {}
        self.info
    }

    fn damage(&mut self, offset: u64, len: u64, reason: String) {
        let d = &mut self.info.damaged;
        if d.len() < MAX_DAMAGE_LISTED {
            d.push(Damage {
                offset,
                len,
                reason,
            });
            return;
        }
        // One entry sums the rest: bounded memory on any file.
        if d.len() == MAX_DAMAGE_LISTED {
            d.push(Damage {
                offset,
                len: 0,
                reason: String::new(),
            });
        }
        self.info.damaged_more += 1;
        let more = self.info.damaged_more;
        if let Some(last) = d.last_mut() {
            last.len = (offset + len).saturating_sub(last.offset);
            last.reason = format!("{more} more damaged chunks, not listed one by one");
        }
    }

    /// Moves to the next chunk that reads whole, recording damage on the
    /// way; false at the end.
    fn advance(&mut self) -> bool {
        let size = self.window.size;
        while !self.done && self.pos < size {
            let pos = self.pos;
            match self.chunk_at(pos) {
                Ok(next) => {
                    self.pos = next;
                    return true;
                }
                Err(Bad::Torn) => {
                    self.info.torn_tail = Some(pos);
                    self.done = true;
                }
                Err(Bad::Damaged(reason)) => {
                    // Resynchronise on the next chunk magic after this one.
                    let next = match self.window.next_magic(pos + 1) {
                        Ok(n) => n.unwrap_or(size),
                        Err(e) => {
                            self.fail(pos, &e);
                            return false;
                        }
                    };
                    self.damage(pos, next - pos, reason);
                    self.pos = next;
                }
                Err(Bad::GaveUp) => {
                    self.damage(
                        pos,
                        size - pos,
                        "too many damaged chunks; stopped checking here".into(),
                    );
                    self.done = true;
                }
                Err(Bad::Io(e)) => self.fail(pos, &e),
            }
        }
        self.done = true;
        false
    }

    /// A read error: what follows is reported, not silently lost.
    fn fail(&mut self, pos: u64, e: &io::Error) {
        let size = self.window.size;
        self.damage(pos, size - pos, format!("cannot read: {e}"));
        self.done = true;
    }

    /// Whether no chunk magic follows `from`.
    fn ends_here(&mut self, from: u64) -> Result<bool, Bad> {
        Ok(self.window.next_magic(from)?.is_none())
    }

    /// Checks and decodes the chunk at `pos`; returns where the next one
    /// may start.
    fn chunk_at(&mut self, pos: u64) -> Result<u64, Bad> {
        let rest = self.window.size - pos;
        if rest < CHUNK_HEADER as u64 {
            let head = self.window.get(pos, rest as usize)?;
            let prefix = head.starts_with(&CHUNK_MAGIC[..head.len().min(4)]);
            return Err(if prefix && self.ends_here(pos + 1)? {
                Bad::Torn
            } else {
                Bad::Damaged("too short for a chunk".into())
            });
        }
        let head = self.window.get(pos, CHUNK_HEADER)?;
        // Shorter than the size said: the file shrank while being read.
        if head.len() < CHUNK_HEADER {
            return Err(Bad::Torn);
        }
        if &head[..4] != CHUNK_MAGIC {
            return Err(Bad::Damaged("no chunk magic".into()));
        }
        let len = le32(head, 4) as usize;
        if len > MAX_CHUNK {
            return Err(Bad::Damaged(format!("chunk length {len} too large")));
        }
        let (base, count, crc) = (le64(head, 8), le32(head, 16), le32(head, 20));
        if (CHUNK_HEADER + len) as u64 > rest {
            return Err(if self.ends_here(pos + 1)? {
                Bad::Torn
            } else {
                Bad::Damaged("chunk runs past the next chunk".into())
            });
        }
        if self.budget == 0 {
            return Err(Bad::GaveUp);
        }
        // A failing candidate is charged whatever failed it: a forged
        // chunk can carry a correct checksum over an undecodable payload.
        let cost = len.max(CHUNK_HEADER) as u64;
        let bytes = self.window.get(pos, CHUNK_HEADER + len)?;
        if bytes.len() < CHUNK_HEADER + len {
            return Err(Bad::Torn);
        }
        let payload = &bytes[CHUNK_HEADER..];
        let mut h = crc32fast::Hasher::new();
        h.update(&base.to_le_bytes());
        h.update(&count.to_le_bytes());
        h.update(payload);
        if h.finalize() != crc {
            self.budget = self.budget.saturating_sub(cost);
            return Err(Bad::Damaged("checksum mismatch".into()));
        }
        let decoded = if self.version >= 2 {
            self.decompressor
                .unframe_records(payload, self.version, base, count, EAGER_BYTES)
                .and_then(|u| match u {
                    Unframed::Rows(raw) => decode_chunk(raw, base, count),
                    Unframed::Records(d) => Ok(eager(d)),
                })
        } else {
            decode_chunk(payload, base, count)
        };
        let (current, cgroups, n, unknown) = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.budget = self.budget.saturating_sub(cost.saturating_mul(2));
                return Err(Bad::Damaged(format!("undecodable: {e}")));
            }
        };
        let next = pos + (CHUNK_HEADER + len) as u64;
        let info = &mut self.info;
        info.chunks += 1;
        info.chunk_spans.push((pos, next - pos, n));
        info.unknown_records += unknown;
        for (id, path) in cgroups {
            let room = info.cgroups.len() < MAX_CGROUPS;
            match info.cgroups.get_mut(&id) {
                Some(p) if p.is_empty() => *p = path,
                Some(_) => {}
                None if room => {
                    info.cgroups.insert(id, path);
                }
                None => {}
            }
        }
        self.current = current;
        Ok(next)
    }
}

type DecodedChunk = (Current, Vec<(u64, String)>, usize, u64);

/// A chunk's records: all at once when it is of the size memtrace writes,
/// else checked whole first and then decoded as they are asked for.
fn decode_chunk(
    raw: &[u8],
    base: u64,
    count: u32,
) -> Result<DecodedChunk, super::codec::CodecError> {
    if raw.len() <= EAGER_BYTES {
        return Ok(eager(super::decode::decode(raw, base, count)?));
    }
    let (records, cgroups) = Records::new(raw, base, count)?;
    let (seen, unknown) = Records::new(raw, base, count)?.0.validate(raw)?;
    let n = (seen as u64 - unknown) as usize;
    let lazy = Current::Lazy {
        raw: raw.to_vec(),
        records,
    };
    Ok((lazy, cgroups, n, unknown))
}

/// A chunk decoded whole.
fn eager(d: super::decode::Decoded) -> DecodedChunk {
    let n = d.records.len();
    (
        Current::Eager(d.records.into_iter()),
        d.cgroups,
        n,
        d.unknown,
    )
}

impl Iterator for Stream {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            let r = match &mut self.current {
                Current::Eager(it) => it.next(),
                // Checked whole before: an error here cannot happen.
                Current::Lazy { raw, records } => records.next(raw).ok().flatten(),
                Current::Empty => None,
            };
            if let Some(r) = r {
                let (ts, began) = (r.ts_ns(), r.began_ns());
                let info = &mut self.info;
                info.span = Some(info.span.map_or((ts, ts), |(a, b)| (a.min(ts), b.max(ts))));
                info.began_ns = Some(info.began_ns.map_or(began, |b| b.min(began)));
                return Some(r);
            }
            self.current = Current::Empty;
            if !self.advance() {
                return None;
            }
        }
    }
}

/// How far back in recorded time a record may arrive and still be put in
/// order: CPUs' events and the once-a-second samples interleave by
/// milliseconds in a file.
pub const REORDER_NS: u64 = 5_000_000_000;
/// At most this many records wait in the window.
pub const REORDER_MAX: usize = 1 << 18;

/// Records in time order (ties in file order, as a stable sort leaves
/// them), through a window of [`REORDER_NS`] and at most [`REORDER_MAX`]
/// records. A record later than that comes out of order, and is counted.
pub struct Sorted<I> {
    inner: I,
    /// Waiting records, in time order. Records come nearly in order, so
    /// each is inserted a few places from the back at most.
    window: VecDeque<(u64, Record)>,
    newest: u64,
    last_out: u64,
    exhausted: bool,
    /// Records that arrived after later ones had been handed on.
    pub late: u64,
}

impl<I: Iterator<Item = Record>> Sorted<I> {
    pub fn new(inner: I) -> Self {
        Self {
            inner,
            window: VecDeque::new(),
            newest: 0,
            last_out: 0,
            exhausted: false,
            late: 0,
        }
    }

    fn ready(&self) -> bool {
        self.window.front().is_some_and(|(ts, _)| {
            self.exhausted
                || self.window.len() > REORDER_MAX
                || ts.saturating_add(REORDER_NS) <= self.newest
        })
    }
}

impl<I: Iterator<Item = Record>> Iterator for Sorted<I> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        while !self.ready() {
            let Some(r) = self.inner.next() else {
                self.exhausted = true;
                break;
            };
            let ts = r.ts_ns();
            if ts < self.last_out {
                self.late += 1;
            }
            self.newest = self.newest.max(ts);
            // After every record of the same time or earlier: ties stay in
            // file order, as a stable sort leaves them.
            let at = self.window.len()
                - self
                    .window
                    .iter()
                    .rev()
                    .take_while(|(t, _)| *t > ts)
                    .count();
            self.window.insert(at, (ts, r));
        }
        let (ts, r) = self.window.pop_front()?;
        self.last_out = self.last_out.max(ts);
        Some(r)
    }
}
