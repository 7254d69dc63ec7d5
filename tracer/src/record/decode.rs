//! Decoding a chunk's payload (the layout [`super::chunk`] writes) back
//! into records, one at a time.
//!
//! [`Records`] is a cursor over one payload: the tables are read first,
//! then each call decodes the next record, so a reader can hand records
//! on without holding a whole chunk's worth of them. Every count, length
//! and index read from the data is checked against the bytes that could
//! hold it: garbage is an error, never an allocation or a panic.

use super::chunk::tag;
use super::codec::{CodecError, Cursor};
use super::{Action, CgroupSample, ProcSample, Record, Sample};
use crate::event::{
    Brake, Comm, Event, Lost, LostKind, OomKill, Reclaim, RssPages, Task, Throttle, ThrottleStart,
};
use crate::sys::cgroupfs::{CgroupMemory, HostMemory, MemEvents, Psi};

/// At most this many strings or cgroups in one chunk's tables. A chunk
/// the writer flushes at 256 KiB holds far fewer; the bound keeps a
/// forged table from costing more memory than the file.
pub const MAX_TABLE: usize = 1 << 20;
/// The kernel numbers memory cgroups with 16 bits: a sample of more is
/// damage.
const MAX_SAMPLED_CGROUPS: usize = 1 << 16;

pub(super) fn lost_kind(c: u64) -> LostKind {
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

/// A chunk's string table (as byte ranges of the payload) and cgroup ids.
#[derive(Debug, Default)]
struct Tables {
    strings: Vec<(usize, usize)>,
    cgroups: Vec<u64>,
}

impl Tables {
    fn string<'p>(&self, payload: &'p [u8], i: u64) -> Result<&'p [u8], CodecError> {
        let &(at, len) = usize::try_from(i)
            .ok()
            .and_then(|i| self.strings.get(i))
            .ok_or(CodecError::Range("string index"))?;
        payload.get(at..at + len).ok_or(CodecError::Eof)
    }

    fn text(&self, payload: &[u8], i: u64) -> Result<String, CodecError> {
        Ok(String::from_utf8_lossy(self.string(payload, i)?).into_owned())
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

impl Tables {
    /// The tables at the start of `c` (over `payload`), and the chunk's
    /// cgroups (id and path).
    fn read(c: &mut Cursor<'_>, payload: &[u8]) -> Result<(Self, Vec<(u64, String)>), CodecError> {
        let n = count(c, "string count")?;
        if n > MAX_TABLE {
            return Err(CodecError::Range("string count"));
        }
        let mut strings = Vec::with_capacity(capacity(c, n, 1));
        for _ in 0..n {
            let s = c.bytes()?;
            strings.push((c.pos() - s.len(), s.len()));
        }
        let n = count(c, "cgroup count")?;
        if n > MAX_TABLE {
            return Err(CodecError::Range("cgroup count"));
        }
        let mut tables = Tables {
            strings,
            cgroups: Vec::with_capacity(capacity(c, n, 2)),
        };
        let mut cgroups = Vec::with_capacity(capacity(c, n, 2));
        for _ in 0..n {
            let id = c.varint()?;
            let path = tables.text(payload, c.varint()?)?;
            tables.cgroups.push(id);
            cgroups.push((id, path));
        }
        Ok((tables, cgroups))
    }
}

/// A version-3 chunk's tables on their own (the head's copy of the row
/// payload's), for decoding its columns straight into records: what the
/// row decoder resolves per record, resolved the same way.
pub(super) struct TableView<'p> {
    tables: Tables,
    payload: &'p [u8],
}

impl<'p> TableView<'p> {
    /// The tables of `tables`, which they must fill exactly (else the row
    /// decoder would read the rest as records), and the chunk's cgroups.
    pub(super) fn new(tables: &'p [u8]) -> Result<(Self, Vec<(u64, String)>), CodecError> {
        let mut c = Cursor::new(tables);
        let (t, cgroups) = Tables::read(&mut c, tables)?;
        if !c.is_empty() {
            return Err(CodecError::Corrupt("bytes after the tables"));
        }
        let view = Self {
            tables: t,
            payload: tables,
        };
        Ok((view, cgroups))
    }

