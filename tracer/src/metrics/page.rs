//! The exposition page as a pure function: [`render`] turns the model, the
//! agent's counters and what the agent read about itself and the host
//! into the text Prometheus scrapes. No I/O happens here: the agent
//! gathers [`PageInput`] once a tick and publishes the string.
//!
//! Conventions, so the page reads like node_exporter's and cAdvisor's:
//! base units (`_seconds`, `_bytes`), `_total` on counters, PSI `some` as
//! `..._waiting_seconds_total` and `full` as `..._stalled_seconds_total`,
//! the standard `process_*` family for the agent itself, and
//! `memtrace_build_info`. Label sets are bounded: a cgroup label only on
//! the per-cgroup gauges and counters (one series per cgroup the agent
//! knows), with who the cgroup is beside it (`unit`, `container`, `pod`,
//! `namespace`: one value each per cgroup, see [`crate::names::Identity::labels`], so
//! they add no series), kills and breaches by budget and action only. Every counter an
//! alert rule watches is on the page at 0 from the first scrape, because
//! `increase()` cannot see a series that starts at 1.

use std::collections::BTreeMap;

use super::Exposition;
use crate::event::LostKind;
use crate::model::{Hierarchy, Model, RECLAIM_BUCKETS, ReclaimStats};
use crate::names::Identity;
use crate::policy::host::Judgement;
use crate::probe::ProbeReport;
use crate::sys::cgroupfs::HostMemory;
pub use crate::sys::own::ProcessUsage;

/// What the agent did for one budget (by name and action), counted since
/// it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetCounts {
    pub kills: u64,
    pub would_kill: u64,
    pub nothing_to_kill: u64,
    pub breaches: u64,
    pub warnings: u64,
}

/// What the agent did, counted since it started.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// By (budget name, action): a reload may change a budget's action.
    pub budgets: BTreeMap<(String, &'static str), BudgetCounts>,
    pub breach_to_signal: ReclaimStats,
    pub signal_to_exit: ReclaimStats,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

impl AgentCounters {
    /// The counts of one budget, created at 0.
    pub fn budget(&mut self, name: String, action: &'static str) -> &mut BudgetCounts {
        self.budgets.entry((name, action)).or_default()
    }

    /// Kills delivered, over every budget.
    pub fn kills(&self) -> u64 {
        self.budgets.values().map(|c| c.kills).sum()
    }
}

/// A configured budget, whose series are on the page from the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetSeries {
    pub name: String,
    pub action: &'static str,
}

/// One alert sink's delivery counters, read at render time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkCounts {
    pub label: String,
    pub sent: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub dropped: u64,
}

/// What this binary is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildInfo<'a> {
    pub version: &'a str,
    pub commit: &'a str,
    /// `true`, `false` or `unknown`.
    pub dirty: &'a str,
}

/// Everything one page is made of.
pub struct PageInput<'a> {
    /// Monotonic ns now.
    pub now: u64,
    pub build: BuildInfo<'a>,
    pub probes: &'a [ProbeReport],
    pub model: &'a Model,
    /// Who each cgroup is, for its labels.
    pub names: &'a dyn Hierarchy,
    /// Name lookups by source and result (`crate::sys::enrich`).
    pub lookups: &'a [(&'static str, &'static str, u64)],
    pub budgets: &'a [BudgetSeries],
    pub counters: &'a AgentCounters,
    pub alerts: &'a [SinkCounts],
    pub host: &'a HostMemory,
    /// The host verdict's latest judgement.
    pub host_verdict: Judgement,
    pub process: ProcessUsage,
}

/// Renders the page.
pub fn render(i: &PageInput<'_>) -> String {
    let mut e = Exposition::new();
    build_and_process(&mut e, i);
    probes_and_events(&mut e, i);
    cgroups(&mut e, i, throttle_measured(i.probes));
    budgets(&mut e, i);
    agent(&mut e, i);
    host(&mut e, i);
    e.finish()
}

fn histogram(e: &mut Exposition, name: &str, labels: &[(&str, &str)], h: &ReclaimStats) {
    let buckets: Vec<(f64, u64)> = RECLAIM_BUCKETS.iter().copied().zip(h.buckets).collect();
    e.histogram(name, labels, &buckets, h.count, h.total_ns as f64 / 1e9);
}

/// A family of one unlabelled sample.
fn single(e: &mut Exposition, name: &str, kind: &str, help: &str, v: f64) {
    e.family(name, kind, help);
    e.sample(name, &[], v);
}

