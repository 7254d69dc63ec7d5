//! The exposition page as a pure function: [`render`] turns the model, the
//! agent's counters and what the agent read about itself and the host
//! into the text Prometheus scrapes. No I/O happens here: the agent
//! gathers [`PageInput`] once a tick and publishes the string.

use std::collections::HashMap;

use super::Exposition;
use crate::model::{Model, RECLAIM_BUCKETS, ReclaimStats};
use crate::probe::ProbeReport;
use crate::sys::cgroupfs::HostMemory;

/// What the agent did, counted since it started.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Kills by (budget, cgroup, action).
    pub kills: HashMap<(String, String, &'static str), u64>,
    pub would_kill: u64,
    pub breach_to_signal: ReclaimStats,
    pub signal_to_exit: ReclaimStats,
    pub breaches: u64,
    pub warnings: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub nothing_to_kill: u64,
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

/// Resident memory and CPU time of the agent's own process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessUsage {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Everything one page is made of.
pub struct PageInput<'a> {
    /// Monotonic ns now, and when the agent started.
    pub now: u64,
    pub started: u64,
    pub probes: &'a [ProbeReport],
    pub model: &'a Model,
    pub counters: &'a AgentCounters,
    pub alerts: &'a [SinkCounts],
    pub host: &'a HostMemory,
    pub process: ProcessUsage,
}

/// Renders the page.
pub fn render(i: &PageInput<'_>) -> String {
    let mut e = Exposition::new();
    agent_state(&mut e, i);
    cgroups(&mut e, i.model, i.now, throttle_measured(i.probes));
    kills(&mut e, i.model, i.counters);
    alerts_and_host(&mut e, i);
    e.finish()
}

fn histogram(e: &mut Exposition, name: &str, labels: &[(&str, &str)], h: &ReclaimStats) {
    let buckets: Vec<(f64, u64)> = RECLAIM_BUCKETS.iter().copied().zip(h.buckets).collect();
    e.histogram(name, labels, &buckets, h.count, h.total_ns as f64 / 1e9);
}

fn agent_state(e: &mut Exposition, i: &PageInput<'_>) {
    e.family("memtrace_agent_up", "gauge", "1 while the agent runs.");
    e.sample("memtrace_agent_up", &[], 1.0);
    e.family(
        "memtrace_agent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    e.sample(
        "memtrace_agent_uptime_seconds",
        &[],
        i.now.saturating_sub(i.started) as f64 / 1e9,
    );
    e.family(
        "memtrace_probe_attached",
        "gauge",
        "1 when the probe is attached, by mechanism.",
    );
    for p in i.probes {
        let m = p.attached.map_or("none", |m| m.as_str());
        e.sample(
            "memtrace_probe_attached",
            &[("probe", p.probe.name()), ("mechanism", m)],
            f64::from(u8::from(p.attached.is_some())),
        );
    }
    e.family(
        "memtrace_events_total",
        "counter",
        "Events received from the kernel.",
    );
    e.sample("memtrace_events_total", &[], i.model.events as f64);
    e.family(
        "memtrace_lost_events_total",
        "counter",
        "Records the kernel could not deliver (ring buffer full), by type.",
    );
    for (k, v) in &i.model.lost {
        e.sample("memtrace_lost_events_total", &[("type", k)], *v as f64);
    }
}

/// Whether the throttle probe runs: without it the throttle families are
/// declared but have no samples (absent, never a false 0).
fn throttle_measured(probes: &[ProbeReport]) -> bool {
    probes
        .iter()
        .any(|p| p.probe == crate::probe::Probe::Throttle && p.attached.is_some())
}

