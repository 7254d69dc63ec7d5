//! The loader: puts memtrace's eBPF programs into the kernel.
//!
//! It reads the kernel's BTF, fills the programs' `KERNEL_CONFIG`, loads
//! the object, and attaches each probe with the first mechanism the kernel
//! allows, trying them in order:
//!
//! | probe | mechanisms |
//! |---|---|
//! | throttle (memory.high) | fentry/fexit, kprobe/kretprobe |
//! | memcg reclaim, direct reclaim, OOM kill | raw tracepoint, tracepoint |
//! | OOM memcg (which cgroup ran out) | fentry/fexit, kprobe/kretprobe |
//!
//! Every attempt and its outcome goes into [`Capabilities`], which is what
//! `memtrace check` prints and what the agent logs at start: a probe that
//! cannot attach degrades memtrace, it never fails silently.

pub mod brake;

use std::collections::BTreeSet;
use std::path::Path;

use aya::programs::{FEntry, FExit, KProbe, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use crate::kernel::btf::Btf;
use crate::kernel::offsets::{self, OOM_MEMCG_FUNCTION, Resolved};
use crate::kernel::tracefs::{self, Format};
use crate::kernel::{CgroupVersion, KernelInfo};

/// The eBPF object built by `tracer`'s build script from `tracer-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Default size of the event ring buffer.
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

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
}

impl Probe {
    pub const ALL: [Self; 5] = [
        Self::Throttle,
        Self::MemcgReclaim,
        Self::DirectReclaim,
        Self::OomKill,
        Self::OomMemcg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::MemcgReclaim => "memcg_reclaim",
            Self::DirectReclaim => "direct_reclaim",
            Self::OomKill => "oom_kill",
            Self::OomMemcg => "oom_memcg",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Self::Throttle => "memory.high throttle episodes",
            Self::MemcgReclaim => "memcg reclaim latency and pages",
            Self::DirectReclaim => "global direct reclaim",
            Self::OomKill => "OOM kills",
            Self::OomMemcg => "which memory cgroup ran out at an OOM",
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

/// Loader options.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Mechanisms not to use, for testing fallbacks or avoiding a kernel
    /// bug. From `MEMTRACE_DENY_ATTACH=fentry,raw_tracepoint`.
    pub deny: BTreeSet<Mechanism>,
    pub ring_bytes: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            deny: BTreeSet::new(),
            ring_bytes: DEFAULT_RING_BYTES,
        }
    }
}