fn build_and_process(e: &mut Exposition, i: &PageInput<'_>) {
    e.family(
        "memtrace_build_info",
        "gauge",
        "Always 1; the labels say which memtrace runs: version, the commit it was built from, \
         and whether that tree had uncommitted changes.",
    );
    e.sample(
        "memtrace_build_info",
        &[
            ("version", i.build.version),
            ("commit", i.build.commit),
            ("dirty", i.build.dirty),
        ],
        1.0,
    );
    let p = &i.process;
    for (name, kind, help, v) in [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds as f64,
        ),
    ] {
        single(e, name, kind, help, v);
    }
}

fn probes_and_events(e: &mut Exposition, i: &PageInput<'_>) {
    e.family(
        "memtrace_probe_attached",
        "gauge",
        "1 when the probe is attached (the mechanism label says how), 0 when this kernel \
         refused every mechanism: what memtrace check prints.",
    );
    for p in i.probes {
        let m = p.attached.map_or("none", |m| m.as_str());
        e.sample(
            "memtrace_probe_attached",
            &[("probe", p.probe.name()), ("mechanism", m)],
            f64::from(u8::from(p.attached.is_some())),
        );
    }
    single(
        e,
        "memtrace_events_total",
        "counter",
        "Events received from the kernel's probes.",
        i.model.events as f64,
    );
    e.family(
        "memtrace_lost_events_total",
        "counter",
        "Records the kernel could not deliver because the ring buffer was full, by event type.",
    );
    for kind in LostKind::ALL {
        let name = kind.as_str();
        let n = i.model.lost.get(name).copied().unwrap_or(0);
        e.sample("memtrace_lost_events_total", &[("type", name)], n as f64);
    }
    single(
        e,
        "memtrace_oom_kills_total",
        "counter",
        "Kernel OOM kills on this host since the agent started, any cgroup.",
        i.model.oom_kills as f64,
    );
    single(
        e,
        "memtrace_kernel_brakes_total",
        "counter",
        "Times the in-kernel brake signalled a task because the agent was silent.",
        i.model.brakes as f64,
    );
}

/// Whether the throttle probe runs: without it the throttle families are
/// declared but have no samples (absent, never a false 0).
fn throttle_measured(probes: &[ProbeReport]) -> bool {
    probes
        .iter()
        .any(|p| p.probe == crate::probe::Probe::Throttle && p.attached.is_some())
}

/// A cgroup's labels: its path, and who it is where that is known (empty
/// values are left out: Prometheus reads an empty label as none).
fn cgroup_labels<'a>(path: &'a str, who: Option<&'a Identity>) -> Vec<(&'static str, &'a str)> {
    let mut l = vec![("cgroup", path)];
    if let Some(w) = who {
        l.extend(
            w.labels()
                .pairs()
                .into_iter()
                .filter(|(_, v)| !v.is_empty()),
        );
    }
    l
}

