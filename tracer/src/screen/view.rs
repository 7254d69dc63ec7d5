//! From the model to the screens: builds the `ui` crate's [`Snapshot`]
//! from a [`Model`], the latest sample and what the agent reports. Live
//! `top` and `replay` both use it, so they show the same numbers.

use std::collections::{HashMap, VecDeque};

use memtrace_ui::snapshot::{CgroupRow, LogKind, LogLine, Snapshot, Source, TaskRow};

use crate::clock::Clock;
use crate::event::Event;
use crate::model::{Hierarchy, Model};
use crate::record::Sample;
use crate::sys::registry::CgroupRegistry;

const SEC: u64 = 1_000_000_000;
/// Seconds of throttle history in the detail chart.
pub const HISTORY_S: u64 = 300;
/// Lines kept in the event log.
const LOG_LINES: usize = 200;
/// A cgroup throttled more than this share of 10 s gets a warning line.
const WARN_SHARE: f64 = 0.5;

/// Fixed facts for the header.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub host: String,
    pub kernel: String,
    pub probe_mode: String,
    pub degraded: Vec<String>,
    /// No throttle probe: throttled shares are unmeasured, not 0.
    pub throttle_unmeasured: bool,
}

/// Rates and the event log, kept between frames.
#[derive(Debug, Default)]
pub struct View {
    last_frame: Option<(u64, u64)>,
    episodes: HashMap<u64, (u64, u64)>,
    rates: HashMap<u64, f64>,
    events_per_s: f64,
    pub log: VecDeque<(u64, LogLine)>,
    warned: HashMap<u64, bool>,
    /// Agent budget state by cgroup path, from its status file or the
    /// recording's actions.
    pub agent: HashMap<String, String>,
    seen_actions: VecDeque<String>,
    /// When each cgroup was first on screen: its chart starts there, not
    /// at a history it never had.
    first_seen: HashMap<u64, u64>,
}

