//! Chunks: a self-contained batch of records with its own string and cgroup
//! tables, so any chunk can be decoded without the others.
//!
//! ```text
//! chunk   = "MTCK" len:u32le base_ts:u64le count:u32le crc32:u32le payload
//! payload = codec:u8 raw_len:varint data          (versions 2 and 3, compress.rs)
//! raw     = nstrings (bytes)*  ncgroups (id strindex)*  record*
//! record  = tag:u8 len:varint body
//! ```
//!
//! Version 1 chunks carry `raw` as the payload itself; version 2 `raw`
//! compressed; version 3 `raw` transposed by column (columns.rs), then
//! compressed. The builder always builds `raw`.
//!
//! Bodies are varints and begin with the record's time as a zigzag delta
//! from the previous record's (the chunk's base time for the first), so the
//! chain stays intact across records a reader skips. Then
//! durations instead of start times, comms and cgroup paths as table
//! indexes. A tag this build does not know is skipped by its length.

use std::collections::HashMap;
use std::sync::Arc;

use super::codec::{put_bytes, put_varint, put_zigzag};
use super::compress::Compressor;
use super::{Action, CHUNK_MAGIC, Sample};
use crate::event::{Event, LostKind, Task};
use crate::sys::cgroupfs::Psi;

pub use super::decode::{Decoded, decode};

/// Decodes a version-2 or -3 chunk payload (rows or columns, compressed
/// or stored) whole: what the reader does after the checksum, for the
/// fuzz targets. With debug assertions (the fuzz builds), a chunk by
/// column decoded straight into records is checked against its rows.
pub fn decode_v2(
    payload: &[u8],
    base_ts: u64,
    expected: u32,
) -> Result<Decoded, super::codec::CodecError> {
    use super::compress::{Decompressor, Unframed};
    let mut d = Decompressor::default();
    let max_rows = super::stream::EAGER_BYTES;
    match d.unframe_records(payload, super::FORMAT_VERSION, base_ts, expected, max_rows)? {
        Unframed::Rows(raw) => decode(raw, base_ts, expected),
        Unframed::Records(direct) => {
            if cfg!(debug_assertions) {
                let mut d = Decompressor::default();
                let rows = d
                    .unframe(payload, super::FORMAT_VERSION)
                    .and_then(|raw| decode(raw, base_ts, expected));
                assert!(
                    rows.is_ok_and(|r| r.records == direct.records
                        && r.cgroups == direct.cgroups
                        && r.unknown == direct.unknown),
                    "the columns decode as their rows do"
                );
            }
            Ok(direct)
        }
    }
}

/// Record tags.
pub(super) mod tag {
    pub const THROTTLE: u8 = 1;
    pub const THROTTLE_START: u8 = 2;
    pub const RECLAIM: u8 = 3;
    pub const DIRECT_RECLAIM: u8 = 4;
    pub const OOM_KILL: u8 = 5;
    pub const BRAKE: u8 = 6;
    pub const LOST: u8 = 7;
    pub const SAMPLE: u8 = 16;
    pub const ACTION: u8 = 17;
    pub const NOTE: u8 = 18;
}

/// Accumulates records into one chunk. Its buffers and compression
/// context are kept from chunk to chunk.
#[derive(Default)]
pub struct ChunkBuilder {
    base_ts: Option<u64>,
    last_ts: u64,
    strings: Vec<Vec<u8>>,
    string_idx: HashMap<Vec<u8>, u64>,
    string_bytes: usize,
    cgroups: Vec<(u64, u64)>,
    cgroup_idx: HashMap<u64, u64>,
    records: Vec<u8>,
    body: Vec<u8>,
    count: u32,
    raw: Vec<u8>,
    compressor: Compressor,
    /// Times are rounded to a multiple of this many ns (0 or 1: kept).
    quantum: u64,
}

/// Resolves a cgroup id to its path while encoding.
pub type Paths<'a> = dyn FnMut(u64) -> Option<Arc<str>> + 'a;

