//! The tracing scenarios: real memory.high throttling in cgroup v2, checked
//! against the kernel's own evidence. See docs/testing.md for what each
//! asserts and why the tolerances are what they are.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::workload::{
    Evidence, Hog, LatencyClient, SERVER_START_TIMEOUT, count, latencies, percentile, plateau_hog,
    rel_diff, spawn_in, stop, throttle_summary,
};
use super::{Checks, wait_until};
use crate::cgroup::TestCgroup;
use crate::run::{EventsRun, workspace_bin};

/// What every scenario gets.
pub struct Ctx {
    pub kernel: String,
    /// `memtrace check --json` of this VM.
    pub capabilities: Value,
}

impl Ctx {
    /// A kill-path feature as `check` found it (`kernel.kill` in its JSON).
    pub fn kill_feature(&self, name: &str) -> bool {
        self.capabilities["kernel"]["kill"][name] == true
    }

    fn probe_attached(&self, name: &str) -> bool {
        self.capabilities["probes"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["probe"] == name && !p["attached"].is_null())
        })
    }
}

pub type Scenario = fn(&Ctx, &mut Checks) -> Result<()>;

/// Every scenario by name, in the order the full matrix runs them.
pub const ALL: &[(&str, Scenario)] = &[
    ("check", check_features),
    ("livelock", livelock),
    ("oom", oom),
    ("nested", nested),
    ("quiet", quiet),
    ("many", many),
    ("fallback", fallback),
    ("agent-kill", super::agent::agent_kill),
    ("agent-dry-run", super::agent::agent_dry_run),
    ("agent-avoid", super::agent::agent_avoid),
    ("agent-brake", super::agent::agent_brake),
    ("agent-bad-config", super::agent::agent_bad_config),
    ("agent-estimate", super::agent::agent_estimate),
    ("agent-host", super::agent::agent_host),
    ("agent-actions", super::agent::agent_actions),
    ("agent-exec", super::ops::agent_exec),
    ("record", super::record::record),
    ("safety-siblings", super::safety::safety_siblings),
    ("safety-lost", super::safety::safety_lost_ends),
    ("safety-identity", super::safety::safety_identity),
    ("safety-threads", super::safety::safety_fallback_threads),
    ("safety-disk", super::safety::safety_slow_disk),
    ("safety-long", super::safety::safety_long),
    ("top-incident", super::screens::top_incident),
];

/// Scenarios that run only when named (`--scenario`), never in the test
/// matrix: the benchmarks `cargo xtask bench` boots, and `probe-long`, a
/// diagnostic for long throttle episodes (docs/testing.md).
pub const BENCH: &[(&str, Scenario)] = &[
    ("probe-cost", super::probe_cost::probe_cost),
    ("bench-kill", super::kill_bench::bench_kill),
    ("probe-long", super::probe_long::probe_long),
];

/// memtrace's union of throttle episodes and the cgroup's PSI `some` total
/// must agree within this share of the PSI figure, plus [`PSI_SLACK_MS`].
/// Why: docs/testing.md, "Tolerances".
pub const PSI_TOLERANCE: f64 = 0.03;
pub const PSI_SLACK_MS: f64 = 100.0;

pub const MIB: u64 = 1 << 20;

/// Life of a hog that must be OOM-killed: it asks for twice its cgroup's
/// memory.max, with no memory.high, so nothing throttles it on the way.
/// The OOM kill came at most 0.9 s after the start under load; if the OOM
/// killer has not acted by the deadline the hog ends by itself with status
/// 0, which fails the scenario's "should have been killed" check.
pub const OOM_HOG_UNTIL_S: u32 = 30;

/// Life of the busy workload in `quiet` (never throttled: it stays far
/// below its limits): 48 MiB and a 6 s hold took at most 7.0 s under load.
const QUIET_HOG_UNTIL_S: u32 = 40;

