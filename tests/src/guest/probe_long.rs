//! `probe-long`, a diagnostic (not in the test matrix): looks for a recipe
//! that keeps a task inside the throttle function for longer than a
//! budget's window, which the kernel does while memcg reclaim keeps making
//! progress. Recipe: dirty page cache of the same cgroup on the slow disk
//! (`/slow`, 256 KiB/s), so reclaim keeps finding pages as writeback
//! cleans them; an idle process and a churning hog hold anon memory; then
//! memory.high is lowered under all of it. It reports the hog's longest
//! episodes (`memtrace events --json`: duration, reclaim and sleep time,
//! pages, reclaim passes within) and the cgroup's memory.stat every 2 s.
//!
//! Parameters from the kernel command line, `memtrace.long=k=v,k=v`
//! (`cargo xtask vmtest --scenario probe-long --append memtrace.long=...`):
//! `dirty` MiB written (40), `idle` MiB (48), `hog` MiB (32), `high` MiB
//! (64), `highfirst=1` to set memory.high before the writer, `kids` child
//! cgroups, `obs` seconds observed (20), `bgbytes` for
//! vm.dirty_background_bytes, `churn` KiB (256), `pin=0` to not pin the
//! hog. docs/testing.md says what it measured.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use super::Checks;
use super::scenarios::{Ctx, MIB, v2_cgroup};
use super::workload::{Hog, stop};
use crate::run::{EventsRun, workspace_bin};