impl ChunkBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rounds every record's times (and the throttle and reclaim
    /// durations they imply) to the nearest multiple of `ns` from now
    /// on; 1 keeps them exact. Version 3 then stores them divided by it
    /// (columns.rs).
    pub fn round_times_to(&mut self, ns: u64) {
        self.quantum = ns;
    }

    fn round(&self, v: u64) -> u64 {
        match self.quantum {
            0 | 1 => v,
            q => v.saturating_add(q / 2) / q * q,
        }
    }

    /// `e` with its times rounded to the quantum. Start and end are
    /// rounded on their own, so a duration moves by less than a quantum
    /// and intervals that touched still touch.
    fn rounded(&self, e: &Event) -> Event {
        let r = |v| self.round(v);
        let mut e = *e;
        match &mut e {
            Event::Throttle(t) => {
                t.ts_ns = r(t.ts_ns);
                t.start_ns = r(t.start_ns);
                // Never more reclaim than the rounded episode holds.
                t.reclaim_ns = r(t.reclaim_ns).min(t.ts_ns.saturating_sub(t.start_ns));
            }
            Event::Reclaim(x) | Event::DirectReclaim(x) => {
                x.ts_ns = r(x.ts_ns);
                x.start_ns = r(x.start_ns);
            }
            Event::ThrottleStart(s) => s.ts_ns = r(s.ts_ns),
            Event::OomKill(o) => o.ts_ns = r(o.ts_ns),
            Event::Brake(b) => b.ts_ns = r(b.ts_ns),
            Event::Lost(l) => l.ts_ns = r(l.ts_ns),
        }
        e
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the chunk would take now (roughly).
    pub fn len(&self) -> usize {
        self.records.len() + self.string_bytes + self.cgroups.len() * 6
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    fn string(&mut self, s: &[u8]) -> u64 {
        if let Some(&i) = self.string_idx.get(s) {
            return i;
        }
        let i = self.strings.len() as u64;
        self.string_bytes += s.len() + 2;
        self.strings.push(s.to_vec());
        self.string_idx.insert(s.to_vec(), i);
        i
    }

    /// Table index + 1 of a cgroup id; 0 for "none".
    fn cgroup(&mut self, id: u64, paths: &mut Paths<'_>) -> u64 {
        if id == 0 {
            return 0;
        }
        if let Some(&i) = self.cgroup_idx.get(&id) {
            return i + 1;
        }
        let path = paths(id).map(|p| p.to_string()).unwrap_or_default();
        let s = self.string(path.as_bytes());
        let i = self.cgroups.len() as u64;
        self.cgroups.push((id, s));
        self.cgroup_idx.insert(id, i);
        i + 1
    }

    fn task(&mut self, t: &Task) {
        let comm = self.string(t.comm.as_bytes());
        let mut b = std::mem::take(&mut self.body);
        put_varint(&mut b, u64::from(t.pid));
        put_zigzag(&mut b, i64::from(t.pid) - i64::from(t.tgid));
        put_varint(&mut b, comm);
        self.body = b;
    }

    fn start(&mut self, ts: u64) {
        let base = *self.base_ts.get_or_insert(ts);
        if self.count == 0 {
            self.last_ts = base;
        }
        self.body.clear();
        put_zigzag(&mut self.body, ts as i64 - self.last_ts as i64);
        self.last_ts = ts;
    }

    fn end(&mut self, t: u8) {
        self.records.push(t);
        put_varint(&mut self.records, self.body.len() as u64);
        self.records.extend_from_slice(&self.body);
        self.count += 1;
    }

    fn v(&mut self, x: u64) {
        put_varint(&mut self.body, x);
    }

    pub fn event(&mut self, e: &Event, paths: &mut Paths<'_>) {
        if self.quantum > 1 {
            let e = self.rounded(e);
            self.encode(&e, paths);
        } else {
            self.encode(e, paths);
        }
    }

    fn encode(&mut self, e: &Event, paths: &mut Paths<'_>) {
        self.start(e.ts_ns());
        match e {
            Event::Throttle(t) => {
                self.v(t.duration_ns());
                self.task(&t.task);
                let cg = self.cgroup(t.memcg_id, paths);
                let oh = self.cgroup(t.over_high_id, paths);
                self.v(cg);
                self.v(oh);
                self.v(t.reclaim_ns);
                self.v(t.reclaimed_pages);
                self.v(u64::from(t.nr_pages));
                self.end(tag::THROTTLE);
            }
            Event::ThrottleStart(s) => {
                self.task(&s.task);
                let cg = self.cgroup(s.memcg_id, paths);
                let oh = self.cgroup(s.over_high_id, paths);
                self.v(cg);
                self.v(oh);
                self.v(s.over_high_usage_pages);
                self.v(s.over_high_limit_pages);
                self.v(u64::from(s.nr_pages));
                self.end(tag::THROTTLE_START);
            }
            Event::Reclaim(r) | Event::DirectReclaim(r) => {
                self.v(r.duration_ns());
                self.task(&r.task);
                let cg = self.cgroup(r.memcg_id, paths);
                self.v(cg);
                self.v(u64::from(r.memcg_exact) | (u64::from(r.in_throttle) << 1));
                self.v(r.nr_reclaimed);
                self.end(if matches!(e, Event::Reclaim(_)) {
                    tag::RECLAIM
                } else {
                    tag::DIRECT_RECLAIM
                });
            }
            Event::OomKill(o) => {
                self.task(&o.victim);
                self.task(&o.invoker);
                let v = self.cgroup(o.victim_memcg_id, paths);
                let oc = self.cgroup(o.oom_memcg_id, paths);
                self.v(v);
                self.v(oc);
                match o.rss_pages {
                    Some(r) => {
                        self.v(1);
                        self.v(r.anon);
                        self.v(r.file);
                        self.v(r.shmem);
                    }
                    None => self.v(0),
                }
                self.end(tag::OOM_KILL);
            }
            Event::Brake(b) => {
                self.task(&b.task);
                let cg = self.cgroup(b.rule_memcg_id, paths);
                self.v(cg);
                self.v(u64::from(b.signal));
                self.v(b.throttled_ns);
                self.v(b.limit_ns);
                self.v(b.heartbeat_age_ns);
                put_zigzag(&mut self.body, b.result);
                self.end(tag::BRAKE);
            }
            Event::Lost(l) => {
                self.v(lost_code(l.kind));
                self.v(l.count);
                self.end(tag::LOST);
            }
        }
    }

    pub fn sample(&mut self, s: &Sample, paths: &mut Paths<'_>) {
        self.start(self.round(s.ts_ns));
        let h = &s.host;
        for x in [h.mem_total, h.mem_available, h.swap_total, h.swap_free] {
            self.v(x);
        }
        self.psi(h.pressure);
        self.v(s.cgroups.len() as u64);
        for c in &s.cgroups {
            let cg = self.cgroup(c.id, paths);
            self.v(cg);
            for x in [c.mem.current, c.mem.high, c.mem.max] {
                self.v(x.map_or(0, |v| v.saturating_add(1)));
            }
            for x in c.mem.events.fields() {
                self.v(x.unwrap_or(0));
            }
            self.psi(c.mem.pressure);
            self.v(c.top.len() as u64);
            for p in &c.top {
                let comm = self.string(p.comm.as_bytes());
                self.v(u64::from(p.pid));
                self.v(comm);
                self.v(p.rss_bytes);
            }
        }
        // Appended after the fields version 1 readers know (they skip the
        // rest of a body): per cgroup, a bit per memory.events counter that
        // was not measured, so it reads back as None rather than 0.
        self.v(s.cgroups.len() as u64);
        for c in &s.cgroups {
            let mask = c
                .mem
                .events
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.is_none())
                .fold(0u64, |m, (i, _)| m | 1 << i);
            self.v(mask);
        }
        self.end(tag::SAMPLE);
    }

    fn psi(&mut self, p: Option<Psi>) {
        match p {
            Some(p) => {
                self.v(1);
                self.v(p.some_total_us);
                self.v(p.full_total_us);
                self.v((p.some_avg10 * 100.0).round().max(0.0) as u64);
                self.v((p.full_avg10 * 100.0).round().max(0.0) as u64);
            }
            None => self.v(0),
        }
    }

    pub fn action(&mut self, a: &Action, paths: &mut Paths<'_>) {
        self.start(self.round(a.ts_ns));
        let cg = self.cgroup(a.cgroup_id, paths);
        let kind = self.string(a.kind.as_bytes());
        self.v(cg);
        self.v(kind);
        put_bytes(&mut self.body, a.details.as_bytes());
        self.end(tag::ACTION);
    }

    pub fn note(&mut self, ts_ns: u64, text: &str) {
        self.start(self.round(ts_ns));
        put_bytes(&mut self.body, text.as_bytes());
        self.end(tag::NOTE);
    }

    /// The framed chunk with its payload laid out and compressed by
    /// `frame` (one of the [`Compressor`]'s layouts), and an empty
    /// builder. None when empty.
    fn finish_by(&mut self, frame: fn(&mut Compressor, &[u8], &mut Vec<u8>)) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        self.raw_payload();
        let mut payload = Vec::with_capacity(self.raw.len() / 2 + 16);
        frame(&mut self.compressor, &self.raw, &mut payload);
        Some(self.framed(&payload))
    }

    /// The framed chunk (version 3: by column, compressed), and an empty
    /// builder. None when empty.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.finish_by(Compressor::frame)
    }

    /// The chunk by column whatever its size (small ones are written as
    /// rows when that is smaller), for tests of that layout.
    #[cfg(test)]
    pub fn finish_columns(&mut self) -> Option<Vec<u8>> {
        self.finish_by(Compressor::frame_columns)
    }

    /// The chunk as version 2 wrote it (rows, compressed), for tests of
    /// old files.
    #[cfg(test)]
    pub fn finish_v2(&mut self) -> Option<Vec<u8>> {
        self.finish_by(Compressor::frame_v2)
    }

    /// The chunk as version 1 wrote it (uncompressed), for tests of old
    /// files.
    #[cfg(test)]
    pub fn finish_v1(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        self.raw_payload();
        let raw = std::mem::take(&mut self.raw);
        Some(self.framed(&raw))
    }

    /// The tables and records, into `self.raw`.
    fn raw_payload(&mut self) {
        debug_assert!(
            self.len() <= super::MAX_CHUNK,
            "writers flush at FLUSH_BYTES"
        );
        let want = self.len() + 16;
        let payload = &mut self.raw;
        payload.clear();
        payload.reserve(want);
        put_varint(payload, self.strings.len() as u64);
        for s in &self.strings {
            put_bytes(payload, s);
        }
        put_varint(payload, self.cgroups.len() as u64);
        for &(id, s) in &self.cgroups {
            put_varint(payload, id);
            put_varint(payload, s);
        }
        payload.extend_from_slice(&self.records);
    }

    /// Frames `payload` with this chunk's header, and empties the builder.
    fn framed(&mut self, payload: &[u8]) -> Vec<u8> {
        let base = self.base_ts.unwrap_or(0);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&base.to_le_bytes());
        crc.update(&self.count.to_le_bytes());
        crc.update(payload);
        let mut out = Vec::with_capacity(payload.len() + super::CHUNK_HEADER);
        out.extend_from_slice(CHUNK_MAGIC);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(payload);
        self.clear();
        out
    }

    /// Empties the builder, keeping its allocations.
    fn clear(&mut self) {
        self.base_ts = None;
        self.last_ts = 0;
        self.strings.clear();
        self.string_idx.clear();
        self.string_bytes = 0;
        self.cgroups.clear();
        self.cgroup_idx.clear();
        self.records.clear();
        self.body.clear();
        self.count = 0;
    }
}

fn lost_code(k: LostKind) -> u64 {
    match k {
        LostKind::ThrottleStart => 1,
        LostKind::Throttle => 2,
        LostKind::Reclaim => 3,
        LostKind::DirectReclaim => 4,
        LostKind::OomKill => 5,
        LostKind::Brake => 6,
        LostKind::Unknown => 0,
    }
}
