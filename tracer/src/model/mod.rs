//! Stage 4: the per-cgroup model, what the events mean over time, per
//! memory cgroup and task. It is pure: no I/O, no clock. It is a function
//! of the events it is given (from the ring buffer, or from a recording)
//! and of the hierarchy's names ([`Hierarchy`], a lookup the collection
//! stage keeps current), so the live agent, `top`, `report` and `replay`
//! compute the same numbers from the same events. Its readers are the
//! policy, the recorder, the metrics page and the screens.
//!
//! Throttled time is kept per cgroup *subtree*, as memory.pressure is: an
//! episode of a task in `/a/b` counts for `/a/b`, `/a` and `/`. Reclaim and
//! OOM kills count for the cgroup the kernel named only.

pub mod intervals;
pub mod throttle;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hdrhistogram::Histogram;

pub use intervals::IntervalUnion;
pub use throttle::ThrottleTracker;

use tracer_ebpf::{RECLAIM_BOUNDS_NS, ReclaimTotals};

use crate::event::{Comm, Event, Reclaim};
use crate::sys::cgroupfs::CgroupMemory;
use crate::sys::registry::ancestors;

/// What the model knows of the cgroup hierarchy: names and parents, by
/// lookup only. The live registry ([`crate::sys::registry`]) resolves new
/// ids before their events reach the model; a recording's tables name
/// every id it holds.
pub trait Hierarchy {
    /// The path of a cgroup id, if known.
    fn path(&self, id: u64) -> Option<Arc<str>>;
    /// The id of a cgroup path, if known.
    fn id(&self, path: &str) -> Option<u64>;
    /// Whether the cgroup is known to be gone (removed from the hierarchy).
    fn removed(&self, _id: u64) -> bool {
        false
    }
    /// Who the cgroup is: named from its path unless the lookup keeps
    /// names (the live registry does, with what enrichment learned).
    fn identity(&self, id: u64) -> Option<Arc<crate::names::Identity>> {
        self.path(id).map(|p| Arc::new(crate::names::identify(&p)))
    }
}

/// Upper bounds (seconds) of the reclaim latency buckets in metrics.
pub const RECLAIM_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

// The kernel's totals count passes at these bounds, in nanoseconds.
const _: () = assert!(RECLAIM_BOUNDS_NS.len() == RECLAIM_BUCKETS.len());

/// Latency and volume of reclaim passes.
#[derive(Clone, Debug)]
pub struct ReclaimStats {
    pub count: u64,
    pub pages: u64,
    pub total_ns: u64,
    /// Microseconds, for percentiles.
    pub hist: Histogram<u64>,
    /// Cumulative counts per [`RECLAIM_BUCKETS`] bound (Prometheus style,
    /// without +Inf, which is `count`).
    pub buckets: [u64; RECLAIM_BUCKETS.len()],
}

impl Default for ReclaimStats {
    fn default() -> Self {
        Self {
            count: 0,
            pages: 0,
            total_ns: 0,
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"),
            buckets: [0; RECLAIM_BUCKETS.len()],
        }
    }
}

impl ReclaimStats {
    pub fn record(&mut self, duration_ns: u64, pages: u64) {
        self.count += 1;
        // Saturating: a replayed file may carry any numbers.
        self.pages = self.pages.saturating_add(pages);
        self.total_ns = self.total_ns.saturating_add(duration_ns);
        let _ = self
            .hist
            .record((duration_ns / 1_000).clamp(1, 3_600_000_000));
        let secs = duration_ns as f64 / 1e9;
        for (slot, bound) in self.buckets.iter_mut().zip(RECLAIM_BUCKETS) {
            if secs <= bound {
                *slot += 1;
            }
        }
    }

