//! What the kernel allowed: each probe, the mechanisms tried and why each
//! failed, and what memtrace cannot see as a result (`memtrace check`
//! prints it; the agent logs it at start).

use serde::Serialize;

use crate::kernel::offsets::Resolved;
use crate::kernel::{CgroupVersion, KernelInfo};

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    Fentry,
    Kprobe,
    RawTracepoint,
    Tracepoint,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::RawTracepoint => "raw_tracepoint",
            Self::Tracepoint => "tracepoint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "fentry" | "fexit" => Self::Fentry,
            "kprobe" | "kretprobe" => Self::Kprobe,
            "raw_tracepoint" | "raw_tp" => Self::RawTracepoint,
            "tracepoint" | "tp" => Self::Tracepoint,
            _ => return None,
        })
    }
}

/// The probes memtrace attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    Throttle,
    MemcgReclaim,
    DirectReclaim,
    OomKill,
    OomMemcg,
    TaskExit,
}

impl Probe {
    pub const ALL: [Self; 6] = [
        Self::Throttle,
        Self::MemcgReclaim,
        Self::DirectReclaim,
        Self::OomKill,
        Self::OomMemcg,
        Self::TaskExit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::MemcgReclaim => "memcg_reclaim",
            Self::DirectReclaim => "direct_reclaim",
            Self::OomKill => "oom_kill",
            Self::OomMemcg => "oom_memcg",
            Self::TaskExit => "task_exit",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Self::Throttle => "memory.high throttle episodes",
            Self::MemcgReclaim => "memcg reclaim latency and pages",
            Self::DirectReclaim => "global direct reclaim",
            Self::OomKill => "OOM kills",
            Self::OomMemcg => "which memory cgroup ran out at an OOM",
            Self::TaskExit => "per-task state dropped when a task exits",
        }
    }
}

/// One try at attaching a probe.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub mechanism: Mechanism,
    pub target: String,
    /// `None` when it worked.
    pub error: Option<String>,
}

/// How one probe fared.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub probe: Probe,
    pub what: &'static str,
    pub attached: Option<Mechanism>,
    pub attempts: Vec<Attempt>,
}

impl ProbeReport {
    pub fn ok(&self) -> bool {
        self.attached.is_some()
    }
}

/// What this kernel allows memtrace to see, and what is degraded and why.
#[derive(Clone, Debug, Serialize)]
pub struct Capabilities {
    pub kernel: KernelInfo,
    pub throttle_function: Option<&'static str>,
    pub probes: Vec<ProbeReport>,
    /// BTF groups that could not be resolved.
    pub btf_problems: Vec<String>,
    /// Consequences for the user, one sentence each.
    pub degraded: Vec<String>,
}

impl Capabilities {
    pub fn probe(&self, p: Probe) -> Option<&ProbeReport> {
        self.probes.iter().find(|r| r.probe == p)
    }

    /// Whether throttle episodes are measured.
    pub fn throttle_measured(&self) -> bool {
        self.probe(Probe::Throttle).is_some_and(ProbeReport::ok)
    }

    pub fn all_attached(&self) -> bool {
        self.probes.iter().all(ProbeReport::ok)
    }
}

