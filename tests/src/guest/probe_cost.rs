//! `probe-cost` (run by `cargo xtask bench`, not by the test matrix): what
//! each of memtrace's programs costs per invocation in a kernel where the
//! throttle hook attaches, beside an empty program on the same hook, by
//! the kernel's accounting (`kernel.bpf_stats_enabled`). The workload is a
//! memory.high livelock (the throttle function, memcg reclaim) and then an
//! OOM kill (mark_victim, mem_cgroup_out_of_memory). The figures go back
//! to the host as `probe-cost.json`.

use anyhow::Result;

use super::Checks;
use super::scenarios::OOM_HOG_UNTIL_S;
use super::scenarios::{Ctx, MIB, limits, v2_cgroup};
use super::workload::{Hog, plateau_hog};

pub fn probe_cost(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let livelock = v2_cgroup("/probe-cost")?;
    limits(&livelock, 64 * MIB, 128 * MIB)?;
    let oom = v2_cgroup("/probe-cost-oom")?;
    oom.write("memory.high", "max")?;
    oom.write("memory.max", &(64 * MIB).to_string())?;
    let _ = oom.write("memory.swap.max", "0");
    let stats = crate::probes::measure(move || {
        // Both end by their --until deadline whatever the kernel does.
        if let Ok(mut hog) = plateau_hog(&livelock, 100, 10, &[]) {
            let _ = hog.wait();
        }
        if let Ok(mut hog) = Hog::spawn(
            &oom,
            &["--mb", "128", "--step-mb", "4"],
            OOM_HOG_UNTIL_S,
            None,
        ) {
            let _ = hog.wait();
        }
    })
    .map_err(anyhow::Error::msg)?;
    for s in &stats {
        c.metric(&format!("{}_runs", s.name), s.run_cnt);
        if let Some(ns) = s.run_time_ns.checked_div(s.run_cnt) {
            c.metric(&format!("{}_ns", s.name), ns);
        }
    }
    let ran = |name: &str| stats.iter().any(|s| s.name == name && s.run_cnt > 0);
    c.check(
        ran("throttle_fentry") || ran("throttle_kprobe"),
        "the throttle program never ran",
    );
    c.check(
        ran("baseline_throttle_fentry") || ran("baseline_throttle_kprobe"),
        "the empty program on the throttle hook never ran",
    );
    c.artifacts
        .push(("probe-cost.json".into(), serde_json::to_vec(&stats)?));
    Ok(())
}