    /// Adds passes the kernel counted in its totals (a difference of two
    /// reads, [`crate::probe::reclaim::delta`]). Count, pages, time and the
    /// Prometheus buckets are exact (the kernel's buckets have the same
    /// bounds); the percentile histogram gets each bucket's passes at the
    /// bucket's midpoint, and those over the last bound at their mean.
    pub fn add_totals(&mut self, d: &ReclaimTotals) {
        self.count = self.count.saturating_add(d.count);
        self.pages = self.pages.saturating_add(d.pages);
        self.total_ns = self.total_ns.saturating_add(d.total_ns);
        let mut cumulative = 0u64;
        for (slot, n) in self.buckets.iter_mut().zip(d.le) {
            // A read that stayed torn may hold a bucket ahead of its
            // count: no bucket may exceed the total.
            cumulative = cumulative.saturating_add(n).min(d.count);
            *slot = slot.saturating_add(cumulative);
        }
        let mut placed_ns = 0u64;
        let mut lower = 0u64;
        for (&upper, &n) in RECLAIM_BOUNDS_NS.iter().zip(&d.le) {
            let mid = lower / 2 + upper / 2;
            lower = upper;
            if n == 0 {
                continue;
            }
            placed_ns = placed_ns.saturating_add(mid.saturating_mul(n));
            let _ = self.hist.record_n((mid / 1_000).clamp(1, 3_600_000_000), n);
        }
        let over = d.le[RECLAIM_BOUNDS_NS.len()];
        if let Some(mean) = d.total_ns.saturating_sub(placed_ns).checked_div(over) {
            let mean = mean.max(lower);
            let _ = self
                .hist
                .record_n((mean / 1_000).clamp(1, 3_600_000_000), over);
        }
    }

    /// A latency percentile in ns (0 when nothing was recorded).
    pub fn percentile_ns(&self, p: f64) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.hist.value_at_quantile(p / 100.0) * 1_000
        }
    }
}

/// One process's throttling, in one cgroup's subtree.
#[derive(Clone, Debug, Default)]
pub struct TaskStats {
    pub tgid: u32,
    pub comm: Comm,
    /// The union of its threads' episodes, those in progress included.
    pub throttle: ThrottleTracker,
    pub last_seen_ns: u64,
}

impl TaskStats {
    /// Throttled time in `[now - window, now]`, counting episodes still
    /// in progress: a task stuck inside the function is the most throttled.
    pub fn throttled_in(&self, now: u64, window: u64) -> u64 {
        self.throttle.throttled_in(now, window)
    }

    /// Threads inside the throttle function now.
    pub fn in_throttle(&self) -> usize {
        self.throttle.in_progress()
    }

    pub fn episodes(&self) -> u64 {
        self.throttle.episodes
    }

    /// All its throttled time, completed episodes.
    pub fn throttled_ns(&self) -> u64 {
        self.throttle.total_ns
    }
}

/// Everything known about one memory cgroup.
#[derive(Clone, Debug)]
pub struct CgroupState {
    pub id: u64,
    pub path: Arc<str>,
    /// Throttling of the subtree, whatever its cause: what people see.
    pub throttle: ThrottleTracker,
    /// Throttling of the subtree by cause: the memory cgroup whose
    /// memory.high the kernel was enforcing (the over-high ancestor the
    /// probe found). What budgets decide on: a livelock is ended inside
    /// the cgroup that causes it.
    pub caused: HashMap<u64, ThrottleTracker>,
    /// Processes throttled in the subtree, by tgid.
    pub tasks: HashMap<u32, TaskStats>,
    /// Reclaim the kernel attributed to this cgroup itself.
    pub reclaim: ReclaimStats,
    /// OOM victims whose memory cgroup this is.
    pub oom_kills: u64,
    /// The latest reading of its memory files.
    pub memory: Option<CgroupMemory>,
    pub last_activity_ns: u64,
}

impl CgroupState {
    fn new(id: u64, path: Arc<str>) -> Self {
        Self {
            id,
            path,
            throttle: ThrottleTracker::default(),
            caused: HashMap::new(),
            tasks: HashMap::new(),
            reclaim: ReclaimStats::default(),
            oom_kills: 0,
            memory: None,
            last_activity_ns: 0,
        }
    }
}

