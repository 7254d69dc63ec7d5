//! The direct route of format 3's reader: a chunk's columns read
//! straight into records ([`decode_columns`]), with every check of the
//! two-step route of [`super::from_columns`] and the row decoder, which
//! stays for any chunk this declines (damage, or rows over the bound).
//! It meets its parent at [`super::Head`] (the chunk's head, read once
//! for both routes), the schemas and the bit reader.

use super::*;

/// Bytes of `v` as a varint.
fn varint_len(v: u64) -> usize {
    (bit_len(v | 1) as usize).div_ceil(7)
}

/// Bytes of `v` as a zigzag varint.
fn zigzag_len(v: i64) -> usize {
    varint_len(((v << 1) ^ (v >> 63)) as u64)
}

/// A chunk's columns being read, record by record.
struct ColumnReader<'a> {
    cols: Vec<Cursor<'a>>,
    bits: BitReader<'a>,
    q: u64,
    /// Bytes the row payload would have so far ([`from_columns`]'s).
    row_len: usize,
}

impl<'a> ColumnReader<'a> {
    /// An identity or flag of column `c`.
    fn id(&mut self, c: usize) -> Result<u64, CodecError> {
        let v = self.col(c)?.varint()?;
        self.row_len += varint_len(v);
        Ok(v)
    }

    /// A number of column `c`: its bit length there, its bits next.
    fn num(&mut self, c: usize) -> Result<u64, CodecError> {
        let len = self.col(c)?.u8()?;
        let v = self.bits.value(len)?;
        self.row_len += varint_len(v);
        Ok(v)
    }

    /// A time of column `c`: a number times the quantum.
    fn time(&mut self, c: usize) -> Result<u64, CodecError> {
        let len = self.col(c)?.u8()?;
        let v = self
            .bits
            .value(len)?
            .checked_mul(self.q)
            .ok_or(CodecError::Range("time"))?;
        self.row_len += varint_len(v);
        Ok(v)
    }

    /// The task and cgroup of the key whose index column `c` holds next.
    fn key(
        &mut self,
        c: usize,
        key: &impl Fn(u64) -> Result<(Task, u64, usize), CodecError>,
    ) -> Result<(Task, u64), CodecError> {
        let (task, cg, len) = key(self.col(c)?.varint()?)?;
        self.row_len += len;
        Ok((task, cg))
    }

    fn u32(&mut self, c: usize, what: &'static str) -> Result<u32, CodecError> {
        u32::try_from(self.num(c)?).map_err(|_| CodecError::Range(what))
    }

    fn col(&mut self, c: usize) -> Result<&mut Cursor<'a>, CodecError> {
        self.cols.get_mut(c).ok_or(CodecError::Range("columns"))
    }
}

/// A key resolved once per chunk: its task and cgroup id, and the bytes
/// its four fields take in a row; None where it does not resolve (an
/// error only if a record uses it, as in the row decoder).
type ResolvedKey = Option<(Task, u64, usize)>;

