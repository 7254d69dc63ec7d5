//! Workloads and evidence for the VM scenarios: processes placed in
//! cgroups, a latency client, the kernel's own counters, and memtrace's
//! events summed up the way the agent sums them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use memtrace::IntervalUnion;
use serde_json::Value;

use super::Checks;
use crate::cgroup::{TestCgroup, flat_key, psi_total};
use crate::run::workspace_bin;

/// How long after its `--until` deadline a hog may still be running before
/// waiting for it fails. The hog stops charging at the deadline, at the
/// latest when the throttle call in flight returns (about 2 s), and its
/// watchdog ends it by exit_group 3 s after the deadline whatever the
/// kernel is doing (`tests/src/bin/hog.rs`); what remains is the exec
/// before the hog's clock starts, its exit (unmapping up to 100 MiB), the
/// reaping and this side's 50 ms polling, on a guest that may be without a
/// CPU for a while. Measured (the `hog_late_ms` metric) with three guests
/// on two host cores beside other builds (load average 6-18): at most
/// 2.9 s for one hog, 5.9 s when the eight hogs of `many` exit at once and
/// free 350 MiB between them; 20 s is over three times that.
/// docs/testing.md, "Time bounds".
pub const HOG_EXIT_GRACE: Duration = Duration::from_secs(20);

/// From spawning `latency-server` to its socket: an exec and a bind, which
/// took at most 0.55 s with three guests on two busy host cores.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `hog` whose life is bounded by `--until`: it ends by itself at its
/// deadline (exit status 0) whatever throttling does to it, so every wait
/// on it, or on anything that can only happen while it runs, is bounded by
/// that deadline plus [`HOG_EXIT_GRACE`].
pub struct Hog {
    pub child: Child,
    deadline: Instant,
}

impl Hog {
    /// Starts `hog ARGS --until UNTIL_S` in `cg`, optionally pinned.
    pub fn spawn(cg: &TestCgroup, args: &[&str], until_s: u32, cpu: Option<usize>) -> Result<Self> {
        let until = until_s.to_string();
        let mut all = args.to_vec();
        all.extend_from_slice(&["--until", &until]);
        // Taken before the spawn: the hog's own clock starts later, so its
        // deadline is never before this one.
        let deadline = Instant::now() + Duration::from_secs(until_s.into());
        let child = spawn_in(cg, "hog", &all, cpu)?;
        Ok(Self { child, deadline })
    }

    pub fn pid(&self) -> u64 {
        u64::from(self.child.id())
    }

    /// Time left until the hog is certainly gone: its deadline plus the
    /// grace. A wait for something that can happen only while the hog runs
    /// (its throttling, an alert about it, its kill) needs no more.
    pub fn life_left(&self) -> Duration {
        (self.deadline + HOG_EXIT_GRACE).saturating_duration_since(Instant::now())
    }

