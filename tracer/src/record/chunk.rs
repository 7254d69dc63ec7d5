//! Chunks: a self-contained batch of records with its own string and cgroup
//! tables, so any chunk can be decoded without the others.
//!
//! ```text
//! chunk   = "MTCK" len:u32le base_ts:u64le count:u32le crc32:u32le payload
//! payload = nstrings (bytes)*  ncgroups (id strindex)*  record*
//! record  = tag:u8 len:varint body
//! ```
//!
//! Bodies are varints and begin with the record's time as a zigzag delta
//! from the previous record's (the chunk's base time for the first), so the
//! chain stays intact across records a reader skips. Then
//! durations instead of start times, comms and cgroup paths as table
//! indexes. A tag this build does not know is skipped by its length.

use std::collections::HashMap;
use std::sync::Arc;

use super::codec::{CodecError, Cursor, put_bytes, put_varint, put_zigzag};
use super::{Action, CHUNK_MAGIC, CgroupSample, ProcSample, Record, Sample};
use crate::event::{
    Brake, Comm, Event, Lost, LostKind, OomKill, Reclaim, RssPages, Task, Throttle, ThrottleStart,
};
use crate::sys::cgroupfs::{CgroupMemory, HostMemory, MemEvents, Psi};

mod tag {
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

/// Accumulates records into one chunk.
#[derive(Default)]
pub struct ChunkBuilder {
    base_ts: Option<u64>,
    last_ts: u64,
    strings: Vec<Vec<u8>>,
    string_idx: HashMap<Vec<u8>, u64>,
    cgroups: Vec<(u64, u64)>,
    cgroup_idx: HashMap<u64, u64>,
    records: Vec<u8>,
    body: Vec<u8>,
    count: u32,
}

/// Resolves a cgroup id to its path while encoding.
pub type Paths<'a> = dyn FnMut(u64) -> Option<Arc<str>> + 'a;

impl ChunkBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the chunk would take now (roughly).
    pub fn len(&self) -> usize {
        self.records.len()
            + self.strings.iter().map(|s| s.len() + 2).sum::<usize>()
            + self.cgroups.len() * 6
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    fn string(&mut self, s: &[u8]) -> u64 {
        if let Some(&i) = self.string_idx.get(s) {
            return i;
        }
        let i = self.strings.len() as u64;
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
        self.start(s.ts_ns);
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
        self.start(a.ts_ns);
        let cg = self.cgroup(a.cgroup_id, paths);
        let kind = self.string(a.kind.as_bytes());
        self.v(cg);
        self.v(kind);
        put_bytes(&mut self.body, a.details.as_bytes());
        self.end(tag::ACTION);
    }

    pub fn note(&mut self, ts_ns: u64, text: &str) {
        self.start(ts_ns);
        put_bytes(&mut self.body, text.as_bytes());
        self.end(tag::NOTE);
    }

    /// The framed chunk, and a fresh builder. None when empty.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        debug_assert!(
            self.len() <= super::MAX_CHUNK,
            "writers flush at FLUSH_BYTES"
        );
        let mut payload = Vec::with_capacity(self.len() + 16);
        put_varint(&mut payload, self.strings.len() as u64);
        for s in &self.strings {
            put_bytes(&mut payload, s);
        }
        put_varint(&mut payload, self.cgroups.len() as u64);
        for &(id, s) in &self.cgroups {
            put_varint(&mut payload, id);
            put_varint(&mut payload, s);
        }
        payload.extend_from_slice(&self.records);
        let base = self.base_ts.unwrap_or(0);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&base.to_le_bytes());
        crc.update(&self.count.to_le_bytes());
        crc.update(&payload);
        let mut out = Vec::with_capacity(payload.len() + super::CHUNK_HEADER);
        out.extend_from_slice(CHUNK_MAGIC);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&payload);
        *self = Self::default();
        Some(out)
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

fn lost_kind(c: u64) -> LostKind {
    match c {
        1 => LostKind::ThrottleStart,
        2 => LostKind::Throttle,
        3 => LostKind::Reclaim,
        4 => LostKind::DirectReclaim,
        5 => LostKind::OomKill,
        6 => LostKind::Brake,
        _ => LostKind::Unknown,
    }
}

/// A decoded chunk.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub cgroups: Vec<(u64, String)>,
    /// Records with a tag this build does not know.
    pub unknown: u64,
}

struct Tables {
    strings: Vec<String>,
    cgroups: Vec<u64>,
}

impl Tables {
    fn string(&self, i: u64) -> Result<&str, CodecError> {
        self.strings
            .get(usize::try_from(i).map_err(|_| CodecError::Range("string index"))?)
            .map(String::as_str)
            .ok_or(CodecError::Range("string index"))
    }

