//! Evidence for people and other tools: `memtrace report` (this file and
//! [`markdown`]), `memtrace export` ([`export`]) and the lines of `memtrace
//! events` ([`output`]).
//!
//! The report is the post-mortem of a recording, for an incident document.
//! The events are replayed through the same [`Model`] the agent uses, so
//! the numbers are the ones the agent would have seen; next to them stand
//! the kernel's own counters from the recorded samples.

pub mod export;
mod html;
mod markdown;
pub mod output;
pub mod perfetto;
pub mod series;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::clock::Clock;
use crate::event::Event;
use crate::model::{IntervalUnion, Model};
use crate::record::reader::{Damage, Recording};
use crate::record::{Record, Sample};
use crate::sys::registry::CgroupRegistry;

/// Throttling of one cgroup with few gaps: what a person calls an incident.
#[derive(Clone, Debug, Serialize)]
pub struct Incident {
    pub cgroup: String,
    pub start: String,
    pub end: String,
    pub duration_ms: u64,
    pub throttled_ms: u64,
    /// Highest throttled share of any one second.
    pub peak_share_pct: f64,
    pub episodes: u64,
    /// The process throttled longest in it.
    pub top_task: Option<String>,
}

/// One cgroup's totals.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupTotals {
    pub cgroup: String,
    /// Time at least one task of this cgroup itself was throttled.
    pub throttled_ms: u64,
    pub episodes: u64,
    pub reclaim_ms: u64,
    pub sleep_ms: u64,
    pub over_high: Vec<String>,
}

/// A process's throttling.
#[derive(Clone, Debug, Serialize)]
pub struct TaskTotals {
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
    pub throttled_ms: u64,
    pub episodes: u64,
}

/// Reclaim latency of a cgroup (or `(direct)` for global direct reclaim).
#[derive(Clone, Debug, Serialize)]
pub struct ReclaimLatency {
    pub cgroup: String,
    pub passes: u64,
    pub pages: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// memtrace's total against the kernel's counters, over the sampled span.
/// None (JSON `null`, `n/a` in Markdown): not measured on this system,
/// never 0.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub cgroup: String,
    /// Throttled time of the subtree (as memory.pressure counts it); None
    /// when the throttle probe did not run.
    pub memtrace_ms: Option<u64>,
    pub psi_some_ms: Option<u64>,
    pub psi_full_ms: Option<u64>,
    pub memory_events_high: Option<u64>,
    pub oom_kills: Option<u64>,
    pub diff_vs_some_pct: Option<f64>,
}

/// An OOM kill.
#[derive(Clone, Debug, Serialize)]
pub struct OomReport {
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
    pub oom_cgroup: Option<String>,
    pub rss_bytes: Option<u64>,
}

/// Something the agent did.
#[derive(Clone, Debug, Serialize)]
pub struct ActionReport {
    pub time: String,
    pub kind: String,
    pub cgroup: String,
    pub details: serde_json::Value,
}

/// The host over time.
#[derive(Clone, Debug, Serialize)]
pub struct HostPoint {
    pub time: String,
    pub mem_available_bytes: u64,
    pub swap_free_bytes: u64,
    pub swap_total_bytes: u64,
    /// Share of the interval with some / every task stalled on memory.
    pub psi_some_pct: Option<f64>,
    pub psi_full_pct: Option<f64>,
}

