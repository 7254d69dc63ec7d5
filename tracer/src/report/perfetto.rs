//! `memtrace export --format perfetto`: Perfetto's native protobuf trace
//! (a `Trace` of `TracePacket`s), which ui.perfetto.dev and
//! trace_processor open without the JSON importer's limits: a packet is
//! written per slice edge, instant or counter value as records stream
//! by, names are interned once, and an hour of events is a fraction of
//! the size of its Chrome JSON.
//!
//! Tracks: one per cgroup, a child per task (throttle episodes and
//! reclaim passes as slices), counters under their cgroup (memory.current,
//! memory.high, memory.max, memory.pressure), one for the host (direct
//! reclaim, OOM kills outside a cgroup, agent actions, lost events,
//! MemAvailable, swap, PSI). Timestamps are the recording's monotonic
//! nanoseconds.
//!
//! Only the fields memtrace writes are declared here, with the field
//! numbers of perfetto's protos/perfetto/trace (checked against the real
//! schema by `protoc --decode` in the host tests).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::io::{self, Write};

use prost::Message;

use crate::event::Event;
use crate::record::reader::Recording;
use crate::record::{Record, Sample};

#[derive(Clone, PartialEq, Message)]
struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "12")]
    interned_data: Option<InternedData>,
    #[prost(uint32, optional, tag = "13")]
    sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(uint64, optional, tag = "5")]
    parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "8")]
    counter: Option<CounterDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct CounterDescriptor {
    /// `CounterDescriptor.Unit`: 3 is UNIT_SIZE_BYTES.
    #[prost(int32, optional, tag = "3")]
    unit: Option<i32>,
    #[prost(string, optional, tag = "6")]
    unit_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackEvent {
    #[prost(repeated, message, tag = "4")]
    debug_annotations: Vec<DebugAnnotation>,
    /// `TrackEvent.Type`: 1 slice begin, 2 slice end, 3 instant, 4 counter.
    #[prost(int32, optional, tag = "9")]
    r#type: Option<i32>,
    #[prost(uint64, optional, tag = "10")]
    name_iid: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    track_uuid: Option<u64>,
    #[prost(string, optional, tag = "23")]
    name: Option<String>,
    #[prost(int64, optional, tag = "30")]
    counter_value: Option<i64>,
    #[prost(double, optional, tag = "44")]
    double_counter_value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
struct DebugAnnotation {
    #[prost(uint64, optional, tag = "1")]
    name_iid: Option<u64>,
    #[prost(bool, optional, tag = "2")]
    bool_value: Option<bool>,
    #[prost(uint64, optional, tag = "3")]
    uint_value: Option<u64>,
    #[prost(string, optional, tag = "6")]
    string_value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct InternedData {
    #[prost(repeated, message, tag = "2")]
    event_names: Vec<Interned>,
    #[prost(repeated, message, tag = "3")]
    debug_annotation_names: Vec<Interned>,
}

/// `EventName` and `DebugAnnotationName` have the same two fields.
#[derive(Clone, PartialEq, Message)]
struct Interned {
    #[prost(uint64, optional, tag = "1")]
    iid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
}

const SLICE_BEGIN: i32 = 1;
const SLICE_END: i32 = 2;
const INSTANT: i32 = 3;
const COUNTER: i32 = 4;
const UNIT_SIZE_BYTES: i32 = 3;
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;
/// Every packet is on one sequence, whose interned names the first sets.
const SEQUENCE: u32 = 1;

/// Interned event names, by iid (index + 1).
const NAMES: [&str; 3] = ["memory.high throttle", "memcg reclaim", "direct reclaim"];
const THROTTLE: u64 = 1;
const RECLAIM: u64 = 2;
const DIRECT: u64 = 3;
/// Interned annotation names, by iid (index + 1).
const ARGS: [&str; 8] = [
    "reclaim_ns",
    "sleep_ns",
    "over_high",
    "nr_pages",
    "tgid",
    "pages",
    "in_throttle",
    "rss_bytes",
];

fn uint(iid: usize, v: u64) -> DebugAnnotation {
    DebugAnnotation {
        name_iid: Some(iid as u64),
        uint_value: Some(v),
        ..Default::default()
    }
}

enum Value {
    Bytes(u64),
    Share(f32),
}

/// Which track an event goes on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Track {
    Host,
    Cgroup(u64),
    Task(u64, u32),
    Counter(u64, &'static str),
}

struct Writer<'a> {
    rec: &'a Recording,
    out: &'a mut dyn Write,
    tracks: HashMap<Track, u64>,
    buf: Vec<u8>,
}

impl Writer<'_> {
    fn packet(&mut self, p: &TracePacket) -> io::Result<()> {
        self.buf.clear();
        // Trace.packet is field 1, length-delimited.
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut self.buf);
        prost::encoding::encode_varint(p.encoded_len() as u64, &mut self.buf);
        p.encode(&mut self.buf).map_err(io::Error::other)?;
        self.out.write_all(&self.buf)
    }

    /// The uuid of a track, describing it first when it is new.
    fn track(&mut self, t: Track) -> io::Result<u64> {
        self.track_named(t, String::new)
    }

    /// A task's track, named after the comm it had when first seen.
    fn task(&mut self, cgroup: u64, pid: u32, comm: &crate::event::Comm) -> io::Result<u64> {
        self.track_named(Track::Task(cgroup, pid), || format!("{comm}[{pid}]"))
    }

    fn track_named(&mut self, t: Track, task_name: impl FnOnce() -> String) -> io::Result<u64> {
        if let Some(&u) = self.tracks.get(&t) {
            return Ok(u);
        }
        let parent = match &t {
            Track::Host | Track::Cgroup(_) => None,
            Track::Task(0, _) | Track::Counter(0, _) => Some(self.track(Track::Host)?),
            Track::Task(cg, _) | Track::Counter(cg, _) => Some(self.track(Track::Cgroup(*cg))?),
        };
        let uuid = self.tracks.len() as u64 + 1;
        let (name, counter) = match &t {
            Track::Host => (format!("host {}", self.rec.header.host), None),
            Track::Cgroup(id) => (format!("cgroup {}", self.rec.path(*id)), None),
            Track::Task(..) => (task_name(), None),
            Track::Counter(_, name) => {
                let bytes = !name.contains('%');
                let counter = CounterDescriptor {
                    unit: bytes.then_some(UNIT_SIZE_BYTES),
                    unit_name: (!bytes).then(|| "%".to_string()),
                };
                ((*name).to_string(), Some(counter))
            }
        };
        self.tracks.insert(t, uuid);
        self.packet(&TracePacket {
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                name: Some(name),
                parent_uuid: parent,
                counter,
            }),
            ..Default::default()
        })?;
        Ok(uuid)
    }

    fn event(&mut self, ts: u64, e: TrackEvent) -> io::Result<()> {
        self.packet(&TracePacket {
            timestamp: Some(ts),
            trusted_packet_sequence_id: Some(SEQUENCE),
            sequence_flags: Some(SEQ_NEEDS_INCREMENTAL_STATE),
            track_event: Some(e),
            ..Default::default()
        })
    }

    fn slice(
        &mut self,
        track: u64,
        name_iid: u64,
        (start, end): (u64, u64),
        args: Vec<DebugAnnotation>,
    ) -> io::Result<()> {
        self.event(
            start,
            TrackEvent {
                r#type: Some(SLICE_BEGIN),
                name_iid: Some(name_iid),
                track_uuid: Some(track),
                debug_annotations: args,
                ..Default::default()
            },
        )?;
        self.event(
            end,
            TrackEvent {
                r#type: Some(SLICE_END),
                track_uuid: Some(track),
                ..Default::default()
            },
        )
    }

    fn instant(
        &mut self,
        track: u64,
        ts: u64,
        name: String,
        args: Vec<DebugAnnotation>,
    ) -> io::Result<()> {
        self.event(
            ts,
            TrackEvent {
                r#type: Some(INSTANT),
                name: Some(name),
                track_uuid: Some(track),
                debug_annotations: args,
                ..Default::default()
            },
        )
    }

    /// A counter value: bytes (a `%` in the name: a share, in percent).
    fn counter(&mut self, cgroup: u64, name: &'static str, ts: u64, v: Value) -> io::Result<()> {
        let track = self.track(Track::Counter(cgroup, name))?;
        let (int, double) = match v {
            Value::Bytes(b) => (Some(b.min(i64::MAX as u64) as i64), None),
            Value::Share(p) => (None, Some(f64::from(p))),
        };
        self.event(
            ts,
            TrackEvent {
                r#type: Some(COUNTER),
                track_uuid: Some(track),
                counter_value: int,
                double_counter_value: double,
                ..Default::default()
            },
        )
    }

    fn sample(&mut self, s: &Sample) -> io::Result<()> {
        let ts = s.ts_ns;
        self.counter(0, "MemAvailable", ts, Value::Bytes(s.host.mem_available))?;
        if s.host.swap_total > 0 {
            self.counter(0, "SwapFree", ts, Value::Bytes(s.host.swap_free))?;
        }
        if let Some(p) = s.host.pressure {
            self.counter(0, "memory PSI some avg10 %", ts, Value::Share(p.some_avg10))?;
            self.counter(0, "memory PSI full avg10 %", ts, Value::Share(p.full_avg10))?;
        }
        for c in &s.cgroups {
            self.track(Track::Cgroup(c.id))?;
            for (name, v) in [
                ("memory.current", c.mem.current),
                ("memory.high", c.mem.high),
                ("memory.max", c.mem.max),
            ] {
                if let Some(v) = v {
                    self.counter(c.id, name, ts, Value::Bytes(v))?;
                }
            }
            if let Some(p) = c.mem.pressure {
                let (some, full) = (Value::Share(p.some_avg10), Value::Share(p.full_avg10));
                self.counter(c.id, "memory.pressure some avg10 %", ts, some)?;
                self.counter(c.id, "memory.pressure full avg10 %", ts, full)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, r: &Record) -> io::Result<()> {
        let page = self.rec.header.page_size.max(1);
        match r {
            Record::Event(Event::Throttle(t)) => {
                let track = self.task(t.memcg_id, t.task.pid, &t.task.comm)?;
                let args = vec![
                    uint(1, t.reclaim_ns),
                    uint(2, t.sleep_ns()),
                    DebugAnnotation {
                        name_iid: Some(3),
                        string_value: Some(self.rec.path(t.over_high_id)),
                        ..Default::default()
                    },
                    uint(4, u64::from(t.nr_pages)),
                    uint(5, u64::from(t.task.tgid)),
                ];
                self.slice(track, THROTTLE, (t.start_ns, t.ts_ns), args)
            }
            Record::Event(e @ (Event::Reclaim(x) | Event::DirectReclaim(x))) => {
                let direct = matches!(e, Event::DirectReclaim(_));
                let cg = if direct { 0 } else { x.memcg_id };
                let track = self.task(cg, x.task.pid, &x.task.comm)?;
                let args = vec![
                    uint(6, x.nr_reclaimed),
                    DebugAnnotation {
                        name_iid: Some(7),
                        bool_value: Some(x.in_throttle),
                        ..Default::default()
                    },
                ];
                let name = if direct { DIRECT } else { RECLAIM };
                self.slice(track, name, (x.start_ns, x.ts_ns), args)
            }
            Record::Event(Event::OomKill(o)) => {
                let track = self.track(if o.victim_memcg_id == 0 {
                    Track::Host
                } else {
                    Track::Cgroup(o.victim_memcg_id)
                })?;
                let args = o
                    .rss_pages
                    .map(|p| uint(8, p.total().saturating_mul(page)))
                    .into_iter()
                    .collect();
                let name = format!(
                    "OOM kill {}[{}] (out of memory: {})",
                    o.victim.comm,
                    o.victim.pid,
                    self.rec.path(o.oom_memcg_id)
                );
                self.instant(track, o.ts_ns, name, args)
            }
            Record::Event(Event::Brake(b)) => {
                let track = self.track(Track::Host)?;
                let name = format!(
                    "kernel brake {}[{}] in {}, agent silent {} ms",
                    b.task.comm,
                    b.task.tgid,
                    self.rec.path(b.rule_memcg_id),
                    b.heartbeat_age_ns / 1_000_000
                );
                self.instant(track, b.ts_ns, name, Vec::new())
            }
            Record::Event(Event::Lost(l)) => {
                let track = self.track(Track::Host)?;
                let name = format!("{} {} events lost", l.count, l.kind.as_str());
                self.instant(track, l.ts_ns, name, Vec::new())
            }
            Record::Event(Event::ThrottleStart(_)) => Ok(()),
            Record::Sample(s) => self.sample(s),
            Record::Action(a) => {
                let track = self.track(if a.cgroup_id == 0 {
                    Track::Host
                } else {
                    Track::Cgroup(a.cgroup_id)
                })?;
                let name = format!("agent {}: {}", a.kind, a.details);
                self.instant(track, a.ts_ns, name, Vec::new())
            }
            Record::Note { ts_ns, text } => {
                let track = self.track(Track::Host)?;
                self.instant(track, *ts_ns, text.clone(), Vec::new())
            }
        }
    }
}

/// Writes the Perfetto protobuf trace of a recording, a packet at a time.
pub fn perfetto<R: Borrow<Record>>(
    rec: &Recording,
    records: impl IntoIterator<Item = R>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut w = Writer {
        rec,
        out,
        tracks: HashMap::new(),
        buf: Vec::new(),
    };
    let interned = |names: &[&str]| -> Vec<Interned> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Interned {
                iid: Some(i as u64 + 1),
                name: Some((*n).to_string()),
            })
            .collect()
    };
    w.packet(&TracePacket {
        trusted_packet_sequence_id: Some(SEQUENCE),
        sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
        interned_data: Some(InternedData {
            event_names: interned(&NAMES),
            debug_annotation_names: interned(&ARGS),
        }),
        ..Default::default()
    })?;
    w.track(Track::Host)?;
    for r in records {
        w.record(r.borrow())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, Message)]
    struct Trace {
        #[prost(message, repeated, tag = "1")]
        packet: Vec<TracePacket>,
    }

    #[test]
    fn the_trace_has_tracks_slices_counters_and_instants() {
        let (bytes, _) = crate::record::reader::tests::file(2);
        let rec = crate::record::reader::parse(&bytes).unwrap();
        let mut out = Vec::new();
        perfetto(&rec, &rec.records, &mut out).unwrap();
        let trace = Trace::decode(&out[..]).unwrap();
        let p = &trace.packet;
        // First the interned names, on the one sequence.
        assert_eq!(p[0].sequence_flags, Some(SEQ_INCREMENTAL_STATE_CLEARED));
        let names = &p[0].interned_data.as_ref().unwrap().event_names;
        assert_eq!(names[0].name.as_deref(), Some("memory.high throttle"));
        let tracks: HashMap<u64, &TrackDescriptor> = p
            .iter()
            .filter_map(|x| x.track_descriptor.as_ref())
            .map(|t| (t.uuid.unwrap(), t))
            .collect();
        let named = |n: &str| {
            tracks
                .values()
                .find(|t| t.name.as_deref() == Some(n))
                .copied()
        };
        let cgroup = named("cgroup /work/job").expect("cgroup track");
        let hog = named("hog[100]").expect("task track");
        assert_eq!(hog.parent_uuid, cgroup.uuid);
        let events: Vec<(u64, &TrackEvent)> = p
            .iter()
            .filter_map(|x| Some((x.timestamp?, x.track_event.as_ref()?)))
            .collect();
        // Every event is on a described track.
        assert!(
            events
                .iter()
                .all(|(_, e)| tracks.contains_key(&e.track_uuid.unwrap()))
        );
        let on_hog: Vec<&(u64, &TrackEvent)> = events
            .iter()
            .filter(|(_, e)| e.track_uuid == hog.uuid)
            .collect();
        let begin = on_hog
            .iter()
            .find(|(_, e)| e.r#type == Some(SLICE_BEGIN))
            .unwrap();
        assert_eq!(begin.1.name_iid, Some(THROTTLE));
        assert_eq!(begin.0, 1_000_000_000);
        let end = on_hog
            .iter()
            .find(|(_, e)| e.r#type == Some(SLICE_END))
            .unwrap();
        assert_eq!(end.0, 1_000_000_500);
        let over = begin
            .1
            .debug_annotations
            .iter()
            .find(|a| a.name_iid == Some(3))
            .unwrap();
        assert_eq!(over.string_value.as_deref(), Some("/work"));
        let current = named("memory.current").expect("counter track");
        assert_eq!(current.parent_uuid, cgroup.uuid);
        assert!(
            events
                .iter()
                .any(|(_, e)| e.track_uuid == current.uuid && e.counter_value == Some(100 << 20))
        );
        assert!(events.iter().any(|(_, e)| {
            e.r#type == Some(INSTANT)
                && e.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("OOM kill hog[101]"))
        }));
    }
}
