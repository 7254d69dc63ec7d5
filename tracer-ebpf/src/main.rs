//! memtrace's kernel hooks: the first stage of the pipeline.
//!
//! ```text
//!                  cgroup.rs: task → memory css → ancestors (over high? brake rule?)
//!                        ▲                      ▲
//! throttle fn ──► throttle.rs ──► brake.rs     │
//!  entry/exit       │  ▲  THROTTLE   (BRAKE_RULES, BRAKE_STATE, HEARTBEAT)
//!                   │  │  (per task)             │
//! memcg reclaim ──► reclaim.rs: adds nested reclaim time to the THROTTLE entry,
//! direct reclaim ─► reclaim.rs  and every pass to RECLAIM_TOTALS (per memcg),
//!                   │           DIRECT_RECLAIM_TOTALS, RECLAIM_PASSES
//! OOM ────────────► oom.rs (OOM_MEMCG: the memcg being OOM-handled)
//!                   │
//!                   ├─► EVENTS ring: throttle, OOM, brake ─► user space (ring/)
//!                   └─► RECLAIM_EVENTS ring: reclaim passes, only when
//!                        the loader sets config_flags::RECLAIM_RECORDS
//!                        (reservation failures counted in LOST)
//! task exit ──────► exit.rs: drops the task's entries from the maps above
//! ```
//!
//! One module per hook: [`cgroup`] (the memory-cgroup walk every hook
//! shares), [`throttle`], [`brake`], [`reclaim`], [`oom`], [`exit`]. This file holds
//! what they all use: `KERNEL_CONFIG`, every map, and the small helpers
//! that read kernel memory and write records.
//!
//! Each probe has more than one attach mechanism (fentry/fexit or
//! kprobe/kretprobe for the throttle function, raw tracepoint or classic
//! tracepoint for reclaim and OOM); user space loads the programs of the
//! mechanism the kernel allows and leaves the others unloaded. The shared
//! logic lives in plain functions the per-mechanism entry points call.
//! User space (`tracer/src/probe/`, `tracer/src/ring/`) finds the
//! programs and maps by name: renaming one breaks the loader.
//!
//! Kernel struct offsets come from the `KERNEL_CONFIG` global, which user
//! space fills from BTF before loading: Rust eBPF has no CO-RE.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The brake adds to a shared counter with BPF's atomic add (brake.rs).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the bpf target has no atomic types with fetch_add"
)]

#[cfg(not(target_arch = "bpf"))]
compile_error!(
    "tracer-ebpf's programs build only for the bpf target; `cargo build -p memtrace` builds and embeds them"
);

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use tracer_ebpf::{
    BrakeRule, BrakeState, COMM_LEN, KernelConfig, ReclaimState, ReclaimTotals, TaskId,
    ThrottleState, kind,
};

#[unsafe(no_mangle)]
static KERNEL_CONFIG: KernelConfig = unsafe { core::mem::zeroed() };

/// Reads one field of `KERNEL_CONFIG`. Volatile, so the compiler cannot
/// fold the zeroed initial value: the loader patches it before loading.
/// Defined before the `mod` lines so every hook module sees it.
macro_rules! kc {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const crate::KERNEL_CONFIG.$field) }
    };
}

mod baseline;
mod brake;
mod cgroup;
mod exit;
mod oom;
mod reclaim;
mod throttle;

/// The records the agent decides on, in order, to user space: throttle
/// episodes, OOM kills, the brake. A ring buffer rather than a perf
/// buffer: one buffer shared by all CPUs keeps records in order and
/// reservation can fail cleanly (counted in `LOST`). Reclaim passes have a
/// ring of their own (`RECLAIM_EVENTS`), so a reclaim storm can never
/// crowd out the end of a throttle episode. 1 MiB here is only the
/// declared size; the loader sets the real one (`LoadOptions::ring_bytes`,
/// default 1 MiB) with `map_max_entries`.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Reclaim passes (memcg and direct), many per second under pressure.
#[map]
static RECLAIM_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Ring-buffer reservation failures per record kind. Per-CPU, so the
/// increment needs no atomics; one slot per kind (`kind::COUNT`), indexed
/// by the kind itself. User space sums the CPUs once a second.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Tasks inside the throttle function, by thread id: what user space
/// reads to know, before any kill, who is being throttled right now. A
/// preallocated hash map, never LRU: an LRU map evicts live entries (its
/// free lists are per CPU), and an evicted entry is an episode whose end
/// is never seen. Entries of tasks that exit are deleted by [`exit`];
/// a full map is counted in `LOST`. 16384 threads throttled at once is far
/// above any real host.
#[map]
static THROTTLE: HashMap<u32, ThrottleState> = HashMap::with_max_entries(16384, 0);