/// Whether the recording is whole.
#[derive(Clone, Debug, Serialize)]
pub struct Integrity {
    pub chunks: u64,
    /// Every damaged range, and their bytes; `damaged` lists the first
    /// [`MAX_DAMAGE_ROWS`].
    pub damaged_chunks: usize,
    pub damaged_bytes: u64,
    pub damaged: Vec<Damage>,
    pub torn_tail_at: Option<u64>,
    pub unknown_records: u64,
    pub lost_events: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub host: String,
    pub kernel: String,
    /// RFC 3339, UTC (every time in the report is UTC). A recording with no
    /// records starts and ends at its header's start; one with no header
    /// time either has none.
    pub start: Option<String>,
    pub end: Option<String>,
    pub duration_s: f64,
    pub throttle_probe: bool,
    pub degraded: Vec<String>,
    pub incidents: Vec<Incident>,
    pub cgroups: Vec<CgroupTotals>,
    pub tasks: Vec<TaskTotals>,
    pub reclaim: Vec<ReclaimLatency>,
    pub evidence: Vec<Evidence>,
    pub oom_kills: Vec<OomReport>,
    pub actions: Vec<ActionReport>,
    pub host_series: Vec<HostPoint>,
    pub integrity: Integrity,
    /// Rows left out of each list above (a damaged or forged file can
    /// name thousands of cgroups): the list's name and how many.
    pub omitted: BTreeMap<String, usize>,
    /// Who each cgroup in the lists above is (unit, user, container, pod),
    /// by path: named from the recorded path, as the agent named it.
    pub names: BTreeMap<String, crate::names::Identity>,
    /// What the HTML report draws.
    #[serde(skip)]
    pub charts: series::Charts,
}

/// The most rows a list of the report keeps; the rest are counted in
/// [`Report::omitted`].
pub const MAX_ROWS: usize = 50;
/// Damaged byte ranges listed one by one; the rest are summed.
pub const MAX_DAMAGE_ROWS: usize = 20;

/// Keeps the first [`MAX_ROWS`] of a sorted list, counting the rest.
fn cap<T>(v: &mut Vec<T>, max: usize, name: &str, omitted: &mut BTreeMap<String, usize>) {
    if v.len() > max {
        omitted.insert(name.to_string(), v.len() - max);
        v.truncate(max);
    }
}

const SEC: u64 = 1_000_000_000;
/// Gaps up to this long do not split an incident.
const INCIDENT_GAP: u64 = 3 * SEC;

#[derive(Default)]
struct Own {
    union: IntervalUnion,
    episodes: u64,
    reclaim_ns: u64,
    sleep_ns: u64,
    over_high: BTreeMap<String, ()>,
    tasks: HashMap<u32, (String, IntervalUnion, u64)>,
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// Builds the report of a recording held in memory.
pub fn build(rec: &Recording) -> Report {
    // Time order: CPUs' events interleave a little in the file, and the
    // model and interval unions are built for records that arrive in order.
    let mut records: Vec<&Record> = rec.records.iter().collect();
    records.sort_by_key(|r| r.ts_ns());
    build_from(rec, records)
}

/// Builds the report of a recording from its records in time order (a
/// [`crate::record::stream::Sorted`] stream), with `rec` the result of a
/// scan: its header, cgroup paths, span and integrity, records or not.
pub fn build_from<R: Borrow<Record>>(
    rec: &Recording,
    records: impl IntoIterator<Item = R>,
) -> Report {
    let mut b = Builder::new(rec);
    for r in records {
        b.push(r.borrow());
    }
    b.finish()
}

/// The report's state while records stream through it.
struct Builder<'a> {
    rec: &'a Recording,
    clock: Clock,
    own: BTreeMap<u64, Own>,
    model: Model,
    reg: CgroupRegistry,
    ooms: Vec<OomReport>,
    actions: Vec<ActionReport>,
    samples: Samples,
    /// Samples for the charts, one per chart step at most (the charts
    /// have [`series::MAX_POINTS`] points), so a recording of any length
    /// keeps a bounded number; without their process lists.
    chart_samples: Vec<Sample>,
    chart_step: u64,
}

impl<'a> Builder<'a> {
    fn new(rec: &'a Recording) -> Self {
        Self {
            rec,
            clock: rec.header.clock(),
            own: BTreeMap::new(),
            model: Model::new(0, u64::MAX / 4),
            reg: CgroupRegistry::from_paths(rec.cgroups.iter().map(|(id, p)| (*id, p.as_str()))),
            ooms: Vec::new(),
            actions: Vec::new(),
            samples: Samples::default(),
            chart_samples: Vec::new(),
            chart_step: series::step(rec.span()),
        }
    }

