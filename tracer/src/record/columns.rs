//! Format version 3: a chunk's records laid out by column.
//!
//! The row layout of [`super::chunk`] interleaves every field of every
//! record, so zstd sees times, durations, tasks and page counts as one
//! stream, and most of it is the random low bits of nanosecond times,
//! which it cannot shrink and which blur its model of the rest. Version 3
//! stores the same values transposed, in parts that compress.rs gives a
//! zstd frame each (a frame has its own entropy tables), and one part it
//! does not compress:
//!
//! - the **head**: the row payload's tables as they are, the record count,
//!   the quantum, and the chunk's distinct keys (pid, pid − tgid, comm,
//!   cgroup: a task where it ran);
//! - the **tags**, one byte a record; **dt**, each record's time delta as
//!   its bit length (+128 if negative); **rest**, the bodies of records
//!   without a fixed shape (OOM kills, samples, actions, notes, tags this
//!   build does not know), whole;
//! - per record kind of fixed shape, one **column** per field: the key
//!   index, identities (cgroups, flags) as varints, and for every number
//!   (durations, pages) its bit length, one byte;
//! - the **bits**: the bits of each number below its leading one, packed
//!   without gaps, record by record: noise to zstd, so stored as they are.
//!
//! The transform is exact: [`from_columns`] rebuilds the row payload byte
//! for byte, and the row decoder ([`super::decode`]) does the rest with
//! all its checks. The reader itself uses [`decode_columns`], which reads
//! the columns straight into the same records, and falls back on those
//! two steps for any chunk it declines.
//!
//! ```text
//! head  = tables_len:varint tables  n:varint  quantum:varint
//!         nkeys:varint (pid pid-tgid:zz comm cg)[nkeys]
//! tags  = tag[n]:u8                 (0: a shaped kind whose body is not of its shape)
//! dt    = len[n]:u8                 (bit length of |dt / quantum|, +128 if dt < 0)
//! rest  = per tag-0 record: tag:u8 len:varint body-after-dt;
//!         per record of a kind without a shape: len:varint body-after-dt
//! col   = per record of its kind: key index (varint) | identity (varint)
//!         | bit length (u8) of a number (a time divided by quantum)
//! bits  = per record: dt's bits, then each number field's, below the
//!         leading one, least significant first; zero padding to a byte
//! ```
//!
//! `quantum` is the largest of 1,000 and 1 that divides every time value
//! of the chunk: times that are whole microseconds are stored as such,
//! losslessly (the writer rounds them only when asked).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::chunk::tag;
use super::codec::{CodecError, Cursor, put_bytes, put_varint, put_zigzag};
use super::decode::{Decoded, TableView, checked_duration, known, lost_kind, reclaim_event};
use super::{MAX_CHUNK, Record};
use crate::event::{Brake, Event, Lost, Task, Throttle, ThrottleStart};

/// How a field after `dt` is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    /// pid, pid − tgid, comm, cgroup: four fields, stored as one index
    /// into the chunk's key table.
    Key,
    /// An identity or a flag: a varint, modelled by zstd.
    Id,
    /// A number: its bit length in the column, its other bits in `bits`.
    Num,
    /// Nanoseconds: as `Num`, divided by the chunk's quantum.
    Time,
}

use Field::{Id, Key, Num, Time};

/// Fields of the key: a task and its cgroup.
const KEY: usize = 4;

/// A record kind whose body after `dt` is a fixed number of varints.
struct Schema {
    tag: u8,
    fields: &'static [Field],
}

/// The kinds stored by column, in the order of their columns.
const SCHEMAS: [Schema; 6] = [
    // duration, task (3), cg, over-high cg, reclaim_ns, reclaimed, nr_pages
    Schema {
        tag: tag::THROTTLE,
        fields: &[Time, Key, Key, Key, Key, Id, Time, Num, Num],
    },
    // task (3), cg, over-high cg, usage, high, nr_pages
    Schema {
        tag: tag::THROTTLE_START,
        fields: &[Key, Key, Key, Key, Id, Num, Num, Num],
    },
    // duration, task (3), cg, flags, pages
    Schema {
        tag: tag::RECLAIM,
        fields: &[Time, Key, Key, Key, Key, Id, Num],
    },
    Schema {
        tag: tag::DIRECT_RECLAIM,
        fields: &[Time, Key, Key, Key, Key, Id, Num],
    },
    // task (3), rule cg, signal, throttled, limit, heartbeat age, result
    Schema {
        tag: tag::BRAKE,
        fields: &[Key, Key, Key, Key, Id, Num, Num, Num, Id],
    },
    // kind, count
    Schema {
        tag: tag::LOST,
        fields: &[Id, Num],
    },
];