impl LoadOptions {
    /// Defaults plus `MEMTRACE_DENY_ATTACH` from the environment.
    pub fn from_env() -> Result<Self, LoadError> {
        let mut o = Self::default();
        if let Ok(list) = std::env::var("MEMTRACE_DENY_ATTACH") {
            for item in list.split(',').filter(|s| !s.trim().is_empty()) {
                let m = Mechanism::parse(item).ok_or_else(|| {
                    LoadError::Usage(format!(
                        "MEMTRACE_DENY_ATTACH: unknown mechanism `{item}` \
                         (use fentry, kprobe, raw_tracepoint, tracepoint)"
                    ))
                })?;
                o.deny.insert(m);
            }
        }
        Ok(o)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Privileges(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Usage(String),
    #[error("loading memtrace's eBPF object failed: {0}")]
    Load(String),
}

/// Checks for the capabilities BPF tracing needs, before trying anything.
pub fn check_privileges() -> Result<(), LoadError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let has = |c: u64| eff & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(LoadError::Privileges(
        "memtrace needs root, or CAP_BPF and CAP_PERFMON, to load its eBPF programs: \
         run it with sudo"
            .into(),
    ))
}

/// The loaded programs and the maps user space reads.
pub struct Tracer {
    ebpf: Ebpf,
    pub caps: Capabilities,
}

impl Tracer {
    /// Loads and attaches everything the kernel allows.
    pub fn load(opts: &LoadOptions) -> Result<Self, LoadError> {
        check_privileges()?;
        raise_memlock_limit();
        let kernel = KernelInfo::detect();
        let btf = Btf::from_sys_fs().ok();
        let aya_btf = aya::Btf::from_sys_fs().ok();
        // Classic tracepoint formats are needed only by the fallback path;
        // mounting tracefs is harmless when we are root.
        let tracefs_dir = tracefs::ensure_mounted().ok();
        let format = |cat: &str, name: &str| {
            tracefs_dir
                .as_deref()
                .and_then(|d| Format::read(d, cat, name).ok())
        };
        let mark_victim = format("oom", "mark_victim");
        let reclaim_end = format("vmscan", "mm_vmscan_memcg_reclaim_end");
        let resolved = match &btf {
            Some(b) => offsets::resolve(
                b,
                kernel.page_size,
                mark_victim.as_ref(),
                reclaim_end.as_ref(),
            ),
            None => Resolved {
                problems: vec![format!(
                    "no BTF at {}: memtrace cannot find kernel struct offsets, so it cannot \
                     tell which memory cgroup an event belongs to",
                    crate::kernel::btf::VMLINUX_BTF
                )],
                ..Default::default()
            },
        };

        #[cfg(feature = "fault-injection")]
        let resolved = inject_fault(resolved);

        let mut ebpf = EbpfLoader::new()
            .override_global("KERNEL_CONFIG", &resolved.config, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| {
                let msg = error_chain(&e);
                if msg.contains("Operation not permitted") {
                    LoadError::Privileges(format!(
                        "the kernel refused to create BPF maps ({msg}); memtrace needs root, \
                         or CAP_BPF and CAP_PERFMON, and a kernel that allows BPF"
                    ))
                } else {
                    LoadError::Load(msg)
                }
            })?;

        let mut probes = Vec::new();
        for probe in Probe::ALL {
            let candidates = candidates(probe, &resolved);
            probes.push(attach_first(
                &mut ebpf,
                aya_btf.as_ref(),
                opts,
                probe,
                &candidates,
            ));
        }

        let mut caps = Capabilities {
            kernel,
            throttle_function: resolved.throttle_fn,
            probes,
            btf_problems: resolved.problems.clone(),
            degraded: Vec::new(),
        };
        caps.degraded = degradations(&caps, &resolved);
        if caps.probes.iter().all(|p| !p.ok()) {
            return Err(LoadError::Unsupported(format!(
                "no probe could attach on this kernel:\n{}",
                caps.probes
                    .iter()
                    .flat_map(|p| p.attempts.iter().map(move |a| (p.probe, a)))
                    .map(|(p, a)| format!(
                        "  {} via {}: {}",
                        p.name(),
                        a.mechanism.as_str(),
                        a.error.as_deref().unwrap_or("ok")
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            )));
        }
        Ok(Self { ebpf, caps })
    }

    /// The loaded object, for the stages that read its maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// Test builds only: `MEMTRACE_FAULT=wrong-cgroup` reads the cgroup of the
/// wrong controller (cpuset's instead of memory's), the kind of bug a bad
/// BTF offset causes. The VM harness must catch it.
#[cfg(feature = "fault-injection")]
fn inject_fault(mut r: Resolved) -> Resolved {
    match std::env::var("MEMTRACE_FAULT").as_deref() {
        Ok("wrong-cgroup") => {
            log::warn!("fault injection: reading the cpuset controller's cgroup");
            r.config.memory_cgrp_id = 0;
        }
        Ok(other) => log::warn!("fault injection: unknown fault `{other}` ignored"),
        Err(_) => {}
    }
    r
}

/// Before 5.11 BPF memory is charged to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: rlim is a valid rlimit; failure only means old kernels may
    // refuse large maps, which the load error then reports.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// One program and where it goes.
#[derive(Clone, Debug)]
enum Hook {
    Fentry {
        prog: &'static str,
        func: String,
    },
    Fexit {
        prog: &'static str,
        func: String,
    },
    Kprobe {
        prog: &'static str,
        func: String,
    },
    Kretprobe {
        prog: &'static str,
        func: String,
    },
    Raw {
        prog: &'static str,
        tp: &'static str,
    },
    Tp {
        prog: &'static str,
        category: &'static str,
        name: &'static str,
    },
}

impl Hook {
    fn prog(&self) -> &'static str {
        match self {
            Self::Fentry { prog, .. }
            | Self::Fexit { prog, .. }
            | Self::Kprobe { prog, .. }
            | Self::Kretprobe { prog, .. }
            | Self::Raw { prog, .. }
            | Self::Tp { prog, .. } => prog,
        }
    }
}

/// A way to attach one probe: a mechanism and the programs it needs.
struct Candidate {
    mechanism: Mechanism,
    target: String,
    hooks: Vec<Hook>,
    /// Why this candidate cannot work here, found before trying.
    precondition: Option<String>,
}

fn entry_exit(
    mechanism: Mechanism,
    func: Option<&str>,
    progs: [&'static str; 4],
    missing: &str,
) -> Candidate {
    let Some(func) = func else {
        return Candidate {
            mechanism,
            target: "-".into(),
            hooks: Vec::new(),
            precondition: Some(missing.to_string()),
        };
    };
    let f = func.to_string();
    let (hooks, precondition) = match mechanism {
        Mechanism::Fentry => (
            vec![
                Hook::Fentry {
                    prog: progs[0],
                    func: f.clone(),
                },
                Hook::Fexit {
                    prog: progs[1],
                    func: f.clone(),
                },
            ],
            None,
        ),
        _ => (
            vec![
                Hook::Kprobe {
                    prog: progs[2],
                    func: f.clone(),
                },
                Hook::Kretprobe {
                    prog: progs[3],
                    func: f.clone(),
                },
            ],
            (!kprobes_supported())
                .then(|| "the kernel has no kprobe support (built without CONFIG_KPROBES)".into()),
        ),
    };
    Candidate {
        mechanism,
        target: f,
        hooks,
        precondition,
    }
}

fn candidates(probe: Probe, r: &Resolved) -> Vec<Candidate> {
    match probe {
        Probe::Throttle => {
            let progs = [
                "throttle_fentry",
                "throttle_fexit",
                "throttle_kprobe",
                "throttle_kretprobe",
            ];
            let missing = "no memory.high throttle function in this kernel's BTF";
            vec![
                entry_exit(Mechanism::Fentry, r.throttle_fn, progs, missing),
                entry_exit(Mechanism::Kprobe, r.throttle_fn, progs, missing),
            ]
        }
        Probe::OomMemcg => {
            let progs = [
                "oom_memcg_fentry",
                "oom_memcg_fexit",
                "oom_memcg_kprobe",
                "oom_memcg_kretprobe",
            ];
            let func = r.oom_memcg_fn.then_some(OOM_MEMCG_FUNCTION);
            let missing = "mem_cgroup_out_of_memory is not in this kernel's BTF";
            vec![
                entry_exit(Mechanism::Fentry, func, progs, missing),
                entry_exit(Mechanism::Kprobe, func, progs, missing),
            ]
        }
        Probe::MemcgReclaim => tracepoint_pair(
            ("memcg_reclaim_begin_raw", "memcg_reclaim_end_raw"),
            ("memcg_reclaim_begin_tp", "memcg_reclaim_end_tp"),
            (
                "mm_vmscan_memcg_reclaim_begin",
                "mm_vmscan_memcg_reclaim_end",
            ),
        ),
        Probe::DirectReclaim => tracepoint_pair(
            ("direct_reclaim_begin_raw", "direct_reclaim_end_raw"),
            ("direct_reclaim_begin_tp", "direct_reclaim_end_tp"),
            (
                "mm_vmscan_direct_reclaim_begin",
                "mm_vmscan_direct_reclaim_end",
            ),
        ),
        Probe::OomKill => vec![
            Candidate {
                mechanism: Mechanism::RawTracepoint,
                target: "mark_victim".into(),
                hooks: vec![Hook::Raw {
                    prog: "mark_victim_raw",
                    tp: "mark_victim",
                }],
                precondition: None,
            },
            Candidate {
                mechanism: Mechanism::Tracepoint,
                target: "oom/mark_victim".into(),
                hooks: vec![Hook::Tp {
                    prog: "mark_victim_tp",
                    category: "oom",
                    name: "mark_victim",
                }],
                precondition: None,
            },
        ],
    }
}

fn tracepoint_pair(
    raw: (&'static str, &'static str),
    tp: (&'static str, &'static str),
    names: (&'static str, &'static str),
) -> Vec<Candidate> {
    vec![
        Candidate {
            mechanism: Mechanism::RawTracepoint,
            target: format!("{}/{}", names.0, names.1),
            hooks: vec![
                Hook::Raw {
                    prog: raw.0,
                    tp: names.0,
                },
                Hook::Raw {
                    prog: raw.1,
                    tp: names.1,
                },
            ],
            precondition: None,
        },
        Candidate {
            mechanism: Mechanism::Tracepoint,
            target: format!("vmscan/{}, vmscan/{}", names.0, names.1),
            hooks: vec![
                Hook::Tp {
                    prog: tp.0,
                    category: "vmscan",
                    name: names.0,
                },
                Hook::Tp {
                    prog: tp.1,
                    category: "vmscan",
                    name: names.1,
                },
            ],
            precondition: None,
        },
    ]
}

fn kprobes_supported() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
        || tracefs::mount_point().is_some_and(|t| t.join("kprobe_events").exists())
}

fn attach_first(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    opts: &LoadOptions,
    probe: Probe,
    candidates: &[Candidate],
) -> ProbeReport {
    let mut report = ProbeReport {
        probe,
        what: probe.what(),
        attached: None,
        attempts: Vec::new(),
    };
    for c in candidates {
        let error = if opts.deny.contains(&c.mechanism) {
            Some("denied by MEMTRACE_DENY_ATTACH".to_string())
        } else if let Some(why) = &c.precondition {
            Some(why.clone())
        } else {
            attach_all(ebpf, btf, &c.hooks).err()
        };
        let ok = error.is_none();
        report.attempts.push(Attempt {
            mechanism: c.mechanism,
            target: c.target.clone(),
            error,
        });
        if ok {
            report.attached = Some(c.mechanism);
            break;
        }
    }
    report
}

/// Attaches every hook of a candidate, or none: a half-attached entry/exit
/// pair would record episodes that never end.
fn attach_all(ebpf: &mut Ebpf, btf: Option<&aya::Btf>, hooks: &[Hook]) -> Result<(), String> {
    for (i, hook) in hooks.iter().enumerate() {
        if let Err(e) = attach(ebpf, btf, hook) {
            for done in &hooks[..i] {
                unload(ebpf, done);
            }
            unload(ebpf, hook);
            return Err(e);
        }
    }
    Ok(())
}

fn attach(ebpf: &mut Ebpf, btf: Option<&aya::Btf>, hook: &Hook) -> Result<(), String> {
    let name = hook.prog();
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the eBPF object"))?;
    let no_btf = || {
        format!(
            "needs BTF ({}), which this kernel lacks",
            crate::kernel::btf::VMLINUX_BTF
        )
    };
    match hook {
        Hook::Fentry { func, .. } => {
            let p: &mut FEntry = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load(func, btf.ok_or_else(no_btf)?)
                .map_err(|e| explain(Mechanism::Fentry, &e))?;
            p.attach()
                .map(drop)
                .map_err(|e| explain(Mechanism::Fentry, &e))
        }
        Hook::Fexit { func, .. } => {
            let p: &mut FExit = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load(func, btf.ok_or_else(no_btf)?)
                .map_err(|e| explain(Mechanism::Fentry, &e))?;
            p.attach()
                .map(drop)
                .map_err(|e| explain(Mechanism::Fentry, &e))
        }
        Hook::Kprobe { func, .. } | Hook::Kretprobe { func, .. } => {
            let p: &mut KProbe = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| explain(Mechanism::Kprobe, &e))?;
            p.attach(func, 0)
                .map(drop)
                .map_err(|e| explain(Mechanism::Kprobe, &e))
        }
        Hook::Raw { tp, .. } => {
            let p: &mut RawTracePoint = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load()
                .map_err(|e| explain(Mechanism::RawTracepoint, &e))?;
            p.attach(tp)
                .map(drop)
                .map_err(|e| explain(Mechanism::RawTracepoint, &e))
        }
        Hook::Tp { category, name, .. } => {
            let p: &mut TracePoint = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| explain(Mechanism::Tracepoint, &e))?;
            p.attach(category, name)
                .map(drop)
                .map_err(|e| explain(Mechanism::Tracepoint, &e))
        }
    }
}

fn unload(ebpf: &mut Ebpf, hook: &Hook) {
    let Some(prog) = ebpf.program_mut(hook.prog()) else {
        return;
    };
    // Unloading detaches every link of the program; errors only mean it
    // was not loaded.
    let _ = match hook {
        Hook::Fentry { .. } => <&mut FEntry>::try_from(prog).map(|p| p.unload()),
        Hook::Fexit { .. } => <&mut FExit>::try_from(prog).map(|p| p.unload()),
        Hook::Kprobe { .. } | Hook::Kretprobe { .. } => {
            <&mut KProbe>::try_from(prog).map(|p| p.unload())
        }
        Hook::Raw { .. } => <&mut RawTracePoint>::try_from(prog).map(|p| p.unload()),
        Hook::Tp { .. } => <&mut TracePoint>::try_from(prog).map(|p| p.unload()),
    };
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// Turns a program error into a sentence an operator can act on.
fn explain(m: Mechanism, e: &aya::programs::ProgramError) -> String {
    use aya::programs::ProgramError;
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = e
    {
        let errno = io_error.raw_os_error().unwrap_or(0);
        if errno == libc::EPERM || errno == libc::EACCES {
            let what = match m {
                Mechanism::Fentry => "tracing programs (fentry/fexit)",
                Mechanism::Kprobe => "kprobe programs",
                Mechanism::RawTracepoint => "raw tracepoint programs",
                Mechanism::Tracepoint => "tracepoint programs",
            };
            return format!(
                "the kernel refused {what} ({io_error}): lockdown, a BPF LSM policy or a \
                 restricted kernel build"
            );
        }
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return format!(
            "the verifier rejected the program ({io_error}): {}",
            tail.join(" | ")
        );
    }
    let chain = error_chain(e);
    if m == Mechanism::Kprobe && !kprobes_supported() {
        return format!("the kernel has no kprobe support ({chain})");
    }
    chain
}

/// What the capabilities mean for the user.
fn degradations(caps: &Capabilities, r: &Resolved) -> Vec<String> {
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
        out.push("the over-high ancestor of a throttled cgroup is not identified".into());
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
    for p in [Probe::MemcgReclaim, Probe::DirectReclaim, Probe::OomKill] {
        if !ok(p) {
            out.push(format!("{} are not traced", p.what()));
        }
    }
    out
}