/// The model of every memory cgroup memtrace has seen activity in.
#[derive(Debug)]
pub struct Model {
    pub cgroups: HashMap<u64, CgroupState>,
    /// Parent id of each known cgroup id (0 for the root).
    parents: HashMap<u64, u64>,
    /// Events of this process are ignored: the agent never counts itself.
    self_tgid: u32,
    /// History kept for windows and charts.
    pub horizon_ns: u64,
    pub events: u64,
    pub lost: BTreeMap<&'static str, u64>,
    /// Kernel OOM kills, any cgroup (the victim's cgroup may be unknown).
    pub oom_kills: u64,
    pub direct_reclaim: ReclaimStats,
    pub brakes: u64,
    /// A live source checks episodes in progress against the kernel
    /// ([`Model::reconcile`]); a recording cannot, and caps them instead.
    reconciled: bool,
    /// Episodes in progress that reconciliation ended: their end records
    /// were lost.
    pub reconciled_episodes: u64,
}

impl Model {
    pub fn new(self_tgid: u32, horizon_ns: u64) -> Self {
        Self {
            cgroups: HashMap::new(),
            parents: HashMap::new(),
            self_tgid,
            horizon_ns,
            events: 0,
            lost: BTreeMap::new(),
            oom_kills: 0,
            direct_reclaim: ReclaimStats::default(),
            brakes: 0,
            reconciled: false,
            reconciled_episodes: 0,
        }
    }

    /// The cgroup and its ancestors, nearest first; unknown ids give just
    /// themselves.
    pub fn ancestry(&mut self, id: u64, reg: &impl Hierarchy) -> Vec<u64> {
        let mut out = vec![id];
        let mut cur = id;
        for _ in 0..64 {
            let parent = match self.parents.get(&cur) {
                Some(&p) => p,
                None => {
                    let Some(path) = reg.path(cur) else { break };
                    let mut chain = ancestors(&path).skip(1);
                    let p = chain.next().and_then(|pp| reg.id(pp)).unwrap_or(0);
                    self.parents.insert(cur, p);
                    p
                }
            };
            if parent == 0 {
                break;
            }
            out.push(parent);
            cur = parent;
        }
        out
    }

    /// The state of a cgroup, created on first use.
    pub fn state(&mut self, id: u64, reg: &impl Hierarchy) -> &mut CgroupState {
        self.cgroups.entry(id).or_insert_with(|| {
            let path = reg
                .path(id)
                .unwrap_or_else(|| Arc::from(format!("#{id}").as_str()));
            CgroupState::new(id, path)
        })
    }

