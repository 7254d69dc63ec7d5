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

mod attach;
pub mod baseline;
pub mod brake;
mod caps;
pub mod inflight;
mod kretprobe;
pub mod reclaim;

pub use attach::error_chain;
use attach::{attach_first, candidates};
use caps::degradations;
pub use caps::{Capabilities, Mechanism, Probe, ProbeReport};

use std::collections::BTreeSet;

use aya::{Ebpf, EbpfLoader};

use crate::kernel::KernelInfo;
use crate::kernel::btf::Btf;
use crate::kernel::offsets::{self, Resolved};
use crate::kernel::tracefs::{self, Format};

/// The eBPF object built by `tracer`'s build script from `tracer-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Default size of the event ring buffer.
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

/// Loader options.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Mechanisms not to use, for testing fallbacks or avoiding a kernel
    /// bug. From `MEMTRACE_DENY_ATTACH=fentry,raw_tracepoint`.
    pub deny: BTreeSet<Mechanism>,
    pub ring_bytes: u32,
    /// Write a record per reclaim pass to the reclaim ring, besides the
    /// in-kernel totals ([`reclaim::ReclaimTotalsReader`]) that are always
    /// kept. On for `record`, `top` and `events`; the agent turns it off
    /// unless its flight recorder keeps passes.
    pub reclaim_records: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            deny: BTreeSet::new(),
            ring_bytes: DEFAULT_RING_BYTES,
            reclaim_records: true,
        }
    }
}

/// Entries of the kernel's per-cgroup reclaim totals (an LRU hash). The
/// kernel's LRU keeps up to 128 free entries on each CPU's own list and
/// evicts once its shared list runs dry, so with fewer than about 128
/// entries a CPU it would evict while the map is still far from full.
/// 256 a CPU, at least 4096 (144 bytes each: 0.6 MiB on a small host).
fn reclaim_totals_entries() -> u32 {
    let cpus = aya::util::nr_cpus().unwrap_or(1).max(1);
    u32::try_from(cpus.saturating_mul(256))
        .unwrap_or(u32::MAX)
        .max(4096)
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
        // Test knob: a small ring overflows at once, which is how the VM
        // tests lose records on purpose.
        if let Ok(v) = std::env::var("MEMTRACE_RING_BYTES") {
            let bytes: u32 = v.trim().parse().map_err(|_| {
                LoadError::Usage(format!(
                    "MEMTRACE_RING_BYTES: `{v}` is not a number of bytes"
                ))
            })?;
            if !bytes.is_power_of_two() || bytes < 4096 {
                return Err(LoadError::Usage(format!(
                    "MEMTRACE_RING_BYTES: {bytes} must be a power of two of at least 4096"
                )));
            }
            o.ring_bytes = bytes;
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
    /// Whether the reclaim programs write a record per pass
    /// ([`LoadOptions::reclaim_records`]); their totals are always kept.
    pub reclaim_records: bool,
    /// Kretprobes made through tracefs (kprobe fallback), removed when the
    /// tracer is dropped.
    kretprobes: attach::Kretprobes,
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
        let mut resolved = resolved;
        if opts.reclaim_records {
            resolved.config.flags |= tracer_ebpf::config_flags::RECLAIM_RECORDS;
        }

        let mut ebpf = EbpfLoader::new()
            .override_global("KERNEL_CONFIG", &resolved.config, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("RECLAIM_EVENTS", opts.ring_bytes)
            .map_max_entries("RECLAIM_TOTALS", reclaim_totals_entries())
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
        let mut kretprobes = Vec::new();
        for probe in Probe::ALL {
            let candidates = candidates(probe, &resolved);
            probes.push(attach_first(
                &mut ebpf,
                aya_btf.as_ref(),
                opts,
                probe,
                &candidates,
                &mut kretprobes,
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
        Ok(Self {
            ebpf,
            caps,
            reclaim_records: opts.reclaim_records,
            kretprobes,
        })
    }

    /// Returns the kprobe fallback's kretprobes missed so far (their
    /// instances ran out): each is an episode whose end was lost. `None`
    /// when no kretprobe was made through tracefs.
    pub fn missed_returns(&self) -> Option<u64> {
        if self.kretprobes.is_empty() {
            return None;
        }
        Some(self.kretprobes.iter().filter_map(|(_, k)| k.missed()).sum())
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
