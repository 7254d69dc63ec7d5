//! `memtrace agent`: the daemon that ends a memory.high livelock the instant
//! a cgroup's throttling exceeds its budget.
//!
//! One loop on one thread owns the pipeline's state:
//!
//! ```text
//! ring buffer ─► decode ─► model ─► policy ──► kill (pidfd, pre-opened)
//!                            │         │  └───► alerts (own threads)
//!      timer armed at the ───┘         └──────► kill log, metrics page
//!      next possible crossing
//! 1 s tick: cgroup and host samples, victim preparation, kernel brake
//!           rules, leading-edge checks, metrics page, status file
//! 250 ms:   kernel brake heartbeat
//! ```
//!
//! Delivering a kill needs no allocation and no file I/O: every second the
//! loop prepares each watched cgroup's victim (its pidfd opened and
//! verified), and the breach handler only signals it. The agent locks its
//! memory, lowers its own OOM score, raises its priority and never counts
//! or kills itself.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value, json};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::act::alert::{Alert, Alerter};
use crate::act::kill::{Prepared, kill_cgroup};
use crate::clock::{Clock, fmt_bytes, fmt_ns, mono_now_ns};
use crate::config::{Action, AgentConfig, AlertEvent, BudgetConfig, ConfigError};
use crate::event::Event;
use crate::kernel::CgroupVersion;
use crate::metrics::{Exposition, Page};
use crate::model::{Model, RECLAIM_BUCKETS, ReclaimStats};
use crate::policy::budget::{Decision, Finding, Policy};
use crate::policy::estimate::Estimator;
use crate::policy::host::HostWatch;
use crate::policy::victim::{self, Rank, Rules};
use crate::probe::brake::Brake;
use crate::probe::{LoadOptions, Probe, Tracer};
use crate::record::flight::FlightRecorder;
use crate::record::{Action as RecordedAction, Header};
use crate::ring::stream::EventSource;
use crate::sys::cgroupfs::HostMemory;
use crate::sys::procs::subtree_processes;
use crate::sys::psi::PsiLine;
use crate::sys::registry::{CgroupRegistry, ancestors};
use crate::sys::sampler::Sampler;

/// Where the agent publishes its state for `memtrace top`.
pub const STATUS_FILE: &str = "/run/memtrace/agent.json";

/// How much history the model keeps: the longest budget window is an hour.
const HORIZON_NS: u64 = 3_600_000_000_000;

/// How long to wait for a killed process to exit before giving up timing it.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// How the agent was started.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The config file; None: the default path, or the embedded default.
    pub config_path: Option<PathBuf>,
    pub dry_run: bool,
    pub status_file: PathBuf,
}

/// Reads the configuration the way the agent does at start and on SIGHUP.
pub fn load_config(path: Option<&PathBuf>) -> Result<AgentConfig, ConfigError> {
    match path {
        Some(p) => AgentConfig::load(p),
        None => {
            let default = std::path::Path::new(crate::config::DEFAULT_PATH);
            if default.exists() {
                AgentConfig::load(default)
            } else {
                Ok(AgentConfig::embedded())
            }
        }
    }
}

/// A killed process's exit, reported by its waiter task.
/// What a retried breach finds: see `Agent::livelock`.
enum Livelock {
    GoesOn,
    Unsure,
    Over,
}

/// A kill whose victim has not been seen to exit yet: its kill-log line
/// waits for the exit time.
struct PendingKill {
    record: Map<String, Value>,
    signal_ns: u64,
}

/// From the task watching a victim's pidfd.
struct ExitReport {
    id: u64,
    exit_ns: Option<u64>,
}