fn params() -> HashMap<String, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("memtrace.long="))
        .unwrap_or("")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn p(m: &HashMap<String, String>, k: &str, d: u64) -> u64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn stat(cg: &crate::cgroup::TestCgroup) -> String {
    let s = cg.read("memory.stat").unwrap_or_default();
    let want = [
        "anon",
        "file",
        "file_dirty",
        "file_writeback",
        "active_file",
        "inactive_file",
    ];
    s.lines()
        .filter(|l| want.iter().any(|w| l.split_whitespace().next() == Some(w)))
        .map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next().unwrap_or("");
            let v: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            format!("{k}={}", v >> 20)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ready_hog(
    cg: &crate::cgroup::TestCgroup,
    name: &str,
    args: &[&str],
    until: u32,
    cpu: Option<usize>,
) -> Result<Hog> {
    let ready = format!("/tmp/{name}.ready");
    let _ = std::fs::remove_file(&ready);
    let mut all = args.to_vec();
    all.extend_from_slice(&["--ready", &ready]);
    let mut hog = Hog::spawn(cg, &all, until, cpu)?;
    if !super::wait_until(hog.life_left(), || Path::new(&ready).exists()) {
        stop(&mut hog.child);
        bail!("{name} did not finish allocating");
    }
    Ok(hog)
}

pub fn probe_long(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let m = params();
    let dirty = p(&m, "dirty", 40);
    let idle_mb = p(&m, "idle", 48);
    let hog_mb = p(&m, "hog", 32);
    let high = p(&m, "high", 64);
    let order_first = p(&m, "highfirst", 0) == 1;
    let kids = p(&m, "kids", 0);
    let obs = p(&m, "obs", 20);
    let bg = p(&m, "bgbytes", 0);
    let churn = p(&m, "churn", 256);
    let pin = p(&m, "pin", 1) == 1;
    c.metric("params", format!("{m:?}"));
    if bg > 0 {
        std::fs::write("/proc/sys/vm/dirty_background_bytes", bg.to_string())?;
    }
    let cg = v2_cgroup("/longprobe")?;
    cg.write("memory.max", &(512 * MIB).to_string())?;
    let _ = cg.write("memory.swap.max", "0");
    let mut kid_cgs = Vec::new();
    if kids > 0 {
        cg.write("cgroup.subtree_control", "+memory")?;
        for i in 0..kids {
            kid_cgs.push(v2_cgroup(&format!("/longprobe/k{i}"))?);
        }
    }
    let events = EventsRun::start(
        &workspace_bin("memtrace"),
        &["--types", "throttle,reclaim,lost"],
    )?;
    let file = "/slow/long.dat";
    let _ = std::fs::remove_file(file);
    if order_first {
        cg.write("memory.high", &((high) * MIB).to_string())?;
    }
    let t = Instant::now();
    let mut dd = super::safety::spawn_path(
        &cg,
        Path::new("/bin/busybox"),
        &[
            "dd",
            "if=/dev/zero",
            &format!("of={file}"),
            "bs=1M",
            &format!("count={dirty}"),
        ],
    )?;
    let st = super::workload::wait_child(&mut dd, Duration::from_secs(120))?;
    c.metric("dd_ms", t.elapsed().as_millis() as u64);
    c.metric("dd_ok", st.success());
    let idle_s = idle_mb.to_string();
    let mut idle = ready_hog(
        &cg,
        "lidle",
        &["--mb", &idle_s, "--step-mb", "8", "--hold", "3600"],
        120,
        None,
    )?;
    c.metric("stat_after_idle", stat(&cg));
    let hog_s = hog_mb.to_string();
    let churn_s = churn.to_string();
    let mut hog = ready_hog(
        &cg,
        "lhog",
        &["--mb", &hog_s, "--step-mb", "4", "--churn-kb", &churn_s],
        (obs + 30) as u32,
        pin.then_some(0),
    )?;
    let hog_pid = hog.pid();
    c.metric("stat_before_high", stat(&cg));
    let t = Instant::now();
    if !order_first {
        cg.write("memory.high", &(high * MIB).to_string())?;
    }
    c.metric("high_write_ms", t.elapsed().as_millis() as u64);
    let started = Instant::now();
    let mut stats = Vec::new();
    while started.elapsed() < Duration::from_secs(obs) {
        std::thread::sleep(Duration::from_secs(2));
        stats.push(format!(
            "{:.0}s {}",
            started.elapsed().as_secs_f64(),
            stat(&cg)
        ));
    }
    c.metric("stats", stats.join(" | "));
    stop(&mut hog.child);
    stop(&mut idle.child);
    std::thread::sleep(Duration::from_secs(1));
    let ev = events.stop()?;
    let mut eps: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "throttle" && e["tgid"] == hog_pid)
        .collect();
    eps.sort_by_key(|e| std::cmp::Reverse(e["duration_ns"].as_u64().unwrap_or(0)));
    c.metric("episodes", eps.len());
    c.metric(
        "longest_ms",
        eps.first()
            .and_then(|e| e["duration_ns"].as_u64())
            .unwrap_or(0)
            / 1_000_000,
    );
    let top: Vec<String> = eps
        .iter()
        .take(6)
        .map(|e| {
            let start = e["start_mono_ns"].as_u64().unwrap_or(0);
            let dur = e["duration_ns"].as_u64().unwrap_or(0);
            let rec: Vec<&Value> = ev
                .iter()
                .filter(|r| {
                    r["type"] == "reclaim"
                        && r["tgid"] == hog_pid
                        && r["start_mono_ns"]
                            .as_u64()
                            .is_some_and(|s| s >= start && s <= start + dur)
                })
                .collect();
            let zero = rec.iter().filter(|r| r["nr_reclaimed"] == 0).count();
            let rec_ns: u64 = rec.iter().filter_map(|r| r["duration_ns"].as_u64()).sum();
            format!(
                "dur={}ms reclaim={}ms sleep={}ms pages={} passes={} zero={} passes_ms={}",
                dur / 1_000_000,
                e["reclaim_ns"].as_u64().unwrap_or(0) / 1_000_000,
                e["sleep_ns"].as_u64().unwrap_or(0) / 1_000_000,
                e["reclaimed_pages"],
                rec.len(),
                zero,
                rec_ns / 1_000_000
            )
        })
        .collect();
    c.metric("top", top.join(" | "));
    let total: u64 = eps.iter().filter_map(|e| e["duration_ns"].as_u64()).sum();
    c.metric("total_ms", total / 1_000_000);
    let lost = ev.iter().filter(|e| e["type"] == "lost").count();
    c.metric("lost", lost);
    drop(kid_cgs);
    // The numbers are the result; these say the recipe ran at all.
    c.check(st.success(), "the writer (dd to /slow) failed");
    c.check(!eps.is_empty(), "the hog was never throttled");
    Ok(())
}