pub fn v2_cgroup(path: &str) -> Result<TestCgroup> {
    let cg = TestCgroup::create(path)?;
    if cg.version() != memtrace::CgroupVersion::V2 {
        bail!("the VM scenarios need the memory controller on cgroup v2");
    }
    Ok(cg)
}

pub fn limits(cg: &TestCgroup, high: u64, max: u64) -> Result<()> {
    cg.write("memory.high", &high.to_string())?;
    cg.write("memory.max", &max.to_string())?;
    // No swap: the incident's setting, and nothing for reclaim to do.
    let _ = cg.write("memory.swap.max", "0");
    Ok(())
}

fn start_events() -> Result<EventsRun> {
    EventsRun::start(
        &workspace_bin("memtrace"),
        &["--types", "throttle,reclaim,oom_kill,lost"],
    )
}

/// Records memtrace's own count of records it lost (ring buffer full), so a
/// PSI mismatch says whether memtrace knew it missed something.
fn lost_metric(c: &mut Checks, events: &[Value]) {
    let lost: u64 = events
        .iter()
        .filter(|e| e["type"] == "lost")
        .filter_map(|e| e["count"].as_u64())
        .sum();
    c.metric("lost_records", lost);
}

/// Compares memtrace's throttled time with the kernel's PSI `some` total.
pub(crate) fn check_psi(c: &mut Checks, label: &str, union_ns: u64, ev: &Evidence) {
    let union_ms = union_ns as f64 / 1e6;
    let some_ms = ev.some_us as f64 / 1e3;
    let full_ms = ev.full_us as f64 / 1e3;
    c.metric(&format!("{label}throttle_union_ms"), union_ms.round());
    c.metric(&format!("{label}psi_some_ms"), some_ms.round());
    c.metric(&format!("{label}psi_full_ms"), full_ms.round());
    c.metric(
        &format!("{label}diff_vs_some_pct"),
        (rel_diff(union_ms, some_ms) * 1000.0).round() / 10.0,
    );
    let allowed = some_ms * PSI_TOLERANCE + PSI_SLACK_MS;
    c.check(
        (union_ms - some_ms).abs() <= allowed,
        format!(
            "{label}memtrace throttled {union_ms:.0} ms but memory.pressure some grew {some_ms:.0} ms \
             (allowed ±{allowed:.0} ms)"
        ),
    );
    // Full stall (every task of the cgroup stalled) cannot exceed the time
    // at least one task was throttled, by more than the slack.
    c.check(
        full_ms <= union_ms + allowed,
        format!("{label}memory.pressure full {full_ms:.0} ms exceeds memtrace's {union_ms:.0} ms"),
    );
}