/// Timings of delivered kills.
#[derive(Default)]
struct KillStats {
    kills: HashMap<(String, String, &'static str), u64>,
    would_kill: u64,
    breach_to_signal: ReclaimStats,
    signal_to_exit: ReclaimStats,
    breaches: u64,
    warnings: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    nothing_to_kill: u64,
}

pub struct Agent {
    opts: AgentOptions,
    cfg: AgentConfig,
    tracer: Tracer,
    registry: CgroupRegistry,
    model: Model,
    policy: Policy,
    estimator: Estimator,
    alerter: Alerter,
    brake: Option<Brake>,
    clock: Clock,
    page_size: u64,
    version: Option<CgroupVersion>,
    host: HostWatch,
    host_mem: HostMemory,
    sampler: Sampler,
    recorder: Option<FlightRecorder>,
    prepared: HashMap<(usize, u64), Prepared>,
    pending_kills: HashMap<u64, PendingKill>,
    next_kill_id: u64,
    exits_tx: mpsc::UnboundedSender<ExitReport>,
    exits_rx: mpsc::UnboundedReceiver<ExitReport>,
    kill_log: Option<std::fs::File>,
    page: Page,
    stats: KillStats,
    self_pid: u32,
    hostname: String,
    started_ns: u64,
    /// Recent decisions and actions, for `memtrace top` (status file).
    recent: std::collections::VecDeque<Value>,
}

/// Makes the agent hard to starve or kill: locked memory, the lowest OOM
/// score, a high priority. Each failure is logged, none is fatal.
fn harden() {
    // SAFETY: mlockall and setpriority take plain flags.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        log::warn!(
            "could not lock the agent's memory (mlockall: {}); it may be paged out under pressure",
            std::io::Error::last_os_error()
        );
    }
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        log::warn!("could not set the agent's oom_score_adj to -1000: {e}");
    }
    // SAFETY: as above.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
        log::warn!(
            "could not raise the agent's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Agent {
    /// Loads the probes and everything the loop needs. The configuration is
    /// validated by the caller first, so a bad one changes nothing.
    pub fn new(opts: AgentOptions, cfg: AgentConfig) -> anyhow::Result<Self> {
        harden();
        let load = LoadOptions::from_env()?;
        let mut tracer = Tracer::load(&load)?;
        for d in &tracer.caps.degraded {
            log::warn!("degraded: {d}");
        }
        let hierarchy = tracer.caps.kernel.cgroups.memory.clone();
        let version = hierarchy.as_ref().map(|h| h.version);
        if version == Some(CgroupVersion::V1) && !cfg.budgets.is_empty() {
            log::warn!(
                "the memory controller is on cgroup v1: memory.high does not exist, so budgets \
                 cannot be exceeded here; OOM kills and the host's leading edge are still watched"
            );
        }
        let throttle = tracer.caps.throttle_measured();
        if !throttle && !cfg.budgets.is_empty() {
            log::warn!(
                "no throttle probe: budgets are checked against ESTIMATES from memory.pressure \
                 and memory.events (once a second, not the instant a budget is crossed)"
            );
        }
        let wants_brake = cfg.budgets.iter().any(|b| b.brake.is_some());
        let brake = if wants_brake && throttle {
            Some(Brake::new(&mut tracer)?)
        } else {
            if wants_brake {
                log::warn!(
                    "kernel brake unavailable: it runs in the throttle probe, which this kernel refuses"
                );
            }
            None
        };
        let registry = CgroupRegistry::new(hierarchy.as_ref());
        let self_pid = std::process::id();
        let kill_log = match &cfg.agent.kill_log {
            Some(p) => {
                Some(open_append(p).with_context(|| format!("opening kill log {}", p.display()))?)
            }
            None => None,
        };
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let page_size = tracer.caps.kernel.page_size;
        let hostname = tracer.caps.kernel.hostname.clone();
        let alerter = Alerter::start(&cfg.alerts);
        let clock = Clock::now();
        let sampler = Sampler::new(
            crate::config::filter::CgroupFilter::default(),
            version,
            page_size,
        );
        let recorder = start_recorder(&cfg, &tracer, &clock);
        Ok(Self {
            policy: Policy::new(cfg.budgets.clone()),
            opts,
            cfg,
            tracer,
            registry,
            model: Model::new(self_pid, HORIZON_NS),
            estimator: Estimator::default(),
            alerter,
            brake,
            clock,
            page_size,
            version,
            host: HostWatch::default(),
            host_mem: HostMemory::default(),
            sampler,
            recorder,
            prepared: HashMap::new(),
            pending_kills: HashMap::new(),
            next_kill_id: 0,
            exits_tx,
            exits_rx,
            kill_log,
            page: Arc::new(Mutex::new(Arc::new(String::new()))),
            stats: KillStats::default(),
            self_pid,
            hostname,
            started_ns: mono_now_ns(),
            recent: std::collections::VecDeque::new(),
        })
    }

    /// Reading a process's cmdline takes its mmap lock, which a process
    /// stuck in reclaim can hold for long: read it only when a rule
    /// matches on it.
    fn wants_cmdline(&self, budget: &BudgetConfig) -> bool {
        !(budget.avoid.is_empty() && budget.prefer.is_empty() && self.cfg.agent.protect.is_empty())
    }

    fn dry(&self, budget: &BudgetConfig) -> bool {
        self.opts.dry_run || self.cfg.agent.dry_run || budget.dry_run
    }

    /// Runs until SIGTERM or SIGINT.
    pub async fn run(mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut source = EventSource::new(&mut self.tracer)?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(Duration::from_millis(250));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let metrics_at = self.start_metrics().await;
        let (psi_tx, mut psi_rx) = mpsc::unbounded_channel();
        if self.cfg.host.enabled
            && self.tracer.caps.kernel.psi
            && let Err(e) = crate::sys::psi::start_psi_triggers(&self.cfg.host, psi_tx)
        {
            log::warn!("host memory pressure is sampled, not triggered: {e}");
        }
        self.tick(mono_now_ns());
        log::info!(
            "memtrace agent ready: {} budget(s), {} alert sink(s), throttle probe {}, config {}, metrics {}{}",
            self.cfg.budgets.len(),
            self.cfg.alerts.len(),
            match self
                .tracer
                .caps
                .probe(Probe::Throttle)
                .and_then(|p| p.attached)
            {
                Some(m) => format!("via {}", m.as_str()),
                None => "UNAVAILABLE (estimates)".into(),
            },
            self.cfg.source,
            metrics_at,
            if self.opts.dry_run || self.cfg.agent.dry_run {
                ", DRY RUN: nothing will be killed"
            } else {
                ""
            }
        );

        loop {
            // Without the throttle probe the model has no episodes, and
            // estimated breaches are re-checked with each sample.
            let deadline = if self.tracer.caps.throttle_measured() {
                self.policy.next_deadline(&self.model, mono_now_ns())
            } else {
                None
            };
            tokio::select! {
                // Not biased: a burst of events must not starve the
                // heartbeat, the timers or the signals.
                e = source.next() => self.on_event(e),
                _ = sleep_until_mono(deadline) => {
                    let now = mono_now_ns();
                    let mut ids: Vec<u64> = self.model.cgroups.values()
                        .filter(|s| s.throttle.in_progress() > 0).map(|s| s.id).collect();
                    ids.extend(self.policy.due_retries(now));
                    ids.sort_unstable();
                    ids.dedup();
                    let decisions = self.policy.evaluate(&self.model, &ids, now);
                    self.policy.expire_retries(now);
                    self.decide(decisions);
                }
                _ = beat.tick() => {
                    if let Some(b) = &mut self.brake {
                        b.beat(mono_now_ns());
                    }
                    // The flight recorder writes at least once a second;
                    // checking four times a second keeps it from slipping.
                    self.tick_recorder();
                }
                _ = tick.tick() => self.tick(mono_now_ns()),
                Some(line) = psi_rx.recv() => self.on_psi(line),
                Some(exit) = self.exits_rx.recv() => self.on_exit(exit),
                _ = hup.recv() => self.reload(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        log::info!("memtrace agent stopping");
        self.finish_kill_log().await;
        if let Some(rec) = self.recorder.take()
            && let Err(e) = rec.close()
        {
            log::error!("flight recorder: {e}");
        }
        let _ = std::fs::remove_file(&self.opts.status_file);
        Ok(())
    }

    async fn start_metrics(&mut self) -> String {
        let listen = &self.cfg.agent.metrics_listen;
        if listen == "off" {
            return "off".into();
        }
        let Ok(addr) = listen.parse() else {
            return "off (bad address)".into();
        };
        match crate::metrics::bind(addr).await {
            Ok(l) => {
                let at = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tokio::spawn(crate::metrics::serve(l, self.page.clone()));
                format!("http://{at}/metrics")
            }
            Err(e) => {
                log::error!("{e}; the agent runs without metrics");
                "UNAVAILABLE".into()
            }
        }
    }

    fn on_event(&mut self, mut e: Event) {
        if let Event::OomKill(o) = &mut e
            && o.victim_memcg_id == 0
            && let Some((id, _)) = self.registry.cgroup_of_pid(o.victim.tgid.max(o.victim.pid))
        {
            o.victim_memcg_id = id;
        }
        let touched = self.model.apply(&e, &mut self.registry);
        if let Some(w) = self.recorder.as_mut().and_then(FlightRecorder::writer) {
            let reg = &mut self.registry;
            if let Err(err) = w.event(&e, &mut |id| reg.path(id)) {
                log::error!("flight recorder stopped: {err}");
                self.recorder = None;
            }
        }
        match &e {
            Event::OomKill(o) => {
                let path = self.path(o.victim_memcg_id);
                let rss = o.rss_pages.map(|r| r.total() * self.page_size);
                let mut d = Map::new();
                d.insert("pid".into(), json!(o.victim.tgid.max(o.victim.pid)));
                d.insert("comm".into(), json!(o.victim.comm.to_string()));
                d.insert("rss_bytes".into(), json!(rss));
                d.insert(
                    "oom_cgroup".into(),
                    json!(self.registry.lookup(o.oom_memcg_id).map(|p| p.to_string())),
                );
                log::warn!(
                    "OOM kill: the kernel killed {}[{}] in {path}{}",
                    o.victim.comm,
                    o.victim.pid,
                    rss.map(|r| format!(", rss {}", fmt_bytes(r)))
                        .unwrap_or_default()
                );
                self.alert(
                    AlertEvent::OomKill,
                    Some(path.clone()),
                    &path,
                    format!(
                        "the kernel OOM-killed {}[{}] in {path}",
                        o.victim.comm, o.victim.pid
                    ),
                    d,
                    false,
                    o.ts_ns,
                );
            }
            Event::Brake(b) => {
                let path = self.path(b.rule_memcg_id);
                let mut d = Map::new();
                d.insert("pid".into(), json!(b.task.tgid));
                d.insert("comm".into(), json!(b.task.comm.to_string()));
                d.insert("throttled_ms".into(), json!(b.throttled_ns / 1_000_000));
                d.insert("limit_ms".into(), json!(b.limit_ns / 1_000_000));
                d.insert(
                    "agent_silent_ms".into(),
                    json!(b.heartbeat_age_ns / 1_000_000),
                );
                log::warn!(
                    "kernel brake fired while the agent was silent for {}: signal {} to {}[{}] in {path}",
                    fmt_ns(b.heartbeat_age_ns),
                    b.signal,
                    b.task.comm,
                    b.task.tgid
                );
                self.alert(
                    AlertEvent::Brake,
                    Some(path.clone()),
                    &path,
                    format!(
                        "kernel brake killed {}[{}] in {path}: the agent was silent for {}",
                        b.task.comm,
                        b.task.tgid,
                        fmt_ns(b.heartbeat_age_ns)
                    ),
                    d,
                    false,
                    b.ts_ns,
                );
            }
            Event::Lost(l) => log::warn!(
                "{} {} records lost: the ring buffer was full",
                l.count,
                l.kind.as_str()
            ),
            _ => {}
        }
        if !touched.is_empty() {
            let decisions = self.policy.evaluate(&self.model, &touched, e.ts_ns());
            self.decide(decisions);
        }
    }

    fn path(&mut self, id: u64) -> String {
        self.registry.path(id).map_or_else(
            || {
                if id == 0 {
                    "?".into()
                } else {
                    format!("#{id}")
                }
            },
            |p| p.to_string(),
        )
    }

    fn decide(&mut self, decisions: Vec<Decision>) {
        for d in decisions {
            match d {
                Decision::Warn(f) => self.on_warning(&f),
                Decision::Breach(f) => self.on_breach(&f),
            }
        }
    }

    /// Puts a decision or an action into the flight recorder and the
    /// status file's recent list.
    fn record_action(
        &mut self,
        kind: &str,
        cgroup: u64,
        ts_ns: u64,
        details: &Map<String, Value>,
        text: &str,
    ) {
        if self.recent.len() == 50 {
            self.recent.pop_front();
        }
        self.recent.push_back(json!({
            "time": self.clock.rfc3339(ts_ns),
            "kind": kind,
            "cgroup": self.registry.lookup(cgroup).map(|p| p.to_string()),
            "text": text,
        }));
        if let Some(w) = self.recorder.as_mut().and_then(FlightRecorder::writer) {
            let a = RecordedAction {
                ts_ns,
                cgroup_id: cgroup,
                kind: kind.to_string(),
                details: Value::Object(details.clone()).to_string(),
            };
            let reg = &mut self.registry;
            if let Err(e) = w.action(&a, &mut |id| reg.path(id)) {
                log::error!("flight recorder stopped: {e}");
                self.recorder = None;
            }
        }
    }

    fn finding_details(&self, f: &Finding) -> Map<String, Value> {
        let b = &self.policy.budgets[f.budget];
        let mut d = Map::new();
        d.insert("budget".into(), json!(b.label()));
        d.insert("throttled_ms".into(), json!(f.used_ns / 1_000_000));
        d.insert("budget_ms".into(), json!(f.budget_ns / 1_000_000));
        d.insert("window_ms".into(), json!(f.window_ns / 1_000_000));
        d.insert("throttled_pct".into(), json!(share(f.used_ns, f.window_ns)));
        d.insert("action".into(), json!(b.action.as_str()));
        let top: Vec<Value> = self
            .model
            .most_throttled(f.cgroup, f.at_ns, f.window_ns)
            .into_iter()
            .take(3)
            .map(|(tgid, ns)| {
                let comm = self
                    .model
                    .cgroups
                    .get(&f.cgroup)
                    .and_then(|s| s.tasks.get(&tgid))
                    .map(|t| t.comm.to_string())
                    .unwrap_or_default();
                json!({ "pid": tgid, "comm": comm, "throttled_ms": ns / 1_000_000 })
            })
            .collect();
        if let Some(first) = top.first() {
            d.insert("pid".into(), first["pid"].clone());
            d.insert("comm".into(), first["comm"].clone());
        }
        d.insert("most_throttled".into(), Value::Array(top));
        if let Some(v) = self.prepared.get(&(f.budget, f.cgroup)) {
            d.insert("victim_pid".into(), json!(v.info.pid));
            d.insert("victim_comm".into(), json!(v.info.comm));
            d.insert("victim_rss_bytes".into(), json!(v.info.rss_bytes));
        }
        d
    }

    fn on_warning(&mut self, f: &Finding) {
        self.stats.warnings += 1;
        let label = self.policy.budgets[f.budget].label();
        let summary = format!(
            "{} throttled {} of the last {} ({:.0}%), {:.0}% of budget `{label}`",
            f.path,
            fmt_ns(f.used_ns),
            fmt_ns(f.window_ns),
            share(f.used_ns, f.window_ns),
            f.used_ns as f64 * 100.0 / f.budget_ns.max(1) as f64
        );
        log::warn!("warning: {summary}");
        let d = self.finding_details(f);
        self.record_action("warning", f.cgroup, f.at_ns, &d, &summary);
        self.alert(
            AlertEvent::Warning,
            Some(f.path.clone()),
            &f.path,
            summary,
            d,
            f.estimate,
            f.at_ns,
        );
    }

    fn on_breach(&mut self, f: &Finding) {
        let budget = self.policy.budgets[f.budget].clone();
        if f.retry {
            // Reported already; act again only while the livelock lasts. A
            // line back under memory.high throttles no one now: the time
            // in the window belongs to an incident that ended (its hog
            // exited), and killing a bystander for it would be wrong.
            match self.livelock(f) {
                Livelock::GoesOn => {}
                Livelock::Unsure => {
                    // Under memory.high this instant, but throttled a
                    // moment ago: reclaim may have dipped usage for a
                    // moment, or the hog just exited. Look again soon.
                    let now = mono_now_ns();
                    self.policy.retry(f.budget, f.cgroup, now + 1_000_000_000);
                    return;
                }
                Livelock::Over => {
                    log::info!(
                        "{}: back under memory.high; budget `{}` breach is over",
                        f.path,
                        budget.label()
                    );
                    self.policy.settled(f.budget, f.cgroup, mono_now_ns());
                    return;
                }
            }
            if budget.action.kills() {
                self.act(f, &budget);
            }
            return;
        }
        self.stats.breaches += 1;
        let summary = format!(
            "{} throttled {} of the last {} ({:.0}% > {:.0}%): budget `{}` exceeded",
            f.path,
            fmt_ns(f.used_ns),
            fmt_ns(f.window_ns),
            share(f.used_ns, f.window_ns),
            budget.max_throttled.0,
            budget.label()
        );
        log::warn!(
            "BREACH: {summary}{}",
            if f.estimate { " (estimate)" } else { "" }
        );
        let d = self.finding_details(f);
        self.record_action("breach", f.cgroup, f.at_ns, &d, &summary);
        self.alert(
            AlertEvent::Breach,
            Some(f.path.clone()),
            &f.path,
            summary,
            d,
            f.estimate,
            f.at_ns,
        );
        if !budget.action.kills() {
            return;
        }
        if let Some(until) = self
            .policy
            .kill_blocked_until(&f.path, &self.model, f.at_ns)
        {
            log::warn!(
                "{}: cooling down after a kill in this cgroup line (until memory is back under memory.high, at most {}); not killing yet",
                f.path,
                fmt_ns(until.saturating_sub(f.at_ns))
            );
        }
        self.act(f, &budget);
    }

    /// Whether the livelock behind a breach goes on. The kernel throttles
    /// only while the cgroup or an ancestor is over its memory.high, so
    /// that alone allows a kill. Under it with throttling in the last
    /// second is not yet the end (reclaim can dip usage for a moment);
    /// under it and quiet for a second is. Without cgroup v2 files to
    /// read, assume it goes on.
    fn livelock(&self, f: &Finding) -> Livelock {
        if self.version != Some(CgroupVersion::V2) {
            return Livelock::GoesOn;
        }
        let over = ancestors(&f.path)
            .filter_map(|a| self.registry.dir(a))
            .any(|dir| crate::sys::cgroupfs::over_high_now(&dir));
        if over {
            return Livelock::GoesOn;
        }
        let now = mono_now_ns();
        let recent = self.model.cgroups.get(&f.cgroup).is_some_and(|s| {
            s.throttle.in_progress() > 0 || s.throttle.throttled_in(now, 1_000_000_000) > 0
        });
        if recent {
            Livelock::Unsure
        } else {
            Livelock::Over
        }
    }

    /// Kills for a breach, or, when a cool-down holds it back or nothing
    /// may be killed, asks the policy to report the breach again soon: a
    /// livelock the first kill did not end still gets a second.
    fn act(&mut self, f: &Finding, budget: &BudgetConfig) {
        let now = mono_now_ns();
        if let Some(until) = self.policy.kill_blocked_until(&f.path, &self.model, now) {
            // Re-check at least every second: a cool-down ends early when
            // memory drops.
            self.policy
                .retry(f.budget, f.cgroup, until.min(now + 1_000_000_000));
            return;
        }
        let killed = match budget.action {
            Action::KillCgroup => self.kill_cgroup(f, budget),
            _ => self.kill_one(f, budget),
        };
        if !killed {
            self.policy.retry(f.budget, f.cgroup, now + 5_000_000_000);
        }
    }

    /// Chooses and verifies the victim of a budget in a cgroup.
    fn prepare(&mut self, b: usize, cgroup: u64, now: u64) -> Option<Prepared> {
        let budget = &self.policy.budgets[b];
        let path = self.registry.lookup(cgroup)?;
        let dir = self.registry.dir(&path)?;
        let procs = subtree_processes(&dir, &path, self.page_size, self.wants_cmdline(budget));
        let throttled: HashMap<u32, u64> = self
            .model
            .most_throttled(cgroup, now, budget.window_ns())
            .into_iter()
            .collect();
        let rank = match budget.action {
            Action::KillMostThrottled => Rank::MostThrottled(&throttled),
            _ => Rank::Largest,
        };
        let rules = Rules {
            self_pid: self.self_pid,
            protect: &self.cfg.agent.protect,
            avoid: &budget.avoid,
            prefer: &budget.prefer,
        };
        let choice = victim::choose(procs, rank, &rules);
        for s in &choice.spared {
            log::debug!("{path}: spared {}[{}]: {}", s.comm, s.pid, s.reason);
        }
        Prepared::new(choice.victim?).ok()
    }

    fn kill_record(
        &self,
        f: &Finding,
        budget: &BudgetConfig,
        v: &crate::sys::procs::ProcessInfo,
        dry: bool,
    ) -> Map<String, Value> {
        let mut r = Map::new();
        r.insert("time".into(), json!(self.clock.rfc3339(f.at_ns)));
        r.insert("budget".into(), json!(budget.label()));
        r.insert("cgroup".into(), json!(f.path));
        r.insert("action".into(), json!(budget.action.as_str()));
        r.insert("dry_run".into(), json!(dry));
        r.insert("pid".into(), json!(v.pid));
        r.insert("comm".into(), json!(v.comm));
        r.insert("cmdline".into(), json!(v.cmdline));
        r.insert("victim_cgroup".into(), json!(v.cgroup));
        r.insert("rss_bytes".into(), json!(v.rss_bytes));
        r.insert("throttled_ns".into(), json!(f.used_ns));
        r.insert("budget_ns".into(), json!(f.budget_ns));
        r.insert("window_ns".into(), json!(f.window_ns));
        r.insert("estimate".into(), json!(f.estimate));
        r
    }

    /// Kills (or, dry run, would kill) the victim; false when there was
    /// nothing to kill.
    fn kill_one(&mut self, f: &Finding, budget: &BudgetConfig) -> bool {
        let key = (f.budget, f.cgroup);
        let version = self.version;
        let dry = self.dry(budget);
        // The hot path: a victim prepared by the last tick. Otherwise (a
        // breach in the first second) choose now.
        let mut victim = self.prepared.remove(&key);
        let mut signal_ns = mono_now_ns();
        let mut outcome = None;
        for _ in 0..2 {
            let Some(v) = victim
                .take()
                .or_else(|| self.prepare(f.budget, f.cgroup, f.at_ns))
            else {
                break;
            };
            if dry {
                outcome = Some((v, false));
                break;
            }
            // Prepared up to a second ago: it must still be alive and in
            // this cgroup's subtree (a process can be moved).
            if !version.is_some_and(|ver| v.still_in(&f.path, ver)) {
                log::warn!(
                    "{}: victim {}[{}] left the cgroup or is exiting; choosing again",
                    f.path,
                    v.info.comm,
                    v.info.pid
                );
                continue;
            }
            signal_ns = mono_now_ns();
            match v.signal(libc::SIGKILL) {
                Ok(released) => {
                    outcome = Some((v, released));
                    break;
                }
                // Gone since it was prepared: choose again, once.
                Err(e) => log::warn!(
                    "{}: victim {}[{}] could not be signalled ({e}); choosing again",
                    f.path,
                    v.info.comm,
                    v.info.pid
                ),
            }
        }
        let Some((v, released)) = outcome else {
            if !f.retry {
                self.stats.nothing_to_kill += 1;
                log::error!(
                    "{}: budget `{}` exceeded but no process may be killed (all protected, avoided or gone); trying again while it lasts",
                    f.path,
                    budget.label()
                );
            }
            return false;
        };
        self.policy.killed(f.budget, f.cgroup, signal_ns);
        let mut record = self.kill_record(f, budget, &v.info, dry);
        let breach_to_signal = signal_ns.saturating_sub(f.crossed_ns);
        let verb = if dry { "WOULD KILL" } else { "KILL" };
        log::warn!(
            "{verb} {}[{}] rss {} in {} (budget `{}`: throttled {} of {}){}",
            v.info.comm,
            v.info.pid,
            fmt_bytes(v.info.rss_bytes),
            f.path,
            budget.label(),
            fmt_ns(f.used_ns),
            fmt_ns(f.window_ns),
            if dry {
                String::new()
            } else {
                format!(", breach to signal {}", fmt_ns(breach_to_signal))
            }
        );
        let mut d = self.finding_details(f);
        d.insert("pid".into(), json!(v.info.pid));
        d.insert("comm".into(), json!(v.info.comm));
        d.insert("rss_bytes".into(), json!(v.info.rss_bytes));
        d.insert("dry_run".into(), json!(dry));
        if dry {
            self.stats.would_kill += 1;
            self.write_kill_log(&record);
            let summary = format!(
                "would kill {}[{}] in {} (dry run)",
                v.info.comm, v.info.pid, f.path
            );
            self.record_action("would-kill", f.cgroup, f.at_ns, &record, &summary);
            self.alert(
                AlertEvent::Kill,
                Some(f.path.clone()),
                &f.path,
                summary,
                d,
                f.estimate,
                f.at_ns,
            );
            return true;
        }
        *self
            .stats
            .kills
            .entry((budget.label(), f.path.clone(), budget.action.as_str()))
            .or_default() += 1;
        self.stats.breach_to_signal.record(breach_to_signal, 0);
        record.insert("breach_to_signal_ns".into(), json!(breach_to_signal));
        record.insert("memory_released".into(), json!(released));
        let text = format!(
            "killed {}[{}] (rss {}) in {}",
            v.info.comm,
            v.info.pid,
            fmt_bytes(v.info.rss_bytes),
            f.path
        );
        self.record_action("kill", f.cgroup, signal_ns, &record, &text);
        d.insert(
            "breach_to_signal_ms".into(),
            json!(breach_to_signal as f64 / 1e6),
        );
        let summary = format!(
            "killed {}[{}] (rss {}) in {}: throttled {} of {}",
            v.info.comm,
            v.info.pid,
            fmt_bytes(v.info.rss_bytes),
            f.path,
            fmt_ns(f.used_ns),
            fmt_ns(f.window_ns)
        );
        self.alert(
            AlertEvent::Kill,
            Some(f.path.clone()),
            &f.path,
            summary,
            d,
            f.estimate,
            f.at_ns,
        );
        self.wait_exit(v.into_fd(), record, signal_ns);
        true
    }

    /// Kills every process of the cgroup but the protected and avoided;
    /// false when there was none to kill.
    fn kill_cgroup(&mut self, f: &Finding, budget: &BudgetConfig) -> bool {
        let dry = self.dry(budget);
        let Some(dir) = self.registry.dir(&f.path) else {
            return false;
        };
        let procs = subtree_processes(&dir, &f.path, self.page_size, self.wants_cmdline(budget));
        if procs.is_empty() {
            return false;
        }
        let rules = Rules {
            self_pid: self.self_pid,
            protect: &self.cfg.agent.protect,
            avoid: &budget.avoid,
            prefer: &[],
        };
        let protected: Vec<String> = procs
            .iter()
            .filter_map(|p| {
                victim::spared(p, &rules).map(|why| format!("{}[{}] ({why})", p.comm, p.pid))
            })
            .collect();
        if protected.len() == procs.len() {
            return false;
        }
        let signal_ns = mono_now_ns();
        let mut record = Map::new();
        record.insert("time".into(), json!(self.clock.rfc3339(f.at_ns)));
        record.insert("budget".into(), json!(budget.label()));
        record.insert("cgroup".into(), json!(f.path));
        record.insert("action".into(), json!("kill-cgroup"));
        record.insert("dry_run".into(), json!(dry));
        record.insert(
            "pids".into(),
            json!(procs.iter().map(|p| p.pid).collect::<Vec<_>>()),
        );
        record.insert("throttled_ns".into(), json!(f.used_ns));
        record.insert(
            "breach_to_signal_ns".into(),
            json!(signal_ns.saturating_sub(f.crossed_ns)),
        );
        if dry {
            log::warn!(
                "WOULD KILL every process of {} ({} processes)",
                f.path,
                procs.len()
            );
            self.stats.would_kill += 1;
        } else if protected.is_empty() && kill_cgroup(&dir).unwrap_or(false) {
            log::warn!(
                "KILL cgroup {} ({} processes) via cgroup.kill",
                f.path,
                procs.len()
            );
        } else {
            // Protected or avoided processes inside, or no cgroup.kill:
            // one by one, sparing them.
            if !protected.is_empty() {
                log::warn!(
                    "{}: not using cgroup.kill, it would kill {}",
                    f.path,
                    protected.join(", ")
                );
            }
            for p in procs
                .into_iter()
                .filter(|p| victim::spared(p, &rules).is_none())
            {
                if let Ok(v) = Prepared::new(p) {
                    let _ = v.signal(libc::SIGKILL);
                }
            }
            log::warn!("KILL processes of {} one by one", f.path);
        }
        if !dry {
            *self
                .stats
                .kills
                .entry((budget.label(), f.path.clone(), "kill-cgroup"))
                .or_default() += 1;
            self.stats
                .breach_to_signal
                .record(signal_ns.saturating_sub(f.crossed_ns), 0);
        }
        self.policy.killed(f.budget, f.cgroup, signal_ns);
        self.write_kill_log(&record);
        let mut d = self.finding_details(f);
        d.insert("dry_run".into(), json!(dry));
        let summary = format!(
            "{} every process of {}",
            if dry { "would kill" } else { "killed" },
            f.path
        );
        self.record_action(
            if dry { "would-kill" } else { "kill" },
            f.cgroup,
            signal_ns,
            &record,
            &summary,
        );
        self.alert(
            AlertEvent::Kill,
            Some(f.path.clone()),
            &f.path,
            summary,
            d,
            f.estimate,
            f.at_ns,
        );
        true
    }

    /// Times the victim's exit on its pidfd, off the loop.
    fn wait_exit(&mut self, fd: OwnedFd, record: Map<String, Value>, signal_ns: u64) {
        let id = self.next_kill_id;
        self.next_kill_id += 1;
        self.pending_kills
            .insert(id, PendingKill { record, signal_ns });
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            // SAFETY: the OwnedFd stays open inside the AsyncFd until the
            // task ends.
            let exit_ns = match unsafe { AsyncFd::register(fd) } {
                Ok(afd) => tokio::time::timeout(EXIT_WAIT, afd.readable())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|_| mono_now_ns()),
                Err(_) => None,
            };
            let _ = tx.send(ExitReport { id, exit_ns });
        });
    }

    fn on_exit(&mut self, r: ExitReport) {
        let Some(PendingKill {
            mut record,
            signal_ns,
        }) = self.pending_kills.remove(&r.id)
        else {
            return;
        };
        match r.exit_ns {
            Some(t) => {
                let ns = t.saturating_sub(signal_ns);
                self.stats.signal_to_exit.record(ns, 0);
                record.insert("signal_to_exit_ns".into(), json!(ns));
                log::info!(
                    "pid {} exited {} after the signal",
                    record["pid"],
                    fmt_ns(ns)
                );
            }
            None => {
                record.insert("signal_to_exit_ns".into(), Value::Null);
                log::error!(
                    "pid {} had not exited {EXIT_WAIT:?} after SIGKILL",
                    record["pid"]
                );
            }
        }
        self.write_kill_log(&record);
    }

    /// At shutdown: a kill just made still gets its kill-log line. Waits a
    /// little for exits in flight, then writes the rest without an exit
    /// time.
    async fn finish_kill_log(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.pending_kills.is_empty() {
            match tokio::time::timeout_at(deadline, self.exits_rx.recv()).await {
                Ok(Some(r)) => self.on_exit(r),
                _ => break,
            }
        }
        let mut left: Vec<PendingKill> = self.pending_kills.drain().map(|(_, k)| k).collect();
        left.sort_by_key(|k| k.signal_ns);
        for mut k in left {
            k.record.insert("signal_to_exit_ns".into(), Value::Null);
            self.write_kill_log(&k.record);
        }
    }

    fn write_kill_log(&mut self, record: &Map<String, Value>) {
        if let Some(f) = &mut self.kill_log {
            let line = Value::Object(record.clone()).to_string();
            if let Err(e) = writeln!(f, "{line}") {
                log::error!("kill log: {e}");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        event: AlertEvent,
        cgroup: Option<String>,
        key: &str,
        summary: String,
        details: Map<String, Value>,
        estimate: bool,
        ts_ns: u64,
    ) {
        if self.cfg.alerts.is_empty() {
            return;
        }
        self.alerter.send(&Alert {
            event,
            cgroup,
            key: key.to_string(),
            summary,
            details,
            host: self.hostname.clone(),
            time: self.clock.rfc3339(ts_ns),
            estimate,
        });
    }

    fn on_psi(&mut self, line: PsiLine) {
        self.host_mem = HostMemory::read();
        let f = HostWatch::psi(&self.cfg.host, line, &self.host_mem);
        self.host_alert(f, mono_now_ns());
    }

    /// A leading-edge finding about the host: log and alert.
    fn host_alert(&self, mut f: crate::policy::host::Finding, at: u64) {
        f.details.insert("topic".into(), json!(f.topic));
        log::warn!("host: {}", f.summary);
        self.alert(
            AlertEvent::Host,
            None,
            f.topic,
            f.summary,
            f.details,
            false,
            at,
        );
    }

    /// The once-a-second work.
    fn tick(&mut self, now: u64) {
        self.model.gc(now);
        for id in self.model.maintain(&mut self.registry, now) {
            self.policy.forget(id);
            self.estimator.forget(id);
        }
        self.host_mem = HostMemory::read();
        for f in self.host.tick(&self.cfg.host, now, &self.host_mem) {
            self.host_alert(f, now);
        }
        self.sample_cgroups(now);
        self.prepare_victims(now);
        self.render_metrics(now);
        self.write_status(now);
    }

    /// Samples the host and the cgroups that matter (those with activity,
    /// and every cgroup with a memory limit, which includes every cgroup a
    /// budget can apply to), feeds the samples to the policy (cool-downs
    /// end when memory drops; estimates without the throttle probe) and
    /// to the flight recorder.
    fn sample_cgroups(&mut self, now: u64) {
        let active: Vec<u64> = self
            .model
            .cgroups
            .values()
            .filter(|s| {
                now.saturating_sub(s.last_activity_ns) < 10_000_000_000
                    || s.throttle.in_progress() > 0
            })
            .map(|s| s.id)
            .collect();
        let sample = self.sampler.sample(now, &mut self.registry, &active);
        let estimating =
            !self.tracer.caps.throttle_measured() && self.version == Some(CgroupVersion::V2);
        for c in &sample.cgroups {
            self.policy.memory_dropped(c.id, &c.mem, now);
            if estimating && let Some(path) = self.registry.lookup(c.id) {
                for b in self.policy.budgets_of(c.id, &path) {
                    let window = self.policy.budgets[b].window_ns();
                    if let Some(used) = self.estimator.sample(c.id, now, &c.mem, window)
                        && let Some(d) = self.policy.estimate(b, c.id, &path, used, now)
                    {
                        self.model.state(c.id, &mut self.registry);
                        self.decide(vec![d]);
                    }
                }
            }
            if let Some(st) = self.model.cgroups.get_mut(&c.id) {
                st.memory = Some(c.mem);
            }
        }
        if let Some(w) = self.recorder.as_mut().and_then(FlightRecorder::writer) {
            let reg = &mut self.registry;
            if let Err(e) = w.sample(&sample, &mut |id| reg.path(id)) {
                log::error!("flight recorder stopped: {e}");
                self.recorder = None;
            }
        }
    }

    /// Lets the flight recorder write its chunk when one is due.
    fn tick_recorder(&mut self) {
        if let Some(rec) = &mut self.recorder
            && let Err(e) = rec.tick()
        {
            log::error!("flight recorder stopped: {e}");
            self.recorder = None;
        }
    }

    /// Keeps a verified victim ready for every killing budget whose cgroup
    /// is being throttled, and the kernel brake's rules in step.
    fn prepare_victims(&mut self, now: u64) {
        let active: Vec<(u64, String)> = self
            .model
            .cgroups
            .values()
            .filter(|s| {
                s.throttle.in_progress() > 0 || s.throttle.throttled_in(now, 60_000_000_000) > 0
            })
            .map(|s| (s.id, s.path.to_string()))
            .collect();
        let mut wanted = Vec::new();
        for (id, path) in &active {
            for b in self.policy.budgets_of(*id, path) {
                let budget = &self.policy.budgets[b];
                // Config validation ties a brake to a kill action.
                if budget.action.kills() {
                    wanted.push((b, *id));
                }
            }
        }
        self.prepared.retain(|k, _| wanted.contains(k));
        for (b, id) in &wanted {
            // Re-choose each tick: the largest process can change.
            match self.prepare(*b, *id, now) {
                Some(v) => {
                    self.prepared.insert((*b, *id), v);
                }
                None => {
                    self.prepared.remove(&(*b, *id));
                }
            }
        }
        if let Some(brake) = &mut self.brake {
            let mut keep = Vec::new();
            for (b, id) in &wanted {
                let budget = &self.policy.budgets[*b];
                // A dry run kills nothing, from user space or the kernel.
                if self.opts.dry_run || self.cfg.agent.dry_run || budget.dry_run {
                    continue;
                }
                let Some(cfg) = &budget.brake else {
                    continue;
                };
                let Some(v) = self.prepared.get(&(*b, *id)) else {
                    continue;
                };
                brake.set(
                    *id,
                    tracer_ebpf::BrakeRule {
                        limit_ns: cfg.limit.0.as_nanos() as u64,
                        window_ns: cfg.window.0.as_nanos() as u64,
                        stale_ns: cfg.stale.0.as_nanos() as u64,
                        victim_tgid: v.info.pid,
                        signal: cfg.signal.0 as u32,
                    },
                );
                keep.push(*id);
            }
            brake.retain(&|id| keep.contains(&id));
        }
    }

    fn reload(&mut self) {
        match load_config(self.opts.config_path.as_ref()) {
            Ok(cfg) => {
                log::info!(
                    "configuration reloaded from {}: {} budget(s), {} alert sink(s)",
                    cfg.source,
                    cfg.budgets.len(),
                    cfg.alerts.len()
                );
                let mut policy = Policy::new(cfg.budgets.clone());
                policy.inherit(&self.policy);
                self.policy = policy;
                self.alerter = Alerter::start(&cfg.alerts);
                if cfg.agent.kill_log != self.cfg.agent.kill_log {
                    self.kill_log = match &cfg.agent.kill_log {
                        Some(p) => open_append(p)
                            .map_err(|e| log::error!("kill log {}: {e}", p.display()))
                            .ok(),
                        None => None,
                    };
                }
                let (h, o) = (&cfg.host, &self.cfg.host);
                if cfg.agent.metrics_listen != self.cfg.agent.metrics_listen
                    || (h.psi_window, h.psi_some_stall, h.psi_full_stall)
                        != (o.psi_window, o.psi_some_stall, o.psi_full_stall)
                {
                    log::warn!(
                        "metrics_listen and the [host] PSI triggers take effect at the next start"
                    );
                }
                let a = &cfg.agent;
                let b = &self.cfg.agent;
                if (&a.record_dir, cfg.record_max_bytes, a.record_max_age)
                    != (&b.record_dir, self.cfg.record_max_bytes, b.record_max_age)
                {
                    if let Some(old) = self.recorder.take() {
                        let _ = old.close();
                    }
                    self.recorder = start_recorder(&cfg, &self.tracer, &self.clock);
                }
                self.prepared.clear();
                if let Some(b) = &mut self.brake {
                    b.retain(&|_| false);
                }
                self.cfg = cfg;
                self.stats.reloads_ok += 1;
            }
            Err(e) => {
                self.stats.reloads_failed += 1;
                log::error!("configuration NOT reloaded, the running one stays: {e}");
            }
        }
    }

    fn write_status(&self, now: u64) {
        let mut cgroups = Map::new();
        for st in self.model.cgroups.values() {
            if let Some(s) = self.policy.status(st.id, now) {
                cgroups.insert(st.path.to_string(), json!(s));
            }
        }
        let status = json!({
            "pid": self.self_pid,
            "updated": self.clock.rfc3339(now),
            "config": self.cfg.source,
            "dry_run": self.opts.dry_run || self.cfg.agent.dry_run,
            "kills": self.stats.kills.values().sum::<u64>(),
            "cgroups": cgroups,
            "recent": self.recent,
        });
        let path = &self.opts.status_file;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, status.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    fn render_metrics(&mut self, now: u64) {
        let mut e = Exposition::new();
        e.family("memtrace_agent_up", "gauge", "1 while the agent runs.");
        e.sample("memtrace_agent_up", &[], 1.0);
        e.family(
            "memtrace_agent_uptime_seconds",
            "gauge",
            "Seconds since the agent started.",
        );
        e.sample(
            "memtrace_agent_uptime_seconds",
            &[],
            now.saturating_sub(self.started_ns) as f64 / 1e9,
        );
        e.family(
            "memtrace_probe_attached",
            "gauge",
            "1 when the probe is attached, by mechanism.",
        );
        for p in &self.tracer.caps.probes {
            let m = p.attached.map_or("none", |m| m.as_str());
            e.sample(
                "memtrace_probe_attached",
                &[("probe", p.probe.name()), ("mechanism", m)],
                f64::from(u8::from(p.attached.is_some())),
            );
        }
        e.family(
            "memtrace_events_total",
            "counter",
            "Events received from the kernel.",
        );
        e.sample("memtrace_events_total", &[], self.model.events as f64);
        e.family(
            "memtrace_lost_events_total",
            "counter",
            "Records the kernel could not deliver (ring buffer full), by type.",
        );
        for (k, v) in &self.model.lost {
            e.sample("memtrace_lost_events_total", &[("type", k)], *v as f64);
        }

        let mut cgroups: Vec<_> = self.model.cgroups.values().collect();
        cgroups.sort_by(|a, b| a.path.cmp(&b.path));
        let help = [
            (
                "memtrace_cgroup_throttled_seconds_total",
                "counter",
                "Time at least one task of the cgroup (or below) was in the memory.high throttle.",
            ),
            (
                "memtrace_cgroup_throttle_episodes_total",
                "counter",
                "Throttle episodes of the cgroup's subtree.",
            ),
            (
                "memtrace_cgroup_throttled_ratio",
                "gauge",
                "Share of the last 10 s the cgroup was throttled.",
            ),
        ];
        for (i, (name, kind, text)) in help.iter().enumerate() {
            e.family(name, kind, text);
            for c in &cgroups {
                let v = match i {
                    0 => c.throttle.total_ns as f64 / 1e9,
                    1 => c.throttle.episodes as f64,
                    _ => c.throttle.throttled_in(now, 10_000_000_000) as f64 / 1e10,
                };
                e.sample(name, &[("cgroup", &c.path)], v);
            }
        }
        e.family(
            "memtrace_cgroup_reclaim_seconds",
            "histogram",
            "Memcg reclaim pass latency.",
        );
        for c in cgroups.iter().filter(|c| c.reclaim.count > 0) {
            let buckets: Vec<(f64, u64)> = RECLAIM_BUCKETS
                .iter()
                .copied()
                .zip(c.reclaim.buckets)
                .collect();
            e.histogram(
                "memtrace_cgroup_reclaim_seconds",
                &[("cgroup", &c.path)],
                &buckets,
                c.reclaim.count,
                c.reclaim.total_ns as f64 / 1e9,
            );
        }
        e.family(
            "memtrace_cgroup_reclaimed_pages_total",
            "counter",
            "Pages reclaimed by memcg reclaim.",
        );
        for c in cgroups.iter().filter(|c| c.reclaim.count > 0) {
            e.sample(
                "memtrace_cgroup_reclaimed_pages_total",
                &[("cgroup", &c.path)],
                c.reclaim.pages as f64,
            );
        }
        e.family(
            "memtrace_cgroup_oom_kills_total",
            "counter",
            "OOM kills whose victim was in the cgroup.",
        );
        for c in cgroups.iter().filter(|c| c.oom_kills > 0) {
            e.sample(
                "memtrace_cgroup_oom_kills_total",
                &[("cgroup", &c.path)],
                c.oom_kills as f64,
            );
        }
        for (name, text) in [
            ("memtrace_cgroup_memory_current_bytes", "memory.current"),
            (
                "memtrace_cgroup_memory_high_bytes",
                "memory.high (absent: no limit)",
            ),
            (
                "memtrace_cgroup_memory_max_bytes",
                "memory.max (absent: no limit)",
            ),
        ] {
            e.family(name, "gauge", text);
            for c in &cgroups {
                let Some(m) = &c.memory else { continue };
                let v = match name {
                    "memtrace_cgroup_memory_current_bytes" => m.current,
                    "memtrace_cgroup_memory_high_bytes" => m.high,
                    _ => m.max,
                };
                if let Some(v) = v {
                    e.sample(name, &[("cgroup", &c.path)], v as f64);
                }
            }
        }
        e.family(
            "memtrace_direct_reclaim_seconds",
            "histogram",
            "Global direct reclaim pass latency.",
        );
        let d = &self.model.direct_reclaim;
        let buckets: Vec<(f64, u64)> = RECLAIM_BUCKETS.iter().copied().zip(d.buckets).collect();
        e.histogram(
            "memtrace_direct_reclaim_seconds",
            &[],
            &buckets,
            d.count,
            d.total_ns as f64 / 1e9,
        );

        e.family(
            "memtrace_agent_kills_total",
            "counter",
            "Processes (or cgroups) the agent killed.",
        );
        for ((budget, cgroup, action), n) in &self.stats.kills {
            e.sample(
                "memtrace_agent_kills_total",
                &[("budget", budget), ("cgroup", cgroup), ("action", action)],
                *n as f64,
            );
        }
        e.family(
            "memtrace_agent_would_kill_total",
            "counter",
            "Kills a dry run held back.",
        );
        e.sample(
            "memtrace_agent_would_kill_total",
            &[],
            self.stats.would_kill as f64,
        );
        e.family(
            "memtrace_agent_nothing_to_kill_total",
            "counter",
            "Breaches with no killable process.",
        );
        e.sample(
            "memtrace_agent_nothing_to_kill_total",
            &[],
            self.stats.nothing_to_kill as f64,
        );
        e.family(
            "memtrace_budget_breaches_total",
            "counter",
            "Budget breaches.",
        );
        e.sample(
            "memtrace_budget_breaches_total",
            &[],
            self.stats.breaches as f64,
        );
        e.family(
            "memtrace_budget_warnings_total",
            "counter",
            "Budget warnings.",
        );
        e.sample(
            "memtrace_budget_warnings_total",
            &[],
            self.stats.warnings as f64,
        );
        for (name, h) in [
            (
                "memtrace_agent_kill_breach_to_signal_seconds",
                &self.stats.breach_to_signal,
            ),
            (
                "memtrace_agent_kill_signal_to_exit_seconds",
                &self.stats.signal_to_exit,
            ),
        ] {
            e.family(name, "histogram", "Kill overshoot: from the budget crossing to the signal, and from the signal to the exit.");
            let buckets: Vec<(f64, u64)> = RECLAIM_BUCKETS.iter().copied().zip(h.buckets).collect();
            e.histogram(name, &[], &buckets, h.count, h.total_ns as f64 / 1e9);
        }
        e.family(
            "memtrace_kernel_brakes_total",
            "counter",
            "Times the in-kernel brake signalled a task.",
        );
        e.sample(
            "memtrace_kernel_brakes_total",
            &[],
            self.model.brakes as f64,
        );
        e.family(
            "memtrace_config_reloads_total",
            "counter",
            "SIGHUP reloads by result.",
        );
        e.sample(
            "memtrace_config_reloads_total",
            &[("result", "ok")],
            self.stats.reloads_ok as f64,
        );
        e.sample(
            "memtrace_config_reloads_total",
            &[("result", "invalid")],
            self.stats.reloads_failed as f64,
        );
        e.family(
            "memtrace_alerts_total",
            "counter",
            "Alerts by sink and result.",
        );
        for (label, s) in self.alerter.stats() {
            use std::sync::atomic::Ordering::Relaxed;
            for (result, v) in [
                ("sent", &s.sent),
                ("failed", &s.failed),
                ("suppressed", &s.suppressed),
                ("dropped", &s.dropped),
            ] {
                e.sample(
                    "memtrace_alerts_total",
                    &[("sink", &label), ("result", result)],
                    v.load(Relaxed) as f64,
                );
            }
        }
        let h = &self.host_mem;
        e.family(
            "memtrace_host_mem_available_bytes",
            "gauge",
            "MemAvailable.",
        );
        e.sample(
            "memtrace_host_mem_available_bytes",
            &[],
            h.mem_available as f64,
        );
        e.family("memtrace_host_swap_free_bytes", "gauge", "SwapFree.");
        e.sample("memtrace_host_swap_free_bytes", &[], h.swap_free as f64);
        if let Some(p) = h.pressure {
            e.family(
                "memtrace_host_memory_pressure_seconds_total",
                "counter",
                "Host memory PSI stall time.",
            );
            e.sample(
                "memtrace_host_memory_pressure_seconds_total",
                &[("kind", "some")],
                p.some_total_us as f64 / 1e6,
            );
            e.sample(
                "memtrace_host_memory_pressure_seconds_total",
                &[("kind", "full")],
                p.full_total_us as f64 / 1e6,
            );
        }
        let (rss, cpu) = self_usage();
        e.family(
            "memtrace_agent_resident_bytes",
            "gauge",
            "The agent's resident memory.",
        );
        e.sample("memtrace_agent_resident_bytes", &[], rss as f64);
        e.family(
            "memtrace_agent_cpu_seconds_total",
            "counter",
            "The agent's CPU time.",
        );
        e.sample("memtrace_agent_cpu_seconds_total", &[], cpu);
        if let Ok(mut p) = self.page.lock() {
            *p = Arc::new(e.finish());
        }
    }
}

/// Opens the flight recorder if the configuration asks for one; a failure
/// is logged and the agent runs without it.
fn start_recorder(cfg: &AgentConfig, tracer: &Tracer, clock: &Clock) -> Option<FlightRecorder> {
    let dir = cfg.agent.record_dir.as_ref()?;
    let header = Header::for_this_host(&tracer.caps, &[], clock);
    match FlightRecorder::new(
        dir,
        cfg.record_max_bytes,
        cfg.agent.record_max_age.0,
        header,
    ) {
        Ok(r) => {
            log::info!(
                "flight recorder: {} (at most {}, {:?})",
                dir.display(),
                fmt_bytes(cfg.record_max_bytes),
                cfg.agent.record_max_age.0
            );
            Some(r)
        }
        Err(e) => {
            log::error!("flight recorder not started: {e}");
            None
        }
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn open_append(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

/// Resident bytes and CPU seconds of this process.
fn self_usage() -> (u64, f64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * crate::kernel::info::page_size();
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let cpu = ru.ru_utime.tv_sec as f64
        + ru.ru_utime.tv_usec as f64 / 1e6
        + ru.ru_stime.tv_sec as f64
        + ru.ru_stime.tv_usec as f64 / 1e6;
    (rss, cpu)
}

/// Sleeps until a monotonic timestamp (ns), or forever.
async fn sleep_until_mono(deadline: Option<u64>) {
    match deadline {
        Some(d) => {
            let now = mono_now_ns();
            tokio::time::sleep(Duration::from_nanos(d.saturating_sub(now))).await;
        }
        None => std::future::pending().await,
    }
}
