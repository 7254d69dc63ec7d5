//! Starting the agent: the configuration, the probes, the consumers that
//! need the kernel or the network (metrics endpoint, PSI triggers, the
//! eBPF programs' own log), and making the process hard to starve or kill.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::prepare::Preparer;
use super::{Agent, AgentOptions, HORIZON_NS, background, kills, status};
use crate::act::alert::Alerter;
use crate::act::child::ChildSetup;
use crate::clock::Clock;
use crate::config::{AgentConfig, ConfigError};
use crate::kernel::CgroupVersion;
use crate::metrics::page::AgentCounters;
use crate::model::Model;
use crate::policy::budget::Policy;
use crate::policy::estimate::Estimator;
use crate::policy::host::{ExplainedStall, HostJudge};
use crate::probe::brake::Brake;
use crate::probe::inflight::InFlight;
use crate::probe::reclaim::ReclaimTotalsReader;
use crate::probe::{LoadOptions, Probe, Tracer};
use crate::record::Header;
use crate::sys::cgroupfs::HostMemory;
use crate::sys::psi::PsiLine;
use crate::sys::registry::CgroupRegistry;

/// A cgroup with no recent events, not near its limits, is sampled one
/// tick (second) in this many.
const QUIET_SAMPLE_EVERY: u32 = 10;

/// The eBPF programs' log (`aya-log`), read when its ring has records.
pub(super) type EbpfLog = Option<AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>>;

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

/// Makes the agent hard to starve or kill: the lowest OOM score, a high
/// priority, one malloc arena. Its memory is locked once it is set up
/// ([`lock_memory`]). Each failure is logged, none is fatal.
fn harden() {
    // One arena: every other thread would reserve 64 MiB of address space
    // for its own, which locking then counts in full. (The shipped static
    // binary uses musl's malloc, which has no arenas.)
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes plain values.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1)
    };
    // Room for a directory held open per limited cgroup (the sampler).
    crate::sys::own::raise_fd_limit();
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        log::warn!("could not set the agent's oom_score_adj to -1000: {e}");
    }
    // SAFETY: setpriority takes plain values.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
        log::warn!(
            "could not raise the agent's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The enrichment thread, when the configuration wants names looked up;
/// from then on the registry collects what to ask.
pub(super) fn start_enricher(
    cfg: &AgentConfig,
    registry: &mut CgroupRegistry,
) -> Option<crate::sys::enrich::Enricher> {
    if !cfg.names.enrich {
        registry.stop_names();
        return None;
    }
    let e = crate::sys::enrich::Enricher::start(cfg.names.sources());
    if e.is_some() {
        // Also for a restart: the old thread's unanswered questions go to
        // this one.
        registry.want_names();
    } else {
        registry.stop_names();
        log::warn!("names: no thread for lookups; cgroups are named from their paths alone");
    }
    e
}

/// Locks the agent's memory, once setup (BTF, loading the programs) has
/// come and gone: what setup freed is given back first, so it is not
/// locked for good. Pages are locked as they are used (`MCL_ONFAULT`, as
/// earlyoom does): what the loop touches stays resident, code it never
/// runs is not read in just to be locked. The kill path is run once
/// before ([`crate::act::kill::warm_up`]), so it is resident too.
pub(super) fn lock_memory() {
    // musl's malloc gives freed memory back by itself and has no trim.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0)
    };
    crate::act::kill::warm_up();
    let flags = libc::MCL_CURRENT | libc::MCL_FUTURE;
    // SAFETY: mlockall takes plain flags. MCL_ONFAULT is Linux 4.4+;
    // older kernels refuse it, and get the whole mapping locked.
    let locked = unsafe { libc::mlockall(flags | libc::MCL_ONFAULT) } == 0
        || unsafe { libc::mlockall(flags) } == 0;
    if !locked {
        log::warn!(
            "could not lock the agent's memory (mlockall: {}); it may be paged out under pressure",
            std::io::Error::last_os_error()
        );
    }
}