    /// Applies one event. Returns the cgroups whose throttling changed
    /// (the event's cgroup and its ancestors), for the policy to check.
    pub fn apply(&mut self, e: &Event, reg: &impl Hierarchy) -> Vec<u64> {
        self.events += 1;
        if e.task().is_some_and(|t| t.tgid == self.self_tgid) {
            return Vec::new();
        }
        let now = e.ts_ns();
        match e {
            Event::ThrottleStart(s) if s.memcg_id != 0 => {
                let cause = s.cause();
                let chain = self.ancestry(s.memcg_id, reg);
                for &id in &chain {
                    let st = self.state(id, reg);
                    st.throttle.begin(s.task.pid, s.ts_ns);
                    st.caused
                        .entry(cause)
                        .or_default()
                        .begin(s.task.pid, s.ts_ns);
                    st.last_activity_ns = now;
                    let t = st.tasks.entry(s.task.tgid).or_default();
                    t.tgid = s.task.tgid;
                    t.comm = s.task.comm;
                    t.throttle.begin(s.task.pid, s.ts_ns);
                    t.last_seen_ns = now;
                }
                chain
            }
            Event::Throttle(t) if t.memcg_id != 0 => {
                let cause = t.cause();
                let chain = self.ancestry(t.memcg_id, reg);
                for &id in &chain {
                    let st = self.state(id, reg);
                    st.throttle.end(t.task.pid, t.start_ns, t.ts_ns);
                    st.caused
                        .entry(cause)
                        .or_default()
                        .end(t.task.pid, t.start_ns, t.ts_ns);
                    st.last_activity_ns = now;
                    let task = st.tasks.entry(t.task.tgid).or_default();
                    task.tgid = t.task.tgid;
                    task.comm = t.task.comm;
                    task.throttle.end(t.task.pid, t.start_ns, t.ts_ns);
                    task.last_seen_ns = now;
                }
                chain
            }
            Event::Reclaim(r) => {
                self.reclaim(r, reg);
                Vec::new()
            }
            Event::DirectReclaim(r) => {
                self.direct_reclaim.record(r.duration_ns(), r.nr_reclaimed);
                Vec::new()
            }
            Event::OomKill(o) => {
                self.oom_kills += 1;
                if o.victim_memcg_id != 0 {
                    let st = self.state(o.victim_memcg_id, reg);
                    st.oom_kills += 1;
                    st.last_activity_ns = now;
                }
                Vec::new()
            }
            Event::Brake(_) => {
                self.brakes += 1;
                Vec::new()
            }
            Event::Lost(l) => {
                let n = self.lost.entry(l.kind.as_str()).or_default();
                *n = n.saturating_add(l.count);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn reclaim(&mut self, r: &Reclaim, reg: &impl Hierarchy) {
        if r.memcg_id == 0 {
            return;
        }
        let st = self.state(r.memcg_id, reg);
        st.reclaim.record(r.duration_ns(), r.nr_reclaimed);
        st.last_activity_ns = r.ts_ns;
    }

    /// Adds the reclaim passes the kernel counted for one memory cgroup
    /// since the last read, as the records of those passes would have
    /// (`now`: when they were read, the end of the last one is unknown).
    /// The agent's way when no per-pass records cross the ring. Unlike
    /// records, the kernel's totals cannot leave out the agent's own
    /// passes.
    pub fn apply_reclaim_totals(
        &mut self,
        memcg_id: u64,
        d: &ReclaimTotals,
        now: u64,
        reg: &impl Hierarchy,
    ) {
        // A delta without passes still carries pages or time a read saw
        // late (probe::reclaim::deltas).
        if memcg_id == 0 || *d == ReclaimTotals::default() {
            return;
        }
        let st = self.state(memcg_id, reg);
        st.reclaim.add_totals(d);
        st.last_activity_ns = now;
    }

    /// Global direct reclaim's passes since the last read, likewise.
    pub fn apply_direct_reclaim_totals(&mut self, d: &ReclaimTotals) {
        if *d != ReclaimTotals::default() {
            self.direct_reclaim.add_totals(d);
        }
    }

    /// Forgets history older than the horizon, and processes gone quiet.
    pub fn gc(&mut self, now: u64) {
        let from = now.saturating_sub(self.horizon_ns);
        let reconciled = self.reconciled;
        for st in self.cgroups.values_mut() {
            st.throttle.forget_before(from, now, reconciled);
            for c in st.caused.values_mut() {
                c.forget_before(from, now, reconciled);
            }
            st.caused.retain(|_, c| !c.is_empty());
            for t in st.tasks.values_mut() {
                t.throttle.forget_before(from, now, reconciled);
            }
            st.tasks
                .retain(|_, t| t.in_throttle() > 0 || t.last_seen_ns >= from);
        }
    }

    /// Checks every episode in progress against the kernel's map of tasks
    /// inside the throttle function (`inside(tid, start)`): one the kernel
    /// no longer has lost its end record and ends where it was last seen.
    /// Returns the cgroups whose throttling changed, for the policy.
    pub fn reconcile(&mut self, now: u64, inside: &impl Fn(u32, u64) -> bool) -> Vec<u64> {
        self.reconciled = true;
        let mut changed = Vec::new();
        // Every episode counts in each ancestor: the most any one cgroup
        // ended is the number of episodes.
        let mut ended = 0;
        for st in self.cgroups.values_mut() {
            let n = st.throttle.reconcile(now, inside);
            for c in st.caused.values_mut() {
                c.reconcile(now, inside);
            }
            for t in st.tasks.values_mut() {
                t.throttle.reconcile(now, inside);
            }
            if n > 0 {
                changed.push(st.id);
            }
            ended = ended.max(n);
        }
        self.reconciled_episodes += ended as u64;
        changed
    }

    /// Ids whose path was not known when they were first seen (`#id`):
    /// the collection stage resolves them before [`Model::maintain`].
    pub fn unresolved(&self) -> Vec<u64> {
        self.cgroups
            .values()
            .filter(|s| s.path.starts_with('#'))
            .map(|s| s.id)
            .collect()
    }

    /// Keeps cgroup identities current: a path recorded as `#id` (the
    /// cgroup was newer than the registry's last scan) is resolved, and
    /// cgroups removed from the hierarchy and idle for ten minutes are
    /// dropped. Returns the ids whose entry changed or went, for the
    /// consumers that cache by id.
    pub fn maintain(&mut self, reg: &impl Hierarchy, now: u64) -> Vec<u64> {
        const IDLE: u64 = 600_000_000_000;
        let mut changed = Vec::new();
        for st in self.cgroups.values_mut() {
            if st.path.starts_with('#')
                && let Some(p) = reg.path(st.id)
            {
                st.path = p;
                self.parents.remove(&st.id);
                changed.push(st.id);
            }
        }
        self.cgroups.retain(|id, st| {
            let keep = !reg.removed(*id)
                || st.throttle.in_progress() > 0
                || now.saturating_sub(st.last_activity_ns) < IDLE;
            if !keep {
                changed.push(*id);
            }
            keep
        });
        let cgroups = &self.cgroups;
        self.parents.retain(|id, _| cgroups.contains_key(id));
        changed
    }

    /// Processes of a cgroup's subtree by throttled time in the window,
    /// most first. A process inside the throttle function counts at least
    /// 1 ns even at the instant its episode starts: victims are prepared
    /// then, and one throttled now must rank above one that is not.
    pub fn most_throttled(&self, id: u64, now: u64, window: u64) -> Vec<(u32, u64)> {
        let Some(st) = self.cgroups.get(&id) else {
            return Vec::new();
        };
        let mut v: Vec<(u32, u64)> = st
            .tasks
            .values()
            .map(|t| {
                let ns = t.throttled_in(now, window);
                let ongoing = t.throttle.in_progress() > 0;
                (t.tgid, if ongoing { ns.max(1) } else { ns })
            })
            .filter(|&(_, ns)| ns > 0)
            .collect();
        v.sort_by_key(|&(_, ns)| std::cmp::Reverse(ns));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Task, Throttle, ThrottleStart};
    use crate::sys::registry::CgroupRegistry;

    const S: u64 = 1_000_000_000;

    /// `/a/b` under `/a` under the root, by name only: no file system.
    fn tree() -> (CgroupRegistry, u64, u64) {
        let reg = CgroupRegistry::from_paths([(1, "/"), (20, "/a"), (30, "/a/b")]);
        (reg, 20, 30)
    }

    fn task(tgid: u32) -> Task {
        Task {
            pid: tgid,
            tgid,
            comm: Comm::new("hog"),
        }
    }

    #[test]
    fn episodes_count_for_the_subtree_and_the_agent_is_ignored() {
        let (reg, a, b) = tree();
        let mut m = Model::new(999, 60 * S);
        let start = Event::ThrottleStart(ThrottleStart {
            ts_ns: S,
            task: task(10),
            memcg_id: b,
            over_high_id: a,
            over_high_usage_pages: 0,
            over_high_limit_pages: 0,
            nr_pages: 32,
        });
        let touched = m.apply(&start, &reg);
        assert_eq!(touched[..2], [b, a]);
        assert_eq!(m.cgroups[&a].throttle.throttled_in(2 * S, 10 * S), S);
        // At the instant it starts, the task already ranks as throttled
        // (the agent prepares victims then).
        assert_eq!(m.most_throttled(a, S, 10 * S), vec![(10, 1)]);
        let end = Event::Throttle(Throttle {
            ts_ns: 3 * S,
            start_ns: S,
            task: task(10),
            memcg_id: b,
            over_high_id: a,
            reclaim_ns: 0,
            reclaimed_pages: 0,
            nr_pages: 32,
        });
        m.apply(&end, &reg);
        for id in [a, b] {
            let st = &m.cgroups[&id];
            assert_eq!(st.throttle.total_ns, 2 * S);
            assert_eq!(st.tasks[&10].throttled_ns(), 2 * S);
            // Both count it as caused by /a, the over-high cgroup.
            assert_eq!(st.caused[&a].total_ns, 2 * S);
            assert_eq!(st.caused.len(), 1);
        }
        assert_eq!(&*m.cgroups[&b].path, "/a/b");
        assert_eq!(m.most_throttled(a, 3 * S, 10 * S), vec![(10, 2 * S)]);
        // The agent's own episode changes nothing.
        let mine = Event::Throttle(Throttle {
            task: task(999),
            ..match end {
                Event::Throttle(t) => t,
                _ => unreachable!(),
            }
        });
        assert!(m.apply(&mine, &reg).is_empty());
        m.gc(200 * S);
        assert!(m.cgroups[&a].tasks.is_empty());
    }

    #[test]
    fn reclaim_percentiles_and_buckets() {
        let mut r = ReclaimStats::default();
        for us in [100u64, 200, 300, 400, 10_000] {
            r.record(us * 1_000, 32);
        }
        assert_eq!(r.count, 5);
        assert_eq!(r.pages, 160);
        let p50 = r.percentile_ns(50.0);
        assert!((290_000..=310_000).contains(&p50), "{p50}");
        assert!(r.percentile_ns(99.0) >= 9_900_000);
        // <= 0.25 ms: 100, 200 µs.
        assert_eq!(r.buckets[1], 2);
        assert_eq!(r.buckets[RECLAIM_BUCKETS.len() - 1], 5);
    }

    /// The kernel's totals of passes, bucketed as it buckets them.
    fn kernel_totals(durations_ns: &[u64], pages: u64) -> ReclaimTotals {
        let mut t = ReclaimTotals::default();
        for &d in durations_ns {
            t.count += 1;
            t.pages += pages;
            t.total_ns += d;
            let i = RECLAIM_BOUNDS_NS
                .iter()
                .position(|&b| d <= b)
                .unwrap_or(RECLAIM_BOUNDS_NS.len());
            t.le[i] += 1;
        }
        t
    }

    #[test]
    fn kernel_bounds_are_the_metrics_buckets() {
        for (ns, secs) in RECLAIM_BOUNDS_NS.iter().zip(RECLAIM_BUCKETS) {
            assert_eq!(*ns as f64 / 1e9, secs);
        }
    }

    #[test]
    fn kernel_totals_count_as_the_records_would() {
        // On bounds, just over them, and past the last one.
        let durations = [
            50_000,
            100_000,
            100_001,
            300_000,
            2_500_000,
            40_000_000,
            999_999_999,
            2_500_000_000,
            7_000_000_000,
        ];
        let mut by_record = ReclaimStats::default();
        for &d in &durations {
            by_record.record(d, 32);
        }
        let mut by_totals = ReclaimStats::default();
        // In two reads, as the agent would take them.
        by_totals.add_totals(&kernel_totals(&durations[..4], 32));
        by_totals.add_totals(&kernel_totals(&durations[4..], 32));
        assert_eq!(by_totals.count, by_record.count);
        assert_eq!(by_totals.pages, by_record.pages);
        assert_eq!(by_totals.total_ns, by_record.total_ns);
        assert_eq!(by_totals.buckets, by_record.buckets);
        // Percentiles land in the right bucket: the median (2.5 ms) is in
        // (1 ms, 2.5 ms], the top pass was over 2.5 s.
        let p50 = by_totals.percentile_ns(50.0);
        assert!((1_000_000..=2_600_000).contains(&p50), "{p50}");
        assert!(by_totals.percentile_ns(100.0) >= 2_500_000_000);
    }

    #[test]
    fn totals_feed_the_cgroup_and_direct_reclaim() {
        let (reg, a, b) = tree();
        let mut m = Model::new(999, 60 * S);
        let d = kernel_totals(&[200_000, 3_000_000], 16);
        m.apply_reclaim_totals(b, &d, 5 * S, &reg);
        m.apply_reclaim_totals(0, &d, 5 * S, &reg);
        m.apply_reclaim_totals(a, &ReclaimTotals::default(), 5 * S, &reg);
        let st = &m.cgroups[&b];
        assert_eq!((st.reclaim.count, st.reclaim.pages), (2, 32));
        assert_eq!(st.last_activity_ns, 5 * S);
        assert_eq!(&*st.path, "/a/b");
        // Reclaim counts for the cgroup the kernel named only, and nothing
        // is created for an empty delta or cgroup 0.
        assert!(!m.cgroups.contains_key(&a));
        assert!(!m.cgroups.contains_key(&0));
        m.apply_direct_reclaim_totals(&d);
        assert_eq!(m.direct_reclaim.total_ns, 3_200_000);
    }
}
