//! `memtrace agent`: the daemon that ends a memory.high livelock the instant
//! a cgroup's throttling exceeds its budget.
//!
//! The agent owns the loop and calls the stages; it decides nothing
//! itself. One loop on one thread owns the pipeline's state, because the
//! path from an event to a kill must not wait on a lock:
//!
//! ```text
//! ring buffer ─► decode ─► sys (ids) ─► model ─► policy ──► act: kill (pidfd, pre-opened)
//!                                        │          │  └──► act: alerts (own threads)
//!      timer armed at the next ──────────┘          └─────► kill log, recorder, status
//!      possible crossing
//! 1 s tick: the kernel's reclaim totals, samples, victim preparation,
//!           kernel brake rules, host edge, metrics page, status file
//! 250 ms:   kernel brake heartbeat, flight recorder chunk
//! ```
//!
//! The files of this folder are the loop's concerns: [`setup`] (start,
//! hardening), `events` (what arrives from the kernel), `enforce` (breaches
//! and warnings, by the rules of [`crate::policy::enforce`], checked
//! against the kernel first), `kills` (delivering a kill, then telling
//! about it), `prepare` (victims chosen ahead, on their own thread),
//! `background` (the recorder, the kill log and status file, the samples:
//! each on its own thread), `notify` (alerts), `tick` (the once-a-second
//! work), `reload` (SIGHUP), [`status`] (what `top` reads).
//!
//! The loop is the kill path, and nothing on it waits on a disk or scans
//! /proc: victims are prepared ahead on another thread (pidfd, start time,
//! the cause's memory files opened), recording, the kill log, the status
//! file and the samples are queued to threads of their own, and the kernel
//! brake's heartbeat is beaten by this loop, so it proves the kill path
//! itself is alive. From a breach to the signal the loop reads the kernel's
//! map of throttled tasks, two memory files and the victim's cgroup file,
//! then signals; everything else comes after. The agent locks its memory,
//! lowers its own OOM score, raises its priority and never counts or kills
//! itself.

mod background;
mod enforce;
mod events;
mod kills;
mod notify;
mod prepare;
mod reload;
pub mod service;
pub mod setup;
pub mod status;
mod tick;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::act::alert::Alerter;
use crate::act::child::ChildSetup;
use crate::act::kill::Prepared;
use crate::clock::{Clock, mono_now_ns};
use crate::config::{AgentConfig, BudgetConfig};
use crate::kernel::CgroupVersion;
use crate::metrics::Page;
use crate::metrics::page::AgentCounters;
use crate::model::Model;
use crate::policy::budget::{Line, Policy};
use crate::policy::estimate::Estimator;
use crate::policy::host::{ExplainedStall, HostJudge};
use crate::probe::Tracer;
use crate::probe::brake::Brake;
use crate::probe::inflight::{InFlight, Inside};
use crate::probe::reclaim::ReclaimTotalsReader;
use crate::sys::cgroupfs::HostMemory;
use crate::sys::registry::CgroupRegistry;

pub use service::LOCK_FILE;
pub use setup::load_config;
pub use status::STATUS_FILE;

/// How much history the model keeps: the longest budget window is an hour.
const HORIZON_NS: u64 = 3_600_000_000_000;

/// How the agent was started.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The config file; None: the default path, or the embedded default.
    pub config_path: Option<PathBuf>,
    pub dry_run: bool,
    pub status_file: PathBuf,
    /// The one-agent-per-host lock.
    pub lock_file: PathBuf,
}

/// The daemon's state: the pipeline's stages and what the loop keeps
/// between events.
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
    /// The host's leading edge, and the stall cgroups' own limits explain.
    host: HostJudge,
    explained: ExplainedStall,
    host_mem: HostMemory,
    sampler: background::SamplerThread,
    recorder: background::Recorder,
    files: background::Files,
    /// The kernel's map of threads inside the throttle function, and a
    /// buffer to read it into (reused: the kill path allocates nothing).
    inflight: Option<InFlight>,
    /// The kernel's reclaim totals, read each tick, when no record per
    /// reclaim pass crosses the ring (the default).
    reclaim_totals: Option<ReclaimTotalsReader>,
    inside: Vec<Inside>,
    /// Victims chosen and verified ahead, by (budget, line).
    prepared: HashMap<(usize, Line), Prepared>,
    preparer: prepare::Preparer,
    /// Causes a victim was asked for since the last tick.
    asked: std::collections::HashSet<u64>,
    /// Cgroups with a memory.high, from the latest sample: the causes the
    /// kernel brake has rules for.
    limited_high: Vec<u64>,
    kills: kills::Pending,
    own_exe: String,
    /// Kretprobe returns the kernel missed, as last read.
    missed_returns: u64,
    page: Page,
    counters: AgentCounters,
    self_pid: u32,
    hostname: String,
    /// systemd: readiness, reloads, status.
    notifier: service::Notifier,
    /// systemd's watchdog, fed by the kill path.
    watchdog: service::Watchdog,
    /// How `exec` alert programs start.
    child: Arc<ChildSetup>,
    /// Held for the agent's life.
    _lock: service::HostLock,
    status: status::Recent,
    /// The names a path does not tell (`[names] enrich`), off the loop.
    enricher: Option<crate::sys::enrich::Enricher>,
    /// Where the current breach's way to its signal went.
    steps: Steps,
}

