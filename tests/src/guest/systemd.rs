//! The incident in a Debian guest with systemd as PID 1 (`debian-guest`,
//! started by the image's `memtrace-payload.service`): install the
//! payload, start one guard, start the seed-shaped unit, talk to its
//! server from outside the unit the whole time, start the hog, and report
//! what the client saw, what was killed and by whom, and what the guard
//! logged. The host (`cargo xtask shootout`, the CI step) writes the plan
//! and judges the result; see docs/testing.md.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cgroup::{flat_key, psi_total};

/// What the host asks for (`/mnt/payload/plan.json`).
#[derive(Debug, Deserialize)]
pub struct Plan {
    /// A name for the run (`shootout-earlyoom`, `ci-memtrace`).
    pub run: String,
    /// The guard under test, for the report.
    pub guard: String,
    /// Files to copy from the payload into the guest.
    #[serde(default)]
    pub install: Vec<Install>,
    /// Units to enable and start (the guard) before the incident.
    #[serde(default)]
    pub start: Vec<String>,
    /// Units whose journal goes into the result (the guard's).
    #[serde(default)]
    pub journal_units: Vec<String>,
    /// Edits of files the image ships (a guard's packaged configuration):
    /// each `replace` must be found, or the run fails.
    #[serde(default)]
    pub edits: Vec<Edit>,
    /// Commands run in order once systemd is up, before the guard starts
    /// (installing a package, reloading a configuration); each must end as
    /// it says, or the run fails at that step.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Commands run once the guard is up; their output goes into the
    /// result (`oomctl`, `memtrace agent --check-config`, ...).
    #[serde(default)]
    pub probes: Vec<Vec<String>>,
    /// Files read back into the result at the end (a kill log).
    #[serde(default)]
    pub collect: Vec<String>,
    /// The unit that stands for `t3-serve@wizard.service`.
    pub unit: String,
    pub port: u16,
    pub interval_ms: u64,
    /// A reply later than this is a stall: the client gives up on the
    /// connection and opens a new one, as the t3 clients did.
    pub watchdog_ms: u64,
    pub baseline_s: f64,
    /// How long to watch after the plateau if nothing ends the incident.
    pub observe_s: f64,
    /// How long to keep watching once the server has recovered.
    pub after_recovery_s: f64,
    /// Consecutive normal replies that make a recovery.
    pub recovery_run: usize,
}

#[derive(Debug, Deserialize)]
pub struct Install {
    pub from: String,
    pub to: String,
    #[serde(default = "default_mode")]
    pub mode: u32,
}

#[derive(Debug, Deserialize)]
pub struct Step {
    pub name: String,
    pub argv: Vec<String>,
    /// Whether the command must exit 0 (true) or must fail (false).
    pub succeed: bool,
}

/// One step as it ran, for the result.
#[derive(Debug, Serialize)]
struct StepRun {
    name: String,
    exit: Option<i32>,
    output: String,
}

/// Runs the plan's steps in order; the first that ends otherwise than it
/// must stops the run, with its output.
fn run_steps(plan: &Plan) -> Result<Vec<StepRun>> {
    let mut done = Vec::new();
    for step in &plan.steps {
        let Some((program, args)) = step.argv.split_first() else {
            bail!("step `{}` has no command", step.name);
        };
        let out = Command::new(program)
            .args(args)
            .output()
            .with_context(|| format!("step `{}`: running {program}", step.name))?;
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = out.status.success() == step.succeed;
        log(&format!(
            "step `{}`: exit {:?}{}",
            step.name,
            out.status.code(),
            if ok { "" } else { " (NOT as expected)" }
        ));
        if !ok {
            bail!(
                "step `{}` ({}) should have {} but exited {:?}:\n{}",
                step.name,
                step.argv.join(" "),
                if step.succeed { "succeeded" } else { "failed" },
                out.status.code(),
                tail_lines(&output, 30).join("\n")
            );
        }
        done.push(StepRun {
            name: step.name.clone(),
            exit: out.status.code(),
            output: tail_lines(&output, 30).join("\n"),
        });
    }
    Ok(done)
}

#[derive(Debug, Deserialize)]
pub struct Edit {
    pub file: String,
    pub replace: String,
    pub with: String,
}

fn default_mode() -> u32 {
    0o644
}

