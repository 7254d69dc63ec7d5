//! Recording the livelock: the recording turns into a report whose numbers
//! agree with the kernel's sampled counters, and into a Perfetto trace. The
//! file goes back to the host for the replay test.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::Checks;
use super::agent::Stage;
use super::scenarios::{Ctx, PSI_SLACK_MS, PSI_TOLERANCE};
use crate::run::{MEMTRACE_START_TIMEOUT, WaitTrace, workspace_bin};

pub fn record(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let file = "/tmp/livelock.mtr";
    let _ = std::fs::remove_file(file);
    let memtrace = workspace_bin("memtrace");
    let mut recorder = Command::new(&memtrace)
        .args(["record", "-o", file, "--cgroup", "/recorded"])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting memtrace record")?;
    let stderr = recorder.stderr.take().context("stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("record: {line}");
            let _ = tx.send(line);
        }
    });
    let trace = WaitTrace::start(MEMTRACE_START_TIMEOUT);
    let until = std::time::Instant::now() + MEMTRACE_START_TIMEOUT;
    let ready = loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("recording to") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    let ready = trace.end(ready);
    if !ready {
        let _ = recorder.kill();
        bail!("memtrace record did not start");
    }
    let stage = Stage::new("/recorded")?;
    std::thread::sleep(Duration::from_secs(2));
    let mut hog = stage.plateau_hog(100, 15, &[])?;
    let hog_pid = hog.pid();
    let status = hog.wait_at_deadline(c)?;
    // Samples after the end, so the last one sees all the pressure.
    std::thread::sleep(Duration::from_secs(3));
    drop(stage);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    let rec_status = recorder.wait()?;
    let summary: Vec<String> = rx.try_iter().collect();
    c.check(
        status.success(),
        format!("the hog should plateau: {status}"),
    );
    c.check(
        rec_status.success(),
        format!("memtrace record exited {rec_status}"),
    );
    let bytes = std::fs::read(file).context("reading the recording")?;
    c.metric("recording_bytes", bytes.len());

    let out = Command::new(&memtrace)
        .args(["report", file, "--json"])
        .output()?;
    c.check(
        out.status.success(),
        format!("report failed: {}", String::from_utf8_lossy(&out.stderr)),
    );
    let report: Value = serde_json::from_slice(&out.stdout).context("report --json")?;
    let ev = report["evidence"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["cgroup"] == "/recorded"))
        .cloned()
        .unwrap_or(Value::Null);
    let (mt, some) = (
        ev["memtrace_ms"].as_f64().unwrap_or(0.0),
        ev["psi_some_ms"].as_f64().unwrap_or(0.0),
    );
    c.metric("report_throttled_ms", mt);
    c.metric("report_psi_some_ms", some);
    c.metric("report_high_events", ev["memory_events_high"].clone());
    let allowed = some * PSI_TOLERANCE + PSI_SLACK_MS;
    c.check(some > 1000.0, format!("the samples show no pressure: {ev}"));
    c.check(
        (mt - some).abs() <= allowed,
        format!("report: memtrace {mt:.0} ms vs sampled memory.pressure some {some:.0} ms (allowed ±{allowed:.0})"),
    );
    c.check(
        ev["memory_events_high"].as_u64().unwrap_or(0) > 0,
        "no memory.events high in the samples",
    );
    let incidents = report["incidents"].as_array().cloned().unwrap_or_default();
    c.check(
        incidents
            .iter()
            .any(|i| i["cgroup"] == "/recorded" && i["throttled_ms"].as_u64().unwrap_or(0) > 5_000),
        format!("no throttle incident in /recorded: {incidents:?}"),
    );
    c.check(
        report["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["pid"] == hog_pid)),
        "the hog is not among the throttled processes",
    );
    let integ = &report["integrity"];
    c.check(
        integ["damaged"].as_array().is_some_and(Vec::is_empty) && integ["torn_tail_at"].is_null(),
        format!("a cleanly stopped recording is damaged: {integ}"),
    );
    let events: u64 = summary
        .iter()
        .find_map(|l| l.split('(').nth(1)?.split(" events").next()?.parse().ok())
        .unwrap_or(0);
    if events > 0 {
        c.metric("bytes_per_record", bytes.len() as u64 / events.max(1));
    }

    let out = Command::new(&memtrace)
        .args(["export", file, "--format", "chrome-json"])
        .output()?;
    let trace: Value =
        serde_json::from_slice(&out.stdout).context("chrome-json export is not JSON")?;
    let evs = trace["traceEvents"].as_array().cloned().unwrap_or_default();
    let slices = evs
        .iter()
        .filter(|e| {
            e["ph"] == "X" && e["name"] == "memory.high throttle" && e["args"]["tgid"] == hog_pid
        })
        .count();
    c.metric("perfetto_hog_slices", slices);
    c.check(
        slices > 0,
        "the Perfetto trace has no throttle slices for the hog",
    );
    c.check(
        evs.iter().any(|e| e["ph"] == "C"),
        "the Perfetto trace has no counter tracks",
    );
    c.artifacts.push(("livelock.mtr".into(), bytes));
    Ok(())
}