/// The incident: a hog plateaus between memory.high and memory.max with no
/// swap, in the same cgroup as a server.
fn livelock(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let cg = v2_cgroup("/livelock")?;
    limits(&cg, 64 * MIB, 128 * MIB)?;
    let events = start_events()?;
    let sock = Path::new("/tmp/livelock.sock");
    // Hog and server share CPU 0: PSI weights its per-CPU stall times by
    // each CPU's busy time, which is exact only when the cgroup runs on one
    // CPU (docs/testing.md).
    let mut server = spawn_in(
        &cg,
        "latency-server",
        &[sock.to_str().unwrap_or_default()],
        Some(0),
    )?;
    if !wait_until(SERVER_START_TIMEOUT, || sock.exists()) {
        bail!("latency-server did not create {}", sock.display());
    }
    let client = LatencyClient::start(sock, Duration::from_millis(100));
    std::thread::sleep(Duration::from_secs(2));
    let before = Evidence::read(&cg)?;
    let hog_from = client.now_ms();
    let mut hog = plateau_hog(&cg, 100, 20, &[])?;
    let hog_pid = hog.pid();
    let status = hog.wait_at_deadline(c)?;
    let hog_to = client.now_ms();
    std::thread::sleep(Duration::from_secs(2));
    let after = Evidence::read(&cg)?.since(&before);
    let samples = client.finish();
    stop(&mut server);
    let server_pid = u64::from(server.id());
    let events = events.stop()?;
    lost_metric(c, &events);

    c.check(
        status.success(),
        format!("the hog should plateau, not die: {status}"),
    );
    let s = throttle_summary(&events, "/livelock");
    c.metric("episodes", s.episodes);
    c.metric("high_events", after.high);
    c.metric("reclaim_ms", (s.reclaim_ns as f64 / 1e6).round());
    c.metric("sum_ms", (s.sum_ns as f64 / 1e6).round());
    let hog_eps = s.by_tgid.get(&hog_pid).copied().unwrap_or_default();
    let server_eps = s.by_tgid.get(&server_pid).copied().unwrap_or_default();
    c.metric("hog_episodes", hog_eps.0);
    c.metric("server_episodes", server_eps.0);
    c.check(
        hog_eps.0 > 0,
        format!("no throttle episode attributed to the hog (pid {hog_pid})"),
    );
    c.check(
        s.by_tgid.keys().all(|t| *t == hog_pid || *t == server_pid),
        format!(
            "episodes attributed to processes outside the cgroup: {:?}",
            s.by_tgid.keys()
        ),
    );
    // Every episode of the hog, wherever memtrace put it, must be under
    // /livelock: a probe that reads the wrong cgroup fails here.
    let misplaced: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "throttle" && e["tgid"] == hog_pid && e["cgroup"] != "/livelock")
        .collect();
    c.check(
        misplaced.is_empty(),
        format!(
            "{} hog episodes attributed to another cgroup, e.g. {:?}",
            misplaced.len(),
            misplaced.first()
        ),
    );
    c.check(
        s.over_high.iter().all(|p| p == "/livelock") && !s.over_high.is_empty(),
        format!(
            "over-high cgroup should be /livelock, got {:?}",
            s.over_high
        ),
    );
    check_psi(c, "", s.union_ns, &after);
    c.check(after.high > 0, "memory.events high did not grow");
    c.check(
        s.episodes <= after.high,
        format!(
            "{} episodes but only {} memory.events high",
            s.episodes, after.high
        ),
    );
    c.check(
        after.oom_kill == 0 && after.max == 0,
        "memory.max was reached: not a livelock",
    );
    c.check(
        count(&events, "oom_kill", "/livelock") == 0,
        "an OOM kill was reported",
    );

    let baseline = latencies(&samples, 0.0, hog_from);
    let during = latencies(&samples, hog_from, hog_to);
    let base_p50 = percentile(&baseline, 50.0);
    let during_max = during.iter().copied().fold(0.0, f64::max);
    c.metric("latency_baseline_p50_ms", (base_p50 * 10.0).round() / 10.0);
    c.metric("latency_during_max_ms", during_max.round());
    c.metric("latency_during_p50_ms", percentile(&during, 50.0).round());
    c.check(!baseline.is_empty(), "no baseline latency samples");
    c.check(
        during_max >= 200.0 && during_max >= 10.0 * base_p50,
        format!("server latency did not show the stall: max {during_max:.0} ms vs baseline p50 {base_p50:.1} ms"),
    );
    Ok(())
}