    fn push(&mut self, r: &Record) {
        let (rec, clock) = (self.rec, &self.clock);
        let (own, model, reg) = (&mut self.own, &mut self.model, &self.reg);
        match r {
            Record::Event(e) => {
                model.apply(e, reg);
                match e {
                    Event::Throttle(t) if t.memcg_id != 0 => {
                        let o = own.entry(t.memcg_id).or_default();
                        o.union.add(t.start_ns, t.ts_ns);
                        o.episodes += 1;
                        o.reclaim_ns += t.reclaim_ns;
                        o.sleep_ns += t.sleep_ns();
                        if t.over_high_id != 0 {
                            // The path is made (allocated) only the first
                            // time a cgroup is seen over its high here.
                            let named = rec.cgroups.get(&t.over_high_id).filter(|p| !p.is_empty());
                            if !named.is_some_and(|p| o.over_high.contains_key(p.as_str())) {
                                o.over_high.insert(rec.path(t.over_high_id), ());
                            }
                        }
                        let task = o
                            .tasks
                            .entry(t.task.tgid)
                            .or_insert_with(|| (t.task.comm.to_string(), IntervalUnion::new(), 0));
                        task.1.add(t.start_ns, t.ts_ns);
                        task.2 += 1;
                    }
                    Event::OomKill(o) => self.ooms.push(OomReport {
                        time: clock.rfc3339(o.ts_ns),
                        pid: o.victim.tgid.max(o.victim.pid),
                        comm: o.victim.comm.to_string(),
                        cgroup: rec.path(o.victim_memcg_id),
                        oom_cgroup: (o.oom_memcg_id != 0).then(|| rec.path(o.oom_memcg_id)),
                        rss_bytes: o
                            .rss_pages
                            .map(|p| p.total().saturating_mul(rec.header.page_size.max(1))),
                    }),
                    _ => {}
                }
            }
            Record::Action(a) => self.actions.push(ActionReport {
                time: clock.rfc3339(a.ts_ns),
                kind: a.kind.clone(),
                cgroup: rec.path(a.cgroup_id),
                details: serde_json::from_str(&a.details).unwrap_or(serde_json::Value::Null),
            }),
            Record::Sample(s) => {
                self.samples.push(s);
                let due = self
                    .chart_samples
                    .last()
                    .is_none_or(|p| s.ts_ns >= p.ts_ns.saturating_add(self.chart_step));
                if due {
                    let mut kept = s.clone();
                    for c in &mut kept.cgroups {
                        c.top.clear();
                    }
                    self.chart_samples.push(kept);
                }
            }
            Record::Note { .. } => {}
        }
    }

