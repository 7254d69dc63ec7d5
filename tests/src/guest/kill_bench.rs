//! The kill path's benchmark, run by `cargo xtask bench` (not by the test
//! matrix): one guest, one agent with a kill budget, and many successive
//! livelocks, each a hog that plateaus over memory.high and is killed by
//! the agent. Every kill-log line's `breach_to_signal_ns` (from the
//! instant the budget was crossed to the `pidfd_send_signal`) goes into a
//! histogram; the result line carries p50, p99 and max. docs/benchmarks.md
//! holds the numbers.

use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;

use super::Checks;
use super::agent::{agent, kill_log, killed_by_sigkill, write_config};
use super::scenarios::{Ctx, MIB, limits, v2_cgroup};
use super::workload::plateau_hog;

/// Breaches measured unless `memtrace.bench.breaches=N` says otherwise.
const DEFAULT_BREACHES: usize = 30;

/// Life of each hog: it is killed a few hundred ms after it goes over
/// memory.high; reaching this unkilled fails the run.
const HOG_UNTIL_S: u32 = 30;

/// The cgroup's memory.high, MiB; each hog plateaus at 48 MiB.
const HIGH_MB: u64 = 32;

/// Between two livelocks the cgroup must drop under half its memory.high
/// within this (the victim's memory is freed as it exits: milliseconds).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the agent's kill log is kept: one line per kill, written once the
/// victim exited.
const KILL_LOG: &str = "/tmp/bench-kill.jsonl";

fn breaches_wanted() -> usize {
    std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("memtrace.bench.breaches="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_BREACHES)
}

/// The steps of the agent's "kill path steps (µs): wake 12, ring and
/// budgets 3, ..." lines, each with its values over all kills.
fn steps(log: &str) -> Vec<(String, Vec<u64>)> {
    let mut out: Vec<(String, Vec<u64>)> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split("kill path steps (µs): ").nth(1) else {
            continue;
        };
        let Some((list, _)) = rest.split_once(';') else {
            continue;
        };
        for item in list.split(", ") {
            let Some((name, value)) = item.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let name = name.replace(' ', "_");
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(value),
                None => out.push((name, vec![value])),
            }
        }
    }
    out
}

fn current(cg: &crate::cgroup::TestCgroup) -> Option<u64> {
    cg.read("memory.current").ok()?.trim().parse().ok()
}

/// The guest's 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Rounds ns to ms with 3 decimals.
fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e3).round() / 1e3
}

/// Breach to signal over many real breaches. The budget is short (20 % of
/// a 1 s window) so each livelock is killed within a second or so of its
/// start; the window is also the cool-down before the next kill in the
/// same cgroup.
pub fn bench_kill(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let wanted = breaches_wanted();
    let _ = std::fs::remove_file(KILL_LOG);
    let config = write_config(
        "bench-kill",
        &format!(
            r#"
[agent]
kill_log = "{KILL_LOG}"
[[budget]]
cgroup = "/bench"
window = "1s"
max_throttled = "20%"
action = "kill-largest"
"#
        ),
    )?;
    // The kill path's own account of each kill, step by step.
    let agent = agent(
        &config,
        &[],
        &[("RUST_LOG", "info,memtrace::agent::kills=debug")],
    )?;
    let cg = v2_cgroup("/bench")?;
    limits(&cg, HIGH_MB * MIB, 96 * MIB)?;
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let mut load = Vec::with_capacity(wanted);
    let mut unkilled = 0;
    let mut unsettled = 0;
    let mut settled_ms = 0;
    for _ in 0..wanted {
        let mut hog = plateau_hog(&cg, 48, HOG_UNTIL_S, &[])?;
        let (status, _) = hog.wait()?;
        if !killed_by_sigkill(&status) {
            unkilled += 1;
        }
        load.push(loadavg());
        // The kill-log line follows the victim's exit; the next hog must
        // not share the cool-down of this one's kill (one window), nor
        // start in a cgroup still over memory.high (it would be throttled
        // from its first page: another livelock than the one measured).
        std::thread::sleep(Duration::from_millis(1100));
        let settle = Instant::now();
        let under = super::wait_until(SETTLE_TIMEOUT, || {
            current(&cg).is_some_and(|b| b < HIGH_MB * MIB / 2)
        });
        settled_ms = settled_ms.max(settle.elapsed().as_millis() as u64);
        if !under {
            unsettled += 1;
        }
    }
    let took = started.elapsed();
    let log = agent.stop();
    let steps = steps(&log);
    for (name, values) in &steps {
        let mut v = values.clone();
        v.sort_unstable();
        let q = |p: f64| {
            v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
        };
        c.metric(
            &format!("step_{name}_us"),
            format!(
                "p50 {} p99 {} max {}",
                q(0.5).unwrap_or(0),
                q(0.99).unwrap_or(0),
                v.last().copied().unwrap_or(0)
            ),
        );
    }
    let by_timer = log.lines().filter(|l| l.contains("woken by timer")).count();
    c.metric("woken_by_timer", by_timer);
    let kills = kill_log(KILL_LOG);
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
        .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
    let mut samples: Vec<u64> = kills
        .iter()
        .filter_map(|k| k["breach_to_signal_ns"].as_u64())
        .collect();
    for &s in &samples {
        hist.saturating_record(s.max(1_000));
    }
    samples.sort_unstable();
    let over_budget: Vec<i64> = kills
        .iter()
        .filter_map(|k| {
            let used = k["throttled_ns"].as_i64()?;
            let budget = k["budget_ns"].as_i64()?;
            Some((used - budget) / 1_000_000)
        })
        .collect();
    c.metric("breaches", samples.len());
    c.metric("hogs_not_killed", unkilled);
    c.metric("settle_ms_max", settled_ms);
    c.metric("seconds", took.as_secs_f64().round());
    if !samples.is_empty() {
        c.metric("p50_ms", ms(hist.value_at_quantile(0.5)));
        c.metric("p99_ms", ms(hist.value_at_quantile(0.99)));
        c.metric("max_ms", ms(hist.max()));
        c.metric("min_ms", ms(hist.min()));
    }
    c.metric(
        "samples_ms",
        samples
            .iter()
            .map(|&s| format!("{:.2}", s as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(","),
    );
    c.metric(
        "throttled_past_budget_ms_max",
        over_budget.iter().copied().max().unwrap_or(0),
    );
    c.metric("guest_load_max", load.iter().copied().fold(0.0, f64::max));
    c.check(
        samples.len() >= 20,
        format!(
            "only {} kills measured of {wanted} livelocks (want at least 20)",
            samples.len()
        ),
    );
    c.check(
        unsettled == 0,
        format!(
            "{unsettled} times the cgroup stayed over half its memory.high for {SETTLE_TIMEOUT:?} after a kill"
        ),
    );
    c.check(
        unkilled == 0,
        format!("{unkilled} hogs reached their deadline unkilled"),
    );
    Ok(())
}
