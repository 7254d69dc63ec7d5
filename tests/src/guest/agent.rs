//! The agent scenarios: budgets, kills, alerts and the kernel brake against
//! real memory.high throttling. See docs/testing.md.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::Checks;
use super::host_psi::HostPsiWatch;
use super::scenarios::{Ctx, MIB, limits, v2_cgroup};
use super::workload::{
    Hog, LatencyClient, SERVER_START_TIMEOUT, latencies, percentile, plateau_hog, spawn_in, stop,
};
use crate::cgroup::TestCgroup;
use crate::http_sink::HttpSink;
use crate::run::{AgentRun, EventsRun, workspace_bin};

/// Kill overshoot allowed from the budget crossing to the signal. The agent
/// arms a timer for the crossing (1 ms resolution) and the victim's pidfd
/// is open already; the rest is scheduling on a 2-vCPU emulated guest. That
/// is usually 10-30 ms, but with three TCG guests on two host cores a guest
/// has lost its CPU for 80 ms (the timer fired late, 105 ms in all): 250 ms
/// is still a sixth of the 1.5 s budget, while acting at the next 1 s tick
/// instead of the crossing overshoots by 500 ms on average. With more
/// load on the host than CI's (two busy loops or a parallel build beside
/// the three guests) it has reached 300-667 ms, when the crossing fell
/// inside the agent's 1 s tick (up to 385 ms on a starved guest):
/// docs/testing.md, "Known load sensitivity".
pub const MAX_BREACH_TO_SIGNAL_MS: f64 = 250.0;

/// Life of a hog the agent (or its brake) must kill. It ends by itself at
/// this deadline with status 0, which fails the scenario's "was not killed"
/// check; every wait for the kill is bounded by it. Measured with three
/// guests on two busy host cores: killed at most 3.1 s after its start
/// (`agent-actions`; `agent-kill` at most 2.7 s), a tenth of it.
const KILLED_HOG_UNTIL_S: u32 = 30;

/// From an agent decision (a breach) to the next alert it posts for the
/// same decision (the would-kill): one pass of its loop. Measured at most
/// 55 ms.
const ALERT_AFTER_DECISION: Duration = Duration::from_secs(10);

/// From a signal to the agent (SIGHUP, SIGCONT) or a kill to the log line
/// or alert about it: one pass of its loop, which runs at least every
/// second, plus the backlog of events it missed while stopped. Measured at
/// most 338 ms (the brake report after SIGCONT).
const AGENT_REACTION: Duration = Duration::from_secs(10);

/// From a SIGKILL to the process leaving its cgroup: measured at most 8 ms.
const KILLED_EXIT: Duration = Duration::from_secs(5);

/// Life of the unthrottled 600 MiB hog of `agent-host`: it allocates, holds
/// 12 s and exits; the host alert must come while it holds.
const BIG_HOG_UNTIL_S: u32 = 60;

/// `agent-host`'s kernel PSI trigger on the whole host (`psi_some_stall`
/// within `psi_window`): the stall that paged every contained livelock
/// before the host verdict. The contained case must stall the host at
/// least this much, or its "no host alert" proves nothing. Measured
/// 781-1503 ms within the worst 2 s, 14 runs on five kernels beside
/// other VMs.
const HOST_TRIGGER_MS: f64 = 200.0;
const HOST_TRIGGER_WINDOW: Duration = Duration::from_secs(2);

/// A livelock cgroup (64 MiB high, 128 MiB max, no swap) with a server in
/// it and a client outside.
pub(crate) struct Stage {
    pub(crate) cg: TestCgroup,
    pub(crate) server: Child,
    pub(crate) client: Option<LatencyClient>,
}

impl Stage {
    pub(crate) fn new(name: &str) -> Result<Self> {
        let cg = v2_cgroup(name)?;
        limits(&cg, 64 * MIB, 128 * MIB)?;
        let sock = format!("/tmp{name}.sock");
        let server = spawn_in(&cg, "latency-server", &[&sock], Some(0))?;
        if !super::wait_until(SERVER_START_TIMEOUT, || Path::new(&sock).exists()) {
            bail!("latency-server did not start");
        }
        let client = LatencyClient::start(Path::new(&sock), Duration::from_millis(100));
        Ok(Self {
            cg,
            server,
            client: Some(client),
        })
    }