/// A hog crosses memory.max: an OOM kill with the right pid and cgroup, and
/// no throttling, since memory.high is not set.
fn oom(ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let cg = v2_cgroup("/oom")?;
    cg.write("memory.high", "max")?;
    cg.write("memory.max", &(64 * MIB).to_string())?;
    let _ = cg.write("memory.swap.max", "0");
    let mut events = start_events()?;
    let before = Evidence::read(&cg)?;
    let mut hog = Hog::spawn(
        &cg,
        &["--mb", "128", "--step-mb", "4"],
        OOM_HOG_UNTIL_S,
        None,
    )?;
    let hog_pid = hog.pid();
    // The event first, then the reaping (as in `fallback`: where the OOM
    // tracepoint names only a pid, memtrace reads the victim's cgroup from
    // /proc/PID, gone once it is reaped), bounded by the hog's life.
    let oom = events.wait_for(hog.life_left(), |e| e["type"] == "oom_kill");
    let (status, _) = hog.wait()?;
    let after = Evidence::read(&cg)?.since(&before);
    let events = events.stop()?;

    c.check(
        !status.success(),
        format!("the hog should have been killed: {status}"),
    );
    c.metric("kernel_oom_kills", after.oom_kill);
    c.check(
        after.oom_kill == 1,
        format!("memory.events oom_kill grew by {}", after.oom_kill),
    );
    let Some(oom) = oom else {
        c.check(false, "no oom_kill event");
        return Ok(());
    };
    c.check(
        oom["pid"] == hog_pid,
        format!("OOM victim pid {} is not the hog {hog_pid}", oom["pid"]),
    );
    c.check(
        oom["cgroup"] == "/oom",
        format!("OOM victim cgroup {} is not /oom", oom["cgroup"]),
    );
    c.check(
        oom["comm"] == "hog",
        format!("OOM victim comm {}", oom["comm"]),
    );
    let rss = oom["rss_bytes"]["total"].as_u64().unwrap_or(0);
    c.metric("victim_rss_mib", rss / MIB);
    c.check(
        rss >= 32 * MIB,
        format!("victim RSS {rss} far below the 64 MiB limit"),
    );
    if ctx.probe_attached("oom_memcg") {
        c.check(
            oom["oom_cgroup"] == "/oom",
            format!("the cgroup that ran out is {}, not /oom", oom["oom_cgroup"]),
        );
    } else {
        c.metric("oom_cgroup_probe", "unavailable");
    }
    let kills = events
        .iter()
        .filter(|e| e["type"] == "oom_kill" && e["pid"] == hog_pid)
        .count();
    c.check(kills == 1, format!("{kills} oom_kill events for the hog"));
    let throttles = count(&events, "throttle", "/oom");
    c.metric("throttle_episodes", throttles);
    c.check(
        throttles == 0,
        format!("{throttles} throttle episodes in a cgroup without memory.high"),
    );
    Ok(())
}

/// memory.high on a parent, the hog in a child: episodes belong to the
/// child, the over-high cgroup is the parent.
fn nested(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let parent = v2_cgroup("/nested")?;
    limits(&parent, 64 * MIB, 256 * MIB)?;
    parent.write("cgroup.subtree_control", "+memory")?;
    let child = v2_cgroup("/nested/child")?;
    let events = start_events()?;
    let before = Evidence::read(&parent)?;
    let mut hog = plateau_hog(&child, 100, 15, &[])?;
    let hog_pid = hog.pid();
    let status = hog.wait_at_deadline(c)?;
    std::thread::sleep(Duration::from_secs(1));
    let after = Evidence::read(&parent)?.since(&before);
    let events = events.stop()?;
    lost_metric(c, &events);
    drop(child);

    c.check(
        status.success(),
        format!("the hog should plateau, not die: {status}"),
    );
    let s = throttle_summary(&events, "/nested/child");
    c.metric("episodes", s.episodes);
    c.check(s.episodes > 0, "no throttle episode under /nested/child");
    c.check(
        s.by_tgid.keys().all(|t| *t == hog_pid),
        format!("episodes of other processes: {:?}", s.by_tgid.keys()),
    );
    c.check(
        count(&events, "throttle", "/nested") == 0,
        "episodes attributed to the parent instead of the child",
    );
    c.check(
        s.over_high.len() == 1 && s.over_high.contains("/nested"),
        format!("over-high cgroup should be /nested, got {:?}", s.over_high),
    );
    // The parent's PSI covers its child's tasks.
    check_psi(c, "", s.union_ns, &after);
    Ok(())
}