impl View {
    fn push(&mut self, cgroup: u64, line: LogLine) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back((cgroup, line));
    }

    /// Adds a log line for the events worth one: OOM kills, the kernel
    /// brake, lost records.
    pub fn event(&mut self, e: &Event, reg: &impl Hierarchy, clock: &Clock) {
        let time = clock
            .hms(e.ts_ns())
            .get(..8)
            .unwrap_or_default()
            .to_string();
        let path = |reg: &dyn Hierarchy, id: u64| match (reg.path(id), reg.identity(id)) {
            (Some(p), Some(n)) => n.describe(&p),
            (Some(p), None) => p.to_string(),
            _ => format!("#{id}"),
        };
        let (cgroup, kind, text) = match e {
            Event::OomKill(o) => {
                let p = path(reg, o.victim_memcg_id);
                (
                    o.victim_memcg_id,
                    LogKind::Oom,
                    format!(
                        "the kernel OOM-killed {}[{}] in {p}",
                        o.victim.comm,
                        o.victim.tgid.max(o.victim.pid)
                    ),
                )
            }
            Event::Brake(b) => {
                let p = path(reg, b.rule_memcg_id);
                (
                    b.rule_memcg_id,
                    LogKind::Brake,
                    format!(
                        "kernel brake killed {}[{}] in {p}: agent silent {:.1}s",
                        b.task.comm,
                        b.task.tgid,
                        b.heartbeat_age_ns as f64 / 1e9
                    ),
                )
            }
            Event::Lost(l) => (
                0,
                LogKind::Lost,
                format!(
                    "{} {} records lost: ring buffer full",
                    l.count,
                    l.kind.as_str()
                ),
            ),
            _ => return,
        };
        self.push(cgroup, LogLine { time, kind, text });
    }

    /// Adds a line of the screen's own (a kill from `top`).
    pub fn note(&mut self, cgroup: u64, line: LogLine) {
        self.push(cgroup, line);
    }

    /// Adds an agent action (from its status file or a recording) once.
    pub fn action(&mut self, key: String, cgroup: u64, line: LogLine) {
        if self.seen_actions.contains(&key) {
            return;
        }
        if self.seen_actions.len() == 512 {
            self.seen_actions.pop_front();
        }
        self.seen_actions.push_back(key);
        self.push(cgroup, line);
    }

    /// Builds a frame at monotonic time `now`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one frame is built from every source of the screen at once"
    )]
    pub fn build(
        &mut self,
        model: &Model,
        sample: Option<&Sample>,
        reg: &CgroupRegistry,
        id: &Identity,
        source: Source,
        clock: &Clock,
        now: u64,
        detail: Option<u64>,
    ) -> Snapshot {
        if let Some((t, n)) = self.last_frame
            && now > t
        {
            self.events_per_s =
                model.events.saturating_sub(n) as f64 * SEC as f64 / (now - t) as f64;
        }
        self.last_frame = Some((now, model.events));

        let mem: HashMap<u64, &crate::record::CgroupSample> = sample
            .map(|s| s.cgroups.iter().map(|c| (c.id, c)).collect())
            .unwrap_or_default();
        let mut ids: Vec<u64> = model.cgroups.keys().copied().collect();
        ids.extend(mem.keys().copied());
        ids.sort_unstable();
        ids.dedup();

        let mut rows = Vec::with_capacity(ids.len());
        let mut warnings = Vec::new();
        for cid in ids {
            let st = model.cgroups.get(&cid);
            let path = st
                .map(|s| s.path.to_string())
                .or_else(|| reg.lookup(cid).map(|p| p.to_string()))
                .unwrap_or_else(|| format!("#{cid}"));
            if path == "/" {
                continue;
            }
            let who = reg
                .name(cid)
                .unwrap_or_else(|| std::sync::Arc::new(crate::names::identify(&path)));
            let m = mem
                .get(&cid)
                .map(|c| c.mem)
                .or_else(|| st.and_then(|s| s.memory));
            let (t1, t10) = st.map_or((0.0, 0.0), |s| {
                (
                    s.throttle.throttled_in(now, SEC) as f64 / SEC as f64,
                    s.throttle.throttled_in(now, 10 * SEC) as f64 / (10 * SEC) as f64,
                )
            });
            let episodes = st.map_or(0, |s| s.throttle.episodes);
            let rate = match self.episodes.get(&cid) {
                Some(&(t, n)) if now >= t.saturating_add(SEC) => {
                    let r = episodes.saturating_sub(n) as f64 * SEC as f64 / (now - t) as f64;
                    self.episodes.insert(cid, (now, episodes));
                    self.rates.insert(cid, r);
                    r
                }
                Some(_) => self.rates.get(&cid).copied().unwrap_or(0.0),
                None => {
                    self.episodes.insert(cid, (now, episodes));
                    0.0
                }
            };
            let warned = self.warned.entry(cid).or_default();
            if t10 >= WARN_SHARE && !*warned {
                *warned = true;
                warnings.push((
                    cid,
                    format!(
                        "{} throttled {:.0}% of the last 10 s",
                        who.describe(&path),
                        t10 * 100.0
                    ),
                ));
            } else if t10 < WARN_SHARE / 2.0 {
                *warned = false;
            }
            let reclaim = st.map(|s| &s.reclaim).filter(|r| r.count > 0);
            let mut row = CgroupRow {
                id: cid,
                path: path.clone(),
                name: who.name().to_string(),
                search: who.search_text(),
                throttled_1s: t1,
                throttled_10s: t10,
                episodes_per_s: rate,
                throttle_unmeasured: id.throttle_unmeasured,
                current: m.and_then(|m| m.current),
                high: m.and_then(|m| m.high),
                max: m.and_then(|m| m.max),
                reclaim_p50_us: reclaim.map(|r| r.percentile_ns(50.0) / 1_000),
                reclaim_p99_us: reclaim.map(|r| r.percentile_ns(99.0) / 1_000),
                psi_full_avg10: m.and_then(|m| m.pressure).map(|p| p.full_avg10),
                oom_kills: st.map_or(0, |s| s.oom_kills),
                agent: self.agent.get(&path).cloned(),
                ..Default::default()
            };
            // Seen since its first frame, or its first throttling the
            // model still holds (a replay starts with history).
            let held = st.and_then(|s| s.throttle.first_start()).unwrap_or(now);
            let seen = self.first_seen.entry(cid).or_insert(now);
            *seen = (*seen).min(now).min(held);
            let since = *seen;
            if detail == Some(cid) {
                self.fill_detail(&mut row, model, mem.get(&cid).copied(), now, since);
            }
            rows.push(row);
        }
        let time = clock.hms(now).get(..8).unwrap_or_default().to_string();
        for (cid, text) in warnings {
            self.push(
                cid,
                LogLine {
                    time: time.clone(),
                    kind: LogKind::Warning,
                    text,
                },
            );
        }
        if let Some(d) = detail
            && let Some(r) = rows.iter_mut().find(|r| r.id == d)
        {
            r.recent = self
                .log
                .iter()
                .filter(|(c, _)| *c == d)
                .map(|(_, l)| l.clone())
                .collect();
        }
        let host = sample.map(|s| s.host).unwrap_or_default();
        Snapshot {
            source,
            host: id.host.clone(),
            kernel: id.kernel.clone(),
            probe_mode: id.probe_mode.clone(),
            degraded: id.degraded.clone(),
            time,
            events_per_s: self.events_per_s,
            lost_events: model.lost.values().fold(0, |a, n| a.saturating_add(*n)),
            mem_total: host.mem_total,
            mem_available: host.mem_available,
            swap_total: host.swap_total,
            swap_free: host.swap_free,
            psi_some_avg10: host.pressure.map(|p| p.some_avg10),
            psi_full_avg10: host.pressure.map(|p| p.full_avg10),
            cgroups: rows,
            log: self.log.iter().map(|(_, l)| l.clone()).collect(),
        }
    }

    fn fill_detail(
        &self,
        row: &mut CgroupRow,
        model: &Model,
        sample: Option<&crate::record::CgroupSample>,
        now: u64,
        since: u64,
    ) {
        let Some(st) = model.cgroups.get(&row.id) else {
            row.tasks = sample
                .map(|s| {
                    s.top
                        .iter()
                        .map(|p| TaskRow {
                            pid: p.pid,
                            comm: p.comm.clone(),
                            rss: Some(p.rss_bytes),
                            ..Default::default()
                        })
                        .collect()
                })
                .unwrap_or_default();
            return;
        };
        // Whole seconds from when the cgroup came into view, at most
        // HISTORY_S of them: a young cgroup's chart is short, not padded.
        let start = now.saturating_sub(HISTORY_S * SEC).max(since);
        row.history = (0..HISTORY_S)
            .map(|i| start + i * SEC)
            .filter(|t| t.saturating_add(SEC) <= now)
            .map(|t| st.throttle.throttled_in(t + SEC, SEC) as f32 / SEC as f32)
            .collect();
        let rss: HashMap<u32, u64> = sample
            .map(|s| s.top.iter().map(|p| (p.pid, p.rss_bytes)).collect())
            .unwrap_or_default();
        let mut tasks: Vec<TaskRow> = st
            .tasks
            .values()
            .map(|t| TaskRow {
                pid: t.tgid,
                comm: t.comm.to_string(),
                rss: rss.get(&t.tgid).copied(),
                throttled_ns: t.throttled_in(now, 10 * SEC),
                episodes: t.episodes(),
                state: if t.in_throttle() > 0 {
                    "throttled".into()
                } else {
                    "running".into()
                },
                ..Default::default()
            })
            .collect();
        if let Some(s) = sample {
            for p in &s.top {
                if !tasks.iter().any(|t| t.pid == p.pid) {
                    tasks.push(TaskRow {
                        pid: p.pid,
                        comm: p.comm.clone(),
                        rss: Some(p.rss_bytes),
                        state: "running".into(),
                        ..Default::default()
                    });
                }
            }
        }
        tasks.sort_by(|a, b| b.throttled_ns.cmp(&a.throttled_ns).then(b.rss.cmp(&a.rss)));
        row.tasks = tasks;
    }
}