    /// The task of a key's pid, pid − tgid (zigzag) and comm index, as
    /// [`task`] reads them from a row.
    pub(super) fn task(&self, pid: u64, diff: u64, comm: u64) -> Result<Task, CodecError> {
        let pid = u32::try_from(pid).map_err(|_| CodecError::Range("pid"))?;
        let diff = ((diff >> 1) as i64) ^ -((diff & 1) as i64);
        let tgid = i64::from(pid)
            .checked_sub(diff)
            .ok_or(CodecError::Range("tgid"))?;
        let tgid = u32::try_from(tgid).map_err(|_| CodecError::Range("tgid"))?;
        let comm = Comm::new(&String::from_utf8_lossy(
            self.tables.string(self.payload, comm)?,
        ));
        Ok(Task { pid, tgid, comm })
    }

    /// Cgroup id of a table index + 1 (0: none).
    pub(super) fn cgroup(&self, i: u64) -> Result<u64, CodecError> {
        self.tables.cgroup(i)
    }

    /// A record whose body after its time is `body`, as the row decoder
    /// decodes it.
    pub(super) fn record(&self, tg: u8, ts: u64, body: &[u8]) -> Result<Record, CodecError> {
        record(tg, ts, &mut Cursor::new(body), &self.tables, self.payload)
    }
}

/// Whether the row decoder knows `tg` (it counts and skips the others).
pub(super) fn known(tg: u8) -> bool {
    matches!(tg, tag::THROTTLE..=tag::LOST | tag::SAMPLE..=tag::NOTE)
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
    checked_duration(c.varint()?)
}

/// A reclaim pass as both decoders (rows and columns) read it: its tag
/// picks memcg or direct reclaim; flags bit 0 says the memory cgroup is
/// exact, bit 1 that the pass ran inside a throttle episode.
pub(super) fn reclaim_event(
    tg: u8,
    ts: u64,
    dur: u64,
    task: Task,
    memcg_id: u64,
    flags: u64,
    nr_reclaimed: u64,
) -> Event {
    let r = Reclaim {
        ts_ns: ts,
        start_ns: ts.saturating_sub(dur),
        task,
        memcg_id,
        memcg_exact: flags & 1 != 0,
        in_throttle: flags & 2 != 0,
        nr_reclaimed,
    };
    if tg == tag::RECLAIM {
        Event::Reclaim(r)
    } else {
        Event::DirectReclaim(r)
    }
}

/// A span as [`duration`] accepts it.
pub(super) fn checked_duration(d: u64) -> Result<u64, CodecError> {
    if d > MAX_DURATION_NS {
        return Err(CodecError::Range("duration"));
    }
    Ok(d)
}

/// A cursor over one chunk's records.
#[derive(Debug, Default)]
pub struct Records {
    tables: Tables,
    /// Offset of the next record in the payload.
    pos: usize,
    /// Time of the previous record (the chunk's base time at first).
    last: u64,
    seen: u32,
    expected: u32,
    /// Records with a tag this build does not know, so far.
    pub unknown: u64,
}

impl Records {
    /// Reads the tables of `payload`; returns the cursor and the chunk's
    /// cgroups (id and path).
    pub fn new(
        payload: &[u8],
        base_ts: u64,
        expected: u32,
    ) -> Result<(Self, Vec<(u64, String)>), CodecError> {
        let mut c = Cursor::new(payload);
        let (tables, cgroups) = Tables::read(&mut c, payload)?;
        let records = Self {
            tables,
            pos: c.pos(),
            last: base_ts,
            seen: 0,
            expected,
            unknown: 0,
        };
        Ok((records, cgroups))
    }

    /// The next record of `payload` (the same bytes given to [`Self::new`]),
    /// or None at its end. The end checks the record count: a chunk that
    /// holds more or fewer records than its header says is an error.
    pub fn next(&mut self, payload: &[u8]) -> Result<Option<Record>, CodecError> {
        loop {
            let mut c = Cursor::new(payload.get(self.pos..).unwrap_or_default());
            if c.is_empty() {
                if self.seen != self.expected {
                    return Err(CodecError::Range("record count"));
                }
                return Ok(None);
            }
            let tg = c.u8()?;
            let body = c.bytes()?;
            self.pos += c.pos();
            self.seen = self
                .seen
                .checked_add(1)
                .ok_or(CodecError::Range("record count"))?;
            let mut b = Cursor::new(body);
            // Every record, known or not, starts with its time delta.
            let ts = (self.last as i64).wrapping_add(b.zigzag()?) as u64;
            self.last = ts;
            if !known(tg) {
                self.unknown += 1;
                continue;
            }
            // String indexes resolve against the whole payload.
            return record(tg, ts, &mut b, &self.tables, payload).map(Some);
        }
    }