fn cgroups(e: &mut Exposition, i: &PageInput<'_>, measured: bool) {
    let (model, now) = (i.model, i.now);
    let mut cgroups: Vec<_> = model.cgroups.values().collect();
    cgroups.sort_by(|a, b| a.path.cmp(&b.path));
    let who: Vec<_> = cgroups.iter().map(|c| i.names.identity(c.id)).collect();
    let labels: Vec<_> = cgroups
        .iter()
        .zip(&who)
        .map(|(c, w)| cgroup_labels(&c.path, w.as_deref()))
        .collect();
    for (name, kind, help) in [
        (
            "memtrace_cgroup_throttled_seconds_total",
            "counter",
            "Time during which at least one task of the cgroup, or of a cgroup below it, was in \
             the memory.high throttle (the union over tasks, what budgets measure).",
        ),
        (
            "memtrace_cgroup_throttle_episodes_total",
            "counter",
            "Completed memory.high throttle episodes of the cgroup's subtree.",
        ),
        (
            "memtrace_cgroup_throttled_ratio",
            "gauge",
            "Share of the last 10 s during which the cgroup (or below) was throttled, 0 to 1.",
        ),
        (
            "memtrace_cgroup_oom_kills_total",
            "counter",
            "Kernel OOM kills whose victim was in the cgroup, since the agent first saw it.",
        ),
    ] {
        e.family(name, kind, help);
        // Without the throttle probe, throttling is unmeasured: no samples,
        // rather than a 0 that reads as "fine".
        if !measured && name != "memtrace_cgroup_oom_kills_total" {
            continue;
        }
        for (c, l) in cgroups.iter().zip(&labels) {
            let v = match name {
                "memtrace_cgroup_throttled_seconds_total" => c.throttle.total_ns as f64 / 1e9,
                "memtrace_cgroup_throttle_episodes_total" => c.throttle.episodes as f64,
                "memtrace_cgroup_throttled_ratio" => {
                    c.throttle.throttled_in(now, 10_000_000_000) as f64 / 1e10
                }
                _ => c.oom_kills as f64,
            };
            e.sample(name, l, v);
        }
    }
    e.family(
        "memtrace_cgroup_reclaim_seconds",
        "histogram",
        "Latency of memcg reclaim passes charged to the cgroup.",
    );
    let reclaimed = || {
        cgroups
            .iter()
            .zip(&labels)
            .filter(|(c, _)| c.reclaim.count > 0)
    };
    for (c, l) in reclaimed() {
        histogram(e, "memtrace_cgroup_reclaim_seconds", l, &c.reclaim);
    }
    e.family(
        "memtrace_cgroup_reclaimed_pages_total",
        "counter",
        "Pages memcg reclaim took back from the cgroup.",
    );
    for (c, l) in reclaimed() {
        e.sample(
            "memtrace_cgroup_reclaimed_pages_total",
            l,
            c.reclaim.pages as f64,
        );
    }
    // What the once-a-second sample read from cgroupfs.
    type Read = fn(&crate::sys::cgroupfs::CgroupMemory) -> Option<f64>;
    let sampled: [(&str, &str, &str, Read); 5] = [
        (
            "memtrace_cgroup_memory_current_bytes",
            "gauge",
            "memory.current: memory charged to the cgroup.",
            |m| m.current.map(|v| v as f64),
        ),
        (
            "memtrace_cgroup_memory_high_bytes",
            "gauge",
            "memory.high: the throttle limit (no series: no limit).",
            |m| m.high.map(|v| v as f64),
        ),
        (
            "memtrace_cgroup_memory_max_bytes",
            "gauge",
            "memory.max: the OOM limit (no series: no limit).",
            |m| m.max.map(|v| v as f64),
        ),
        (
            "memtrace_cgroup_pressure_memory_waiting_seconds_total",
            "counter",
            "memory.pressure `some`: time at least one task of the cgroup waited on memory.",
            |m| m.pressure.map(|p| p.some_total_us as f64 / 1e6),
        ),
        (
            "memtrace_cgroup_pressure_memory_stalled_seconds_total",
            "counter",
            "memory.pressure `full`: time every non-idle task of the cgroup stalled on memory.",
            |m| m.pressure.map(|p| p.full_total_us as f64 / 1e6),
        ),
    ];
    for (name, kind, help, read) in sampled {
        e.family(name, kind, help);
        for (c, l) in cgroups.iter().zip(&labels) {
            if let Some(v) = c.memory.as_ref().and_then(read) {
                e.sample(name, l, v);
            }
        }
    }
    e.family(
        "memtrace_direct_reclaim_seconds",
        "histogram",
        "Latency of global direct reclaim passes (the whole host short of memory).",
    );
    histogram(
        e,
        "memtrace_direct_reclaim_seconds",
        &[],
        &model.direct_reclaim,
    );
}

fn budgets(e: &mut Exposition, i: &PageInput<'_>) {
    // Every configured budget at 0, then whatever was counted (a budget a
    // reload removed keeps its counts).
    let mut all = i.counters.budgets.clone();
    for b in i.budgets {
        all.entry((b.name.clone(), b.action)).or_default();
    }
    let mut by_name: BTreeMap<&str, BudgetCounts> = BTreeMap::new();
    for ((name, _), c) in &all {
        let n = by_name.entry(name).or_default();
        n.breaches += c.breaches;
        n.warnings += c.warnings;
        n.nothing_to_kill += c.nothing_to_kill;
    }
    type Count = fn(&BudgetCounts) -> u64;
    let per_action: [(&str, &str, Count); 2] = [
        (
            "memtrace_agent_kills_total",
            "Kills the agent delivered, by budget and action (kill-cgroup counts one per cgroup).",
            |c| c.kills,
        ),
        (
            "memtrace_agent_would_kill_total",
            "Kills a dry run held back, by budget and action.",
            |c| c.would_kill,
        ),
    ];
    for (name, help, count) in per_action {
        e.family(name, "counter", help);
        for ((budget, action), c) in all.iter().filter(|((_, a), _)| *a != "alert") {
            e.sample(
                name,
                &[("budget", budget), ("action", action)],
                count(c) as f64,
            );
        }
    }
    let per_budget: [(&str, &str, Count); 3] = [
        (
            "memtrace_budget_breaches_total",
            "Times a cgroup's throttling exceeded the budget.",
            |c| c.breaches,
        ),
        (
            "memtrace_budget_warnings_total",
            "Times a cgroup used the budget's warn_at share.",
            |c| c.warnings,
        ),
        (
            "memtrace_agent_nothing_to_kill_total",
            "Breaches of a killing budget where every process was protected, avoided or gone.",
            |c| c.nothing_to_kill,
        ),
    ];
    for (name, help, count) in per_budget {
        e.family(name, "counter", help);
        for (budget, c) in &by_name {
            e.sample(name, &[("budget", budget)], count(c) as f64);
        }
    }
}

