//! `memtrace export`: a recording in formats other tools read.
//!
//! - `perfetto` ([`super::perfetto`]): Perfetto's own protobuf trace, for
//!   recordings of any size.
//! - `chrome-json` ([`chrome_json`]): Chrome trace-event JSON, which
//!   ui.perfetto.dev (and chrome://tracing) opens, for small recordings.
//!   One process per cgroup, one thread per task; throttle episodes and
//!   reclaim passes as slices, memory.current, PSI and swap as counter
//!   tracks, OOM kills and agent actions as instants.
//! - `jsonl`: one JSON object per record (events as `memtrace events
//!   --json` prints them, samples, actions, notes).
//! - `csv`: events, or with `--samples` the per-second samples.
//!
//! Every format is written as the records stream by: `rec` is the
//! recording's scan (header, cgroup paths, earliest time), `records` its
//! records, from memory or from [`crate::record::stream::Stream`].

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::event::Event;
use crate::model::Hierarchy;
use crate::names::{Identity, describe, identify};
use crate::record::reader::Recording;
use crate::record::{Record, Sample};
use crate::report::output::{CgroupJsonCache, Presenter};

/// A recording's cgroups with their names, made once each from the
/// recorded path (not once per record): what the exports name them by.
pub(super) struct Named<'a> {
    rec: &'a Recording,
    names: HashMap<u64, Arc<Identity>>,
}

impl<'a> Named<'a> {
    pub(super) fn new(rec: &'a Recording) -> Self {
        let names = rec
            .cgroups
            .iter()
            .map(|(id, p)| (*id, Arc::new(identify(p))))
            .collect();
        Self { rec, names }
    }

    /// The name for a column, empty where no chunk named the cgroup.
    fn name(&self, id: u64) -> &str {
        self.names.get(&id).map_or("", |n| n.name())
    }
}

impl Hierarchy for Named<'_> {
    fn path(&self, id: u64) -> Option<Arc<str>> {
        Hierarchy::path(self.rec, id)
    }

    fn id(&self, path: &str) -> Option<u64> {
        Hierarchy::id(self.rec, path)
    }

    fn identity(&self, id: u64) -> Option<Arc<Identity>> {
        self.names.get(&id).cloned()
    }
}

/// The process id the host's own tracks live under in the trace.
const HOST_PID: u64 = 1;

/// Cgroups whose escaped fields a format keeps at once: the ids come from
/// the file, so the caches are bounded (emptied when full, then filled
/// again), a few MiB at most whatever a recording holds.
const ESCAPED_CGROUPS_MAX: usize = 16_384;

/// Makes room in a per-cgroup cache before `id` goes in.
fn bound_cache<V>(cache: &mut HashMap<u64, V>, id: u64) {
    if cache.len() >= ESCAPED_CGROUPS_MAX && !cache.contains_key(&id) {
        cache.clear();
    }
}

fn us(ns: u64, origin: u64) -> f64 {
    ns.saturating_sub(origin) as f64 / 1e3
}

