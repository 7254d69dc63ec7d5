//! The numbers behind the report's pictures: per cgroup, over time, the
//! throttled share, memory.current against memory.high and memory.max and
//! memory PSI; for the host, MemAvailable, swap and PSI; kills and OOMs as
//! marks. Pure: built from the recording and what `build` already counted;
//! [`super::html`] draws it.

use std::collections::{BTreeMap, HashMap};

use super::{ActionReport, OomReport};
use crate::clock::Clock;
use crate::model::IntervalUnion;
use crate::record::Sample;
use crate::record::reader::Recording;

const SEC: u64 = 1_000_000_000;
/// Points per line at most: enough for a wide screen, small for a file.
pub const MAX_POINTS: u64 = 600;
/// Cgroups drawn at most, the most throttled (then OOM-killed) first.
pub const MAX_CGROUPS: usize = 8;

/// A mark on the time axis.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mark {
    /// Seconds from the start of the charts.
    pub t: f64,
    /// `oom` (the kernel) or `kill` (the agent), or another action kind.
    pub kind: String,
    pub text: String,
}

/// One cgroup over time; every series has a value per [`Charts::times`]
/// (None: nothing measured then).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupChart {
    pub cgroup: String,
    /// Share of each step with a task of the cgroup itself throttled, 0..=1
    /// (None: the throttle probe did not run).
    pub throttled: Vec<Option<f64>>,
    pub current: Vec<Option<u64>>,
    pub high: Vec<Option<u64>>,
    pub max: Vec<Option<u64>>,
    /// memory.pressure `some` share of each step, 0..=1.
    pub psi_some: Vec<Option<f64>>,
    pub marks: Vec<Mark>,
}

/// The host over time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostChart {
    pub mem_available: Vec<Option<u64>>,
    pub mem_total: u64,
    pub swap_used: Vec<Option<u64>>,
    pub swap_total: u64,
    pub psi_some: Vec<Option<f64>>,
    pub psi_full: Vec<Option<f64>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Charts {
    /// RFC 3339 UTC of the first point.
    pub start: String,
    /// Seconds between points.
    pub step_s: f64,
    /// Seconds from `start` of each point.
    pub times: Vec<f64>,
    pub cgroups: Vec<CgroupChart>,
    pub host: HostChart,
}

/// Time between two points of the charts of a recording spanning `span`:
/// at least a second, at most [`MAX_POINTS`] points.
pub fn step(span: Option<(u64, u64)>) -> u64 {
    let (first, last) = span.unwrap_or((0, 0));
    last.saturating_sub(first)
        .max(1)
        .div_ceil(MAX_POINTS)
        .max(SEC)
}