    fn finish(self) -> Report {
        let Self {
            rec,
            clock,
            own,
            model,
            mut ooms,
            mut actions,
            samples,
            chart_samples,
            ..
        } = self;
        // No records: the header's own start, never the boot (monotonic 0).
        let span = rec.span();
        let (first, last) = span.unwrap_or((0, 0));
        let (start, end) = match span {
            Some((a, b)) => (Some(clock.rfc3339(a)), Some(clock.rfc3339(b))),
            None => {
                let h = (!rec.header.start.is_empty()).then(|| rec.header.start.clone());
                (h.clone(), h)
            }
        };

        let mut incidents = Vec::new();
        for (id, o) in &own {
            incidents.extend(incidents_of(&rec.path(*id), o, &clock));
        }
        // Every order has a tie-break, so the same file gives the same
        // report.
        incidents.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.cgroup.cmp(&b.cgroup)));

        let mut cgroups: Vec<CgroupTotals> = own
            .iter()
            .map(|(id, o)| CgroupTotals {
                cgroup: rec.path(*id),
                throttled_ms: ms(o.union.total()),
                episodes: o.episodes,
                reclaim_ms: ms(o.reclaim_ns),
                sleep_ms: ms(o.sleep_ns),
                over_high: o.over_high.keys().cloned().collect(),
            })
            .collect();
        cgroups.sort_by(|a, b| {
            b.throttled_ms
                .cmp(&a.throttled_ms)
                .then_with(|| a.cgroup.cmp(&b.cgroup))
        });

        let mut tasks: Vec<TaskTotals> = own
            .iter()
            .flat_map(|(id, o)| {
                o.tasks.iter().map(move |(pid, (comm, u, n))| TaskTotals {
                    pid: *pid,
                    comm: comm.clone(),
                    cgroup: rec.path(*id),
                    throttled_ms: ms(u.total()),
                    episodes: *n,
                })
            })
            .collect();
        tasks.sort_by(|a, b| {
            b.throttled_ms
                .cmp(&a.throttled_ms)
                .then_with(|| a.cgroup.cmp(&b.cgroup))
                .then(a.pid.cmp(&b.pid))
        });
        tasks.truncate(10);

        let mut reclaim: Vec<ReclaimLatency> = model
            .cgroups
            .values()
            .filter(|c| c.reclaim.count > 0)
            .map(|c| latency(rec.path(c.id), &c.reclaim))
            .collect();
        reclaim.sort_by(|a, b| {
            b.passes
                .cmp(&a.passes)
                .then_with(|| a.cgroup.cmp(&b.cgroup))
        });
        if model.direct_reclaim.count > 0 {
            reclaim.push(latency("(direct reclaim)".into(), &model.direct_reclaim));
        }

        let mut evidence = evidence(rec, &model, &samples.cgroups);
        let host_series = host_series(&samples.host, &clock);
        let kept: Vec<&Sample> = chart_samples.iter().collect();
        let charts = series::charts(rec, &own_unions(&own), &kept, &ooms, &actions, &clock);

        let mut omitted = BTreeMap::new();
        cap(&mut incidents, MAX_ROWS, "incidents", &mut omitted);
        cap(&mut cgroups, MAX_ROWS, "cgroups", &mut omitted);
        cap(&mut reclaim, MAX_ROWS, "reclaim", &mut omitted);
        cap(&mut evidence, MAX_ROWS, "evidence", &mut omitted);
        cap(&mut ooms, MAX_ROWS, "oom_kills", &mut omitted);
        cap(&mut actions, MAX_ROWS, "actions", &mut omitted);
        let mut damaged = rec.damaged.clone();
        cap(&mut damaged, MAX_DAMAGE_ROWS, "damaged", &mut omitted);
        let paths = incidents
            .iter()
            .map(|i| &i.cgroup)
            .chain(
                cgroups
                    .iter()
                    .flat_map(|c| std::iter::once(&c.cgroup).chain(&c.over_high)),
            )
            .chain(tasks.iter().map(|t| &t.cgroup))
            .chain(reclaim.iter().map(|r| &r.cgroup))
            .chain(evidence.iter().map(|e| &e.cgroup))
            .chain(
                ooms.iter()
                    .flat_map(|o| std::iter::once(&o.cgroup).chain(&o.oom_cgroup)),
            )
            .chain(actions.iter().map(|a| &a.cgroup));
        let names = paths
            .filter(|p| p.starts_with('/'))
            .map(|p| (p.clone(), crate::names::identify(p)))
            .collect();

        Report {
            host: rec.header.host.clone(),
            kernel: rec.header.kernel.clone(),
            start,
            end,
            duration_s: last.saturating_sub(first) as f64 / 1e9,
            throttle_probe: rec.header.throttle_measured(),
            degraded: rec.header.degraded.clone(),
            incidents,
            cgroups,
            tasks,
            reclaim,
            evidence,
            oom_kills: ooms,
            actions,
            host_series,
            integrity: Integrity {
                chunks: rec.chunks,
                // The reader lists the first damaged chunks one by one and
                // counts the rest.
                damaged_chunks: rec.damaged.len()
                    + usize::try_from(rec.damaged_more).unwrap_or(usize::MAX),
                damaged_bytes: rec.damaged.iter().map(|d| d.len).sum(),
                damaged,
                torn_tail_at: rec.torn_tail,
                unknown_records: rec.unknown_records,
                lost_events: model
                    .lost
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
            },
            omitted,
            names,
            charts,
        }
    }
}

