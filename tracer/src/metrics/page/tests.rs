use super::*;
use crate::event::{Comm, Event, OomKill, Reclaim, Task, Throttle};
use crate::probe::{Mechanism, Probe};
use crate::sys::cgroupfs::{CgroupMemory, Psi};
use crate::sys::registry::CgroupRegistry;

const S: u64 = 1_000_000_000;

#[test]
fn the_page_for_a_known_state() {
    // The seed's unit, a container of its docker.slice, and a pod's
    // container whose namespace enrichment learned.
    let unit = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
    let ctr = "/docker.slice/docker-ae836c95b4c3c9e9179e0e91015512da89fdec91612f63cebae57df9a5444c79.scope";
    let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8e3f1a52_7c4d_4b2a_9f10_2d6e5a7b8c9d.slice/cri-containerd-1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119.scope";
    let mut reg = CgroupRegistry::from_paths([
        (1, "/"),
        (10, "/work"),
        (11, "/work/job"),
        (20, unit),
        (21, ctr),
        (22, pod),
    ]);
    reg.learn([crate::names::Learned::Pod {
        uid: "8e3f1a52-7c4d-4b2a-9f10-2d6e5a7b8c9d".into(),
        names: crate::names::PodNames {
            name: Some("etl-28641".into()),
            namespace: Some("batch".into()),
        },
    }]);
    let mut model = Model::new(0, 600 * S);
    for id in [20, 21, 22] {
        model.apply(
            &Event::OomKill(OomKill {
                ts_ns: 8 * S,
                victim: Task {
                    pid: 8,
                    tgid: 8,
                    comm: Comm::new("worker"),
                },
                invoker: Task {
                    pid: 8,
                    tgid: 8,
                    comm: Comm::new("worker"),
                },
                victim_memcg_id: id,
                oom_memcg_id: id,
                rss_pages: None,
            }),
            &reg,
        );
    }
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
    let work = counters.budget("work".into(), "kill-largest");
    work.kills = 1;
    work.breaches = 1;
    counters.breach_to_signal.record(1_500_000, 0);
    // Configured, never breached: every series at 0.
    let budgets = [
        BudgetSeries {
            name: "work".into(),
            action: "kill-largest",
        },
        BudgetSeries {
            name: "observe".into(),
            action: "alert",
        },
    ];
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
        build: BuildInfo {
            version: "0.1.0",
            commit: "4f7f6f4a1b2c3d4e5f60718293a4b5c6d7e8f901",
            dirty: "false",
        },
        probes: &probes,
        model: &model,
        names: &reg,
        lookups: &[("docker", "found", 3), ("docker", "failed", 1)],
        budgets: &budgets,
        counters: &counters,
        alerts: &alerts,
        host: &host,
        host_verdict: Judgement::default(),
        process: ProcessUsage {
            resident_bytes: 8 << 20,
            virtual_bytes: 64 << 20,
            cpu_seconds: 0.25,
            start_time_seconds: 1_764_000_000.0,
            open_fds: 17,
            max_fds: 1024,
        },
    });
    insta::assert_snapshot!(page);
    // Every family has HELP and TYPE, and every sample belongs to the
    // family above it.
    let mut family = "";
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap_or_default();
        } else if !line.starts_with('#') {
            assert!(line.starts_with(family), "{line} outside {family}");
        }
    }
    assert_eq!(
        page.matches("# HELP ").count(),
        page.matches("# TYPE ").count()
    );
    // Without the throttle probe, throttling is unmeasured: its
    // families have no samples, rather than a 0 that reads as "fine".
    let unprobed = [ProbeReport {
        attached: None,
        ..probes[0].clone()
    }];
    let page = render(&PageInput {
        now: 10 * S,
        build: BuildInfo {
            version: "0.1.0",
            commit: "4f7f6f4a1b2c3d4e5f60718293a4b5c6d7e8f901",
            dirty: "false",
        },
        probes: &unprobed,
        model: &model,
        names: &reg,
        lookups: &[],
        budgets: &budgets,
        counters: &counters,
        alerts: &alerts,
        host: &host,
        host_verdict: Judgement::default(),
        process: ProcessUsage::default(),
    });
    assert!(page.contains("# HELP memtrace_cgroup_throttled_seconds_total"));
    for family in [
        "memtrace_cgroup_throttled_seconds_total{",
        "memtrace_cgroup_throttled_ratio{",
    ] {
        assert!(!page.contains(family), "{family} sampled: {page}");
    }
    assert!(page.contains("memtrace_cgroup_oom_kills_total{"), "{page}");
}