/// Builds the charts. `own` holds each cgroup's throttle intervals;
/// `samples` are in time order.
pub fn charts(
    rec: &Recording,
    own: &BTreeMap<u64, &IntervalUnion>,
    samples: &[&Sample],
    ooms: &[OomReport],
    actions: &[ActionReport],
    clock: &Clock,
) -> Charts {
    let Some((first, last)) = rec.span() else {
        return Charts::default();
    };
    let span = last.saturating_sub(first).max(1);
    let step = step(Some((first, last)));
    let n = span.div_ceil(step).max(1);
    let at = |i: u64| first.saturating_add(i.saturating_mul(step));
    let index = |t: u64| (t.saturating_sub(first) / step).min(n - 1) as usize;
    let measured = rec.header.throttle_measured();

    // Which cgroups: most throttled, then those with OOM kills or limits.
    let mut weight: HashMap<u64, (u64, u64)> = HashMap::new();
    for (id, u) in own {
        weight.entry(*id).or_default().0 = u.total();
    }
    let by_path: HashMap<String, u64> =
        rec.cgroups.iter().map(|(id, p)| (p.clone(), *id)).collect();
    for o in ooms {
        if let Some(id) = by_path.get(&o.cgroup) {
            weight.entry(*id).or_default().1 += 1;
        }
    }
    for s in samples {
        for c in &s.cgroups {
            if c.mem.high.is_some() || c.mem.max.is_some() {
                weight.entry(c.id).or_default();
            }
        }
    }
    let mut ids: Vec<(u64, (u64, u64))> = weight.into_iter().collect();
    ids.sort_by(|a, b| {
        (b.1.0, b.1.1)
            .cmp(&(a.1.0, a.1.1))
            .then_with(|| rec.path(a.0).cmp(&rec.path(b.0)))
    });
    ids.truncate(MAX_CGROUPS);

    let secs = |t: u64| t.saturating_sub(first) as f64 / 1e9;
    let mut cgroups = Vec::with_capacity(ids.len());
    for (id, _) in ids {
        let path = rec.path(id);
        let mut c = CgroupChart {
            cgroup: path.clone(),
            throttled: (0..n)
                .map(|i| {
                    measured.then(|| {
                        own.get(&id)
                            .map_or(0.0, |u| u.covered(at(i), at(i + 1)) as f64 / step as f64)
                    })
                })
                .collect(),
            current: vec![None; n as usize],
            high: vec![None; n as usize],
            max: vec![None; n as usize],
            psi_some: vec![None; n as usize],
            marks: Vec::new(),
        };
        let mut prev: Option<(u64, u64)> = None;
        for s in samples {
            let Some(m) = s.cgroups.iter().find(|x| x.id == id).map(|x| x.mem) else {
                continue;
            };
            let i = index(s.ts_ns);
            c.current[i] = m.current;
            // A limit that is not set is drawn as absent, not as 0.
            c.high[i] = m.high;
            c.max[i] = m.max;
            if let Some(p) = m.pressure {
                if let Some((t0, some0)) = prev
                    && s.ts_ns > t0
                {
                    let share =
                        p.some_total_us.saturating_sub(some0) as f64 * 1e3 / (s.ts_ns - t0) as f64;
                    c.psi_some[i] = Some(share.clamp(0.0, 1.0));
                }
                prev = Some((s.ts_ns, p.some_total_us));
            }
        }
        c.marks = marks(&path, ooms, actions, clock, first);
        cgroups.push(c);
    }

    let mut host = HostChart {
        mem_available: vec![None; n as usize],
        swap_used: vec![None; n as usize],
        psi_some: vec![None; n as usize],
        psi_full: vec![None; n as usize],
        ..Default::default()
    };
    let mut prev: Option<(u64, u64, u64)> = None;
    for s in samples {
        let i = index(s.ts_ns);
        let h = &s.host;
        host.mem_total = host.mem_total.max(h.mem_total);
        host.swap_total = host.swap_total.max(h.swap_total);
        host.mem_available[i] = Some(h.mem_available);
        host.swap_used[i] = Some(h.swap_total.saturating_sub(h.swap_free));
        if let Some(p) = h.pressure {
            if let Some((t0, some0, full0)) = prev
                && s.ts_ns > t0
            {
                let dt = (s.ts_ns - t0) as f64;
                let share =
                    |a: u64, b: u64| (a.saturating_sub(b) as f64 * 1e3 / dt).clamp(0.0, 1.0);
                host.psi_some[i] = Some(share(p.some_total_us, some0));
                host.psi_full[i] = Some(share(p.full_total_us, full0));
            }
            prev = Some((s.ts_ns, p.some_total_us, p.full_total_us));
        }
    }
    Charts {
        start: clock.rfc3339(first),
        step_s: step as f64 / 1e9,
        times: (0..n).map(|i| secs(at(i))).collect(),
        cgroups,
        host,
    }
}

/// The OOM kills and agent actions of one cgroup, as marks.
fn marks(
    path: &str,
    ooms: &[OomReport],
    actions: &[ActionReport],
    clock: &Clock,
    first: u64,
) -> Vec<Mark> {
    let t = |rfc: &str| -> f64 {
        humantime::parse_rfc3339(rfc)
            .ok()
            .and_then(|st| st.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| {
                (d.as_nanos() as i128 - clock.wall_ns(first)) as f64 / 1e9
            })
    };
    let mut out: Vec<Mark> = ooms
        .iter()
        .filter(|o| o.cgroup == path)
        .map(|o| Mark {
            t: t(&o.time),
            kind: "oom".into(),
            text: format!("the kernel OOM-killed {}[{}]", o.comm, o.pid),
        })
        .chain(
            actions
                .iter()
                .filter(|a| a.cgroup == path && a.kind != "warning")
                .map(|a| Mark {
                    t: t(&a.time),
                    kind: a.kind.clone(),
                    text: format!("agent {}", a.kind),
                }),
        )
        .collect();
    out.sort_by(|a, b| a.t.total_cmp(&b.t).then_with(|| a.text.cmp(&b.text)));
    out.truncate(super::MAX_ROWS);
    out
}