/// Writes the Chrome trace-event JSON of a recording, an event at a time.
pub fn chrome_json<R: Borrow<Record>>(
    rec: &Recording,
    records: impl IntoIterator<Item = R>,
    out: &mut dyn Write,
) -> io::Result<()> {
    // Time zero is the earliest start, so no span is clipped at zero.
    let origin = rec
        .began_ns
        .or_else(|| rec.records.iter().map(Record::began_ns).min())
        .unwrap_or(0);
    let page = rec.header.page_size.max(1);
    let mut ev = Events {
        out,
        first: true,
        buf: Vec::new(),
    };
    ev.out.write_all(b"{\"traceEvents\":[\n")?;
    let mut threads: BTreeMap<(u64, u32), String> = BTreeMap::new();
    let mut processes: BTreeMap<u64, String> = BTreeMap::new();
    processes.insert(HOST_PID, format!("host {}", rec.header.host));
    // Cgroup ids can collide with the host's pid 1 only in theory; shift.
    let pid_of = |id: u64| id.saturating_add(1_000);
    // A path as JSON, escaped once per cgroup id rather than per slice.
    let mut over_high_json: HashMap<u64, Box<RawValue>> = HashMap::new();
    for r in records {
        match r.borrow() {
            Record::Event(e) => match e {
                Event::Throttle(t) => {
                    let pid = pid_of(t.memcg_id);
                    processes.entry(pid).or_insert_with(|| format!("cgroup {}", describe(&rec.path(t.memcg_id))));
                    threads.entry((pid, t.task.pid)).or_insert_with(|| format!("{}[{}]", t.task.comm, t.task.pid));
                    ev.push(&Slice {
                        name: "memory.high throttle", cat: "throttle", ph: "X",
                        pid, tid: t.task.pid,
                        ts: us(t.start_ns, origin), dur: t.duration_ns() as f64 / 1e3,
                        args: ThrottleArgs {
                            reclaim_ms: t.reclaim_ns as f64 / 1e6,
                            sleep_ms: t.sleep_ns() as f64 / 1e6,
                            over_high: {
                                bound_cache(&mut over_high_json, t.over_high_id);
                                over_high_json
                                    .entry(t.over_high_id)
                                    .or_insert_with(|| path_json(rec, t.over_high_id))
                            },
                            nr_pages: t.nr_pages, tgid: t.task.tgid,
                        },
                    })?;
                }
                Event::Reclaim(r) | Event::DirectReclaim(r) => {
                    let direct = matches!(e, Event::DirectReclaim(_));
                    let pid = if direct || r.memcg_id == 0 { HOST_PID } else { pid_of(r.memcg_id) };
                    if pid != HOST_PID {
                        processes.entry(pid).or_insert_with(|| format!("cgroup {}", describe(&rec.path(r.memcg_id))));
                    }
                    threads.entry((pid, r.task.pid)).or_insert_with(|| format!("{}[{}]", r.task.comm, r.task.pid));
                    ev.push(&Slice {
                        name: if direct { "direct reclaim" } else { "memcg reclaim" }, cat: "reclaim", ph: "X",
                        pid, tid: r.task.pid,
                        ts: us(r.start_ns, origin), dur: r.duration_ns() as f64 / 1e3,
                        args: ReclaimArgs { pages: r.nr_reclaimed, in_throttle: r.in_throttle },
                    })?;
                }
                Event::OomKill(o) => {
                    let pid = if o.victim_memcg_id == 0 { HOST_PID } else { pid_of(o.victim_memcg_id) };
                    ev.push(&json!({
                        "name": format!("OOM kill {}[{}]", o.victim.comm, o.victim.pid), "cat": "oom",
                        "ph": "i", "s": "g", "pid": pid, "tid": 0, "ts": us(o.ts_ns, origin),
                        "args": {
                            "cgroup": rec.path(o.victim_memcg_id),
                            "oom_cgroup": rec.path(o.oom_memcg_id),
                            "rss_bytes": o.rss_pages.map(|p| p.total().saturating_mul(page)),
                        },
                    }))?;
                }
                Event::Brake(b) => ev.push(&json!({
                    "name": format!("kernel brake {}[{}]", b.task.comm, b.task.tgid), "cat": "agent",
                    "ph": "i", "s": "g", "pid": HOST_PID, "tid": 0, "ts": us(b.ts_ns, origin),
                    "args": { "cgroup": rec.path(b.rule_memcg_id), "agent_silent_ms": b.heartbeat_age_ns / 1_000_000 },
                }))?,
                Event::Lost(l) => ev.push(&json!({
                    "name": format!("{} {} events lost", l.count, l.kind.as_str()), "cat": "lost",
                    "ph": "i", "s": "g", "pid": HOST_PID, "tid": 0, "ts": us(l.ts_ns, origin),
                }))?,
                Event::ThrottleStart(_) => {}
            },
            Record::Sample(s) => counters(rec, s, origin, &mut ev, &mut processes)?,
            Record::Action(a) => ev.push(&json!({
                "name": format!("agent {}", a.kind), "cat": "agent", "ph": "i", "s": "g",
                "pid": HOST_PID, "tid": 0, "ts": us(a.ts_ns, origin),
                "args": serde_json::from_str::<Value>(&a.details).unwrap_or(Value::Null),
            }))?,
            Record::Note { ts_ns, text } => ev.push(&json!({
                "name": text, "cat": "note", "ph": "i", "s": "g", "pid": HOST_PID, "tid": 0, "ts": us(*ts_ns, origin),
            }))?,
        }
    }
    for (pid, name) in &processes {
        ev.push(
            &json!({ "name": "process_name", "ph": "M", "pid": pid, "args": { "name": name } }),
        )?;
    }
    for ((pid, tid), name) in &threads {
        ev.push(&json!({ "name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": { "name": name } }))?;
    }
    let tail = json!({
        "source": "memtrace",
        "host": rec.header.host,
        "kernel": rec.header.kernel,
        "start": rec.header.start,
    });
    let out = ev.out;
    write!(
        out,
        "\n],\"displayTimeUnit\":\"ms\",\"metadata\":{tail}}}\n"
    )
}