    /// See [`plateau_hog`].
    pub(crate) fn plateau_hog(&self, mb: u32, until_s: u32, extra: &[&str]) -> Result<Hog> {
        plateau_hog(&self.cg, mb, until_s, extra)
    }

    fn now_ms(&self) -> f64 {
        self.client
            .as_ref()
            .map_or(0.0, super::workload::LatencyClient::now_ms)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            c.finish();
        }
        stop(&mut self.server);
    }
}

pub(crate) fn write_config(name: &str, text: &str) -> Result<String> {
    let path = format!("/tmp/{name}.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

pub(crate) fn agent(config: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<AgentRun> {
    let mut args = vec![
        "--config",
        config,
        "--status-file",
        "/tmp/agent-status.json",
    ];
    args.extend_from_slice(extra);
    AgentRun::start(&workspace_bin("memtrace"), &args, env)
}

pub(crate) fn kill_log(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The state letter of a process (`T`: stopped).
fn agent_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

pub(crate) fn killed_by_sigkill(status: &std::process::ExitStatus) -> bool {
    status.signal() == Some(libc::SIGKILL)
}

/// The incident with the agent: kill-largest ends it within the budget plus
/// a small overshoot; the server survives and recovers; one process dies.
pub fn agent_kill(ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let _ = std::fs::remove_file("/tmp/kills.jsonl");
    let config = write_config(
        "agent-kill",
        r#"
[agent]
kill_log = "/tmp/kills.jsonl"
[[budget]]
name = "livelock"
cgroup = "/agentkill"
window = "5s"
max_throttled = "30%"
action = "kill-largest"
"#,
    )?;
    let mut agent = agent(&config, &[], &[])?;
    let mut stage = Stage::new("/agentkill")?;
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    let hog_from = stage.now_ms();
    let mut hog = stage.plateau_hog(100, KILLED_HOG_UNTIL_S, &[])?;
    let hog_pid = hog.pid();
    let (status, _) = hog.wait()?;
    let died_after = start.elapsed();
    let kill_ms = stage.now_ms();
    std::thread::sleep(Duration::from_secs(4));
    let server_alive = stage.server.try_wait()?.is_none();
    let samples = stage
        .client
        .take()
        .map(LatencyClient::finish)
        .unwrap_or_default();
    agent.wait_log(AGENT_REACTION, "exited");
    let log = agent.stop();
    let kills = kill_log("/tmp/kills.jsonl");

    c.metric(
        "hog_died_after_s",
        (died_after.as_secs_f64() * 10.0).round() / 10.0,
    );
    c.check(
        killed_by_sigkill(&status),
        format!("the hog was not killed: {status}"),
    );
    c.check(
        server_alive,
        "the server in the same cgroup did not survive",
    );
    c.check(
        kills.len() == 1,
        format!(
            "{} kills logged, expected exactly one: {kills:?}",
            kills.len()
        ),
    );
    if let Some(k) = kills.first() {
        c.check(
            k["pid"] == hog_pid,
            format!("killed pid {} is not the hog {hog_pid}", k["pid"]),
        );
        c.check(
            k["cgroup"] == "/agentkill",
            format!("kill cgroup {}", k["cgroup"]),
        );
        c.check(k["dry_run"] == false, "a real kill was logged as a dry run");
        let b2s = k["breach_to_signal_ns"].as_f64().unwrap_or(f64::MAX) / 1e6;
        let s2e = k["signal_to_exit_ns"].as_f64().map(|v| v / 1e6);
        let used = k["throttled_ns"].as_f64().unwrap_or(0.0) / 1e6;
        let budget = k["budget_ns"].as_f64().unwrap_or(0.0) / 1e6;
        c.metric("breach_to_signal_ms", (b2s * 10.0).round() / 10.0);
        c.metric(
            "signal_to_exit_ms",
            s2e.map_or(Value::Null, |v| ((v * 10.0).round() / 10.0).into()),
        );
        c.metric("throttled_at_breach_ms", used.round());
        c.metric("budget_ms", budget.round());
        c.check(
            b2s <= MAX_BREACH_TO_SIGNAL_MS,
            format!("breach to signal took {b2s:.1} ms (allowed {MAX_BREACH_TO_SIGNAL_MS} ms)"),
        );
        c.check(
            used >= budget,
            format!("killed at {used:.0} ms throttled, before the {budget:.0} ms budget"),
        );
        c.check(
            used <= budget + MAX_BREACH_TO_SIGNAL_MS,
            format!(
                "acted at {used:.0} ms throttled: {:.0} ms past the budget",
                used - budget
            ),
        );
        c.check(
            s2e.is_some_and(|v| v < 2000.0),
            format!("signal to exit: {s2e:?} ms"),
        );
        // Without process_mrelease (5.10) the kill falls back to the
        // victim's own exit, and the log must not claim otherwise. Where
        // the call exists it can still refuse (a contended mmap lock), so
        // there the outcome is a number, not a check.
        let released = k["memory_released"].as_bool();
        c.metric("memory_released", released);
        if !ctx.kill_feature("process_mrelease") {
            c.check(
                released == Some(false),
                format!("memory_released {released:?} on a kernel without process_mrelease"),
            );
        }
    }
    let baseline = latencies(&samples, 0.0, hog_from);
    let after = latencies(&samples, kill_ms + 1000.0, f64::MAX);
    let (base_p50, after_p50) = (percentile(&baseline, 50.0), percentile(&after, 50.0));
    c.metric("latency_baseline_p50_ms", (base_p50 * 10.0).round() / 10.0);
    c.metric(
        "latency_after_kill_p50_ms",
        (after_p50 * 10.0).round() / 10.0,
    );
    c.metric("requests_after_kill", after.len());
    c.check(
        after.len() >= 10,
        format!("only {} requests answered after the kill", after.len()),
    );
    c.check(
        after_p50 <= (base_p50 * 3.0).max(base_p50 + 20.0),
        format!("latency did not recover: p50 {after_p50:.1} ms after the kill vs {base_p50:.1} ms before"),
    );
    c.check(
        log.contains("KILL hog["),
        "the agent's log has no KILL line",
    );
    Ok(())
}

/// Dry run: nobody is killed; the webhook receiver on loopback gets the
/// breach alert with cgroup, pid and numbers, and a "would kill".
pub fn agent_dry_run(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let _ = std::fs::remove_file("/tmp/dry.jsonl");
    let sink = HttpSink::start()?;
    let config = write_config(
        "agent-dry",
        &format!(
            r#"
[agent]
kill_log = "/tmp/dry.jsonl"
[[budget]]
cgroup = "/agentdry"
window = "5s"
max_throttled = "30%"
action = "kill-largest"
[[alert]]
kind = "webhook"
url = "{}"
token_env = "HOOK_TOKEN"
"#,
            sink.url("/hook")
        ),
    )?;
    let agent = agent(&config, &["--dry-run"], &[("HOOK_TOKEN", "s3cret")])?;
    let stage = Stage::new("/agentdry")?;
    let mut hog = stage.plateau_hog(100, 15, &[])?;
    let hog_pid = hog.pid();
    // The breach can only come while the hog is throttled, and the
    // would-kill alert is decided at the same moment.
    let breach = sink.wait_for(hog.life_left(), |r| r.body["event"] == "breach");
    let would = sink.wait_for(ALERT_AFTER_DECISION, |r| r.body["event"] == "kill");
    let status = hog.wait_at_deadline(c)?;
    drop(stage);
    let log = agent.stop();
    let kills = kill_log("/tmp/dry.jsonl");

    c.check(
        status.success(),
        format!("a dry run must kill nothing, the hog ended with {status}"),
    );
    let Some(b) = breach else {
        c.check(
            false,
            format!("no breach alert reached the webhook; got {:?}", sink.all()),
        );
        return Ok(());
    };
    let d = &b.body["details"];
    c.metric("alert_throttled_ms", d["throttled_ms"].clone());
    c.check(b.path == "/hook", format!("posted to {}", b.path));
    c.check(
        b.body["cgroup"] == "/agentdry",
        format!("alert cgroup {}", b.body["cgroup"]),
    );
    // The breach alert lists the most throttled processes; which of the
    // hog and the server (both throttled in the cgroup) is first is the
    // kernel's timing: in 1 of 15 runs on 5.10 the server was. The victim
    // is named by the would-kill alert below.
    let throttled_pids: Vec<&Value> = d["most_throttled"]
        .as_array()
        .map(|a| a.iter().map(|t| &t["pid"]).collect())
        .unwrap_or_default();
    c.check(
        throttled_pids.iter().any(|p| **p == hog_pid),
        format!(
            "the breach alert's most throttled {throttled_pids:?} do not name the hog {hog_pid}"
        ),
    );
    c.check(
        d["throttled_ms"].as_u64().unwrap_or(0) >= d["budget_ms"].as_u64().unwrap_or(u64::MAX),
        format!(
            "alert numbers: throttled {} ms, budget {} ms",
            d["throttled_ms"], d["budget_ms"]
        ),
    );
    c.check(
        d["window_ms"] == 5000,
        format!("window_ms {}", d["window_ms"]),
    );
    c.check(
        b.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer s3cret"),
        "the webhook token from the environment was not sent",
    );
    match would {
        Some(w) => {
            c.check(
                w.body["details"]["dry_run"] == true,
                "the kill alert is not marked dry run",
            );
            c.check(
                w.body["details"]["pid"] == hog_pid,
                format!(
                    "the would-kill alert names pid {}, not the hog {hog_pid}",
                    w.body["details"]["pid"]
                ),
            );
        }
        None => c.check(false, "no would-kill alert"),
    }
    c.check(
        kills.len() == 1 && kills[0]["dry_run"] == true && kills[0]["pid"] == hog_pid,
        format!("kill log should hold one dry-run line for the hog: {kills:?}\nagent log:\n{log}"),
    );
    Ok(())
}

/// A hog matching an avoid rule is spared; the next largest dies.
pub fn agent_avoid(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let _ = std::fs::remove_file("/tmp/avoid.jsonl");
    let config = write_config(
        "agent-avoid",
        r#"
[agent]
kill_log = "/tmp/avoid.jsonl"
[[budget]]
cgroup = "/agentavoid"
window = "5s"
max_throttled = "30%"
action = "kill-largest"
avoid = ["--tag keep-me"]
"#,
    )?;
    let agent = agent(&config, &[], &[])?;
    let stage = Stage::new("/agentavoid")?;
    // Together over memory.high (64 MiB), each alone under it: sparing the
    // big one and killing the small one ends the throttling.
    let mut big = stage.plateau_hog(48, 30, &["--tag", "keep-me"])?;
    let mut small = stage.plateau_hog(32, 30, &[])?;
    let (big_pid, small_pid) = (big.pid(), small.pid());
    let (small_status, _) = small.wait()?;
    let big_alive = big.child.try_wait()?.is_none();
    std::thread::sleep(Duration::from_secs(2));
    stop(&mut big.child);
    drop(stage);
    agent.stop();
    let kills = kill_log("/tmp/avoid.jsonl");

    c.check(
        killed_by_sigkill(&small_status),
        format!("the smaller hog was not killed: {small_status}"),
    );
    c.check(
        big_alive,
        "the larger hog matching the avoid rule was killed",
    );
    c.check(
        kills.len() == 1,
        format!("{} kills, expected one: {kills:?}", kills.len()),
    );
    if let Some(k) = kills.first() {
        c.check(
            k["pid"] == small_pid,
            format!("killed {} (big {big_pid}, small {small_pid})", k["pid"]),
        );
    }
    Ok(())
}

/// The kernel brake: the agent is stopped with SIGSTOP and the in-kernel
/// rule ends the livelock by itself. The budget (95% of 10 s) cannot be
/// spent in the 2.5 s the agent runs, so the kill is the brake's.
pub fn agent_brake(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let sink = HttpSink::start()?;
    let config = write_config(
        "agent-brake",
        &format!(
            r#"
[[budget]]
cgroup = "/agentbrake"
window = "10s"
max_throttled = "95%"
action = "kill-largest"
brake = {{ limit = "3s", window = "10s", stale = "2s" }}
[[alert]]
kind = "webhook"
url = "{}"
on = ["brake"]
"#,
            sink.url("/brake")
        ),
    )?;
    // A separate memtrace shows when the hog is throttled; the brake's own
    // report comes from the agent, whose programs fired it.
    let mut events = EventsRun::start(&workspace_bin("memtrace"), &["--types", "throttle"])?;
    let mut agent = agent(&config, &[], &[])?;
    let stage = Stage::new("/agentbrake")?;
    // Longer than the others: the agent must see the throttling, arm the
    // brake and be stopped first, then the brake needs 3 s of throttling
    // (measured at most: throttled after 1.4 s, armed 1.1 s later, killed
    // 2.9 s after the stop).
    let mut hog = stage.plateau_hog(100, KILLED_HOG_UNTIL_S + 10, &[])?;
    let hog_pid = hog.pid();
    if events
        .wait_for(hog.life_left(), |e| {
            e["type"] == "throttle" && e["tgid"] == hog_pid
        })
        .is_none()
    {
        bail!("the hog was never throttled");
    }
    // Freeze the agent once it says it has armed the brake against the hog
    // (at a 1 s tick that sees the throttling), not after a fixed sleep
    // that a starved guest can outlast.
    let armed = format!("kernel brake armed for {hog_pid}");
    if !agent.wait_log(hog.life_left(), &armed) {
        bail!(
            "the agent never armed the brake; log:\n{}",
            agent.log_text()
        );
    }
    agent.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    let (status, _) = hog.wait()?;
    let died_after = stopped_at.elapsed();
    let still_stopped = agent_state(agent.child.id()) == Some('T');
    agent.signal(libc::SIGCONT);
    let report = sink.wait_for(AGENT_REACTION, |r| r.body["event"] == "brake");
    drop(stage);
    let log = agent.stop();
    let _ = events.stop();

    c.metric(
        "hog_died_after_stop_s",
        (died_after.as_secs_f64() * 10.0).round() / 10.0,
    );
    c.check(
        killed_by_sigkill(&status),
        format!("the brake did not kill the hog: {status}"),
    );
    c.check(still_stopped, "the agent was not stopped when the hog died");
    match report {
        Some(r) => {
            let d = &r.body["details"];
            c.check(
                d["pid"] == hog_pid,
                format!("the brake signalled {}, not the hog {hog_pid}", d["pid"]),
            );
            let silent = d["agent_silent_ms"].as_u64().unwrap_or(0);
            c.metric("agent_silent_ms", silent);
            c.metric("throttled_ms", d["throttled_ms"].clone());
            c.check(
                silent >= 2_000,
                format!("the brake fired with a fresh heartbeat ({silent} ms)"),
            );
            c.check(
                r.body["cgroup"] == "/agentbrake",
                format!("brake rule cgroup {}", r.body["cgroup"]),
            );
        }
        None => c.check(
            false,
            format!("the agent did not report the brake after it resumed; log:\n{log}"),
        ),
    }
    Ok(())
}

/// A bad configuration: a clear error naming file and line, a non-zero
/// exit, nothing killed. And a bad file on SIGHUP keeps the running one.
pub fn agent_bad_config(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let bad = write_config(
        "agent-bad",
        "[[budget]]\ncgroup = \"/agentbad\"\nmax_throttled = \"130%\"\naction = \"kill-largest\"\n",
    )?;
    let stage = Stage::new("/agentbad")?;
    let mut hog = stage.plateau_hog(100, 12, &[])?;
    let out = std::process::Command::new(workspace_bin("memtrace"))
        .args(["agent", "--config", &bad])
        .output()
        .context("running memtrace agent")?;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    c.metric("exit_code", out.status.code().unwrap_or(-1));
    c.check(
        out.status.code() == Some(2),
        format!("bad config exited {:?}", out.status.code()),
    );
    c.check(
        err.contains(&format!("{bad}:3:")),
        format!("the error does not name {bad}:3: {err}"),
    );
    c.check(
        err.contains("130%"),
        format!("the error does not give the reason: {err}"),
    );

    // A valid config, then garbage and SIGHUP: the old config keeps acting.
    let good_text = "[agent]\nkill_log = \"/tmp/hup.jsonl\"\n[[budget]]\ncgroup = \"/agentbad\"\nwindow = \"5s\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\n";
    let _ = std::fs::remove_file("/tmp/hup.jsonl");
    let good = write_config("agent-hup", good_text)?;
    let status = hog.wait_at_deadline(c)?;
    c.check(
        status.success(),
        format!("the hog died while no agent ran: {status}"),
    );
    let mut agent = agent(&good, &[], &[])?;
    std::fs::write(&good, "[[budget]\ngarbage")?;
    agent.signal(libc::SIGHUP);
    let kept = agent.wait_log(AGENT_REACTION, "NOT reloaded");
    c.check(kept, "an invalid file on SIGHUP was not reported");
    let mut hog = stage.plateau_hog(100, KILLED_HOG_UNTIL_S, &[])?;
    let (status, _) = hog.wait()?;
    drop(stage);
    let log = agent.stop();
    c.check(
        killed_by_sigkill(&status),
        format!(
            "after a rejected reload the running config should still kill: {status}; log:\n{log}"
        ),
    );
    c.check(
        kill_log("/tmp/hup.jsonl").len() == 1,
        "one kill under the kept configuration",
    );
    Ok(())
}

/// Without the throttle probe the agent falls back to memory.pressure and
/// memory.events, and says its numbers are estimates.
pub fn agent_estimate(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let sink = HttpSink::start()?;
    let config = write_config(
        "agent-estimate",
        &format!(
            "[[budget]]\ncgroup = \"/agentest\"\nwindow = \"5s\"\nmax_throttled = \"30%\"\naction = \"alert\"\n[[alert]]\nkind = \"webhook\"\nurl = \"{}\"\non = [\"breach\"]\n",
            sink.url("/est")
        ),
    )?;
    let agent = agent(&config, &[], &[("MEMTRACE_DENY_ATTACH", "fentry,kprobe")])?;
    let stage = Stage::new("/agentest")?;
    let mut hog = stage.plateau_hog(100, 20, &[])?;
    let breach = sink.wait_for(hog.life_left(), |r| r.body["event"] == "breach");
    stop(&mut hog.child);
    drop(stage);
    let log = agent.stop();
    c.check(
        log.contains("ESTIMATES"),
        "the agent did not say it works from estimates",
    );
    match breach {
        Some(b) => {
            c.check(
                b.body["estimate"] == true,
                "the breach alert is not marked as an estimate",
            );
            c.check(
                b.body["cgroup"] == "/agentest",
                format!("cgroup {}", b.body["cgroup"]),
            );
            c.metric(
                "estimated_throttled_ms",
                b.body["details"]["throttled_ms"].clone(),
            );
        }
        None => c.check(false, "no breach alert from estimates"),
    }
    Ok(())
}

/// The host's leading edge, both ways. First the issue's case: a livelock
/// contained in one 64 MiB cgroup under a kill budget, on a guest with
/// most of its memory available. System-wide memory PSI rises (the
/// kernel's triggers fire), the webhook gets the cgroup's breach and kill,
/// and never a `host` alert: that pressure is the cgroup's own limit.
/// Then a process without limits takes MemAvailable down fast: one `host`
/// alert, naming its signals and the time to exhaustion.
pub fn agent_host(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let sink = HttpSink::start()?;
    let config = write_config(
        "agent-host",
        &format!(
            r#"
[[budget]]
name = "contained"
cgroup = "/agenthost"
window = "5s"
max_throttled = "30%"
action = "kill-largest"
avoid = ["^latency-server$"]
[host]
mem_available_below = "60%"
trend_window = "10s"
psi_some_stall = "{HOST_TRIGGER_MS}ms"
psi_window = "{}s"
[[alert]]
kind = "webhook"
url = "{}"
on = ["breach", "kill", "host"]
min_interval = "1s"
"#,
            HOST_TRIGGER_WINDOW.as_secs(),
            sink.url("/alerts")
        ),
    )?;
    let mut agent = agent(&config, &[], &[])?;
    let host_alerts = |sink: &HttpSink| -> Vec<Value> {
        sink.all()
            .into_iter()
            .filter(|r| r.body["event"] == "host")
            .map(|r| r.body)
            .collect()
    };

    // The contained livelock.
    let psi = HostPsiWatch::start();
    let stage = Stage::new("/agenthost")?;
    let mut hog = stage.plateau_hog(100, KILLED_HOG_UNTIL_S, &[])?;
    let hog_pid = hog.pid();
    let (status, _) = hog.wait()?;
    let kill = sink.wait_for(ALERT_AFTER_DECISION, |r| r.body["event"] == "kill");
    // A PSI trigger fires within its 2 s window, and the agent judges at
    // once: two windows after the kill, every trigger the livelock set
    // off has been judged.
    std::thread::sleep(Duration::from_secs(4));
    let (psi_ms, worst_ms) = psi.finish(HOST_TRIGGER_WINDOW);
    let contained = host_alerts(&sink);
    drop(stage);
    c.metric("contained_host_psi_some_ms", psi_ms);
    c.metric("contained_host_psi_worst_2s_ms", worst_ms);
    c.check(
        worst_ms >= HOST_TRIGGER_MS,
        format!(
            "the contained livelock stalled the host only {worst_ms} ms within its worst 2 s \
             (PSI some, {psi_ms} ms in all), under the {HOST_TRIGGER_MS} ms trigger: the \
             negative case proves nothing"
        ),
    );
    c.check(
        killed_by_sigkill(&status),
        format!("the contained hog was not killed: {status}"),
    );
    c.check(
        sink.all()
            .iter()
            .any(|r| r.body["event"] == "breach" && r.body["cgroup"] == "/agenthost"),
        format!("no breach alert for /agenthost: {:?}", sink.all()),
    );
    match &kill {
        Some(k) => c.check(
            k.body["cgroup"] == "/agenthost" && k.body["details"]["pid"] == hog_pid,
            format!("the kill alert is not the hog's ({hog_pid}): {:?}", k.body),
        ),
        None => c.check(false, format!("no kill alert: {:?}", sink.all())),
    }
    c.check(
        contained.is_empty(),
        format!("a contained livelock paged the host: {contained:?}"),
    );

    // The host running out: 600 MiB without a limit, allocated as fast as
    // the guest can, held 12 s.
    let big_cg = v2_cgroup("/agenthost-big")?;
    let mut big = Hog::spawn(
        &big_cg,
        &["--mb", "600", "--step-mb", "16", "--hold", "12"],
        BIG_HOG_UNTIL_S,
        Some(1),
    )?;
    // Only while MemAvailable is low, which is while the big hog lives.
    let host = sink.wait_for(big.life_left(), |r| r.body["event"] == "host");
    stop(&mut big.child);
    agent.wait_log(AGENT_REACTION, "host sliding");
    let log = agent.stop();
    match host {
        Some(h) => {
            let d = &h.body["details"];
            let pct = d["mem_available_pct"].as_f64().unwrap_or(100.0);
            let eta = d["eta_s"].as_f64();
            c.metric("mem_available_pct", pct);
            if let Some(e) = eta {
                c.metric("eta_s", e);
            }
            // The agent judges MemAvailable under 60 % exactly; the alert
            // carries it rounded to 0.1 (59.96 % reads 60.0: kernel 7.2,
            // this session's CI run), so 60.0 is the most it may say.
            c.check(pct <= 60.0, format!("alerted at {pct}% MemAvailable"));
            c.check(
                d["topic"] == "host:exhaustion"
                    && h.body["severity"] == "warning"
                    && h.body["cgroup"].is_null(),
                format!("{:?}", h.body),
            );
            let signals: Vec<&str> = d["signals"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            c.check(
                signals.contains(&"mem_available") && signals.contains(&"exhaustion"),
                format!("signals {signals:?}"),
            );
            c.check(
                eta.is_some_and(|e| e.is_finite() && e >= 0.0),
                format!("no time to exhaustion: {d}"),
            );
            c.check(
                h.body["summary"]
                    .as_str()
                    .is_some_and(|s| s.contains("memory and swap gone in ~")),
                format!("{:?}", h.body["summary"]),
            );
        }
        None => c.check(
            false,
            format!(
                "no host alert while MemAvailable collapsed; got {:?}",
                sink.all()
            ),
        ),
    }
    c.check(
        host_alerts(&sink).len() == 1,
        format!("one host alert per slide: {:?}", host_alerts(&sink)),
    );
    c.check(
        log.contains("host sliding into memory exhaustion"),
        "the agent did not log the host verdict",
    );
    Ok(())
}

/// The other kill actions: `kill-most-throttled` picks the process
/// throttled longest (not the largest), `kill-cgroup` ends every process of
/// the cgroup through cgroup.kill.
pub fn agent_actions(ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let _ = std::fs::remove_file("/tmp/actions.jsonl");
    let config = write_config(
        "agent-actions",
        r#"
[agent]
kill_log = "/tmp/actions.jsonl"
[[budget]]
cgroup = "/agentmt"
window = "5s"
max_throttled = "30%"
action = "kill-most-throttled"
[[budget]]
cgroup = "/agentcg"
window = "5s"
max_throttled = "30%"
action = "kill-cgroup"
"#,
    )?;
    let agent = agent(&config, &[], &[])?;

    // The larger process allocates first, under memory.high, then sleeps:
    // it is never throttled. The smaller one takes the cgroup over high and
    // keeps allocating: it is the one throttled.
    let mt = v2_cgroup("/agentmt")?;
    limits(&mt, 64 * MIB, 128 * MIB)?;
    let ready = "/tmp/agentmt-big.ready";
    let _ = std::fs::remove_file(ready);
    let mut big = Hog::spawn(
        &mt,
        &["--mb", "48", "--step-mb", "8", "--ready", ready],
        KILLED_HOG_UNTIL_S,
        Some(0),
    )?;
    // The small one starts once the big one has all its memory (it says so
    // with --ready), not after a sleep a loaded guest can outlast: were
    // both allocating over memory.high, both would be throttled.
    if !super::wait_until(big.life_left(), || Path::new(ready).exists()) {
        bail!("the 48 MiB hog never finished allocating");
    }
    let mut small = plateau_hog(&mt, 40, KILLED_HOG_UNTIL_S, &[])?;
    let (big_pid, small_pid) = (big.pid(), small.pid());
    let (small_status, _) = small.wait()?;
    let big_alive = big.child.try_wait()?.is_none();
    stop(&mut big.child);

    // kill-cgroup: the hog and the server in it all die.
    let stage = Stage::new("/agentcg")?;
    let mut hog = stage.plateau_hog(100, KILLED_HOG_UNTIL_S, &[])?;
    let (hog_status, _) = hog.wait()?;
    // The hog is reaped; cgroup.kill's SIGKILL reached the server at the
    // same moment and it has only to exit.
    let server_gone = super::wait_until(KILLED_EXIT, || {
        stage
            .cg
            .read("cgroup.procs")
            .is_ok_and(|p| p.trim().is_empty())
    });
    drop(stage);
    let log = agent.stop();
    let kills = kill_log("/tmp/actions.jsonl");
    // cgroup.kill where the kernel has it (5.14+), else one by one: both
    // must end every process, and the log says which ran.
    let (how, other) = if ctx.kill_feature("cgroup_kill") {
        ("via cgroup.kill", "one by one")
    } else {
        ("one by one", "via cgroup.kill")
    };
    c.check(
        log.contains(how) && !log.contains(other),
        format!("kill-cgroup should have killed {how} on this kernel"),
    );

    c.check(
        killed_by_sigkill(&small_status),
        format!("the most throttled process was not killed: {small_status}"),
    );
    c.check(
        big_alive,
        "the largest, never throttled, process was killed",
    );
    let mt_kill = kills.iter().find(|k| k["cgroup"] == "/agentmt");
    c.check(
        mt_kill.is_some_and(|k| k["pid"] == small_pid && k["action"] == "kill-most-throttled"),
        format!("kill-most-throttled should name {small_pid} (not {big_pid}): {kills:?}"),
    );
    c.check(
        killed_by_sigkill(&hog_status),
        format!("kill-cgroup did not kill the hog: {hog_status}"),
    );
    c.check(server_gone, "kill-cgroup left processes in the cgroup");
    c.check(
        kills
            .iter()
            .any(|k| k["cgroup"] == "/agentcg" && k["action"] == "kill-cgroup"),
        format!("no kill-cgroup line: {kills:?}"),
    );
    Ok(())
}