/// One request of the client.
#[derive(Clone, Copy, Debug)]
struct Req {
    /// When it was sent, ms since the run's origin.
    at_ms: f64,
    /// Its round trip, or the watchdog's time when it fired first.
    latency_ms: f64,
    stalled: bool,
}

/// The run's clock: ms since the origin, and the origin in the kernel's
/// monotonic seconds (the journal's `short-monotonic` time).
#[derive(Clone, Copy)]
struct Origin {
    at: Instant,
    mono_s: f64,
}

impl Origin {
    fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Self {
            at: Instant::now(),
            mono_s: ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9,
        }
    }

    fn ms(&self) -> f64 {
        self.at.elapsed().as_secs_f64() * 1e3
    }
}

fn log(msg: &str) {
    // The unit's output goes to journal and console; the host streams
    // lines containing "debian-guest: " as progress.
    eprintln!("debian-guest: {msg}");
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("could not run {program}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

fn systemctl(args: &[&str]) -> Result<String> {
    sh("systemctl", args)
}

fn unit_prop(unit: &str, prop: &str) -> String {
    systemctl(&["show", "-p", prop, "--value", unit])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Copies the payload's files into place and reloads systemd.
fn install(payload: &Path, plan: &Plan) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in &plan.install {
        let from = payload.join(&f.from);
        let to = PathBuf::from(&f.to);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::copy(&from, &to)
            .with_context(|| format!("installing {} as {}", from.display(), to.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(f.mode))?;
    }
    for e in &plan.edits {
        let text =
            std::fs::read_to_string(&e.file).with_context(|| format!("reading {}", e.file))?;
        if !text.contains(&e.replace) {
            bail!(
                "{} does not contain `{}`: the package changed; update the guard's edit in xtask",
                e.file,
                e.replace
            );
        }
        std::fs::write(&e.file, text.replace(&e.replace, &e.with))
            .with_context(|| format!("writing {}", e.file))?;
    }
    systemctl(&["daemon-reload"])?;
    Ok(())
}

/// The kernel's record of every SIGKILL and SIGTERM sent, and of OOM
/// victims: who was killed, by whom, whatever the guard.
fn trace_signals() -> Result<()> {
    let t = Path::new("/sys/kernel/tracing");
    if !t.join("events").is_dir() {
        let _ = sh("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"]);
    }
    let w = |p: &str, v: &str| {
        std::fs::write(t.join(p), v).with_context(|| format!("writing {v} to tracefs {p}"))
    };
    w(
        "events/signal/signal_generate/filter",
        "sig == 9 || sig == 15",
    )?;
    w("events/signal/signal_generate/enable", "1")?;
    w("events/oom/mark_victim/enable", "1")?;
    w("buffer_size_kb", "2048")?;
    w("trace", "")?;
    Ok(())
}

/// A kill seen by the kernel's signal tracepoint.
#[derive(Debug, Clone)]
struct Kill {
    mono_s: f64,
    killer_comm: String,
    killer_pid: u32,
    sig: u32,
    comm: String,
    pid: u32,
}

/// Parses lines like
/// `earlyoom-345 [001] d..2. 40.123456: signal_generate: sig=9 errno=0
/// code=0 comm=scanner pid=412 grp=1 res=0`.
fn parse_kills(trace: &str) -> Vec<Kill> {
    let mut out = Vec::new();
    for line in trace.lines().filter(|l| l.contains("signal_generate:")) {
        let Some((head, tail)) = line.split_once(": signal_generate:") else {
            continue;
        };
        let mut words = head.split_whitespace();
        let Some(task) = words.next() else { continue };
        let Some((killer_comm, killer_pid)) = task.rsplit_once('-') else {
            continue;
        };
        let mono_s = head
            .split_whitespace()
            .last()
            .and_then(|w| w.trim_end_matches(':').parse().ok())
            .unwrap_or(0.0);
        let field = |k: &str| {
            tail.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_string)
        };
        // comm may hold spaces only in theory; memtrace's tests' names do not.
        let (Some(sig), Some(comm), Some(pid)) = (field("sig="), field("comm="), field("pid="))
        else {
            continue;
        };
        out.push(Kill {
            mono_s,
            killer_comm: killer_comm.to_string(),
            killer_pid: killer_pid.parse().unwrap_or(0),
            sig: sig.parse().unwrap_or(0),
            comm,
            pid: pid.parse().unwrap_or(0),
        });
    }
    out
}

/// pid -> (comm, cgroup) of every process seen during the run, so a dead
/// victim's cgroup is still known.
#[derive(Default)]
struct Census {
    seen: BTreeMap<u32, (String, String)>,
}

impl Census {
    fn scan(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if self.seen.contains_key(&pid) {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("")
                .to_string();
            if !comm.is_empty() {
                self.seen.insert(pid, (comm.trim().to_string(), cgroup));
            }
        }
    }
}

/// A sample of the unit's cgroup and the host, every 100 ms.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at_ms: f64,
    current: u64,
    high_events: u64,
    max_events: u64,
    oom_kill: u64,
    some_us: u64,
    full_us: u64,
    mem_available_kb: u64,
    /// /proc/pressure/memory avg10, percent (what nohang reads).
    host_some_avg10: f64,
    host_full_avg10: f64,
}