fn agent(e: &mut Exposition, i: &PageInput<'_>) {
    let c = i.counters;
    for (name, help, h) in [
        (
            "memtrace_agent_kill_breach_to_signal_seconds",
            "From the instant a budget was crossed to the kill signal.",
            &c.breach_to_signal,
        ),
        (
            "memtrace_agent_kill_signal_to_exit_seconds",
            "From the kill signal to the victim's exit, measured on its pidfd.",
            &c.signal_to_exit,
        ),
    ] {
        e.family(name, "histogram", help);
        histogram(e, name, &[], h);
    }
    e.family(
        "memtrace_name_lookups_total",
        "counter",
        "Lookups of names a cgroup path does not tell (users, containers, pods) by source and \
         result: found, missing (the runtime is not there), failed (timeout, bad answer).",
    );
    for (source, result, n) in i.lookups {
        e.sample(
            "memtrace_name_lookups_total",
            &[("source", source), ("result", result)],
            *n as f64,
        );
    }
    e.family(
        "memtrace_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP) by result; an invalid file keeps the running one.",
    );
    for (result, v) in [("ok", c.reloads_ok), ("invalid", c.reloads_failed)] {
        e.sample(
            "memtrace_config_reloads_total",
            &[("result", result)],
            v as f64,
        );
    }
    e.family(
        "memtrace_alerts_total",
        "counter",
        "Alerts by sink and result: sent, failed (delivery error), suppressed (folded by \
         min_interval), dropped (queue full).",
    );
    for s in i.alerts {
        for (result, v) in [
            ("sent", s.sent),
            ("failed", s.failed),
            ("suppressed", s.suppressed),
            ("dropped", s.dropped),
        ] {
            e.sample(
                "memtrace_alerts_total",
                &[("sink", &s.label), ("result", result)],
                v as f64,
            );
        }
    }
}

fn host(e: &mut Exposition, i: &PageInput<'_>) {
    let h = i.host;
    single(
        e,
        "memtrace_host_memory_available_bytes",
        "gauge",
        "MemAvailable from /proc/meminfo.",
        h.mem_available as f64,
    );
    single(
        e,
        "memtrace_host_memory_total_bytes",
        "gauge",
        "MemTotal from /proc/meminfo.",
        h.mem_total as f64,
    );
    single(
        e,
        "memtrace_host_swap_total_bytes",
        "gauge",
        "SwapTotal from /proc/meminfo.",
        h.swap_total as f64,
    );
    single(
        e,
        "memtrace_host_swap_free_bytes",
        "gauge",
        "SwapFree from /proc/meminfo.",
        h.swap_free as f64,
    );
    single(
        e,
        "memtrace_host_exhaustion",
        "gauge",
        "1 while the agent judges the host to be sliding into memory exhaustion (the `host` \
         alert's verdict: low on MemAvailable or swap, and falling fast or stalling), else 0.",
        f64::from(u8::from(i.host_verdict.sliding)),
    );
    single(
        e,
        "memtrace_host_exhaustion_eta_seconds",
        "gauge",
        "Predicted seconds until MemAvailable and free swap together are gone, at the pace of \
         the recent trend; +Inf while they are not falling.",
        i.host_verdict.eta_s.unwrap_or(f64::INFINITY),
    );
    if let Some(p) = h.pressure {
        single(
            e,
            "memtrace_host_pressure_memory_waiting_seconds_total",
            "counter",
            "/proc/pressure/memory `some`: time at least one task waited on memory.",
            p.some_total_us as f64 / 1e6,
        );
        single(
            e,
            "memtrace_host_pressure_memory_stalled_seconds_total",
            "counter",
            "/proc/pressure/memory `full`: time every non-idle task stalled on memory.",
            p.full_total_us as f64 / 1e6,
        );
    }
}

#[cfg(test)]
mod tests;