/// The quanta tried, largest first.
const QUANTA: [u64; 2] = [1_000, 1];
/// A stated quantum above this is damage (a second).
const MAX_QUANTUM: u64 = 1_000_000_000;
/// Keys of one chunk: more is damage (the string table's bound).
const MAX_KEYS: usize = super::decode::MAX_TABLE;

/// A schema's place among the columns, by tag: what the reader looks up
/// per record.
#[derive(Clone, Copy)]
struct Layout {
    first: usize,
    keyed: bool,
    fields: &'static [Field],
}

/// Schemas by tag (all below 8).
fn layouts() -> [Option<Layout>; 8] {
    let mut l = [None; 8];
    for (t, slot) in l.iter_mut().enumerate() {
        *slot = schema(t as u8).map(|(first, s)| Layout {
            first,
            keyed: s.fields.contains(&Key),
            fields: s.fields,
        });
    }
    l
}

/// The schema of tag `t` (never 0) and the index of its first column.
fn schema(t: u8) -> Option<(usize, &'static Schema)> {
    let mut first = 0;
    for s in &SCHEMAS {
        if s.tag == t && t != 0 {
            return Some((first, s));
        }
        first += columns_of(s);
    }
    None
}

/// Columns of a schema: one for its key, one per other field.
fn columns_of(s: &Schema) -> usize {
    s.fields.iter().filter(|f| **f != Key).count() + usize::from(s.fields.contains(&Key))
}

fn all_columns() -> usize {
    SCHEMAS.iter().map(columns_of).sum()
}

/// Bit length of `v`: 0 for 0.
fn bit_len(v: u64) -> u8 {
    (64 - v.leading_zeros()) as u8
}

/// Packs bit fields least significant first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u128,
    n: u32,
}

impl BitWriter<'_> {
    /// The bits of `v` below its leading one.
    fn mantissa(&mut self, v: u64) {
        let len = u32::from(bit_len(v));
        if len > 1 {
            let bits = len - 1;
            self.acc |= u128::from(v & ((1u64 << bits) - 1)) << self.n;
            self.n += bits;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
    }

    fn finish(self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Reads what [`BitWriter`] packed; running out is damage.
struct BitReader<'a> {
    data: &'a [u8],
    /// Bits read so far.
    bit: usize,
}

impl BitReader<'_> {
    /// The value of bit length `len` (at most 64) whose lower bits come next.
    fn value(&mut self, len: u8) -> Result<u64, CodecError> {
        match len {
            0 => Ok(0),
            1..=64 => {
                let bits = u32::from(len) - 1;
                Ok(self.take(bits)? | 1u64 << bits)
            }
            _ => Err(CodecError::Range("bit length")),
        }
    }

    /// The next `bits` (at most 63) bits.
    fn take(&mut self, bits: u32) -> Result<u64, CodecError> {
        if bits == 0 {
            return Ok(0);
        }
        let end = self.bit + bits as usize;
        if end > self.data.len() * 8 {
            return Err(CodecError::Eof);
        }
        let (byte, shift) = (self.bit / 8, (self.bit % 8) as u32);
        // Eight bytes from `byte`, zeros past the end.
        let word = match self.data.get(byte..byte + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().unwrap_or_default()),
            None => {
                let mut w = [0u8; 8];
                let tail = &self.data[byte..];
                w[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(w)
            }
        };
        let mut v = word >> shift;
        if shift + bits > 64 {
            // A ninth byte: it exists, as `end` is within the data.
            v |= u64::from(self.data[byte + 8]) << (64 - shift);
        }
        self.bit = end;
        Ok(v & ((1u64 << bits) - 1))
    }

    /// Whether every byte was used and the padding is zero.
    fn is_done(&self) -> bool {
        let used = self.bit.div_ceil(8);
        let pad_zero = match self.bit % 8 {
            0 => true,
            r => self.data.get(self.bit / 8).is_some_and(|b| b >> r == 0),
        };
        used == self.data.len() && pad_zero
    }
}

