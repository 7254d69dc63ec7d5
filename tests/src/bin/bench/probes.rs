//! What each eBPF program costs per invocation, by the kernel's own
//! accounting (`kernel.bpf_stats_enabled`), beside an empty program on the
//! same hook in the same run: memtrace's programs loaded and attached as
//! `memtrace events` loads them, the baselines of tracer-ebpf's
//! `baseline.rs` next to them, the events drained as the agent drains
//! them.
//!
//! - On the host: the reclaim and OOM programs, while a v1 memory cgroup
//!   is squeezed (the throttle hook cannot attach here).
//! - In a VM (Debian 6.12, qemu TCG): every program, the throttle ones
//!   included, during a memory.high livelock and an OOM; the guest's
//!   `probe-cost` scenario sends the figures back, `cargo xtask bench`
//!   boots it first.

use std::path::Path;

use memtrace::ProgramStats;
use memtrace_tests::cgroup::TestCgroup;
use memtrace_tests::probes::measure_with;
use memtrace_tests::run::{in_cgroup, workspace_bin};

use crate::Rows;

/// Rows of per-invocation cost, each program beside its baseline.
pub fn rows_for(rows: &mut Rows, stats: &[ProgramStats], context: &str) {
    let per_run = |s: &ProgramStats| s.run_time_ns as f64 / s.run_cnt.max(1) as f64;
    let mut any = false;
    for s in stats
        .iter()
        .filter(|s| !s.name.starts_with("baseline_") && s.run_cnt > 0)
    {
        any = true;
        let base_name = format!("baseline_{}", baseline_of(&s.name));
        let base = stats.iter().find(|b| b.name == base_name && b.run_cnt > 0);
        let (base_ns, ratio) = base.map_or((String::from("-"), String::from("-")), |b| {
            (
                format!("{:.0} ns", per_run(b)),
                format!("{:.1}×", per_run(s) / per_run(b).max(1.0)),
            )
        });
        rows.row(
            &format!("probe {} ({context})", s.name),
            format!("{:.0} ns per run", per_run(s)),
            &format!(
                "goal ≤ 300 ns; empty program on the same hook {base_ns} ({ratio}); {} runs",
                s.run_cnt
            ),
        );
    }
    if !any {
        rows.row(
            &format!("probes ({context})"),
            "no invocations seen".into(),
            "",
        );
    }
}

/// The program whose empty twin measures `name`'s hook. The throttle
/// entry and exit are each attached twice to the same function
/// (`throttle_b_*`, the copy that runs when the kernel skips the first):
/// both copies share one empty program there.
fn baseline_of(name: &str) -> &str {
    match name {
        "throttle_b_fentry" => "throttle_fentry",
        "throttle_b_fexit" => "throttle_fexit",
        other => other,
    }
}

/// On the host: a v1 (or v2) memory cgroup of 64 MiB squeezed three times
/// by a 160 MiB hog: memcg reclaim passes and OOM kills. Twice: with a
/// record per reclaim pass (`record`, `top`, `events`), and without, as the
/// agent loads the programs (the passes only added to the kernel's totals).
pub fn host(rows: &mut Rows) {
    for (records, mode) in [
        (true, "reclaim records on"),
        (false, "agent mode: reclaim records off"),
    ] {
        let opts = memtrace::LoadOptions {
            reclaim_records: records,
            ..memtrace::LoadOptions::default()
        };
        match measure_with(&opts, squeeze) {
            Ok(stats) => rows_for(rows, &stats, &format!("host, v1 squeeze, {mode}")),
            Err(e) => rows.row(
                &format!("probes (host, {mode})"),
                format!("not measured: {e}"),
                "",
            ),
        }
    }
}

/// A 64 MiB memory cgroup squeezed three times by a 160 MiB hog.
fn squeeze() {
    let Some(layout) = memtrace::CgroupLayout::detect().ok().and_then(|l| l.memory) else {
        return;
    };
    let Ok(cg) = TestCgroup::create_in(
        &layout,
        &format!("memtrace-bench-probes-{}", std::process::id()),
    ) else {
        return;
    };
    let _ = cg.set_max(64 << 20);
    for _ in 0..3 {
        let _ = in_cgroup(&workspace_bin("hog"), &cg.procs_file())
            .args(["--mb", "160", "--step-mb", "8"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// The figures the VM's `probe-cost` scenario sent back, if it ran.
pub fn vm(rows: &mut Rows, root: &Path) {
    let dir = root.join("target/vmtest/artifacts");
    let mut found = false;
    for series in ["6.12", "6.1", "7.2"] {
        let file = dir.join(series).join("probe-cost.json");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(stats) = serde_json::from_str::<Vec<ProgramStats>>(&text) else {
            continue;
        };
        found = true;
        rows_for(rows, &stats, &format!("VM {series}, livelock and OOM, TCG"));
    }
    if !found {
        rows.row(
            "probes in a VM (throttle programs)",
            "not measured: no probe-cost results".into(),
            "cargo xtask bench boots `vmtest --scenario probe-cost` first",
        );
    }
}