/// A busy workload under its limits: no throttling reported, none happened.
fn quiet(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let cg = v2_cgroup("/quiet")?;
    limits(&cg, 256 * MIB, 512 * MIB)?;
    let events = start_events()?;
    let sock = Path::new("/tmp/quiet.sock");
    let mut server = spawn_in(
        &cg,
        "latency-server",
        &[sock.to_str().unwrap_or_default()],
        None,
    )?;
    if !wait_until(SERVER_START_TIMEOUT, || sock.exists()) {
        bail!("latency-server did not start");
    }
    let before = Evidence::read(&cg)?;
    let client = LatencyClient::start(sock, Duration::from_millis(20));
    let mut hog = Hog::spawn(
        &cg,
        &[
            "--mb",
            "48",
            "--step-mb",
            "8",
            "--hold",
            "6",
            "--churn-kb",
            "2048",
        ],
        QUIET_HOG_UNTIL_S,
        None,
    )?;
    let (status, _) = hog.wait()?;
    let samples = client.finish();
    let after = Evidence::read(&cg)?.since(&before);
    stop(&mut server);
    let events = events.stop()?;

    c.check(
        status.success(),
        format!("the busy workload failed: {status}"),
    );
    c.metric("requests", samples.len());
    c.metric("high_events", after.high);
    let throttles = count(&events, "throttle", "/quiet");
    c.metric("throttle_episodes", throttles);
    c.check(
        after.high == 0,
        format!("the workload went over memory.high ({} events)", after.high),
    );
    c.check(
        throttles == 0,
        format!("{throttles} throttle episodes reported for a cgroup under its limits"),
    );
    c.check(
        samples.len() > 50,
        format!("only {} requests answered", samples.len()),
    );
    Ok(())
}