/// A multiplicative hash for the key table: keys are a few small
/// integers, hashed once a record (SipHash cost more than the rest of the
/// transposition), and come from our own writer, not an adversary.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Transposes row payloads, keeping its buffers from chunk to chunk.
#[derive(Default)]
pub struct Columnizer {
    tags: Vec<u8>,
    dts: Vec<i64>,
    rest: Vec<u8>,
    /// Per column, its values (key indexes for key columns).
    cols: Vec<Vec<u64>>,
    keys: HashMap<[u64; KEY], u64, BuildHasherDefault<KeyHasher>>,
    key_list: Vec<[u64; KEY]>,
    fields: Vec<u64>,
}

impl Columnizer {
    /// The columnar form of the row payload `row`: [`parts_count`] parts (the
    /// head, the tags, dt, rest, then each schema column) into `parts`,
    /// and the bits. An error (a payload this module did not expect) may
    /// leave them partly written; the caller then stores the row payload.
    pub fn columns(
        &mut self,
        row: &[u8],
        parts: &mut Vec<Vec<u8>>,
        bits: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        parts.resize_with(parts_count(), Vec::new);
        parts.iter_mut().for_each(Vec::clear);
        let mut c = Cursor::new(row);
        skip_tables(&mut c)?;
        let tables = &row[..c.pos()];
        self.tags.clear();
        self.dts.clear();
        self.rest.clear();
        self.cols.resize_with(all_columns(), Vec::new);
        self.cols.iter_mut().for_each(Vec::clear);
        self.keys.clear();
        self.key_list.clear();
        // Bit i: some time value is not a multiple of QUANTA[i].
        let mut odd = 0u32;
        let note = |v: u64, odd: &mut u32| {
            for (i, q) in QUANTA.iter().enumerate() {
                if !v.is_multiple_of(*q) {
                    *odd |= 1 << i;
                }
            }
        };
        while !c.is_empty() {
            let t = c.u8()?;
            let mut b = Cursor::new(c.bytes()?);
            let dt = b.zigzag()?;
            if dt == i64::MIN {
                // Its magnitude has no i64: the reader would refuse it.
                return Err(CodecError::Range("time delta"));
            }
            note(dt.unsigned_abs(), &mut odd);
            self.dts.push(dt);
            let fields = &mut self.fields;
            let fits = schema(t).filter(|(_, s)| {
                fields.clear();
                let mut f = b.clone();
                for _ in s.fields {
                    match f.varint() {
                        Ok(v) => fields.push(v),
                        Err(_) => return false,
                    }
                }
                f.is_empty()
            });
            if let Some((first, s)) = fits {
                let mut col = first;
                let mut key = [0u64; KEY];
                let mut k = 0;
                for (f, &v) in s.fields.iter().zip(&self.fields) {
                    match f {
                        Key => {
                            key[k] = v;
                            k += 1;
                            continue;
                        }
                        Time => note(v, &mut odd),
                        Id | Num => {}
                    }
                    // The key's column comes first.
                    let at = col + usize::from(s.fields.contains(&Key));
                    self.cols[at].push(v);
                    col += 1;
                }
                if k == KEY {
                    let n = self.key_list.len() as u64;
                    let i = *self.keys.entry(key).or_insert(n);
                    if i == n {
                        self.key_list.push(key);
                    }
                    self.cols[first].push(i);
                }
                self.tags.push(t);
            } else {
                let body = b.take(b.remaining())?;
                if schema(t).is_some() || t == 0 {
                    // A body not of its kind's shape: kept whole.
                    self.tags.push(0);
                    self.rest.push(t);
                } else {
                    self.tags.push(t);
                }
                put_bytes(&mut self.rest, body);
            }
        }
        let q = QUANTA
            .iter()
            .enumerate()
            .find(|(i, _)| odd & (1 << i) == 0)
            .map_or(1, |(_, &q)| q);

        let [head, tag_part, dt_part, rest_part, cols @ ..] = &mut parts[..] else {
            return Err(CodecError::Range("parts"));
        };
        put_varint(head, tables.len() as u64);
        head.extend_from_slice(tables);
        put_varint(head, self.tags.len() as u64);
        put_varint(head, q);
        put_varint(head, self.key_list.len() as u64);
        for k in &self.key_list {
            for &v in k {
                put_varint(head, v);
            }
        }
        tag_part.extend_from_slice(&self.tags);
        for &dt in &self.dts {
            let len = bit_len(dt.unsigned_abs() / q);
            dt_part.push(if dt < 0 { len | 0x80 } else { len });
        }
        rest_part.extend_from_slice(&self.rest);
        let mut first = 0;
        for s in &SCHEMAS {
            let keyed = s.fields.contains(&Key);
            if keyed {
                for &i in &self.cols[first] {
                    put_varint(&mut cols[first], i);
                }
            }
            let others = s.fields.iter().filter(|f| **f != Key);
            for (k, f) in others.enumerate() {
                let at = first + usize::from(keyed) + k;
                let (values, col) = (&self.cols[at], &mut cols[at]);
                match f {
                    Id => values.iter().for_each(|&v| put_varint(col, v)),
                    Num => col.extend(values.iter().map(|&v| bit_len(v))),
                    Time => col.extend(values.iter().map(|&v| bit_len(v / q))),
                    Key => {}
                }
            }
            first += columns_of(s);
        }

        // The bits, record by record.
        let mut w = BitWriter {
            out: bits,
            acc: 0,
            n: 0,
        };
        let layouts = layouts();
        // Per tag, the next record's index in its columns.
        let mut next = [0usize; 8];
        for (&t, &dt) in self.tags.iter().zip(&self.dts) {
            w.mantissa(dt.unsigned_abs() / q);
            let Some(l) = layouts.get(usize::from(t)).copied().flatten() else {
                continue;
            };
            let j = next[usize::from(t)];
            next[usize::from(t)] += 1;
            let others = l.fields.iter().filter(|f| **f != Key);
            for (k, f) in others.enumerate() {
                let v = self.cols[l.first + usize::from(l.keyed) + k][j];
                match f {
                    Num => w.mantissa(v),
                    Time => w.mantissa(v / q),
                    Id | Key => {}
                }
            }
        }
        w.finish();
        Ok(())
    }
}