/// Tasks inside a memcg reclaim pass, by thread id. Preallocated and
/// cleaned at task exit, like `THROTTLE`.
#[map]
static MEMCG_RECLAIM: HashMap<u32, ReclaimState> = HashMap::with_max_entries(16384, 0);

/// Tasks inside a direct reclaim pass, by thread id, like `MEMCG_RECLAIM`.
#[map]
static DIRECT_RECLAIM: HashMap<u32, ReclaimState> = HashMap::with_max_entries(16384, 0);

/// Every reclaim pass's totals, by the memory cgroup it is attributed to:
/// what the agent reads once a second instead of a record per pass. LRU:
/// an entry of a removed cgroup, or of one that has not reclaimed for
/// long, makes room for a new one (user space then starts it afresh: the
/// passes between its last read and its eviction are not counted, and a
/// recreated entry that outgrew the old one within a second is counted
/// short). The loader sizes it by CPU count (`probe::reclaim_totals_entries`:
/// the kernel's LRU holds free entries on each CPU's own list and evicts
/// early when the map is small for its CPUs).
#[map]
static RECLAIM_TOTALS: LruHashMap<u64, ReclaimTotals> = LruHashMap::with_max_entries(4096, 0);

/// Global direct reclaim's totals, in one slot (`TOTALS_SLOT`): no key to
/// evict.
#[map]
static DIRECT_RECLAIM_TOTALS: Array<ReclaimTotals> = Array::with_max_entries(1, 0);

/// Reclaim passes of any kind, in one slot: user space reads it first, so
/// with no reclaim anywhere a tick costs one lookup, not a walk of
/// `RECLAIM_TOTALS`.
#[map]
static RECLAIM_PASSES: Array<u64> = Array::with_max_entries(1, 0);

/// The memory cgroup being OOM-handled by a task, by thread id, between
/// entry and exit of `mem_cgroup_out_of_memory`. Smaller than the others
/// because only tasks inside a memcg OOM are in it, and they are few at
/// any one time; cleaned at task exit.
#[map]
static OOM_MEMCG: HashMap<u32, u64> = HashMap::with_max_entries(1024, 0);

/// Brake rules by memory cgroup id, written by the agent. A plain hash
/// map, never LRU: the kernel must not evict a rule the agent installed.
/// 256 is the documented limit of throttled cgroups with a brake
/// (docs/configuration.md); past it the agent logs that a rule was not
/// installed.
#[map]
static BRAKE_RULES: HashMap<u64, BrakeRule> = HashMap::with_max_entries(256, 0);

/// Kernel-side accounting of each brake rule, created only for a cgroup
/// with a rule. User space deletes an entry with its rule. Not LRU: an LRU
/// map this small evicts live entries before it is full (per-CPU free
/// lists), which would restart a window and delay the brake. Four times
/// the rules leaves room for an entry recreated while its rule was
/// being deleted.
#[map]
static BRAKE_STATE: HashMap<u64, BrakeState> = HashMap::with_max_entries(1024, 0);

/// The agent's heartbeat: its last monotonic timestamp. An array of one
/// slot (`HEARTBEAT_SLOT`): a single value both sides read and write
/// without a key lookup that could fail.
#[map]
static HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

/// Counts a record that could not be written.
#[inline(always)]
fn count_lost(record_kind: u32) {
    if let Some(slot) = LOST.get_ptr_mut(record_kind) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// Writes one record to a ring, or counts it lost.
#[inline(always)]
fn emit<T: 'static>(ring: &RingBuf, record_kind: u32, record: &T) {
    if ring.output::<T>(record, 0).is_err() {
        count_lost(record_kind);
    }
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    let addr = base.wrapping_add(off as u64) as *const T;
    unsafe { bpf_probe_read_kernel(addr) }.ok()
}

/// Whether user space marked a group of `KERNEL_CONFIG` valid.
#[inline(always)]
fn has(flag: u32) -> bool {
    kc!(flags) & flag != 0
}

/// The current task's identity.
#[inline(always)]
fn current_task_id() -> TaskId {
    let pid_tgid = bpf_get_current_pid_tgid();
    TaskId {
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// Reads raw tracepoint argument `n`; the index must be a constant for the
/// verifier, hence the match.
#[inline(always)]
fn raw_arg(ctx: &RawTracePointContext, n: u32) -> u64 {
    match n {
        0 => ctx.arg::<u64>(0),
        1 => ctx.arg::<u64>(1),
        2 => ctx.arg::<u64>(2),
        3 => ctx.arg::<u64>(3),
        _ => 0,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_send_signal and bpf_get_current_task are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