    /// Cgroup id of an index + 1 (0: none).
    fn cgroup(&self, i: u64) -> Result<u64, CodecError> {
        if i == 0 {
            return Ok(0);
        }
        self.cgroups
            .get(usize::try_from(i - 1).map_err(|_| CodecError::Range("cgroup index"))?)
            .copied()
            .ok_or(CodecError::Range("cgroup index"))
    }
}

fn task(c: &mut Cursor<'_>, t: &Tables) -> Result<Task, CodecError> {
    let pid = c.u32("pid")?;
    let tgid = i64::from(pid)
        .checked_sub(c.zigzag()?)
        .ok_or(CodecError::Range("tgid"))?;
    let tgid = u32::try_from(tgid).map_err(|_| CodecError::Range("tgid"))?;
    let comm = Comm::new(t.string(c.varint()?)?);
    Ok(Task { pid, tgid, comm })
}

fn psi(c: &mut Cursor<'_>) -> Result<Option<Psi>, CodecError> {
    if c.varint()? == 0 {
        return Ok(None);
    }
    Ok(Some(Psi {
        some_total_us: c.varint()?,
        full_total_us: c.varint()?,
        some_avg10: c.varint()? as f32 / 100.0,
        full_avg10: c.varint()? as f32 / 100.0,
    }))
}

/// Caps counts read from the data so garbage cannot make us allocate much.
fn count(c: &mut Cursor<'_>, what: &'static str) -> Result<usize, CodecError> {
    let n = usize::try_from(c.varint()?).map_err(|_| CodecError::Range(what))?;
    if n > c.remaining() {
        return Err(CodecError::Range(what));
    }
    Ok(n)
}

/// Capacity for `n` elements of at least `min_bytes` encoded each: never
/// more than the remaining bytes could hold.
fn capacity(c: &Cursor<'_>, n: usize, min_bytes: usize) -> usize {
    n.min(c.remaining() / min_bytes.max(1))
}

/// Longest span a record may claim: nothing the kernel does takes an hour.
const MAX_DURATION_NS: u64 = 3_600_000_000_000;

fn duration(c: &mut Cursor<'_>) -> Result<u64, CodecError> {
    let d = c.varint()?;
    if d > MAX_DURATION_NS {
        return Err(CodecError::Range("duration"));
    }
    Ok(d)
}