/// What the capabilities mean for the user.
pub(super) fn degradations(caps: &Capabilities, r: &Resolved) -> Vec<String> {
    let mut out = Vec::new();
    let ok = |p: Probe| caps.probe(p).is_some_and(ProbeReport::ok);
    if let Some(mem) = &caps.kernel.cgroups.memory
        && mem.version == CgroupVersion::V1
    {
        out.push(format!(
            "the memory controller is on cgroup v1 ({}): memory.high and memory.pressure \
             exist only in cgroup v2, so memory.high throttling cannot occur here; memcg \
             reclaim and OOM kills are still traced",
            mem.mount.display()
        ));
    }
    if caps.kernel.cgroups.memory.is_none() {
        out.push("no memory controller is mounted: no memory cgroup to watch".into());
    }
    if !caps.kernel.kill.process_mrelease {
        out.push(
            "a killed victim's memory is freed by its own exit, not at once by the agent \
             (process_mrelease needs Linux 5.15): under heavy throttling the cgroup stays \
             over memory.high a little longer after a kill"
                .into(),
        );
    }
    if caps.kernel.cgroups.v2_mount.is_some() && !caps.kernel.kill.cgroup_kill {
        out.push(
            "action kill-cgroup signals the cgroup's processes one by one (cgroup.kill needs \
             Linux 5.14): a process forked meanwhile can survive it"
                .into(),
        );
    }
    if !ok(Probe::Throttle) {
        out.push(
            "throttle episodes are not measured: memtrace cannot see time spent in the \
             memory.high throttle; the agent falls back to memory.events `high` deltas and \
             memory.pressure, reported as estimates"
                .into(),
        );
    } else if !r.has(tracer_ebpf::config_flags::NR_PAGES_OVER_HIGH) {
        out.push(
            "empty throttle calls are not filtered in the kernel (task_struct field \
             missing from BTF): the ring buffer carries many zero-length episodes"
                .into(),
        );
    }
    if ok(Probe::Throttle) && !r.has(tracer_ebpf::config_flags::MEMCG_COUNTERS) {
        out.push(
            "the over-high ancestor of a throttled cgroup is not identified: budgets take each \
             task's own memory cgroup as the cause of its throttling"
                .into(),
        );
    }
    if ok(Probe::Throttle) && !r.has(tracer_ebpf::config_flags::TASK_START) {
        out.push(
            "the kernel brake knows its victim by pid only (task start time missing from BTF)"
                .into(),
        );
    }
    if !ok(Probe::TaskExit) {
        out.push(
            "per-task entries of tasks that exit inside a hook are not dropped at once; \
             a missed exit is counted as lost"
                .into(),
        );
    }
    if !r.has(tracer_ebpf::config_flags::CGROUP_WALK) {
        out.push("events cannot be attributed to memory cgroups (offsets missing from BTF)".into());
    }
    if ok(Probe::MemcgReclaim) && r.config.memcg_reclaim_begin_memcg_arg == tracer_ebpf::NO_ARG {
        out.push(
            "memcg reclaim is attributed to the charging task's memory cgroup: this kernel's \
             tracepoint does not name the reclaimed cgroup, which can be an ancestor"
                .into(),
        );
    }
    if !ok(Probe::OomMemcg) {
        out.push(
            "which memory cgroup ran out at an OOM is not reported (needs fentry or kprobes on \
             mem_cgroup_out_of_memory); the victim's own cgroup is"
                .into(),
        );
    }
    if ok(Probe::OomKill) && !oom_victim_task(caps, r) {
        out.push(
            "OOM victims are known by pid only (mark_victim passes the task from Linux 6.8, \
             and mark_oom_victim could not be traced): their name, memory cgroup and RSS \
             are looked up in /proc, which a fast exit can beat"
                .into(),
        );
    }
    for p in [Probe::MemcgReclaim, Probe::DirectReclaim, Probe::OomKill] {
        if !ok(p) {
            out.push(format!("{} are not traced", p.what()));
        }
    }
    out
}

/// Whether the OOM probe that attached reads the victim's task, not only
/// its pid.
fn oom_victim_task(caps: &Capabilities, r: &Resolved) -> bool {
    let Some(attached) = caps
        .probe(Probe::OomKill)
        .and_then(|p| p.attempts.iter().find(|a| a.error.is_none()))
    else {
        return false;
    };
    match attached.mechanism {
        Mechanism::Fentry | Mechanism::Kprobe => true,
        Mechanism::RawTracepoint => r.has(tracer_ebpf::config_flags::VICTIM_IS_TASK),
        // The classic tracepoint's record has the name from Linux 6.8.
        Mechanism::Tracepoint => r.config.tp_victim_comm_off != tracer_ebpf::NO_ARG,
    }
}
