//! `memtrace top`'s live data: the pipeline (probes → ring buffer → model)
//! pumped from the terminal loop's thread, a sample of the cgroups every
//! refresh, and the agent's state from its status file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use memtrace_ui::{Command, Snapshot, SnapshotSource, Source};

use crate::act::kill::Prepared;
use crate::clock::{Clock, mono_now_ns};
use crate::config::filter::CgroupFilter;
use crate::model::Model;
use crate::policy::victim::{Rules, protected};
use crate::probe::inflight::{InFlight, Inside};
use crate::probe::{LoadOptions, Probe, Tracer};
use crate::record::Sample;
use crate::ring::stream::EventSource;
use crate::screen::view::{Identity, View, read_agent_status};
use crate::sys::enrich::{Enricher, Sources};
use crate::sys::procs::read_process;
use crate::sys::registry::CgroupRegistry;
use crate::sys::sampler::Sampler;

pub struct LiveSource {
    // Owns the reactor the ring buffer's fd is registered with.
    _rt: tokio::runtime::Runtime,
    _tracer: Tracer,
    source: EventSource,
    /// The kernel's map of throttled tasks: episodes in progress are shown
    /// only while the kernel confirms them.
    inflight: Option<InFlight>,
    inside: Vec<Inside>,
    /// memtrace's own executable: `top` never kills a memtrace process.
    own_exe: String,
    registry: CgroupRegistry,
    model: Model,
    sampler: Sampler,
    sample: Option<Sample>,
    view: View,
    identity: Identity,
    clock: Clock,
    last_sample: Option<Instant>,
    last_lost: Instant,
    status_file: PathBuf,
    page_size: u64,
    /// Start time of each process events named, read when its first event
    /// arrived (None: already gone). A row pinned to this can never be
    /// confused with a later process that reused the pid.
    starts: HashMap<u32, Option<u64>>,
    /// The cgroup whose processes were read for the detail pane since the
    /// last sample.
    detail_procs: Option<u64>,
    version: Option<crate::kernel::CgroupVersion>,
    /// Container, pod and user names, looked up off the screen's thread.
    enricher: Option<Enricher>,
}

impl LiveSource {
    pub fn new(status_file: PathBuf) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut tracer = Tracer::load(&LoadOptions::from_env()?)?;
        let source = {
            let _guard = rt.enter();
            EventSource::new(&mut tracer)?
        };
        let inflight = if tracer.caps.throttle_measured() {
            InFlight::new(&mut tracer).ok()
        } else {
            None
        };
        let caps = &tracer.caps;
        let hierarchy = caps.kernel.cgroups.memory.clone();
        let probe_mode = match caps.probe(Probe::Throttle).and_then(|p| p.attached) {
            Some(m) => m.as_str().to_string(),
            None => "UNAVAILABLE".to_string(),
        };
        let degraded = banner(caps);
        let identity = Identity {
            host: caps.kernel.hostname.clone(),
            kernel: caps.kernel.release.clone(),
            probe_mode,
            degraded,
            throttle_unmeasured: !caps.throttle_measured(),
        };
        let page_size = caps.kernel.page_size;
        let mut registry = CgroupRegistry::new(hierarchy.as_ref());
        let enricher = Enricher::start(Sources::default());
        if enricher.is_some() {
            registry.want_names();
        }
        Ok(Self {
            _rt: rt,
            registry,
            enricher,
            version: hierarchy.as_ref().map(|h| h.version),
            sampler: Sampler::new(
                CgroupFilter::default(),
                hierarchy.as_ref().map(|h| h.version),
                page_size,
            ),
            _tracer: tracer,
            source,
            inflight,
            inside: Vec::new(),
            own_exe: std::fs::read_link("/proc/self/exe")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            model: Model::new(std::process::id(), 15 * 60 * 1_000_000_000),
            sample: None,
            view: View::default(),
            identity,
            clock: Clock::now(),
            last_sample: None,
            last_lost: Instant::now(),
            status_file,
            page_size,
            starts: HashMap::new(),
            detail_procs: None,
        })
    }

    /// An INFO line in the log (what `top` did to itself at start).
    pub fn note_info(&mut self, text: String) {
        let time = self
            .clock
            .hms(mono_now_ns())
            .get(..8)
            .unwrap_or_default()
            .to_string();
        self.view.note(
            0,
            memtrace_ui::LogLine {
                time,
                kind: memtrace_ui::LogKind::Info,
                text,
            },
        );
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            self_pid: std::process::id(),
            own_exe: &self.own_exe,
            protect: &[],
            avoid: &[],
            prefer: &[],
        }
    }

    fn kill(&self, pid: u32, comm: &str, start_time: Option<u64>) -> Result<String, String> {
        let gone = || format!("not killed: {comm}[{pid}] has exited (or its pid was reused)");
        let p = read_process(pid, self.page_size, false).ok_or_else(gone)?;
        // The pid may have been reused since the screen showed it.
        if start_time != Some(p.start_time) {
            return Err(gone());
        }
        if let Some(why) = protected(&p, &self.rules()) {
            return Err(format!("refused to kill {}[{pid}]: {why}", p.comm));
        }
        let v = Prepared::new(p).map_err(|e| format!("kill {pid}: {e}"))?;
        v.signal(libc::SIGKILL)
            .map_err(|e| format!("kill {}[{pid}]: {e}", v.info.comm))?;
        Ok(format!("killed {}[{pid}] (SIGKILL)", v.info.comm))
    }
}