/// Decodes a chunk's payload.
pub fn decode(payload: &[u8], base_ts: u64, expected: u32) -> Result<Decoded, CodecError> {
    let mut c = Cursor::new(payload);
    let n = count(&mut c, "string count")?;
    let mut strings = Vec::with_capacity(capacity(&c, n, 1));
    for _ in 0..n {
        strings.push(String::from_utf8_lossy(c.bytes()?).into_owned());
    }
    let n = count(&mut c, "cgroup count")?;
    let mut ids = Vec::with_capacity(capacity(&c, n, 2));
    let mut out = Decoded::default();
    for _ in 0..n {
        let id = c.varint()?;
        let path = strings
            .get(usize::try_from(c.varint()?).map_err(|_| CodecError::Range("string index"))?)
            .cloned()
            .ok_or(CodecError::Range("string index"))?;
        ids.push(id);
        out.cgroups.push((id, path));
    }
    let t = Tables {
        strings,
        cgroups: ids,
    };
    let mut last = base_ts;
    let mut seen = 0u32;
    while !c.is_empty() {
        let tg = c.u8()?;
        let body = c.bytes()?;
        seen += 1;
        let mut b = Cursor::new(body);
        // Every record, known or not, starts with its time delta.
        let ts = (last as i64).wrapping_add(b.zigzag()?) as u64;
        last = ts;
        if !matches!(tg, tag::THROTTLE..=tag::LOST | tag::SAMPLE..=tag::NOTE) {
            out.unknown += 1;
            continue;
        }
        let rec = match tg {
            tag::THROTTLE => {
                let dur = duration(&mut b)?;
                let task = task(&mut b, &t)?;
                Record::Event(Event::Throttle(Throttle {
                    ts_ns: ts,
                    start_ns: ts.saturating_sub(dur),
                    task,
                    memcg_id: t.cgroup(b.varint()?)?,
                    over_high_id: t.cgroup(b.varint()?)?,
                    reclaim_ns: b.varint()?,
                    reclaimed_pages: b.varint()?,
                    nr_pages: b.u32("nr_pages")?,
                }))
            }
            tag::THROTTLE_START => {
                let task = task(&mut b, &t)?;
                Record::Event(Event::ThrottleStart(ThrottleStart {
                    ts_ns: ts,
                    task,
                    memcg_id: t.cgroup(b.varint()?)?,
                    over_high_id: t.cgroup(b.varint()?)?,
                    over_high_usage_pages: b.varint()?,
                    over_high_limit_pages: b.varint()?,
                    nr_pages: b.u32("nr_pages")?,
                }))
            }
            tag::RECLAIM | tag::DIRECT_RECLAIM => {
                let dur = duration(&mut b)?;
                let task = task(&mut b, &t)?;
                let memcg_id = t.cgroup(b.varint()?)?;
                let flags = b.varint()?;
                let r = Reclaim {
                    ts_ns: ts,
                    start_ns: ts.saturating_sub(dur),
                    task,
                    memcg_id,
                    memcg_exact: flags & 1 != 0,
                    in_throttle: flags & 2 != 0,
                    nr_reclaimed: b.varint()?,
                };
                Record::Event(if tg == tag::RECLAIM {
                    Event::Reclaim(r)
                } else {
                    Event::DirectReclaim(r)
                })
            }
            tag::OOM_KILL => {
                let victim = task(&mut b, &t)?;
                let invoker = task(&mut b, &t)?;
                let victim_memcg_id = t.cgroup(b.varint()?)?;
                let oom_memcg_id = t.cgroup(b.varint()?)?;
                let rss_pages = if b.varint()? == 1 {
                    Some(RssPages {
                        anon: b.varint()?,
                        file: b.varint()?,
                        shmem: b.varint()?,
                    })
                } else {
                    None
                };
                Record::Event(Event::OomKill(OomKill {
                    ts_ns: ts,
                    victim,
                    invoker,
                    victim_memcg_id,
                    oom_memcg_id,
                    rss_pages,
                }))
            }
            tag::BRAKE => {
                let task = task(&mut b, &t)?;
                Record::Event(Event::Brake(Brake {
                    ts_ns: ts,
                    task,
                    rule_memcg_id: t.cgroup(b.varint()?)?,
                    signal: b.u32("signal")?,
                    throttled_ns: b.varint()?,
                    limit_ns: b.varint()?,
                    heartbeat_age_ns: b.varint()?,
                    result: b.zigzag()?,
                }))
            }
            tag::LOST => Record::Event(Event::Lost(Lost {
                ts_ns: ts,
                kind: lost_kind(b.varint()?),
                count: b.varint()?,
            })),
            tag::SAMPLE => {
                let mut host = HostMemory {
                    mem_total: b.varint()?,
                    mem_available: b.varint()?,
                    swap_total: b.varint()?,
                    swap_free: b.varint()?,
                    pressure: None,
                };
                host.pressure = psi(&mut b)?;
                let n = count(&mut b, "cgroup samples")?;
                let mut cgroups = Vec::with_capacity(capacity(&b, n, 11));
                for _ in 0..n {
                    let id = t.cgroup(b.varint()?)?;
                    let mut lim = || b.varint().map(|v| v.checked_sub(1));
                    let (current, high, max) = (lim()?, lim()?, lim()?);
                    let mut fields = [None; 5];
                    for f in &mut fields {
                        *f = Some(b.varint()?);
                    }
                    let events = MemEvents::from_fields(fields);
                    let pressure = psi(&mut b)?;
                    let k = count(&mut b, "processes")?;
                    let mut top = Vec::with_capacity(capacity(&b, k, 3));
                    for _ in 0..k {
                        let pid = b.u32("pid")?;
                        let comm = t.string(b.varint()?)?.to_string();
                        top.push(ProcSample {
                            pid,
                            comm,
                            rss_bytes: b.varint()?,
                        });
                    }
                    cgroups.push(CgroupSample {
                        id,
                        mem: CgroupMemory {
                            current,
                            high,
                            max,
                            events,
                            pressure,
                        },
                        top,
                    });
                }
                // Older writers stop here: every counter was measured.
                if !b.is_empty() {
                    let n = count(&mut b, "unmeasured masks")?;
                    if n != cgroups.len() {
                        return Err(CodecError::Range("unmeasured masks"));
                    }
                    for c in &mut cgroups {
                        let mask = b.varint()?;
                        let mut f = c.mem.events.fields();
                        for (i, x) in f.iter_mut().enumerate() {
                            if mask & (1 << i) != 0 {
                                *x = None;
                            }
                        }
                        c.mem.events = MemEvents::from_fields(f);
                    }
                }
                Record::Sample(Sample {
                    ts_ns: ts,
                    host,
                    cgroups,
                })
            }
            tag::ACTION => {
                let cgroup_id = t.cgroup(b.varint()?)?;
                let kind = t.string(b.varint()?)?.to_string();
                let details = String::from_utf8_lossy(b.bytes()?).into_owned();
                Record::Action(Action {
                    ts_ns: ts,
                    cgroup_id,
                    kind,
                    details,
                })
            }
            _ => Record::Note {
                ts_ns: ts,
                text: String::from_utf8_lossy(b.bytes()?).into_owned(),
            },
        };
        out.records.push(rec);
    }
    if seen != expected {
        return Err(CodecError::Range("record count"));
    }
    Ok(out)
}