/// Each cgroup's own throttle intervals, for the charts.
fn own_unions(own: &BTreeMap<u64, Own>) -> BTreeMap<u64, &IntervalUnion> {
    own.iter().map(|(id, o)| (*id, &o.union)).collect()
}

fn latency(cgroup: String, r: &crate::model::ReclaimStats) -> ReclaimLatency {
    ReclaimLatency {
        cgroup,
        passes: r.count,
        pages: r.pages,
        p50_us: r.percentile_ns(50.0) / 1_000,
        p90_us: r.percentile_ns(90.0) / 1_000,
        p99_us: r.percentile_ns(99.0) / 1_000,
        max_us: r.hist.max(),
    }
}

fn incidents_of(path: &str, o: &Own, clock: &Clock) -> Vec<Incident> {
    let mut out = Vec::new();
    let spans = o.union.spans();
    let mut i = 0;
    while i < spans.len() {
        let start = spans[i].0;
        let mut end = spans[i].1;
        let mut j = i + 1;
        while j < spans.len() && spans[j].0 <= end.saturating_add(INCIDENT_GAP) {
            end = end.max(spans[j].1);
            j += 1;
        }
        let throttled = o.union.covered(start, end);
        let peak = peak_share(&spans[i..j]);
        let episodes = o
            .tasks
            .values()
            .map(|(_, u, _)| {
                u.spans()
                    .iter()
                    .filter(|(s, _)| *s >= start && *s <= end)
                    .count() as u64
            })
            .sum();
        let top_task = o
            .tasks
            .iter()
            .map(|(pid, (comm, u, _))| (u.covered(start, end), format!("{comm}[{pid}]")))
            .max()
            .map(|(_, name)| name);
        out.push(Incident {
            cgroup: path.to_string(),
            start: clock.rfc3339(start),
            end: clock.rfc3339(end),
            duration_ms: ms(end - start),
            throttled_ms: ms(throttled),
            peak_share_pct: (peak * 1000.0).round() / 10.0,
            episodes,
            top_task,
        });
        i = j;
    }
    out
}

/// The largest share of any one-second window that `spans` (disjoint,
/// sorted) cover. Some densest window starts at a span's start or ends at
/// a span's end, so only those are tried, each by binary search.
fn peak_share(spans: &[(u64, u64)]) -> f64 {
    // before[i]: time covered by spans[..i].
    let mut before = Vec::with_capacity(spans.len() + 1);
    before.push(0u64);
    for &(s, e) in spans {
        before.push(before[before.len() - 1].saturating_add(e - s));
    }
    let covered = |from: u64, to: u64| -> u64 {
        // Spans wholly inside, plus the parts of the two at the edges.
        let a = spans.partition_point(|&(_, e)| e <= from);
        let b = spans.partition_point(|&(s, _)| s < to);
        if a >= b {
            return 0;
        }
        let whole = before[b] - before[a];
        let cut_front = from.saturating_sub(spans[a].0);
        let cut_back = spans[b - 1].1.saturating_sub(to);
        whole.saturating_sub(cut_front).saturating_sub(cut_back)
    };
    let best = spans
        .iter()
        .flat_map(|&(s, e)| {
            [
                covered(s, s.saturating_add(SEC)),
                covered(e.saturating_sub(SEC), e),
            ]
        })
        .max()
        .unwrap_or(0);
    best.min(SEC) as f64 / SEC as f64
}

/// What the report keeps of the samples: each cgroup's first and last
/// reading, and the host's readings (a few dozen bytes a second).
#[derive(Default)]
struct Samples {
    cgroups: CgroupSamples,
    host: Vec<HostSample>,
}

type Reading = (u64, crate::sys::cgroupfs::CgroupMemory);

#[derive(Default)]
struct CgroupSamples {
    first: HashMap<u64, Reading>,
    last: HashMap<u64, Reading>,
}