/// The trace's event array, written as it grows.
struct Events<'a> {
    out: &'a mut dyn Write,
    first: bool,
    buf: Vec<u8>,
}

impl Events<'_> {
    fn push<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        self.buf.clear();
        if !std::mem::take(&mut self.first) {
            self.buf.extend_from_slice(b",\n");
        }
        serde_json::to_writer(&mut self.buf, v)?;
        self.out.write_all(&self.buf)
    }
}

/// A complete slice (`ph: X`): typed, as slices are most of a trace.
#[derive(Serialize)]
struct Slice<A> {
    name: &'static str,
    cat: &'static str,
    ph: &'static str,
    pid: u64,
    tid: u32,
    ts: f64,
    dur: f64,
    args: A,
}

/// `rec.path(id)` as a JSON string.
fn path_json(rec: &Recording, id: u64) -> Box<RawValue> {
    let text = serde_json::to_string(&rec.path(id)).unwrap_or_else(|_| "\"\"".into());
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

#[derive(Serialize)]
struct ThrottleArgs<'a> {
    reclaim_ms: f64,
    sleep_ms: f64,
    over_high: &'a RawValue,
    nr_pages: u32,
    tgid: u32,
}

#[derive(Serialize)]
struct ReclaimArgs {
    pages: u64,
    in_throttle: bool,
}

fn counters(
    rec: &Recording,
    s: &Sample,
    origin: u64,
    ev: &mut Events<'_>,
    processes: &mut BTreeMap<u64, String>,
) -> io::Result<()> {
    let ts = us(s.ts_ns, origin);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut host = json!({ "MemAvailable MiB": mib(s.host.mem_available) });
    if s.host.swap_total > 0 {
        host["SwapFree MiB"] = json!(mib(s.host.swap_free));
    }
    ev.push(&json!({ "name": "host memory", "ph": "C", "pid": HOST_PID, "ts": ts, "args": host }))?;
    if let Some(p) = s.host.pressure {
        ev.push(&json!({
            "name": "host memory PSI avg10 %", "ph": "C", "pid": HOST_PID, "ts": ts,
            "args": { "some": p.some_avg10, "full": p.full_avg10 },
        }))?;
    }
    for c in &s.cgroups {
        let pid = c.id.saturating_add(1_000);
        processes
            .entry(pid)
            .or_insert_with(|| format!("cgroup {}", describe(&rec.path(c.id))));
        let mut args = serde_json::Map::new();
        for (k, v) in [
            ("current", c.mem.current),
            ("high", c.mem.high),
            ("max", c.mem.max),
        ] {
            if let Some(v) = v {
                args.insert(k.into(), json!(mib(v)));
            }
        }
        if !args.is_empty() {
            ev.push(
                &json!({ "name": "memory MiB", "ph": "C", "pid": pid, "ts": ts, "args": args }),
            )?;
        }
        if let Some(p) = c.mem.pressure {
            ev.push(&json!({
                "name": "memory.pressure avg10 %", "ph": "C", "pid": pid, "ts": ts,
                "args": { "some": p.some_avg10, "full": p.full_avg10 },
            }))?;
        }
    }
    Ok(())
}