/// One short line on what the screen cannot show here, if anything: the
/// long explanations are `memtrace check`'s job.
fn banner(caps: &crate::probe::Capabilities) -> Vec<String> {
    let mut parts = Vec::new();
    if !caps.throttle_measured() {
        parts
            .push("throttle probe unavailable: memory.high throttling is not measured".to_string());
    }
    if caps.kernel.cgroups.memory.as_ref().map(|m| m.version)
        == Some(crate::kernel::CgroupVersion::V1)
    {
        parts.push("memory controller on cgroup v1 (no memory.high)".to_string());
    }
    if parts.is_empty() {
        return Vec::new();
    }
    vec![format!("{}; see memtrace check", parts.join("; "))]
}

impl SnapshotSource for LiveSource {
    fn pump(&mut self) {
        self.source.drain();
        if self.last_lost.elapsed() >= Duration::from_secs(1) {
            self.source.poll_lost();
            self.last_lost = Instant::now();
        }
        while let Some(mut e) = self.source.try_next() {
            self.registry.complete(&mut e);
            if let Some(t) = e.task() {
                let tgid = t.tgid;
                self.starts
                    .entry(tgid)
                    .or_insert_with(|| crate::sys::procs::start_time(tgid));
            }
            self.model.apply(&e, &self.registry);
            self.view.event(&e, &self.registry, &self.clock);
        }
    }

    fn snapshot(&mut self, detail: Option<u64>) -> Snapshot {
        self.pump();
        let now = mono_now_ns();
        if self
            .last_sample
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(900))
        {
            let active: Vec<u64> = self
                .model
                .cgroups
                .values()
                .filter(|s| now.saturating_sub(s.last_activity_ns) < 10_000_000_000)
                .map(|s| s.id)
                .collect();
            self.sample = Some(self.sampler.sample(now, &mut self.registry, &active));
            self.detail_procs = None;
            self.last_sample = Some(Instant::now());
            self.model.gc(now);
            if let Some(inflight) = &self.inflight {
                inflight.read(&mut self.inside);
                let inside = &self.inside;
                self.model.reconcile(now, &|tid, start| {
                    crate::probe::inflight::is_inside(inside, tid, start)
                });
            }
            let shown: std::collections::HashSet<u32> = self
                .model
                .cgroups
                .values()
                .flat_map(|c| c.tasks.keys().copied())
                .collect();
            self.starts.retain(|pid, _| shown.contains(pid));
            read_agent_status(&self.status_file, &mut self.view);
            if let Some(e) = &self.enricher {
                self.registry.learn(e.answers());
                let back = e.ask(self.registry.take_asks());
                self.registry.requeue(back);
            }
        }
        // The selected cgroup's processes, whatever the sampler chose: read
        // once per sample, the moment it is opened.
        if let (Some(id), Some(sample)) = (detail, self.sample.as_mut())
            && self.detail_procs != Some(id)
        {
            self.detail_procs = Some(id);
            let found = sample.cgroups.iter().position(|c| c.id == id);
            if found.is_none_or(|i| sample.cgroups[i].top.is_empty())
                && let Some(path) = self.registry.lookup(id)
                && let Some(dir) = self.registry.dir(&path)
            {
                let top = self.sampler.processes(&dir, &path);
                match found {
                    Some(i) => sample.cgroups[i].top = top,
                    None => sample.cgroups.push(crate::record::CgroupSample {
                        id,
                        mem: crate::sys::cgroupfs::CgroupMemory::read(
                            &dir,
                            self.version.unwrap_or(crate::kernel::CgroupVersion::V2),
                        ),
                        top,
                    }),
                }
            }
        }
        let mut snap = self.view.build(
            &self.model,
            self.sample.as_ref(),
            &self.registry,
            &self.identity,
            Source::Live,
            &self.clock,
            now,
            detail,
        );
        // Only the detail pane's tasks can be killed: pin each to its start
        // time, so a kill never reaches a process that reused the pid.
        for row in snap.cgroups.iter_mut().filter(|r| Some(r.id) == detail) {
            for t in &mut row.tasks {
                // Rows from events keep the start time of their first
                // event; the others were read from /proc just now.
                t.start_time = match self.starts.get(&t.pid) {
                    Some(known) => *known,
                    None => crate::sys::procs::start_time(t.pid),
                };
                // The dialog is not offered for what the kill would refuse.
                t.protected = read_process(t.pid, self.page_size, false)
                    .and_then(|p| protected(&p, &self.rules()));
            }
        }
        snap
    }

    fn command(&mut self, c: &Command) -> Result<String, String> {
        match c {
            Command::Kill {
                pid,
                comm,
                start_time,
            } => {
                let r = self.kill(*pid, comm, *start_time);
                // What top did belongs in its log, beside the agent's kills.
                let (kind, text) = match &r {
                    Ok(m) => (memtrace_ui::LogKind::Kill, m.clone()),
                    Err(m) => (memtrace_ui::LogKind::Info, m.clone()),
                };
                let time = self
                    .clock
                    .hms(mono_now_ns())
                    .get(..8)
                    .unwrap_or_default()
                    .to_string();
                self.view.note(0, memtrace_ui::LogLine { time, kind, text });
                r
            }
            Command::Pause(true) => {
                Ok("paused: the picture is frozen, collection goes on (p resumes)".into())
            }
            Command::Pause(false) => Ok(String::new()),
            _ => Ok(String::new()),
        }
    }
}