/// Decodes the columnar `parts` and `bits` of a chunk of `expected`
/// records from `base_ts` straight into records: what [`from_columns`]
/// then [`super::decode::decode`] give, without building the rows, each
/// key's task and cgroup resolved once. Every check of those two is made
/// here too (or a stricter one); on any error, or once the rows would
/// pass `max_rows` bytes, the caller takes the row path, whose result or
/// error is the one that counts. So where this succeeds, the row path
/// gives the same records.
pub fn decode_columns(
    parts: &[&[u8]],
    bits: &[u8],
    base_ts: u64,
    expected: u32,
    max_rows: usize,
) -> Result<Decoded, CodecError> {
    let Head {
        tags,
        dts,
        rest,
        cols,
        tables,
        n,
        q,
        nkeys,
        keys: mut c,
    } = Head::read(parts)?;
    // A row is at least its tag, length and time delta: more records
    // than that allows is left to the row path, which bounds them so.
    if u32::try_from(n).ok() != Some(expected) || n > max_rows / 3 {
        return Err(CodecError::Range("record count"));
    }
    let (view, cgroups) = TableView::new(tables)?;
    let mut keys: Vec<ResolvedKey> = Vec::with_capacity(nkeys);
    for _ in 0..nkeys {
        let k = [c.varint()?, c.varint()?, c.varint()?, c.varint()?];
        let task = view.task(k[0], k[1], k[2]);
        let cg = view.cgroup(k[3]);
        let len = k.iter().map(|&v| varint_len(v)).sum();
        keys.push(task.and_then(|t| Ok((t, cg?, len))).ok());
    }
    if !c.is_empty() {
        return Err(CodecError::Corrupt("bytes after the keys"));
    }
    let key = |i: u64| -> Result<(Task, u64, usize), CodecError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| keys.get(i).copied().flatten())
            .ok_or(CodecError::Range("key index"))
    };
    let mut dts = Cursor::new(dts);
    let mut rest = Cursor::new(rest);
    let mut r = ColumnReader {
        cols: cols.iter().map(|c| Cursor::new(c)).collect(),
        bits: BitReader { data: bits, bit: 0 },
        q,
        row_len: tables.len(),
    };
    let layouts = layouts();
    let first = |t: u8| layouts[usize::from(t)].map_or(0, |l| l.first);
    let (throttle, start, reclaim, direct, brake, lost) = (
        first(tag::THROTTLE),
        first(tag::THROTTLE_START),
        first(tag::RECLAIM),
        first(tag::DIRECT_RECLAIM),
        first(tag::BRAKE),
        first(tag::LOST),
    );
    let mut out = Decoded {
        records: Vec::with_capacity(n),
        cgroups,
        unknown: 0,
    };
    let mut last = base_ts;
    for &t in tags {
        let e = dts.u8()?;
        let v = r
            .bits
            .value(e & 0x7f)?
            .checked_mul(q)
            .and_then(|v| i64::try_from(v).ok())
            .ok_or(CodecError::Range("time delta"))?;
        let dt = if e & 0x80 != 0 { -v } else { v };
        let ts = (last as i64).wrapping_add(dt) as u64;
        last = ts;
        // The row's body: the time delta, then the fields (counted as they
        // are read); its tag and length are added after.
        let row_start = r.row_len;
        r.row_len += zigzag_len(dt);
        let event = match t {
            tag::THROTTLE => {
                let k = throttle;
                // Bits in field order: duration, reclaim_ns, pages, nr_pages.
                let dur = checked_duration(r.time(k + 1)?)?;
                let (task, memcg_id) = r.key(k, &key)?;
                Some(Event::Throttle(Throttle {
                    ts_ns: ts,
                    start_ns: ts.saturating_sub(dur),
                    task,
                    memcg_id,
                    over_high_id: view.cgroup(r.id(k + 2)?)?,
                    reclaim_ns: r.time(k + 3)?,
                    reclaimed_pages: r.num(k + 4)?,
                    nr_pages: r.u32(k + 5, "nr_pages")?,
                }))
            }
            tag::THROTTLE_START => {
                let k = start;
                let (task, memcg_id) = r.key(k, &key)?;
                Some(Event::ThrottleStart(ThrottleStart {
                    ts_ns: ts,
                    task,
                    memcg_id,
                    over_high_id: view.cgroup(r.id(k + 1)?)?,
                    over_high_usage_pages: r.num(k + 2)?,
                    over_high_limit_pages: r.num(k + 3)?,
                    nr_pages: r.u32(k + 4, "nr_pages")?,
                }))
            }
            tag::RECLAIM | tag::DIRECT_RECLAIM => {
                let k = if t == tag::RECLAIM { reclaim } else { direct };
                let dur = checked_duration(r.time(k + 1)?)?;
                let (task, memcg_id) = r.key(k, &key)?;
                let flags = r.id(k + 2)?;
                let nr_reclaimed = r.num(k + 3)?;
                Some(reclaim_event(
                    t,
                    ts,
                    dur,
                    task,
                    memcg_id,
                    flags,
                    nr_reclaimed,
                ))
            }
            tag::BRAKE => {
                let k = brake;
                let (task, rule_memcg_id) = r.key(k, &key)?;
                let signal =
                    u32::try_from(r.id(k + 1)?).map_err(|_| CodecError::Range("signal"))?;
                let (throttled_ns, limit_ns, heartbeat_age_ns) =
                    (r.num(k + 2)?, r.num(k + 3)?, r.num(k + 4)?);
                let zz = r.id(k + 5)?;
                Some(Event::Brake(Brake {
                    ts_ns: ts,
                    task,
                    rule_memcg_id,
                    signal,
                    throttled_ns,
                    limit_ns,
                    heartbeat_age_ns,
                    result: ((zz >> 1) as i64) ^ -((zz & 1) as i64),
                }))
            }
            tag::LOST => {
                let k = lost;
                Some(Event::Lost(Lost {
                    ts_ns: ts,
                    kind: lost_kind(r.id(k)?),
                    count: r.num(k + 1)?,
                }))
            }
            _ => None,
        };
        let rec = match event {
            Some(e) => Some(Record::Event(e)),
            None => {
                // Kept whole in `rest`: a kind without a shape, or (tag 0)
                // a body not of its kind's shape, with its real tag.
                let tg = if t == 0 { rest.u8()? } else { t };
                let body = rest.bytes()?;
                r.row_len += body.len();
                if known(tg) {
                    Some(view.record(tg, ts, body)?)
                } else {
                    out.unknown += 1;
                    None
                }
            }
        };
        let body = r.row_len - row_start;
        r.row_len += 1 + varint_len(body as u64);
        if r.row_len > max_rows.min(MAX_CHUNK) {
            return Err(CodecError::Range("chunk length"));
        }
        out.records.extend(rec);
    }
    if !(dts.is_empty()
        && rest.is_empty()
        && r.cols.iter().all(Cursor::is_empty)
        && r.bits.is_done())
    {
        return Err(CodecError::Corrupt("column lengths"));
    }
    Ok(out)
}