fn cgroups(e: &mut Exposition, model: &Model, now: u64, measured: bool) {
    let mut cgroups: Vec<_> = model.cgroups.values().collect();
    cgroups.sort_by(|a, b| a.path.cmp(&b.path));
    let help = [
        (
            "memtrace_cgroup_throttled_seconds_total",
            "counter",
            "Time at least one task of the cgroup (or below) was in the memory.high throttle.",
        ),
        (
            "memtrace_cgroup_throttle_episodes_total",
            "counter",
            "Throttle episodes of the cgroup's subtree.",
        ),
        (
            "memtrace_cgroup_throttled_ratio",
            "gauge",
            "Share of the last 10 s the cgroup was throttled.",
        ),
    ];
    for (i, (name, kind, text)) in help.iter().enumerate() {
        e.family(name, kind, text);
        if !measured {
            continue;
        }
        for c in &cgroups {
            let v = match i {
                0 => c.throttle.total_ns as f64 / 1e9,
                1 => c.throttle.episodes as f64,
                _ => c.throttle.throttled_in(now, 10_000_000_000) as f64 / 1e10,
            };
            e.sample(name, &[("cgroup", &c.path)], v);
        }
    }
    e.family(
        "memtrace_cgroup_reclaim_seconds",
        "histogram",
        "Memcg reclaim pass latency.",
    );
    for c in cgroups.iter().filter(|c| c.reclaim.count > 0) {
        histogram(
            e,
            "memtrace_cgroup_reclaim_seconds",
            &[("cgroup", &c.path)],
            &c.reclaim,
        );
    }
    e.family(
        "memtrace_cgroup_reclaimed_pages_total",
        "counter",
        "Pages reclaimed by memcg reclaim.",
    );
    for c in cgroups.iter().filter(|c| c.reclaim.count > 0) {
        e.sample(
            "memtrace_cgroup_reclaimed_pages_total",
            &[("cgroup", &c.path)],
            c.reclaim.pages as f64,
        );
    }
    e.family(
        "memtrace_cgroup_oom_kills_total",
        "counter",
        "OOM kills whose victim was in the cgroup.",
    );
    for c in cgroups.iter().filter(|c| c.oom_kills > 0) {
        e.sample(
            "memtrace_cgroup_oom_kills_total",
            &[("cgroup", &c.path)],
            c.oom_kills as f64,
        );
    }
    for (name, text) in [
        ("memtrace_cgroup_memory_current_bytes", "memory.current"),
        (
            "memtrace_cgroup_memory_high_bytes",
            "memory.high (absent: no limit)",
        ),
        (
            "memtrace_cgroup_memory_max_bytes",
            "memory.max (absent: no limit)",
        ),
    ] {
        e.family(name, "gauge", text);
        for c in &cgroups {
            let Some(m) = &c.memory else { continue };
            let v = match name {
                "memtrace_cgroup_memory_current_bytes" => m.current,
                "memtrace_cgroup_memory_high_bytes" => m.high,
                _ => m.max,
            };
            if let Some(v) = v {
                e.sample(name, &[("cgroup", &c.path)], v as f64);
            }
        }
    }
    e.family(
        "memtrace_direct_reclaim_seconds",
        "histogram",
        "Global direct reclaim pass latency.",
    );
    histogram(
        e,
        "memtrace_direct_reclaim_seconds",
        &[],
        &model.direct_reclaim,
    );
}

fn kills(e: &mut Exposition, model: &Model, c: &AgentCounters) {
    e.family(
        "memtrace_agent_kills_total",
        "counter",
        "Processes (or cgroups) the agent killed.",
    );
    // Sorted: the page is the same for the same counters.
    let mut kills: Vec<_> = c.kills.iter().collect();
    kills.sort();
    for ((budget, cgroup, action), n) in kills {
        e.sample(
            "memtrace_agent_kills_total",
            &[("budget", budget), ("cgroup", cgroup), ("action", action)],
            *n as f64,
        );
    }
    for (name, help, v) in [
        (
            "memtrace_agent_would_kill_total",
            "Kills a dry run held back.",
            c.would_kill,
        ),
        (
            "memtrace_agent_nothing_to_kill_total",
            "Breaches with no killable process.",
            c.nothing_to_kill,
        ),
        (
            "memtrace_budget_breaches_total",
            "Budget breaches.",
            c.breaches,
        ),
        (
            "memtrace_budget_warnings_total",
            "Budget warnings.",
            c.warnings,
        ),
    ] {
        e.family(name, "counter", help);
        e.sample(name, &[], v as f64);
    }
    for (name, help, h) in [
        (
            "memtrace_agent_kill_breach_to_signal_seconds",
            "Kill overshoot: from the budget crossing to the kill signal.",
            &c.breach_to_signal,
        ),
        (
            "memtrace_agent_kill_signal_to_exit_seconds",
            "From the kill signal to the process's exit.",
            &c.signal_to_exit,
        ),
    ] {
        e.family(name, "histogram", help);
        histogram(e, name, &[], h);
    }
    e.family(
        "memtrace_kernel_brakes_total",
        "counter",
        "Times the in-kernel brake signalled a task.",
    );
    e.sample("memtrace_kernel_brakes_total", &[], model.brakes as f64);
    e.family(
        "memtrace_config_reloads_total",
        "counter",
        "SIGHUP reloads by result.",
    );
    e.sample(
        "memtrace_config_reloads_total",
        &[("result", "ok")],
        c.reloads_ok as f64,
    );
    e.sample(
        "memtrace_config_reloads_total",
        &[("result", "invalid")],
        c.reloads_failed as f64,
    );
}