    /// Waits for the hog to end, by its deadline plus the grace at the
    /// latest. Returns its status and how long after its deadline it was
    /// reaped (negative: before it, e.g. killed).
    #[track_caller]
    pub fn wait(&mut self) -> Result<(std::process::ExitStatus, f64)> {
        let trace = crate::run::WaitTrace::start(self.life_left());
        let end = self.deadline + HOG_EXIT_GRACE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                trace.end(true);
                let now = Instant::now();
                let late_ms = if now >= self.deadline {
                    now.duration_since(self.deadline).as_secs_f64() * 1e3
                } else {
                    -self.deadline.duration_since(now).as_secs_f64() * 1e3
                };
                return Ok((status, late_ms));
            }
            if Instant::now() > end {
                trace.end(false);
                stop(&mut self.child);
                bail!(
                    "hog {} was still running {HOG_EXIT_GRACE:?} after its --until deadline",
                    self.child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a hog expected to end at its deadline; records how late it
    /// was reaped in `hog_late_ms` (the largest, over a scenario's hogs).
    #[track_caller]
    pub fn wait_at_deadline(&mut self, c: &mut Checks) -> Result<std::process::ExitStatus> {
        let (status, late_ms) = self.wait()?;
        c.metric_max("hog_late_ms", late_ms.round());
        Ok(status)
    }
}

/// The livelock's hog, on CPU 0: grows to `mb` MiB in 4 MiB steps, then
/// holds it while charging 256 KiB more a step, so it stays between
/// memory.high and memory.max, for `until_s` seconds from its start. `extra`
/// adds flags such as `--tag`.
pub fn plateau_hog(cg: &TestCgroup, mb: u32, until_s: u32, extra: &[&str]) -> Result<Hog> {
    let mb = mb.to_string();
    let mut args = vec!["--mb", &mb, "--step-mb", "4", "--churn-kb", "256"];
    args.extend_from_slice(extra);
    Hog::spawn(cg, &args, until_s, Some(0))
}

/// Starts a workspace program inside a cgroup, optionally pinned to a CPU.
pub fn spawn_in(
    cg: &TestCgroup,
    program: &str,
    args: &[&str],
    cpu: Option<usize>,
) -> Result<Child> {
    let procs = cg.procs_file();
    let mut cmd = Command::new(workspace_bin(program));
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: the closure writes a file and sets the affinity of the child
    // itself; nothing in it depends on locks held by the parent.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            std::fs::write(&procs, b"0\n")
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {program} in {}", cg.path))
}

/// Waits up to `timeout` for a child to end; past it, kills and reaps it
/// and fails.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > end {
            stop(child);
            bail!("process {} did not finish within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills and reaps a child.
pub fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The kernel's own account of a cgroup's memory pressure.
#[derive(Clone, Copy, Debug, Default)]
pub struct Evidence {
    /// memory.pressure totals, microseconds.
    pub some_us: u64,
    pub full_us: u64,
    /// memory.events counters.
    pub high: u64,
    pub max: u64,
    pub oom_kill: u64,
}

impl Evidence {
    pub fn read(cg: &TestCgroup) -> Result<Self> {
        let psi = cg.read("memory.pressure")?;
        let events = cg.read("memory.events")?;
        Ok(Self {
            some_us: psi_total(&psi, "some").unwrap_or(0),
            full_us: psi_total(&psi, "full").unwrap_or(0),
            high: flat_key(&events, "high").unwrap_or(0),
            max: flat_key(&events, "max").unwrap_or(0),
            oom_kill: flat_key(&events, "oom_kill").unwrap_or(0),
        })
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            some_us: self.some_us.saturating_sub(before.some_us),
            full_us: self.full_us.saturating_sub(before.full_us),
            high: self.high.saturating_sub(before.high),
            max: self.max.saturating_sub(before.max),
            oom_kill: self.oom_kill.saturating_sub(before.oom_kill),
        }
    }
}

/// One request's round trip.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When the request was sent, ms since the client started.
    pub at_ms: f64,
    pub latency_ms: f64,
}

/// Sends a request every `interval` and times the answer.
pub struct LatencyClient {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Sample>>,
    pub started: Instant,
}

impl LatencyClient {
    pub fn start(socket: &Path, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let socket = socket.to_path_buf();
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let ok = request(&socket).is_ok();
                let latency_ms = sent.elapsed().as_secs_f64() * 1e3;
                if ok {
                    samples.push(Sample {
                        at_ms: sent.duration_since(started).as_secs_f64() * 1e3,
                        latency_ms,
                    });
                }
                if let Some(rest) = interval.checked_sub(sent.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            samples
        });
        Self {
            stop,
            handle,
            started,
        }
    }

    /// Ms since the client started, to mark phases.
    pub fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1e3
    }

    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn request(socket: &Path) -> std::io::Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"ping\n")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    Ok(())
}

/// Latencies of requests sent within `[from, to)` ms.
pub fn latencies(samples: &[Sample], from: f64, to: f64) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.at_ms >= from && s.at_ms < to)
        .map(|s| s.latency_ms)
        .collect()
}

pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

/// memtrace's throttle events of one cgroup, summed.
#[derive(Debug, Default)]
pub struct ThrottleSummary {
    pub episodes: u64,
    /// Union of episode intervals: time at least one task was throttled.
    pub union_ns: u64,
    /// Plain sum of episode durations.
    pub sum_ns: u64,
    pub reclaim_ns: u64,
    /// Episodes and summed time per process.
    pub by_tgid: BTreeMap<u64, (u64, u64)>,
    /// The over-high cgroups the episodes named.
    pub over_high: BTreeSet<String>,
}

/// Sums the `throttle` events whose `cgroup` is `cgroup`.
pub fn throttle_summary(events: &[Value], cgroup: &str) -> ThrottleSummary {
    let mut s = ThrottleSummary::default();
    let mut union = IntervalUnion::new();
    for e in events
        .iter()
        .filter(|e| e["type"] == "throttle" && e["cgroup"] == cgroup)
    {
        let start = e["start_mono_ns"].as_u64().unwrap_or(0);
        let dur = e["duration_ns"].as_u64().unwrap_or(0);
        union.add(start, start + dur);
        s.episodes += 1;
        s.sum_ns += dur;
        s.reclaim_ns += e["reclaim_ns"].as_u64().unwrap_or(0);
        let tgid = e["tgid"].as_u64().unwrap_or(0);
        let slot = s.by_tgid.entry(tgid).or_default();
        slot.0 += 1;
        slot.1 += dur;
        if let Some(p) = e["over_high_cgroup"].as_str() {
            s.over_high.insert(p.to_string());
        }
    }
    s.union_ns = union.total();
    s
}

/// Events of a type whose cgroup is `cgroup`.
pub fn count(events: &[Value], kind: &str, cgroup: &str) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["cgroup"] == cgroup)
        .count()
}

/// Relative difference of `a` from the reference `b`.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        if a == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        (a - b) / b
    }
}