/// One JSON object per record.
pub fn jsonl<R: Borrow<Record>>(
    rec: &Recording,
    records: impl IntoIterator<Item = R>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let clock = rec.header.clock();
    let page = rec.header.page_size.max(1);
    let named = Named::new(rec);
    let presenter = Presenter {
        paths: &named,
        clock,
        page_size: page,
    };
    // A recording's paths are fixed once scanned: each cgroup's JSON is
    // made once.
    let mut cgroups = CgroupJsonCache::default();
    let mut buf = Vec::with_capacity(1024);
    for r in records {
        buf.clear();
        // Events (nearly every record) are typed and serialised directly.
        let v = match r.borrow() {
            Record::Event(e) => {
                presenter.write_json(e, &mut cgroups, &mut buf)?;
                out.write_all(&buf)?;
                continue;
            }
            Record::Sample(s) => {
                let cgroups: Vec<Value> = s
                    .cgroups
                    .iter()
                    .map(|c| json!({ "cgroup": rec.path(c.id), "cgroup_id": c.id, "memory": c.mem, "top": c.top }))
                    .collect();
                json!({ "type": "sample", "ts": clock.rfc3339(s.ts_ns), "mono_ns": s.ts_ns, "host": s.host, "cgroups": cgroups })
            }
            Record::Action(a) => json!({
                "type": "action", "ts": clock.rfc3339(a.ts_ns), "mono_ns": a.ts_ns,
                "kind": a.kind, "cgroup": rec.path(a.cgroup_id),
                "details": serde_json::from_str::<Value>(&a.details).unwrap_or(Value::Null),
            }),
            Record::Note { ts_ns, text } => {
                json!({ "type": "note", "ts": clock.rfc3339(*ts_ns), "mono_ns": ts_ns, "text": text })
            }
        };
        serde_json::to_writer(&mut buf, &v)?;
        buf.push(b'\n');
        out.write_all(&buf)?;
    }
    Ok(())
}

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

fn row(out: &mut dyn Write, fields: &[String]) -> io::Result<()> {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(csv_field(f).as_bytes())?;
    }
    out.write_all(b"\n")
}

/// A CSV row built in one buffer and written whole: a write per row, not
/// per field, and numbers formatted without an allocation each.
struct CsvRow {
    buf: Vec<u8>,
    first: bool,
}

impl CsvRow {
    fn sep(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.buf.push(b',');
        }
    }

    fn text(&mut self, s: &str) {
        self.sep();
        self.buf.extend_from_slice(csv_field(s).as_bytes());
    }

    /// A field escaped already ([`csv_field`]).
    fn escaped(&mut self, s: &str) {
        self.sep();
        self.buf.extend_from_slice(s.as_bytes());
    }

    fn num(&mut self, v: impl itoa::Integer) {
        self.sep();
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    fn opt(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.num(v),
            None => self.sep(),
        }
    }

    fn end(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.buf.push(b'\n');
        let r = out.write_all(&self.buf);
        self.buf.clear();
        self.first = true;
        r
    }
}

/// A cgroup's CSV fields, escaped once per cgroup id: its path (blank
/// where the path reads `-`, as for no cgroup) and its name.
struct CsvCgroup {
    path: String,
    dash: bool,
    name: String,
}

impl CsvCgroup {
    fn of<'c>(
        cache: &'c mut HashMap<u64, CsvCgroup>,
        rec: &Recording,
        named: &Named<'_>,
        id: u64,
    ) -> &'c CsvCgroup {
        bound_cache(cache, id);
        cache.entry(id).or_insert_with(|| {
            let path = rec.path(id);
            CsvCgroup {
                dash: path == "-",
                path: csv_field(&path).into_owned(),
                name: csv_field(named.name(id)).into_owned(),
            }
        })
    }
}