fn alerts_and_host(e: &mut Exposition, i: &PageInput<'_>) {
    e.family(
        "memtrace_alerts_total",
        "counter",
        "Alerts by sink and result.",
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
    let h = i.host;
    e.family(
        "memtrace_host_mem_available_bytes",
        "gauge",
        "MemAvailable.",
    );
    e.sample(
        "memtrace_host_mem_available_bytes",
        &[],
        h.mem_available as f64,
    );
    e.family("memtrace_host_swap_free_bytes", "gauge", "SwapFree.");
    e.sample("memtrace_host_swap_free_bytes", &[], h.swap_free as f64);
    if let Some(p) = h.pressure {
        e.family(
            "memtrace_host_memory_pressure_seconds_total",
            "counter",
            "Host memory PSI stall time.",
        );
        e.sample(
            "memtrace_host_memory_pressure_seconds_total",
            &[("kind", "some")],
            p.some_total_us as f64 / 1e6,
        );
        e.sample(
            "memtrace_host_memory_pressure_seconds_total",
            &[("kind", "full")],
            p.full_total_us as f64 / 1e6,
        );
    }
    e.family(
        "memtrace_agent_resident_bytes",
        "gauge",
        "The agent's resident memory.",
    );
    e.sample(
        "memtrace_agent_resident_bytes",
        &[],
        i.process.rss_bytes as f64,
    );
    e.family(
        "memtrace_agent_cpu_seconds_total",
        "counter",
        "The agent's CPU time.",
    );
    e.sample(
        "memtrace_agent_cpu_seconds_total",
        &[],
        i.process.cpu_seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Comm, Event, OomKill, Reclaim, Task, Throttle};
    use crate::probe::{Mechanism, Probe};
    use crate::sys::cgroupfs::{CgroupMemory, Psi};
    use crate::sys::registry::CgroupRegistry;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_page_for_a_known_state() {
        let reg = CgroupRegistry::from_paths([(1, "/"), (10, "/work"), (11, "/work/job")]);
        let mut model = Model::new(0, 600 * S);
        let hog = Task {
            pid: 7,
            tgid: 7,
            comm: Comm::new("hog"),
        };
        model.apply(
            &Event::Throttle(Throttle {
                ts_ns: 9 * S,
                start_ns: 6 * S,
                task: hog,
                memcg_id: 11,
                over_high_id: 10,
                reclaim_ns: 0,
                reclaimed_pages: 0,
                nr_pages: 32,
            }),
            &reg,
        );
        model.apply(
            &Event::Reclaim(Reclaim {
                ts_ns: 9 * S,
                start_ns: 9 * S - 2_000_000,
                task: hog,
                memcg_id: 11,
                memcg_exact: true,
                in_throttle: true,
                nr_reclaimed: 32,
            }),
            &reg,
        );
        model.apply(
            &Event::OomKill(OomKill {
                ts_ns: 9 * S,
                victim: hog,
                invoker: hog,
                victim_memcg_id: 11,
                oom_memcg_id: 11,
                rss_pages: None,
            }),
            &reg,
        );
        if let Some(st) = model.cgroups.get_mut(&10) {
            st.memory = Some(CgroupMemory {
                current: Some(80 << 20),
                high: Some(64 << 20),
                max: None,
                ..CgroupMemory::default()
            });
        }
        let mut counters = AgentCounters::default();
        counters
            .kills
            .insert(("work".into(), "/work".into(), "kill-largest"), 1);
        counters.breaches = 1;
        counters.breach_to_signal.record(1_500_000, 0);
        let probes = [ProbeReport {
            probe: Probe::Throttle,
            what: Probe::Throttle.what(),
            attached: Some(Mechanism::Fentry),
            attempts: Vec::new(),
        }];
        let host = HostMemory {
            mem_total: 1 << 30,
            mem_available: 768 << 20,
            swap_total: 0,
            swap_free: 0,
            pressure: Some(Psi {
                some_total_us: 2_500_000,
                full_total_us: 1_000_000,
                ..Psi::default()
            }),
        };
        let alerts = [SinkCounts {
            label: "ops".into(),
            sent: 2,
            ..SinkCounts::default()
        }];
        let page = render(&PageInput {
            now: 10 * S,
            started: 0,
            probes: &probes,
            model: &model,
            counters: &counters,
            alerts: &alerts,
            host: &host,
            process: ProcessUsage {
                rss_bytes: 8 << 20,
                cpu_seconds: 0.25,
            },
        });
        insta::assert_snapshot!(page);
        // Without the throttle probe, throttling is unmeasured: its
        // families have no samples, rather than a 0 that reads as "fine".
        let unprobed = [ProbeReport {
            attached: None,
            ..probes[0].clone()
        }];
        let page = render(&PageInput {
            now: 10 * S,
            started: 0,
            probes: &unprobed,
            model: &model,
            counters: &counters,
            alerts: &alerts,
            host: &host,
            process: ProcessUsage::default(),
        });
        assert!(page.contains("# HELP memtrace_cgroup_throttled_seconds_total"));
        assert!(
            !page.contains("memtrace_cgroup_throttled_seconds_total{"),
            "{page}"
        );
        assert!(!page.contains("memtrace_cgroup_throttled_ratio{"), "{page}");
        let helps: Vec<&str> = page.lines().filter(|l| l.starts_with("# HELP")).collect();
        let texts: std::collections::HashSet<&str> = helps
            .iter()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect();
        assert_eq!(
            texts.len(),
            helps.len(),
            "every metric has its own HELP text"
        );
    }
}