/// Eight processes in four sibling cgroups with different limits: totals
/// are kept apart and each agrees with its own memory.pressure.
fn many(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let top = v2_cgroup("/many")?;
    top.write("cgroup.subtree_control", "+memory")?;
    let highs = [("a", 40u64), ("b", 48), ("c", 56), ("d", 64)];
    let mut groups = Vec::new();
    for (i, (name, high)) in highs.iter().enumerate() {
        let cg = v2_cgroup(&format!("/many/{name}"))?;
        limits(&cg, high * MIB, 2 * high * MIB)?;
        groups.push((cg, *high, i / 2));
    }
    let events = start_events()?;
    let mut befores = Vec::new();
    for (cg, _, _) in &groups {
        befores.push(Evidence::read(cg)?);
    }
    let mut hogs = Vec::new();
    for (cg, high, cpu) in &groups {
        // Two processes of 0.7 × high each: together 1.4 × high.
        let mb = (high * 7 / 10).to_string();
        for _ in 0..2 {
            let hog = Hog::spawn(
                cg,
                &["--mb", &mb, "--step-mb", "2", "--churn-kb", "256"],
                15,
                Some(*cpu),
            )?;
            hogs.push((cg.path.clone(), hog.pid(), hog));
        }
    }
    // Each wait ends by the same deadline: 15 s from the hogs' start plus
    // the grace, not 8 times that.
    for (_, _, hog) in &mut hogs {
        let status = hog.wait_at_deadline(c)?;
        c.check(status.success(), format!("a hog died: {status}"));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut afters = Vec::new();
    for ((cg, _, _), before) in groups.iter().zip(&befores) {
        afters.push(Evidence::read(cg)?.since(before));
    }
    // What the kernel skipped: a copy of a throttle program is skipped on
    // a CPU while a preempted task is inside it (tracer-ebpf/src/throttle.rs);
    // the other copy records the episode. Nonzero on 7.x, whose kernels
    // preempt lazily; the PSI check below says whether anything was lost.
    let skips = |copy_b: bool| {
        super::progstats::recursion_misses(events.pid(), |n| {
            n.starts_with("throttle_") && n.starts_with("throttle_b_") == copy_b
        })
    };
    let (skips_a, skips_b) = (skips(false), skips(true));
    let events = events.stop()?;
    lost_metric(c, &events);
    if let (Some(a), Some(b)) = (skips_a, skips_b) {
        c.metric("throttle_skips_a", a);
        c.metric("throttle_skips_b", b);
    }

    for ((cg, _, _), after) in groups.iter().zip(&afters) {
        let pids: Vec<u64> = hogs
            .iter()
            .filter(|(p, _, _)| *p == cg.path)
            .map(|(_, pid, _)| *pid)
            .collect();
        let s = throttle_summary(&events, &cg.path);
        let label = format!("{}:", cg.path.trim_start_matches("/many/"));
        c.metric(&format!("{label}episodes"), s.episodes);
        c.check(s.episodes > 0, format!("{}: no throttle episodes", cg.path));
        c.check(
            pids.iter().all(|p| s.by_tgid.contains_key(p)),
            format!(
                "{}: not both processes were seen throttled: {:?}",
                cg.path,
                s.by_tgid.keys()
            ),
        );
        c.check(
            s.by_tgid.keys().all(|t| pids.contains(t)),
            format!(
                "{}: episodes of processes from other cgroups: {:?}",
                cg.path,
                s.by_tgid.keys()
            ),
        );
        check_psi(c, &label, s.union_ns, after);
    }
    let stray = count(&events, "throttle", "/many");
    c.check(
        stray == 0,
        format!("{stray} episodes attributed to the parent /many"),
    );
    drop(groups);
    Ok(())
}

/// The fallback attach mechanisms, forced: kprobe/kretprobe for the
/// throttle function, classic tracepoints for reclaim and OOM. What users of
/// kernels that refuse tracing programs get must be as right.
fn fallback(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let deny = [("MEMTRACE_DENY_ATTACH", "fentry,raw_tracepoint")];
    let out = std::process::Command::new(workspace_bin("memtrace"))
        .envs(deny)
        .args(["check", "--json"])
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout).context("check --json")?;
    let mechanism = |probe: &str| {
        report["probes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["probe"] == probe))
            .map(|p| p["attached"].clone())
            .unwrap_or(Value::Null)
    };
    // OOM victims: the tracepoint where its record names them (6.8+),
    // else a kprobe on mark_oom_victim; the victim's name is checked below.
    for (probe, want) in [
        ("throttle", &["kprobe"][..]),
        ("memcg_reclaim", &["tracepoint"]),
        ("oom_kill", &["tracepoint", "kprobe"]),
        ("oom_memcg", &["kprobe"]),
    ] {
        let got = mechanism(probe);
        c.check(
            want.iter().any(|w| got == *w),
            format!("{probe} attached via {got}, expected {}", want.join(" or ")),
        );
    }

    let cg = v2_cgroup("/fallback")?;
    limits(&cg, 64 * MIB, 128 * MIB)?;
    let oom_cg = v2_cgroup("/fallback-oom")?;
    oom_cg.write("memory.max", &(48 * MIB).to_string())?;
    let _ = oom_cg.write("memory.swap.max", "0");
    let mut events = EventsRun::start_with_env(
        &workspace_bin("memtrace"),
        &["--types", "throttle,reclaim,oom_kill,lost"],
        &deny,
    )?;
    let before = Evidence::read(&cg)?;
    let mut hog = plateau_hog(&cg, 100, 10, &[])?;
    let hog_pid = hog.pid();
    let status = hog.wait_at_deadline(c)?;
    std::thread::sleep(Duration::from_secs(1));
    let after = Evidence::read(&cg)?.since(&before);
    let mut victim = Hog::spawn(
        &oom_cg,
        &["--mb", "96", "--step-mb", "4"],
        OOM_HOG_UNTIL_S,
        None,
    )?;
    let victim_pid = victim.pid();
    // The event first, then the reaping: the classic tracepoint names only
    // the victim's pid, and memtrace reads its cgroup from /proc/PID, which
    // is gone once the victim is reaped. Reaped first, as before, a late
    // lookup on a loaded guest reported "OOM victim cgroup null" (6.1). The
    // wait ends with the victim's life at the latest: the OOM kill cannot
    // come later.
    let oom = events.wait_for(victim.life_left(), |e| e["type"] == "oom_kill");
    let _ = victim.wait()?;
    let events = events.stop()?;
    lost_metric(c, &events);

    c.check(
        status.success(),
        format!("the hog should plateau, not die: {status}"),
    );
    let s = throttle_summary(&events, "/fallback");
    c.metric("episodes", s.episodes);
    c.check(
        s.by_tgid.contains_key(&hog_pid),
        "no episode attributed to the hog via kprobes",
    );
    check_psi(c, "", s.union_ns, &after);
    let reclaims = count(&events, "reclaim", "/fallback");
    c.metric("reclaim_events", reclaims);
    c.check(
        reclaims > 0,
        "no reclaim events via the tracepoint fallback",
    );
    match oom {
        Some(o) => {
            c.check(
                o["pid"] == victim_pid,
                format!("OOM victim {} is not {victim_pid}", o["pid"]),
            );
            c.check(
                o["cgroup"] == "/fallback-oom",
                format!("OOM victim cgroup {}", o["cgroup"]),
            );
            c.check(o["comm"] == "hog", format!("OOM victim comm {}", o["comm"]));
            c.check(
                o["oom_cgroup"] == "/fallback-oom",
                format!("ran-out cgroup {}", o["oom_cgroup"]),
            );
        }
        None => c.check(false, "no oom_kill event via the tracepoint fallback"),
    }
    Ok(())
}

/// `memtrace check` on this kernel: the kill path's features are found
/// as the kernel's version says they must be (process_mrelease 5.15,
/// cgroup.kill 5.14), and each one missing is said, in `degraded`, with
/// what the fallback costs. The scenarios that kill assert the fallback
/// itself (agent-kill, agent-actions).
pub fn check_features(ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let at_least = |want: (u32, u32)| {
        let mut n = ctx
            .kernel
            .split(|ch: char| !ch.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (n.next().unwrap_or(0), n.next().unwrap_or(0)) >= want
    };
    let degraded: Vec<String> = ctx.capabilities["degraded"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for (feature, since, says) in [
        (
            "process_mrelease",
            (5, 15),
            "process_mrelease needs Linux 5.15",
        ),
        ("cgroup_kill", (5, 14), "cgroup.kill needs Linux 5.14"),
    ] {
        let found = ctx.kill_feature(feature);
        c.metric(feature, found);
        c.check(
            found == at_least(since),
            format!(
                "{feature}: check found {found} on {}, which is {} {}.{}",
                ctx.kernel,
                if at_least(since) {
                    "at least"
                } else {
                    "older than"
                },
                since.0,
                since.1
            ),
        );
        let said = degraded.iter().any(|d| d.contains(says));
        c.check(
            said != found,
            format!("{feature} found {found}, but degraded says {said}: {degraded:?}"),
        );
    }
    c.check(
        ctx.probe_attached("throttle"),
        format!(
            "the throttle probe did not attach: {}",
            ctx.capabilities["probes"]
        ),
    );
    // Before 6.8 the tracepoint names only a pid: the OOM probe must have
    // fallen back to mark_oom_victim, so a victim is named by the kernel.
    let oom = ctx.capabilities["probes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["probe"] == "oom_kill"));
    let via = oom
        .and_then(|p| p["attempts"].as_array())
        .and_then(|a| a.iter().find(|a| a["error"].is_null()))
        .map(|a| format!("{} {}", a["mechanism"], a["target"]));
    c.metric("oom_kill_via", via.clone().unwrap_or_default());
    c.check(
        via.is_some(),
        format!("the OOM probe did not attach: {oom:?}"),
    );
    c.check(
        !degraded.iter().any(|d| d.contains("known by pid only")),
        format!("OOM victims known by pid only on {}: {via:?}", ctx.kernel),
    );
    Ok(())
}

/// Runs `memtrace check --json`.
pub fn capabilities() -> Result<Value> {
    let out = std::process::Command::new(workspace_bin("memtrace"))
        .args(["check", "--json"])
        .output()
        .context("running memtrace check")?;
    serde_json::from_slice(&out.stdout).context("memtrace check --json printed no JSON")
}