/// Steps over a row payload's string and cgroup tables.
fn skip_tables(c: &mut Cursor<'_>) -> Result<(), CodecError> {
    let n = c.varint()?;
    for _ in 0..n {
        c.bytes()?;
    }
    let n = c.varint()?;
    for _ in 0..n {
        c.varint()?;
        c.varint()?;
    }
    Ok(())
}

/// Parts of a chunk's columns: the head, the tags, dt, rest, and each
/// schema column.
pub fn parts_count() -> usize {
    4 + all_columns()
}

/// The head of a chunk by column, read and checked as both decoders
/// need it: the parts, the tables, the record count (one tag each), the
/// time quantum, and a cursor at the `nkeys` keys.
struct Head<'a> {
    tags: &'a [u8],
    dts: &'a [u8],
    rest: &'a [u8],
    cols: &'a [&'a [u8]],
    tables: &'a [u8],
    n: usize,
    q: u64,
    nkeys: usize,
    keys: Cursor<'a>,
}

impl<'a> Head<'a> {
    fn read(parts: &'a [&'a [u8]]) -> Result<Self, CodecError> {
        let [head, tags, dts, rest, cols @ ..] = parts else {
            return Err(CodecError::Range("parts"));
        };
        if cols.len() != all_columns() {
            return Err(CodecError::Range("parts"));
        }
        let mut c = Cursor::new(head);
        let tables = c.bytes()?;
        let n = usize::try_from(c.varint()?).map_err(|_| CodecError::Range("record count"))?;
        if n != tags.len() {
            return Err(CodecError::Range("record count"));
        }
        let q = c.varint()?;
        if q == 0 || q > MAX_QUANTUM {
            return Err(CodecError::Range("quantum"));
        }
        let nkeys = usize::try_from(c.varint()?).map_err(|_| CodecError::Range("key count"))?;
        if nkeys > MAX_KEYS || nkeys > c.remaining() / KEY {
            return Err(CodecError::Range("key count"));
        }
        Ok(Self {
            tags,
            dts,
            rest,
            cols,
            tables,
            n,
            q,
            nkeys,
            keys: c,
        })
    }
}

