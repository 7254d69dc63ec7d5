//! The CI case (`cargo xtask debian-test`, run by `cargo xtask test`):
//! one bookworm boot in which memtrace, installed from its package and
//! started by its unit, ends the incident; its bounds and its checks.

use super::*;

/// Bounds of the CI case (docs/testing.md, "The CI case"): measured
/// values with margins for a busy 2-core machine. Measured over ten runs,
/// all beside other VMs (load average 10-16): recovery 3.0-5.1 s, no
/// stall, worst gap 0.4-1.6 s.
mod bounds {
    /// Plateau to recovery: 3 s of throttling crosses the budget (30 % of
    /// 10 s), then one second of normal replies; four times the worst
    /// measured.
    pub const RECOVERY_S: f64 = 15.0;
    /// Longest time the client went without a reply, from the spawn on;
    /// five times the worst measured.
    pub const WORST_GAP_S: f64 = 8.0;
    /// Watchdog stalls (a reply later than 1 s): none measured; a host
    /// that starves the guest for seconds may cause a few.
    pub const STALLS: u64 = 5;
}

/// The CI case: one bookworm boot in which memtrace's agent, started by
/// its own unit as shipped, ends the incident.
pub fn ci_case() -> Result<()> {
    let suite = crate::vm::debian::suite("bookworm")?;
    let release = build_binaries()?;
    let source = crate::dist::Source::of_workspace()?;
    let built = crate::dist::build(&source, &cmd::workspace_root().join("target"), &[])
        .context("building the Debian package the guest installs")?;
    let image = crate::vm::debian::image::image(&suite)?;
    let mut g = guard("memtrace")?;
    g.deb = Some(built.deb.clone());
    names::add(&mut g);
    let r = run(
        &image,
        &g,
        &release,
        "ci-memtrace",
        &Timing {
            observe_s: 60.0,
            after_recovery_s: 3.0,
        },
    )?;
    let mut failures = ci_checks(&r);
    failures.extend(names::checks(&r));
    let line = format!("{}; {}", ci_summary(&r), names::summary(&r));
    eprintln!("debian guest (bookworm): {line}");
    if !failures.is_empty() {
        bail!(
            "the memtrace-under-systemd case failed ({}):\n  {}\nthe run's files: target/debian/runs/bookworm/ci-memtrace/",
            line,
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// One line of the CI case's numbers, for the log and docs/testing.md.
fn ci_summary(r: &Value) -> String {
    format!(
        "plateau {:.1} s after the spawn, recovery {} s after the plateau (bound {} s), \
         {} stalls (bound {}), worst gap {:.1} s (bound {} s), host PSI worst 2 s {} ms, \
         {} alerts received, boot to runner {} s, VM {} s",
        (r["plateau_ms"].as_f64().unwrap_or(f64::NAN) - r["spawn_ms"].as_f64().unwrap_or(0.0))
            / 1e3,
        r["plateau_to_recovery_s"],
        bounds::RECOVERY_S,
        r["stalls"],
        bounds::STALLS,
        r["worst_gap_ms"].as_f64().unwrap_or(f64::NAN) / 1e3,
        bounds::WORST_GAP_S,
        r["host_psi_worst_2s_ms"],
        r["received"].as_array().map_or(0, Vec::len),
        r["boot_to_runner_s"],
        r["vm_seconds"]
    )
}

fn ci_checks(r: &Value) -> Vec<String> {
    let mut f = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            f.push(what);
        }
    };
    // The package: installed, started, a broken reload refused with the
    // agent still running as it was, the example configuration loaded.
    let steps = r["steps"].as_array().cloned().unwrap_or_default();
    let output = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["output"].as_str())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    check(
        steps.len() == package_steps().len(),
        format!(
            "{} of {} package steps ran: {steps:?}",
            steps.len(),
            package_steps().len()
        ),
    );
    let (before, after) = (output("pid before"), output("pid after"));
    check(
        !before.is_empty() && before != "0" && before == after,
        format!("the agent's MainPID changed across the refused reload: {before} then {after}"),
    );
    check(
        r["guard_state"]["memtrace-agent.service"] == "active",
        format!(
            "memtrace-agent.service was not active before the incident: {}",
            r["guard_state"]
        ),
    );
    check(
        !r["plateau_ms"].is_null(),
        "the scanner never went over MemoryHigh: no incident to end".into(),
    );
    match r["plateau_to_recovery_s"].as_f64() {
        Some(s) => check(
            s <= bounds::RECOVERY_S,
            format!(
                "the server recovered {s:.1} s after the plateau (bound {} s)",
                bounds::RECOVERY_S
            ),
        ),
        None => check(false, "the server never recovered".into()),
    }
    let all = kills(r);
    let scanner = &r["scanner_pid"];
    let agent_cgroup = "/system.slice/memtrace-agent.service";
    let by_agent: Vec<&&Value> = all
        .iter()
        .filter(|k| k["killer_cgroup"] == agent_cgroup)
        .collect();
    check(
        by_agent.len() == 1,
        format!(
            "expected exactly one kill by the agent, the kernel saw {}: {by_agent:?}",
            by_agent.len()
        ),
    );
    let others_in_unit: Vec<&&Value> = all
        .iter()
        .filter(|k| {
            let maybe_unit = k["in_unit"] == true
                || (k["in_unit"].is_null() && (k["comm"] == "t3" || k["comm"] == "scanner"));
            maybe_unit && k["killer_cgroup"] != agent_cgroup
        })
        .collect();
    check(
        others_in_unit.is_empty(),
        format!("something else killed in the unit: {others_in_unit:?}"),
    );
    if let Some(k) = by_agent.first() {
        check(
            k["pid"] == *scanner && k["comm"] == "scanner" && k["sig"] == 9,
            format!("the kill was not SIGKILL of the scanner (pid {scanner}): {k}"),
        );
        check(
            k["in_unit"] == true,
            format!("the victim was not seen in the unit: {k}"),
        );
    }
    check(
        r["server_survived"] == true,
        format!(
            "the server did not survive: MainPID {} -> {}, unit {}",
            r["main_pid"], r["main_pid_after"], r["unit_state_after"]
        ),
    );
    let stalls = r["stalls"].as_u64().unwrap_or(u64::MAX);
    check(
        stalls <= bounds::STALLS,
        format!("{stalls} client stalls (bound {})", bounds::STALLS),
    );
    let gap = r["worst_gap_ms"].as_f64().unwrap_or(f64::MAX) / 1e3;
    check(
        gap <= bounds::WORST_GAP_S,
        format!("worst gap {gap:.1} s (bound {} s)", bounds::WORST_GAP_S),
    );
    let warnings: Vec<&str> = r["journal_warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let breach = warnings
        .iter()
        .find(|l| l.contains("BREACH:") && l.contains("t3-serve@"));
    check(
        breach.is_some(),
        format!(
            "`journalctl -p warning` has no BREACH line for the unit; its memtrace lines: {:?}",
            warnings
                .iter()
                .filter(|l| l.contains("memtrace"))
                .collect::<Vec<_>>()
        ),
    );
    // The shipped sinks: the unit's breach and kill went out, and never a
    // `host` alert, though the whole guest stalled on the unit's memory.
    let received: Vec<&Value> = r["received"].as_array().into_iter().flatten().collect();
    let webhook = |event: &str| {
        received.iter().any(|x| {
            x["path"] == "/memtrace"
                && x["body"]["event"] == event
                && x["body"]["cgroup"]
                    .as_str()
                    .is_some_and(|c| c.contains("t3-serve@"))
        })
    };
    check(
        webhook("breach") && webhook("kill"),
        format!("the webhook did not get the unit's breach and kill: {received:?}"),
    );
    let host: Vec<&&Value> = received
        .iter()
        .filter(|x| {
            x["body"]["event"] == "host"
                || x["body"]["content"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("memtrace [host]"))
        })
        .collect();
    check(
        host.is_empty(),
        format!("a livelock contained in the unit paged the host: {host:?}"),
    );
    let stall = r["host_psi_worst_2s_ms"].as_f64().unwrap_or(0.0);
    check(
        stall > OLD_HOST_TRIGGER_MS,
        format!(
            "the incident stalled the guest only {stall} ms in its worst 2 s (PSI some): \
             the check that no host alert went out proves nothing"
        ),
    );
    let kill_log: Vec<&str> = r["collected"]["/var/log/memtrace/kills.jsonl"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|l| l.starts_with('{'))
        .collect();
    check(
        kill_log.len() == 1 && kill_log[0].contains("\"comm\":\"scanner\""),
        format!("the agent's kill log should hold one kill of the scanner: {kill_log:?}"),
    );
    f
}