impl Agent {
    /// Loads the probes and everything the loop needs. The configuration is
    /// validated by the caller first, so a bad one changes nothing.
    pub fn new(opts: AgentOptions, cfg: AgentConfig) -> anyhow::Result<Self> {
        // First: a second agent must change nothing, not even priorities.
        let lock = super::service::HostLock::acquire(&opts.lock_file)?;
        harden();
        let load = LoadOptions {
            // The kernel counts passes per cgroup; a record per pass only
            // for a flight recorder that keeps them (validated: it needs
            // record_dir).
            reclaim_records: cfg.agent.record_reclaim_passes,
            ..LoadOptions::from_env()?
        };
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
        if cfg.host.swap_for.is_some() || cfg.host.mem_available_for.is_some() {
            log::warn!(
                "[host] swap_for and mem_available_for are no longer used: the host verdict judges \
                 how fast memory and swap fall (exhaustion_within, trend_window); remove them"
            );
        }
        let throttle = tracer.caps.throttle_measured();
        if !throttle && !cfg.budgets.is_empty() {
            log::warn!(
                "no throttle probe: budgets are checked against ESTIMATES from memory.pressure \
                 and memory.events (once a second, not the instant a budget is crossed)"
            );
        }
        // The brake's maps are taken whenever the throttle probe runs, so a
        // brake added by a reload works too.
        let wants_brake = cfg.budgets.iter().any(|b| b.brake.is_some());
        let brake = if throttle {
            Some(Brake::new(&mut tracer)?)
        } else {
            if wants_brake {
                log::warn!(
                    "kernel brake unavailable: it runs in the throttle probe, which this kernel refuses"
                );
            }
            None
        };
        let inflight = if throttle {
            Some(InFlight::new(&mut tracer)?)
        } else {
            None
        };
        // Without records the model learns reclaim from the kernel's
        // totals; with them, from the records only (never both).
        let reclaim_totals = if tracer.reclaim_records {
            None
        } else {
            Some(ReclaimTotalsReader::new(&mut tracer)?)
        };
        let mut registry = CgroupRegistry::new(hierarchy.as_ref());
        let enricher = start_enricher(&cfg, &mut registry);
        let self_pid = std::process::id();
        let kill_log = match &cfg.agent.kill_log {
            Some(p) => {
                Some(open_append(p).with_context(|| format!("opening kill log {}", p.display()))?)
            }
            None => None,
        };
        let page_size = tracer.caps.kernel.page_size;
        let hostname = tracer.caps.kernel.hostname.clone();
        let child = Arc::new(child_setup(&cfg, hierarchy.as_ref()));
        let alerter = Alerter::start(&cfg.alerts, &child).map_err(anyhow::Error::msg)?;
        let notifier = super::service::Notifier::from_env();
        let watchdog = notifier.watchdog();
        if watchdog.enabled() {
            log::info!("systemd watchdog: fed by the kill path");
        }
        let clock = Clock::now();
        // Quiet cgroups every 10 s: breaches come from the throttle events,
        // and a thousand cgroups read every second cost more CPU than
        // everything else the agent does at rest. Not when budgets are
        // judged from estimates (v2 without the probe): those come from
        // the samples, every second.
        let estimating = !throttle && version == Some(CgroupVersion::V2);
        let spread = if estimating { 1 } else { QUIET_SAMPLE_EVERY };
        let sampler = background::SamplerThread::start(hierarchy.clone(), page_size, spread);
        let recorder = background::Recorder::start(recorder_setup(&cfg, &tracer, &clock));
        let own_exe = std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
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
            host: HostJudge::default(),
            explained: ExplainedStall::default(),
            host_mem: HostMemory::default(),
            sampler,
            recorder,
            files: background::Files::start(kill_log),
            inflight,
            reclaim_totals,
            inside: Vec::with_capacity(1024),
            prepared: HashMap::new(),
            preparer: Preparer::start(self_pid, page_size),
            asked: std::collections::HashSet::new(),
            limited_high: Vec::new(),
            kills: kills::Pending::new(),
            own_exe,
            missed_returns: 0,
            page: Arc::new(Mutex::new(Arc::new(String::new()))),
            counters: AgentCounters::default(),
            self_pid,
            hostname,
            notifier,
            watchdog,
            child,
            _lock: lock,
            status: status::Recent::default(),
            enricher,
            steps: super::Steps::default(),
        })
    }

    pub(super) async fn start_metrics(&mut self) -> String {
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

    pub(super) fn start_psi_triggers(&self, tx: mpsc::UnboundedSender<PsiLine>) {
        if self.cfg.host.enabled
            && self.tracer.caps.kernel.psi
            && let Err(e) = crate::sys::psi::start_psi_triggers(&self.cfg.host, tx)
        {
            log::warn!("host memory pressure is sampled, not triggered: {e}");
        }
    }

    /// Forwards what the eBPF programs log (the kernel brake says when it
    /// fires) to the agent's log. Without it the agent runs as well.
    pub(super) fn start_ebpf_log(&mut self) -> EbpfLog {
        let logger = match aya_log::EbpfLogger::init(self.tracer.ebpf_mut()) {
            Ok(l) => l,
            Err(e) => {
                log::debug!("the eBPF programs' log is not read: {e}");
                return None;
            }
        };
        // SAFETY: the logger owns its ring buffer's fd and keeps it open
        // and the same until it is dropped, inside the AsyncFd.
        match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::debug!("the eBPF programs' log is not read: {e}");
                None
            }
        }
    }

    /// One line for `systemctl status`.
    pub(super) fn status_line(&self) -> String {
        format!(
            "{} budget(s), {} alert sink(s), throttle probe {}{}",
            self.cfg.budgets.len(),
            self.cfg.alerts.len(),
            if self.tracer.caps.throttle_measured() {
                "attached"
            } else {
                "UNAVAILABLE (estimates)"
            },
            if self.opts.dry_run || self.cfg.agent.dry_run {
                ", DRY RUN"
            } else {
                ""
            }
        )
    }

    pub(super) fn log_ready(&self, metrics_at: &str) {
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
    }
}