/// Rebuilds the row payload of the columnar `parts` and `bits` into `out`
/// (cleared first). Every length and index is checked against the bytes
/// present, the result is never larger than [`MAX_CHUNK`], and a column
/// with values left over or missing is damage.
pub fn from_columns(parts: &[&[u8]], bits: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.clear();
    let Head {
        tags,
        dts,
        rest,
        cols,
        tables,
        q,
        nkeys,
        keys: mut c,
        ..
    } = Head::read(parts)?;
    let mut keys = Vec::with_capacity(nkeys);
    for _ in 0..nkeys {
        keys.push([c.varint()?, c.varint()?, c.varint()?, c.varint()?]);
    }
    if !c.is_empty() {
        return Err(CodecError::Corrupt("bytes after the keys"));
    }
    let mut dts = Cursor::new(dts);
    let mut rest = Cursor::new(rest);
    let mut cols: Vec<Cursor<'_>> = cols.iter().map(|c| Cursor::new(c)).collect();
    let mut bits = BitReader { data: bits, bit: 0 };
    out.reserve((parts.iter().map(|p| p.len()).sum::<usize>() * 2).min(MAX_CHUNK));
    out.extend_from_slice(tables);
    let layouts = layouts();
    for &t in tags {
        // The body goes straight after its tag and a one-byte length,
        // moved on in the rare case its length takes more.
        let at = out.len();
        out.extend_from_slice(&[t, 0]);
        let e = dts.u8()?;
        let v = bits
            .value(e & 0x7f)?
            .checked_mul(q)
            .and_then(|v| i64::try_from(v).ok())
            .ok_or(CodecError::Range("time delta"))?;
        put_zigzag(out, if e & 0x80 != 0 { -v } else { v });
        match layouts.get(usize::from(t)).copied().flatten() {
            Some(l) => {
                let key = if l.keyed {
                    let i = cols[l.first].varint()?;
                    *usize::try_from(i)
                        .ok()
                        .and_then(|i| keys.get(i))
                        .ok_or(CodecError::Range("key index"))?
                } else {
                    [0; KEY]
                };
                let mut keys_used = key.iter();
                let mut col = cols[l.first + usize::from(l.keyed)..].iter_mut();
                for f in l.fields {
                    let v = match f {
                        Key => keys_used.next().copied().unwrap_or(0),
                        _ => {
                            let c = col.next().ok_or(CodecError::Range("columns"))?;
                            match f {
                                Id => c.varint()?,
                                Num => bits.value(c.u8()?)?,
                                _ => bits
                                    .value(c.u8()?)?
                                    .checked_mul(q)
                                    .ok_or(CodecError::Range("time"))?,
                            }
                        }
                    };
                    put_varint(out, v);
                }
            }
            None => {
                if t == 0 {
                    out[at] = rest.u8()?;
                }
                out.extend_from_slice(rest.bytes()?);
            }
        }
        let len = out.len() - at - 2;
        if len < 0x80 {
            out[at + 1] = len as u8;
        } else {
            let mut l = Vec::with_capacity(10);
            put_varint(&mut l, len as u64);
            out.splice(at + 1..at + 2, l);
        }
        if out.len() > MAX_CHUNK {
            return Err(CodecError::Range("chunk length"));
        }
    }
    if !(dts.is_empty() && rest.is_empty() && cols.iter().all(Cursor::is_empty) && bits.is_done()) {
        return Err(CodecError::Corrupt("column lengths"));
    }
    Ok(())
}

mod direct;
pub use direct::decode_columns;

#[cfg(test)]
#[path = "columns_tests.rs"]
mod tests;