/// The agent's state, from its status file: budget state per cgroup path,
/// and its recent actions.
pub fn read_agent_status(path: &std::path::Path, view: &mut View) {
    if !path.exists() {
        view.agent.clear();
        return;
    }
    let Some(status) = crate::agent::status::read(path) else {
        return;
    };
    view.agent = status.cgroups.into_iter().collect();
    for a in status.recent {
        let kind = match a.kind.as_str() {
            "kill" | "would-kill" => LogKind::Kill,
            "breach" => LogKind::Breach,
            "warning" => LogKind::Warning,
            _ => LogKind::Info,
        };
        let time = a.time.get(11..19).unwrap_or(&a.time).to_string();
        view.action(
            format!("{}{}", a.time, a.text),
            0,
            LogLine {
                time,
                kind,
                text: a.text,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Comm, Task, Throttle, ThrottleStart};
    use crate::record::{CgroupSample, ProcSample};
    use crate::sys::cgroupfs::CgroupMemory;

    #[test]
    fn rows_rates_detail_and_warnings() {
        let reg = CgroupRegistry::from_paths([(1u64, "/"), (5, "/work"), (6, "/idle")]);
        let mut model = Model::new(0, u64::MAX / 4);
        let task = Task {
            pid: 9,
            tgid: 9,
            comm: Comm::new("hog"),
        };
        for i in 0..8u64 {
            model.apply(
                &Event::Throttle(Throttle {
                    ts_ns: (i + 1) * SEC,
                    start_ns: i * SEC,
                    task,
                    memcg_id: 5,
                    over_high_id: 5,
                    reclaim_ns: 0,
                    reclaimed_pages: 0,
                    nr_pages: 1,
                }),
                &reg,
            );
        }
        model.apply(
            &Event::ThrottleStart(ThrottleStart {
                ts_ns: 9 * SEC,
                task,
                memcg_id: 5,
                over_high_id: 5,
                over_high_usage_pages: 0,
                over_high_limit_pages: 0,
                nr_pages: 1,
            }),
            &reg,
        );
        let sample = Sample {
            ts_ns: 10 * SEC,
            host: Default::default(),
            cgroups: vec![
                CgroupSample {
                    id: 5,
                    mem: CgroupMemory {
                        current: Some(100),
                        high: Some(64),
                        max: Some(128),
                        ..Default::default()
                    },
                    top: vec![
                        ProcSample {
                            pid: 9,
                            comm: "hog".into(),
                            rss_bytes: 99,
                        },
                        ProcSample {
                            pid: 10,
                            comm: "srv".into(),
                            rss_bytes: 5,
                        },
                    ],
                },
                CgroupSample {
                    id: 6,
                    mem: CgroupMemory {
                        current: Some(1),
                        max: Some(50),
                        ..Default::default()
                    },
                    top: Vec::new(),
                },
            ],
        };
        let mut view = View::default();
        let clock = Clock { offset_ns: 0 };
        let snap = view.build(
            &model,
            Some(&sample),
            &reg,
            &Identity::default(),
            Source::Live,
            &clock,
            10 * SEC,
            Some(5),
        );
        assert!(
            snap.cgroups.iter().all(|r| r.path != "/"),
            "the root is not a row"
        );
        let work = snap.cgroups.iter().find(|r| r.path == "/work").unwrap();
        assert_eq!(work.throttled_1s, 1.0);
        assert_eq!(work.throttled_10s, 0.9);
        assert_eq!(
            (work.current, work.high, work.max),
            (Some(100), Some(64), Some(128))
        );
        assert_eq!(work.history.len(), 10);
        // A cgroup first throttled 3 s ago has 3 s of chart, not a
        // window padded with seconds it never had.
        let mut young = Model::new(0, u64::MAX / 4);
        young.apply(
            &Event::Throttle(Throttle {
                ts_ns: 8 * SEC,
                start_ns: 7 * SEC,
                task,
                memcg_id: 6,
                over_high_id: 6,
                reclaim_ns: 0,
                reclaimed_pages: 0,
                nr_pages: 1,
            }),
            &reg,
        );
        let ysnap = View::default().build(
            &young,
            Some(&sample),
            &reg,
            &Identity::default(),
            Source::Live,
            &clock,
            10 * SEC,
            Some(6),
        );
        let yidle = ysnap.cgroups.iter().find(|r| r.path == "/idle").unwrap();
        assert_eq!(yidle.history, [1.0, 0.0, 0.0], "from 7 s to 10 s");
        assert_eq!(work.tasks[0].pid, 9);
        assert_eq!(work.tasks[0].state, "throttled");
        assert_eq!(work.tasks[0].rss, Some(99));
        assert_eq!(work.tasks[1].pid, 10, "sampled processes are listed too");
        let idle = snap.cgroups.iter().find(|r| r.path == "/idle").unwrap();
        assert_eq!(idle.throttled_10s, 0.0);
        assert!(idle.tasks.is_empty(), "detail only for the selected cgroup");
        assert!(
            snap.log
                .iter()
                .any(|l| l.kind == LogKind::Warning && l.text.contains("/work throttled 90%"))
        );
        // Once per crossing.
        let again = view.build(
            &model,
            Some(&sample),
            &reg,
            &Identity::default(),
            Source::Live,
            &clock,
            10 * SEC + 1,
            None,
        );
        assert_eq!(
            again
                .log
                .iter()
                .filter(|l| l.kind == LogKind::Warning)
                .count(),
            1
        );
    }
}