/// Monotonic instants of the kill path's steps for the breach being acted
/// on, logged after the signal (stores only: the path allocates nothing).
#[derive(Clone, Copy, Debug, Default)]
struct Steps {
    /// The timer found the breach (else an event did, at `woke_ns`).
    timer: bool,
    deadline_ns: u64,
    woke_ns: u64,
    /// The ring drained and the budgets evaluated: the breach is known.
    found_ns: u64,
    /// The kernel's map of throttled tasks read and reconciled.
    confirmed_ns: u64,
    /// The cause's memory.high and memory.current read.
    cause_read_ns: u64,
}

impl Agent {
    /// Reading a process's cmdline takes its mmap lock, which a process
    /// stuck in reclaim can hold for long: read it only when a rule
    /// matches on it.
    fn wants_cmdline(&self, budget: &BudgetConfig) -> bool {
        !(budget.avoid.is_empty() && budget.prefer.is_empty() && self.cfg.agent.protect.is_empty())
    }

    fn dry(&self, budget: &BudgetConfig) -> bool {
        self.opts.dry_run || self.cfg.agent.dry_run || budget.dry_run
    }

    /// Runs until SIGTERM or SIGINT. Each arm of the loop is one call.
    pub async fn run(mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut source = crate::ring::EventSource::new(&mut self.tracer)?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(Duration::from_millis(250));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ebpf_log = self.start_ebpf_log();
        let mut timer = crate::sys::timer::Deadline::new()?;

        let metrics_at = self.start_metrics().await;
        let (psi_tx, mut psi_rx) = mpsc::unbounded_channel();
        self.start_psi_triggers(psi_tx);
        self.tick(mono_now_ns());
        setup::lock_memory();
        self.log_ready(&metrics_at);
        self.notifier.ready(&self.status_line());
        self.watchdog.ping();

        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                // Not biased: a burst of events must not starve the
                // heartbeat, the timers or the signals.
                e = source.next() => self.on_event(e),
                () = timer.until(deadline) => self.on_deadline(&mut source, deadline, mono_now_ns()),
                _ = beat.tick() => self.on_beat(mono_now_ns()),
                _ = tick.tick() => self.tick(mono_now_ns()),
                () = setup::ebpf_log_ready(&mut ebpf_log) => {}
                Some(batch) = self.preparer.answers.recv() => self.on_prepared(batch),
                Some(s) = self.sampler.samples.recv() => self.on_sample(s),
                Some(line) = psi_rx.recv() => self.on_psi(line),
                Some(exit) = self.kills.exits.recv() => self.on_exit(exit),
                _ = hup.recv() => self.reload(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        self.stop().await;
        Ok(())
    }

    /// When the timer must fire next: the earliest instant a budget can be
    /// crossed. Without the throttle probe the model has no episodes, and
    /// estimated breaches are re-checked with each sample.
    fn next_deadline(&mut self) -> Option<u64> {
        if self.tracer.caps.throttle_measured() {
            self.policy.next_deadline(&self.model, mono_now_ns())
        } else {
            None
        }
    }

    /// The deadline timer fired: evaluate what may have crossed. Events
    /// already in the ring come first: an episode's end waiting there must
    /// not count as throttling still going on.
    fn on_deadline(
        &mut self,
        source: &mut crate::ring::EventSource,
        deadline: Option<u64>,
        now: u64,
    ) {
        self.steps = Steps {
            timer: true,
            deadline_ns: deadline.unwrap_or(now),
            woke_ns: now,
            ..Steps::default()
        };
        source.drain();
        while let Some(e) = source.try_next() {
            self.on_event(e);
        }
        let ids = self.policy.due(&self.model, now);
        let decisions = self.policy.evaluate(&self.model, &ids, now);
        self.policy.expire_retries(now);
        self.decide(decisions);
        self.steps.timer = false;
    }

    /// Four times a second: the kernel brake's heartbeat, beaten by the
    /// kill path itself, so a stalled loop lets the brake act.
    fn on_beat(&mut self, now: u64) {
        // The loop is the kill path: it turning is what systemd watches.
        self.watchdog.ping();
        if let Some(b) = &mut self.brake {
            b.beat(now);
        }
    }

    async fn stop(self) {
        log::info!("memtrace agent stopping");
        self.notifier.stopping();
        let mut this = self;
        this.finish_kill_log().await;
        let Self {
            recorder,
            files,
            opts,
            child,
            ..
        } = this;
        recorder.close();
        files.close();
        let _ = std::fs::remove_file(&opts.status_file);
        child.remove();
    }

    /// A cgroup for people: `<name> (<path>)`, or the path alone when the
    /// name adds nothing; `#id` when unknown, `?` for none.
    fn who(&self, id: u64) -> String {
        match self.registry.name(id) {
            Some(n) => n.describe(&self.path(id)),
            None => self.path(id),
        }
    }

    /// [`Self::who`] of a cgroup path.
    fn describe(&self, path: &str) -> String {
        self.registry
            .id(path)
            .and_then(|id| self.registry.name(id))
            .map_or_else(|| path.to_string(), |n| n.describe(path))
    }

    /// The short name of a cgroup path, for a second mention in a line.
    fn short(&self, path: &str) -> String {
        self.registry
            .id(path)
            .and_then(|id| self.registry.name(id))
            .map_or_else(|| path.to_string(), |n| n.name().to_string())
    }

    /// A cgroup's path for people: `#id` when unknown, `?` for none.
    fn path(&self, id: u64) -> String {
        use crate::model::Hierarchy;
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
}

/// A share in percent, 0 for an empty whole.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}