fn read_sample(cg: &Path, origin: &Origin) -> Sample {
    let read = |f: &str| std::fs::read_to_string(cg.join(f)).unwrap_or_default();
    let events = read("memory.events");
    let psi = read("memory.pressure");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let host_psi = std::fs::read_to_string("/proc/pressure/memory").unwrap_or_default();
    let avg10 = |kind: &str| {
        host_psi
            .lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("avg10=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Sample {
        at_ms: origin.ms(),
        current: read("memory.current").trim().parse().unwrap_or(0),
        high_events: flat_key(&events, "high").unwrap_or(0),
        max_events: flat_key(&events, "max").unwrap_or(0),
        oom_kill: flat_key(&events, "oom_kill").unwrap_or(0),
        some_us: psi_total(&psi, "some").unwrap_or(0),
        full_us: psi_total(&psi, "full").unwrap_or(0),
        mem_available_kb: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        host_some_avg10: avg10("some"),
        host_full_avg10: avg10("full"),
    }
}

/// The client outside the unit: one connection, a ping every interval,
/// a new connection when the watchdog fires.
fn client(
    addr: String,
    interval: Duration,
    watchdog: Duration,
    origin: Origin,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Req>>>,
) {
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        log(&format!("client: bad address {addr}"));
        return;
    };
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let at_ms = origin.ms();
        n += 1;
        if conn.is_none() {
            conn = TcpStream::connect_timeout(&addr, watchdog)
                .ok()
                .and_then(|s| {
                    s.set_nodelay(true).ok()?;
                    let r = BufReader::new(s.try_clone().ok()?);
                    Some((s, r))
                });
        }
        let ok = conn.as_mut().is_some_and(|(s, r)| {
            let left = watchdog
                .saturating_sub(sent.elapsed())
                .max(Duration::from_millis(1));
            if s.set_read_timeout(Some(left)).is_err()
                || s.write_all(format!("ping {n}\n").as_bytes()).is_err()
            {
                return false;
            }
            let mut line = String::new();
            r.read_line(&mut line).is_ok() && line.starts_with("pong")
        });
        let latency_ms = sent.elapsed().as_secs_f64() * 1e3;
        if !ok {
            // The watchdog fired (or the server is gone): drop the
            // connection, as the t3 clients did.
            conn = None;
        }
        if let Ok(mut v) = out.lock() {
            v.push(Req {
                at_ms,
                latency_ms: if ok {
                    latency_ms
                } else {
                    latency_ms.max(watchdog.as_secs_f64() * 1e3)
                },
                stalled: !ok,
            });
        }
        if !ok {
            // A refused connection returns at once: do not spin.
            let rest = watchdog.saturating_sub(sent.elapsed());
            std::thread::sleep(rest.min(interval));
        } else if let Some(rest) = interval.checked_sub(sent.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

fn request(addr: &str, line: &str, timeout: Duration) -> Result<String> {
    let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    (&s).write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply)?;
    Ok(reply.trim().to_string())
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[(((p / 100.0) * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs the plan's probe commands; their output by command line.
fn run_probes(plan: &Plan) -> serde_json::Map<String, Value> {
    let mut probes = serde_json::Map::new();
    for argv in &plan.probes {
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        let out = Command::new(program).args(args).output();
        let text = match out {
            Ok(o) => format!(
                "{}{}(exit {})",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                o.status.code().unwrap_or(-1)
            ),
            Err(e) => format!("could not run: {e}"),
        };
        probes.insert(argv.join(" "), json!(tail_lines(&text, 80)));
    }
    probes
}

/// Runs the plan; the returned JSON is the run's result line.
pub fn run(payload: &Path, plan: &Plan) -> Result<Value> {
    let boot_s = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    install(payload, plan)?;
    let state = Command::new("systemctl")
        .args(["is-system-running", "--wait"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let failed = systemctl(&["--failed", "--no-legend", "--plain"]).unwrap_or_default();
    log(&format!(
        "system {state}; failed units: [{}]",
        failed.trim()
    ));
    trace_signals()?;
    let steps = run_steps(plan)?;

    for u in &plan.start {
        systemctl(&["start", u]).with_context(|| format!("starting the guard {u}"))?;
    }
    // Give each guard the time to read its configuration and log it.
    std::thread::sleep(Duration::from_secs(2));
    let mut guard_state = BTreeMap::new();
    for u in &plan.start {
        let active = unit_prop(u, "ActiveState");
        log(&format!("guard unit {u}: {active}"));
        guard_state.insert(u.clone(), active);
    }
    systemctl(&["start", &plan.unit]).with_context(|| format!("starting {}", plan.unit))?;
    let addr = format!("127.0.0.1:{}", plan.port);
    let up = crate::guest::wait_until(Duration::from_secs(30), || {
        TcpStream::connect(&addr).is_ok()
    });
    if !up {
        bail!("{} does not answer on {addr}", plan.unit);
    }
    let main_pid = unit_prop(&plan.unit, "MainPID");
    let cgroup = unit_prop(&plan.unit, "ControlGroup");
    let cg_dir = PathBuf::from("/sys/fs/cgroup").join(cgroup.trim_start_matches('/'));
    let high = std::fs::read_to_string(cg_dir.join("memory.high"))
        .unwrap_or_default()
        .trim()
        .parse::<u64>()
        .context("the unit has no numeric memory.high: is MemoryHigh= set?")?;
    let max = std::fs::read_to_string(cg_dir.join("memory.max"))
        .unwrap_or_default()
        .trim()
        .to_string();
    log(&format!(
        "{} up: MainPID {main_pid}, cgroup {cgroup}, memory.high {high}, memory.max {max}",
        plan.unit
    ));

    // After the unit is up: `oomctl` lists the cgroups it monitors.
    let probes = run_probes(plan);
    let origin = Origin::now();
    let stop = Arc::new(AtomicBool::new(false));
    let reqs = Arc::new(Mutex::new(Vec::<Req>::new()));
    let client_thread = {
        let (addr, stop, reqs) = (addr.clone(), stop.clone(), reqs.clone());
        let interval = Duration::from_millis(plan.interval_ms);
        let watchdog = Duration::from_millis(plan.watchdog_ms);
        std::thread::spawn(move || client(addr, interval, watchdog, origin, stop, reqs))
    };
    let census = Arc::new(Mutex::new(Census::default()));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let (stop, census, samples, cg_dir) = (
            stop.clone(),
            census.clone(),
            samples.clone(),
            cg_dir.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = read_sample(&cg_dir, &origin);
                if let Ok(mut v) = samples.lock() {
                    v.push(s);
                }
                // Every sample: a server restarted and killed again
                // lives well under a second.
                if let Ok(mut c) = census.lock() {
                    c.scan();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    std::thread::sleep(Duration::from_secs_f64(plan.baseline_s));
    let baseline: Vec<f64> = reqs
        .lock()
        .map(|v| {
            v.iter()
                .filter(|r| !r.stalled)
                .map(|r| r.latency_ms)
                .collect()
        })
        .unwrap_or_default();
    // The median, not a high percentile: one host hiccup in the baseline
    // (other VMs on the machine) must not make a throttled reply "normal".
    let normal_ms = (4.0 * percentile(&baseline, 50.0)).max(50.0);
    let spawn_ms = origin.ms();
    let reply = request(&addr, "spawn", Duration::from_secs(30))?;
    let scanner_pid: u32 = reply
        .strip_prefix("spawned ")
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("the server did not spawn its child: `{reply}`"))?;
    log(&format!(
        "baseline p50 {:.1} ms p99 {:.1} ms (normal: under {normal_ms:.0} ms); scanner pid {scanner_pid}",
        percentile(&baseline, 50.0),
        percentile(&baseline, 99.0)
    ));

    // Plateau: the unit's memory is over memory.high.
    let mut plateau_ms = None;
    let mut recovered_ms = None;
    let mut last_report = Instant::now();
    let deadline_no_plateau = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = origin.ms();
        if plateau_ms.is_none() {
            plateau_ms = samples.lock().ok().and_then(|v| {
                v.iter()
                    .find(|s| s.at_ms >= spawn_ms && s.current >= high)
                    .map(|s| s.at_ms)
            });
            if let Some(p) = plateau_ms {
                log(&format!(
                    "plateau: memory.current over memory.high {:.1} s after the spawn",
                    (p - spawn_ms) / 1e3
                ));
            } else if Instant::now() > deadline_no_plateau {
                log("the scanner never went over memory.high within 60 s");
                break;
            }
        }
        let Some(p) = plateau_ms else { continue };
        if recovered_ms.is_none() {
            recovered_ms = reqs
                .lock()
                .ok()
                .and_then(|v| recovery(&v, p, normal_ms, plan.recovery_run));
            if let Some(r) = recovered_ms {
                log(&format!(
                    "recovered: normal replies from {:.1} s after the plateau",
                    (r - p) / 1e3
                ));
            }
        }
        if let Some(r) = recovered_ms
            && now > r + plan.after_recovery_s * 1e3
        {
            break;
        }
        if now > p + plan.observe_s * 1e3 {
            log("observation window over");
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let (n, stalls) = reqs
                .lock()
                .map(|v| (v.len(), v.iter().filter(|r| r.stalled).count()))
                .unwrap_or_default();
            log(&format!(
                "{:.0} s after the plateau: {n} requests, {stalls} stalls",
                (now - p) / 1e3
            ));
        }
    }
    let end_ms = origin.ms();
    // The same probes at the end of the incident (what the guard saw).
    let probes_end = run_probes(plan);
    stop.store(true, Ordering::Relaxed);
    let _ = client_thread.join();
    let _ = sampler.join();
    let reqs = reqs.lock().map(|v| v.clone()).unwrap_or_default();
    let samples = samples.lock().map(|v| v.clone()).unwrap_or_default();
    if let Ok(mut c) = census.lock() {
        c.scan();
    }

    // What survived.
    let main_pid_after = unit_prop(&plan.unit, "MainPID");
    let unit_state = unit_prop(&plan.unit, "ActiveState");
    let n_restarts = unit_prop(&plan.unit, "NRestarts");
    let server_alive = Path::new(&format!("/proc/{main_pid}")).exists();
    let server_survived = server_alive && main_pid_after == main_pid && unit_state == "active";
    let scanner_alive = std::fs::read_to_string(format!("/proc/{scanner_pid}/comm"))
        .is_ok_and(|c| c.trim() == "scanner");

    // Who was killed, by whom.
    let trace = std::fs::read_to_string("/sys/kernel/tracing/trace").unwrap_or_default();
    let oom_victims: Vec<String> = trace
        .lines()
        .filter(|l| l.contains("mark_victim:"))
        .map(|l| l.trim().to_string())
        .collect();
    let from_mono = origin.mono_s + spawn_ms / 1e3 - 1.0;
    let to_mono = origin.mono_s + end_ms / 1e3;
    let census = census.lock().map(|c| c.seen.clone()).unwrap_or_default();
    let kills: Vec<Value> = parse_kills(&trace)
        .into_iter()
        .filter(|k| k.mono_s >= from_mono && k.mono_s <= to_mono)
        .map(|k| {
            // None: the victim lived too briefly for the census.
            let victim_cgroup = census.get(&k.pid).map(|c| c.1.clone());
            let killer_cgroup = census
                .get(&k.killer_pid)
                .map(|c| c.1.clone())
                .unwrap_or_default();
            json!({
                "t_ms": round1((k.mono_s - origin.mono_s) * 1e3),
                "sig": k.sig,
                "pid": k.pid,
                "comm": k.comm,
                "in_unit": victim_cgroup.as_ref().map(|v| *v == cgroup || v.starts_with(&format!("{cgroup}/"))),
                "cgroup": victim_cgroup,
                "killer_comm": k.killer_comm,
                "killer_pid": k.killer_pid,
                "killer_cgroup": killer_cgroup,
            })
        })
        .collect();

    let mut journals = serde_json::Map::new();
    for u in plan.journal_units.iter().chain([&plan.unit]) {
        let text = sh(
            "journalctl",
            &["-b", "-u", u, "-o", "short-monotonic", "--no-pager", "-q"],
        )
        .unwrap_or_else(|e| format!("journalctl failed: {e}"));
        // nohang's debug_psi says ten lines a second: keep its start.
        journals.insert(u.clone(), json!(tail_lines(&text, 3000)));
    }
    let warnings = sh(
        "journalctl",
        &[
            "-b",
            "-p",
            "warning",
            "-o",
            "short-monotonic",
            "--no-pager",
            "-q",
        ],
    )
    .unwrap_or_default();
    let kernel_kills = sh(
        "journalctl",
        &["-b", "-k", "-o", "short-monotonic", "-q", "--no-pager"],
    )
    .unwrap_or_default()
    .lines()
    .filter(|l| l.contains("Killed process") || l.contains("oom-kill"))
    .map(str::to_string)
    .collect::<Vec<_>>();

    let stalls = reqs.iter().filter(|r| r.stalled).count();
    let after: Vec<&Req> = reqs
        .iter()
        .filter(|r| plateau_ms.is_some_and(|p| r.at_ms >= p))
        .collect();
    let worst_gap_ms = worst_gap(&reqs, spawn_ms, end_ms);
    let mut result = json!({
        "run": plan.run,
        "guard": plan.guard,
        "boot_to_runner_s": round1(boot_s),
        "system_state": state,
        "failed_units": failed.trim(),
        "guard_state": guard_state,
        "steps": steps,
        "probes": probes,
        "probes_end": probes_end,
        "origin_mono_s": origin.mono_s,
        "unit": plan.unit,
        "cgroup": cgroup,
        "memory_high": high,
        "memory_max": max,
        "main_pid": main_pid,
        "main_pid_after": main_pid_after,
        "unit_state_after": unit_state,
        "unit_restarts": n_restarts,
        "server_survived": server_survived,
        "scanner_pid": scanner_pid,
        "scanner_alive_at_end": scanner_alive,
        "baseline_p50_ms": round1(percentile(&baseline, 50.0)),
        "baseline_p99_ms": round1(percentile(&baseline, 99.0)),
        "normal_ms": round1(normal_ms),
        "watchdog_ms": plan.watchdog_ms,
        "spawn_ms": round1(spawn_ms),
        "plateau_ms": plateau_ms.map(round1),
        "recovered_ms": recovered_ms.map(round1),
        "plateau_to_recovery_s": match (plateau_ms, recovered_ms) {
            (Some(p), Some(r)) => json!(((r - p) / 100.0).round() / 10.0),
            _ => Value::Null,
        },
    });
    let collected: serde_json::Map<String, Value> = plan
        .collect
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| format!("unreadable: {e}"));
            (f.clone(), json!(tail_lines(&text, 50)))
        })
        .collect();
    let more = json!({
        "collected": collected,
        "end_ms": round1(end_ms),
        "requests": reqs.len(),
        "requests_after_plateau": after.len(),
        "stalls": stalls,
        "worst_gap_ms": round1(worst_gap_ms),
        "kills": kills,
        "oom_victims": oom_victims,
        "kernel_kill_lines": kernel_kills,
        "journal": journals,
        "journal_warnings": tail_lines(&warnings, 1000),
        // Every request: [sent ms, latency ms, stalled].
        "latency": reqs.iter().map(|r| json!([round1(r.at_ms), round1(r.latency_ms), u8::from(r.stalled)])).collect::<Vec<_>>(),
        // The unit's memory every 100 ms: [ms, MiB, memory.events high,
        // max, oom_kill, PSI some ms, PSI full ms, MemAvailable MiB,
        // host PSI some avg10 %, host PSI full avg10 %].
        "memory": samples.iter().map(|s| json!([
            round1(s.at_ms),
            round1(s.current as f64 / 1048576.0),
            s.high_events, s.max_events, s.oom_kill,
            s.some_us / 1000, s.full_us / 1000,
            s.mem_available_kb / 1024,
            s.host_some_avg10, s.host_full_avg10,
        ])).collect::<Vec<_>>(),
    });
    if let (Some(r), Value::Object(m)) = (result.as_object_mut(), more) {
        r.extend(m);
    }
    Ok(result)
}

/// The server answers *again* within its normal latency: the first
/// request after the first slow one (or stall) at or after the plateau
/// that starts `run` normal replies in a row; its send time. (Throttling
/// takes a second or two to bite after memory.high is crossed.) With no
/// slow reply at all, and `run` normal ones, the server never stopped
/// answering: recovered at the plateau.
fn recovery(reqs: &[Req], plateau_ms: f64, normal_ms: f64, run: usize) -> Option<f64> {
    let normal = |r: &Req| !r.stalled && r.latency_ms <= normal_ms;
    let after: Vec<&Req> = reqs.iter().filter(|r| r.at_ms >= plateau_ms).collect();
    let Some(first_slow) = after.iter().position(|r| !normal(r)) else {
        return (after.len() >= run.max(1)).then_some(plateau_ms);
    };
    after[first_slow..]
        .windows(run.max(1))
        .find(|w| w.iter().all(|r| normal(r)))
        .map(|w| w[0].at_ms)
}

/// The longest time the client went without an answer, from the spawn to
/// the end of the run: between the replies of consecutive answered
/// requests (a stall's time included), and from the last reply to the end.
fn worst_gap(reqs: &[Req], from_ms: f64, end_ms: f64) -> f64 {
    let mut last_answer: Option<f64> = None;
    let mut worst: f64 = 0.0;
    for r in reqs.iter().filter(|r| r.at_ms + r.latency_ms >= from_ms) {
        if r.stalled {
            continue;
        }
        let answered = r.at_ms + r.latency_ms;
        if let Some(prev) = last_answer {
            worst = worst.max(answered - prev);
        }
        last_answer = Some(answered);
    }
    worst.max(end_ms - last_answer.unwrap_or(from_ms))
}

fn tail_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(std::string::ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_trace_lines() {
        let t = "# tracer: nop\n\
             earlyoom-345 [001] d..2.    40.123456: signal_generate: sig=9 errno=0 code=0 comm=scanner pid=412 grp=1 res=0\n\
             systemd-oomd-88 [000] .....  41.5: signal_generate: sig=15 errno=0 code=0 comm=t3 pid=400 grp=1 res=0\n\
             garbage line\n";
        let k = parse_kills(t);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].killer_comm, "earlyoom");
        assert_eq!(k[0].killer_pid, 345);
        assert_eq!((k[0].sig, k[0].pid), (9, 412));
        assert_eq!(k[0].comm, "scanner");
        assert!((k[0].mono_s - 40.123456).abs() < 1e-9);
        assert_eq!(k[1].killer_comm, "systemd-oomd");
        assert_eq!(k[1].sig, 15);
    }

    #[test]
    fn recovery_needs_a_run_of_normal_replies() {
        let r = |at_ms, latency_ms, stalled| Req {
            at_ms,
            latency_ms,
            stalled,
        };
        let reqs = vec![
            r(0.0, 2.0, false),
            r(100.0, 900.0, false),
            r(1000.0, 2000.0, true),
            r(3000.0, 3.0, false),
            r(3100.0, 400.0, false),
            r(3500.0, 3.0, false),
            r(3600.0, 3.0, false),
            r(3700.0, 3.0, false),
        ];
        assert_eq!(recovery(&reqs, 50.0, 50.0, 3), Some(3500.0));
        assert_eq!(recovery(&reqs, 50.0, 50.0, 4), None);
        // Never slow after the plateau: recovered at once.
        assert_eq!(recovery(&reqs, 3400.0, 50.0, 3), Some(3400.0));
        assert_eq!(recovery(&reqs, 3400.0, 50.0, 4), None);
        assert_eq!(recovery(&reqs, 0.0, 50.0, 1), Some(3000.0));
        // From the spawn at 50: answers at 1000, (stall), 3003, 3500, ...
        assert!((worst_gap(&reqs, 50.0, 3800.0) - 2003.0).abs() < 1e-6);
        // Nothing answered after 3703: the tail counts.
        assert!((worst_gap(&reqs, 50.0, 9000.0) - 5297.0).abs() < 1e-6);
    }
}