/// Events as CSV, one row per event.
pub fn csv_events<R: Borrow<Record>>(
    rec: &Recording,
    records: impl IntoIterator<Item = R>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let clock = rec.header.clock();
    let page = rec.header.page_size.max(1);
    row(
        out,
        &[
            "type",
            "ts",
            "mono_ns",
            "cgroup",
            "pid",
            "tgid",
            "comm",
            "duration_ns",
            "reclaim_ns",
            "pages",
            "over_high_cgroup",
            "oom_cgroup",
            "rss_bytes",
            "count",
            "cgroup_name",
        ]
        .map(String::from),
    )?;
    let named = Named::new(rec);
    let mut cgroups: HashMap<u64, CsvCgroup> = HashMap::new();
    let mut row = CsvRow {
        buf: Vec::with_capacity(1024),
        first: true,
    };
    for r in records {
        let Record::Event(e) = r.borrow() else {
            continue;
        };
        // Over-high and OOM cgroup columns: a cgroup id, or blank.
        let (dur, reclaim, pages, over, oom, rss, count) = match e {
            Event::Throttle(t) => (
                Some(t.duration_ns()),
                Some(t.reclaim_ns),
                Some(t.reclaimed_pages),
                Some(t.over_high_id),
                None,
                None,
                None,
            ),
            Event::ThrottleStart(t) => (
                None,
                None,
                Some(u64::from(t.nr_pages)),
                Some(t.over_high_id),
                None,
                None,
                None,
            ),
            Event::Reclaim(r) | Event::DirectReclaim(r) => (
                Some(r.duration_ns()),
                None,
                Some(r.nr_reclaimed),
                None,
                None,
                None,
                None,
            ),
            Event::OomKill(o) => (
                None,
                None,
                None,
                None,
                Some(o.oom_memcg_id),
                o.rss_pages.map(|p| p.total().saturating_mul(page)),
                None,
            ),
            Event::Brake(b) => (Some(b.throttled_ns), None, None, None, None, None, None),
            Event::Lost(l) => (None, None, None, None, None, None, Some(l.count)),
        };
        row.text(e.type_name());
        row.text(&clock.rfc3339(e.ts_ns()));
        row.num(e.ts_ns());
        let id = e.memcg_id();
        if id == 0 {
            row.sep();
        } else {
            row.escaped(&CsvCgroup::of(&mut cgroups, rec, &named, id).path);
        }
        match e.task() {
            Some(t) => {
                row.num(t.pid);
                row.num(t.tgid);
                row.text(&t.comm.to_str_lossy());
            }
            None => (0..3).for_each(|_| row.sep()),
        }
        row.opt(dur);
        row.opt(reclaim);
        row.opt(pages);
        for other in [over, oom] {
            match other.map(|o| CsvCgroup::of(&mut cgroups, rec, &named, o)) {
                Some(c) if !c.dash => row.escaped(&c.path),
                _ => row.sep(),
            }
        }
        row.opt(rss);
        row.opt(count);
        row.escaped(&CsvCgroup::of(&mut cgroups, rec, &named, id).name);
        row.end(out)?;
    }
    Ok(())
}