/// Waits for records in the eBPF programs' log and writes them to the
/// agent's log; never returns when there is no log to read.
pub(super) async fn ebpf_log_ready(log: &mut EbpfLog) {
    let Some(fd) = log.as_mut() else {
        return std::future::pending().await;
    };
    let Ok(mut guard) = fd.readable_mut().await else {
        *log = None;
        return;
    };
    // aya-log unwraps a record it cannot parse; a bad record must not take
    // the agent down with it.
    let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        guard.get_inner_mut().flush();
    }));
    guard.clear_ready();
    if flushed.is_err() {
        log::error!(
            "the eBPF programs' log sent a record this build cannot read; no longer reading it"
        );
        *log = None;
    }
}

/// What the flight recorder's header says when the agent runs without
/// per-pass reclaim records.
pub(super) const RECLAIM_PASSES_NOT_RECORDED: &str = "reclaim passes not recorded: the agent counted \
     them in the kernel only (set [agent] record_reclaim_passes = true to keep them)";

/// Where the flight recorder writes, if the configuration asks for one.
pub(super) fn recorder_setup(
    cfg: &AgentConfig,
    tracer: &Tracer,
    clock: &Clock,
) -> Option<background::RecorderSetup> {
    let dir = cfg.agent.record_dir.as_ref()?;
    let mut header = Header::for_this_host(&tracer.caps, &[], clock);
    // A report of this recording must not read "no reclaim" into the
    // absence of reclaim records.
    if !tracer.reclaim_records {
        header.degraded.push(RECLAIM_PASSES_NOT_RECORDED.into());
    }
    Some(background::RecorderSetup {
        dir: dir.clone(),
        max_bytes: cfg.record_max_bytes,
        max_age: cfg.agent.record_max_age.0,
        header,
    })
}

/// How `exec` alert programs will start: moved out of the agent's cgroup
/// where the memory controller is on cgroup v2, and only when the
/// configuration has an exec sink (no empty cgroup otherwise).
pub(super) fn child_setup(
    cfg: &AgentConfig,
    hierarchy: Option<&crate::kernel::MemoryHierarchy>,
) -> ChildSetup {
    if !cfg
        .alerts
        .iter()
        .any(|a| a.kind == crate::config::AlertKind::Exec)
    {
        return ChildSetup::default();
    }
    let v2 = hierarchy
        .filter(|h| h.version == CgroupVersion::V2)
        .map(|h| h.mount.as_path());
    ChildSetup::prepare(v2)
}

/// Opens a file for appending, creating its directory.
pub(super) fn open_append(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}