    /// Walks the rest of the records without keeping them: whether the
    /// chunk decodes whole, and how many records it holds.
    pub fn validate(mut self, payload: &[u8]) -> Result<(u32, u64), CodecError> {
        while self.next(payload)?.is_some() {}
        Ok((self.seen, self.unknown))
    }
}

fn task(c: &mut Cursor<'_>, t: &Tables, p: &[u8]) -> Result<Task, CodecError> {
    let pid = c.u32("pid")?;
    let tgid = i64::from(pid)
        .checked_sub(c.zigzag()?)
        .ok_or(CodecError::Range("tgid"))?;
    let tgid = u32::try_from(tgid).map_err(|_| CodecError::Range("tgid"))?;
    let comm = Comm::new(&String::from_utf8_lossy(t.string(p, c.varint()?)?));
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

/// One record's body after its time.
fn record(tg: u8, ts: u64, b: &mut Cursor<'_>, t: &Tables, p: &[u8]) -> Result<Record, CodecError> {
    Ok(match tg {
        tag::THROTTLE => {
            let dur = duration(b)?;
            let task = task(b, t, p)?;
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
            let task = task(b, t, p)?;
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
            let dur = duration(b)?;
            let task = task(b, t, p)?;
            let memcg_id = t.cgroup(b.varint()?)?;
            let flags = b.varint()?;
            let nr_reclaimed = b.varint()?;
            Record::Event(reclaim_event(
                tg,
                ts,
                dur,
                task,
                memcg_id,
                flags,
                nr_reclaimed,
            ))
        }
        tag::OOM_KILL => {
            let victim = task(b, t, p)?;
            let invoker = task(b, t, p)?;
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
            let task = task(b, t, p)?;
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
        tag::SAMPLE => Record::Sample(sample(ts, b, t, p)?),
        tag::ACTION => {
            let cgroup_id = t.cgroup(b.varint()?)?;
            let kind = t.text(p, b.varint()?)?;
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
    })
}

fn sample(ts: u64, b: &mut Cursor<'_>, t: &Tables, p: &[u8]) -> Result<Sample, CodecError> {
    let mut host = HostMemory {
        mem_total: b.varint()?,
        mem_available: b.varint()?,
        swap_total: b.varint()?,
        swap_free: b.varint()?,
        pressure: None,
    };
    host.pressure = psi(b)?;
    let n = count(b, "cgroup samples")?;
    if n > MAX_SAMPLED_CGROUPS {
        return Err(CodecError::Range("cgroup samples"));
    }
    let mut cgroups = Vec::with_capacity(capacity(b, n, 11));
    for _ in 0..n {
        let id = t.cgroup(b.varint()?)?;
        let mut lim = || b.varint().map(|v| v.checked_sub(1));
        let (current, high, max) = (lim()?, lim()?, lim()?);
        let mut fields = [None; 5];
        for f in &mut fields {
            *f = Some(b.varint()?);
        }
        let events = MemEvents::from_fields(fields);
        let pressure = psi(b)?;
        let k = count(b, "processes")?;
        let mut top = Vec::with_capacity(capacity(b, k, 3));
        for _ in 0..k {
            let pid = b.u32("pid")?;
            let comm = t.text(p, b.varint()?)?;
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
        let n = count(b, "unmeasured masks")?;
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
    Ok(Sample {
        ts_ns: ts,
        host,
        cgroups,
    })
}

/// Decodes a chunk's (uncompressed) payload whole.
pub fn decode(payload: &[u8], base_ts: u64, expected: u32) -> Result<Decoded, CodecError> {
    let (mut records, cgroups) = Records::new(payload, base_ts, expected)?;
    let mut out = Decoded {
        records: Vec::with_capacity((expected as usize).min(payload.len() / 3)),
        cgroups,
        unknown: 0,
    };
    while let Some(r) = records.next(payload)? {
        out.records.push(r);
    }
    out.unknown = records.unknown;
    Ok(out)
}