struct HostSample {
    ts_ns: u64,
    host: crate::sys::cgroupfs::HostMemory,
}

impl Samples {
    fn push(&mut self, s: &Sample) {
        for c in &s.cgroups {
            self.cgroups.first.entry(c.id).or_insert((s.ts_ns, c.mem));
            self.cgroups.last.insert(c.id, (s.ts_ns, c.mem));
        }
        self.host.push(HostSample {
            ts_ns: s.ts_ns,
            host: s.host,
        });
    }
}

/// memtrace's subtree totals against memory.pressure and memory.events,
/// between the first and last sample of each cgroup.
fn evidence(rec: &Recording, model: &Model, samples: &CgroupSamples) -> Vec<Evidence> {
    let measured = rec.header.throttle_measured();
    let CgroupSamples { first, last } = samples;
    let mut out: Vec<Evidence> = first
        .iter()
        .filter_map(|(id, (t0, m0))| {
            let (t1, m1) = last.get(id)?;
            let throttled = measured.then(|| {
                model
                    .cgroups
                    .get(id)
                    .map_or(0, |c| c.throttle.throttled_in(*t1, t1.saturating_sub(*t0)))
            });
            let (some, full) = match (m0.pressure, m1.pressure) {
                (Some(a), Some(b)) => (
                    Some(b.some_total_us.saturating_sub(a.some_total_us) / 1_000),
                    Some(b.full_total_us.saturating_sub(a.full_total_us) / 1_000),
                ),
                _ => (None, None),
            };
            let grew = m1.events.since(&m0.events);
            let (high, oom) = (grew.high, grew.oom_kill);
            let any = |v: Option<u64>| v.is_some_and(|v| v > 0);
            (any(throttled) || any(some) || any(high) || any(oom)).then(|| Evidence {
                cgroup: rec.path(*id),
                memtrace_ms: throttled.map(ms),
                psi_some_ms: some,
                psi_full_ms: full,
                memory_events_high: high,
                oom_kills: oom,
                diff_vs_some_pct: match (throttled, some) {
                    (Some(t), Some(some)) if some > 0 => {
                        Some(((ms(t) as f64 - some as f64) * 1000.0 / some as f64).round() / 10.0)
                    }
                    _ => None,
                },
            })
        })
        .collect();
    let weight = |e: &Evidence| e.memtrace_ms.unwrap_or(0).max(e.psi_some_ms.unwrap_or(0));
    out.sort_by(|a, b| {
        weight(b)
            .cmp(&weight(a))
            .then_with(|| a.cgroup.cmp(&b.cgroup))
    });
    out
}

fn host_series(samples: &[HostSample], clock: &Clock) -> Vec<HostPoint> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Vec::new();
    };
    // About 30 rows, at least a second apart.
    let step = (last.ts_ns.saturating_sub(first.ts_ns) / 30).max(SEC);
    let mut out = Vec::new();
    let mut prev: Option<&HostSample> = None;
    for s in samples {
        if let Some(p) = prev
            && s.ts_ns < p.ts_ns.saturating_add(step)
            && !std::ptr::eq(s, last)
        {
            continue;
        }
        let share = |f: fn(&crate::sys::cgroupfs::Psi) -> u64| -> Option<f64> {
            let p = prev?;
            let (a, b) = (p.host.pressure?, s.host.pressure?);
            let dt = s.ts_ns.saturating_sub(p.ts_ns) as f64 / 1e3;
            (dt > 0.0).then(|| ((f(&b).saturating_sub(f(&a))) as f64 * 1000.0 / dt).round() / 10.0)
        };
        out.push(HostPoint {
            time: clock.rfc3339(s.ts_ns),
            mem_available_bytes: s.host.mem_available,
            swap_free_bytes: s.host.swap_free,
            swap_total_bytes: s.host.swap_total,
            psi_some_pct: share(|p| p.some_total_us),
            psi_full_pct: share(|p| p.full_total_us),
        });
        prev = Some(s);
    }
    out
}

#[cfg(test)]
mod tests;