/// The per-second samples as CSV: one row per cgroup, one for the host.
pub fn csv_samples<R: Borrow<Record>>(
    rec: &Recording,
    records: impl IntoIterator<Item = R>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let clock = rec.header.clock();
    row(
        out,
        &[
            "ts",
            "mono_ns",
            "cgroup",
            "memory_current",
            "memory_high",
            "memory_max",
            "events_high",
            "events_max",
            "events_oom_kill",
            "psi_some_total_us",
            "psi_full_total_us",
            "mem_available",
            "swap_free",
            "swap_total",
        ]
        .map(String::from),
    )?;
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in records {
        let Record::Sample(s) = r.borrow() else {
            continue;
        };
        let (ts, mono) = (clock.rfc3339(s.ts_ns), s.ts_ns.to_string());
        let hp = s.host.pressure;
        row(
            out,
            &[
                ts.clone(),
                mono.clone(),
                "(host)".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                opt(hp.map(|p| p.some_total_us)),
                opt(hp.map(|p| p.full_total_us)),
                s.host.mem_available.to_string(),
                s.host.swap_free.to_string(),
                s.host.swap_total.to_string(),
            ],
        )?;
        for c in &s.cgroups {
            let m = &c.mem;
            row(
                out,
                &[
                    ts.clone(),
                    mono.clone(),
                    rec.path(c.id),
                    opt(m.current),
                    opt(m.high),
                    opt(m.max),
                    opt(m.events.high),
                    opt(m.events.max),
                    opt(m.events.oom_kill),
                    opt(m.pressure.map(|p| p.some_total_us)),
                    opt(m.pressure.map(|p| p.full_total_us)),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording() -> Recording {
        let (bytes, _) = crate::record::reader::tests::file(2);
        crate::record::reader::parse(&bytes).unwrap()
    }

    #[test]
    fn the_escaped_cgroup_caches_stay_bounded() {
        let mut cache: HashMap<u64, u8> = HashMap::new();
        for id in 0..(ESCAPED_CGROUPS_MAX as u64 * 3) {
            bound_cache(&mut cache, id);
            cache.insert(id, 0);
            assert!(cache.len() <= ESCAPED_CGROUPS_MAX);
        }
        // A cached id is never dropped to make room for itself.
        let kept = ESCAPED_CGROUPS_MAX as u64 * 3 - 1;
        bound_cache(&mut cache, kept);
        assert!(cache.contains_key(&kept));
    }

    #[test]
    fn perfetto_trace_has_slices_counters_instants_and_names() {
        let rec = recording();
        let mut out = Vec::new();
        chrome_json(&rec, &rec.records, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let evs = v["traceEvents"].as_array().unwrap();
        let ph = |p: &str| evs.iter().filter(|e| e["ph"] == p).count();
        assert!(ph("X") >= 10, "slices");
        assert!(ph("C") >= 2, "counters");
        assert!(ph("i") >= 2, "instants");
        let throttle = evs
            .iter()
            .find(|e| e["name"] == "memory.high throttle")
            .unwrap();
        assert_eq!(throttle["dur"], 0.5);
        assert_eq!(throttle["args"]["over_high"], "/work");
        assert!(
            evs.iter()
                .any(|e| e["ph"] == "M" && e["args"]["name"] == "cgroup /work/job")
        );
        assert!(
            evs.iter()
                .any(|e| e["ph"] == "M" && e["args"]["name"] == "hog[100]")
        );
        // Times are microseconds from the first record, never negative.
        assert!(
            evs.iter()
                .filter_map(|e| e["ts"].as_f64())
                .all(|t| t >= 0.0)
        );
    }

    /// The fixture's cgroups renamed to the first incident's unit and a
    /// subgroup below it: tracks, lines and rows name the unit.
    #[test]
    fn exports_name_the_unit() {
        let mut rec = recording();
        let unit = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
        for p in rec.cgroups.values_mut() {
            if p.starts_with("/work") {
                *p = p.replacen("/work", unit, 1);
            }
        }
        let mut out = Vec::new();
        chrome_json(&rec, &rec.records, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let track = format!("cgroup t3-serve@wizard.service/job ({unit}/job)");
        assert!(
            v["traceEvents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["ph"] == "M" && e["args"]["name"] == track.as_str()),
            "no track {track}"
        );
        let mut out = Vec::new();
        jsonl(&rec, &rec.records, &mut out).unwrap();
        let first: Value =
            serde_json::from_str(String::from_utf8(out).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(first["cgroup_name"], "t3-serve@wizard.service/job");
        assert_eq!(first["who"]["kind"], "subgroup");
        assert_eq!(first["who"]["unit"], "t3-serve@wizard.service");
        let mut csv = Vec::new();
        csv_events(&rec, &rec.records, &mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert!(text.lines().next().unwrap().ends_with(",count,cgroup_name"));
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with(",t3-serve@wizard.service/job"),
            "{text}"
        );
    }

    /// The lines scripts read, from two real recordings (a VM livelock, a
    /// host squeeze): the first of each type, every field in its place.
    #[test]
    fn jsonl_lines_keep_their_shape() {
        let mut seen = BTreeMap::new();
        for bytes in [
            &include_bytes!("../../../tests/fuzz/seeds/read_recording/livelock.mtr")[..],
            &include_bytes!("../../../tests/fuzz/seeds/read_recording/squeeze.mtr")[..],
        ] {
            let rec = crate::record::reader::parse(bytes).unwrap();
            let mut out = Vec::new();
            jsonl(&rec, &rec.records, &mut out).unwrap();
            for line in String::from_utf8(out).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let kind = v["type"].as_str().unwrap_or_default().to_string();
                seen.entry(kind).or_insert_with(|| line.to_string());
            }
        }
        let lines: Vec<String> = seen.into_values().collect();
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn jsonl_and_csv() {
        let rec = recording();
        let n = rec.records.len();
        let mut out = Vec::new();
        jsonl(&rec, &rec.records, &mut out).unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), n);
        assert_eq!(lines[0]["type"], "throttle");
        assert_eq!(lines[0]["cgroup"], "/work/job");
        assert!(lines.iter().any(|l| l["type"] == "sample"));
        let mut csv = Vec::new();
        csv_events(&rec, &rec.records, &mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert!(text.starts_with("type,ts,mono_ns,cgroup,pid"));
        assert!(text.contains("throttle,"));
        let mut s = Vec::new();
        csv_samples(&rec, &rec.records, &mut s).unwrap();
        let text = String::from_utf8(s).unwrap();
        assert!(text.contains(",(host),"), "{text}");
        assert!(text.contains(",/work/job,"), "{text}");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
