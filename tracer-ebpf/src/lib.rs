//! The ABI shared by memtrace's eBPF programs and its user side.
//!
//! Everything that crosses the kernel/user boundary is defined here, once:
//! the records the programs write into the `EVENTS` ring buffer, the
//! `KERNEL_CONFIG` global that user space fills in before loading (struct
//! offsets read from the running kernel's BTF, because Rust eBPF has no
//! CO-RE), and the keys and values of the maps both sides touch.
//!
//! Every record starts with a `u32` kind, so the decoder can dispatch on the
//! first four bytes and check the length before it reads the rest.
//! All structs are `#[repr(C)]` with explicit padding so their layout is the
//! same on the bpf target and on the host.
#![no_std]

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// How far the programs walk up the memory cgroup hierarchy. Real
/// hierarchies are far shallower; the bound keeps the verifier happy.
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// Record kinds: the first `u32` of every ring-buffer record.
pub mod kind {
    /// A task entered the memory.high throttle function with pages over high.
    pub const THROTTLE_START: u32 = 1;
    /// That task left the throttle function: one complete throttle episode.
    pub const THROTTLE_END: u32 = 2;
    /// A memcg reclaim pass (`mm_vmscan_memcg_reclaim_begin`/`_end`).
    pub const RECLAIM: u32 = 3;
    /// A global direct reclaim pass (`mm_vmscan_direct_reclaim_begin`/`_end`).
    pub const DIRECT_RECLAIM: u32 = 4;
    /// The OOM killer chose a victim (`oom/mark_victim`).
    pub const OOM_KILL: u32 = 5;
    /// The in-kernel brake signalled a throttled task.
    pub const BRAKE: u32 = 6;
    /// One past the largest kind; sizes the lost-event counters.
    pub const COUNT: u32 = 7;
}

/// The task a record is about.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskId {
    /// Thread id (the kernel's `pid`).
    pub pid: u32,
    /// Process id (the kernel's `tgid`).
    pub tgid: u32,
    /// `task_struct.comm`, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// A task entered the throttle function with pages charged over high.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThrottleStartEvent {
    pub kind: u32,
    /// `current->memcg_nr_pages_over_high` at entry (0 if unreadable).
    pub nr_pages: u32,
    /// Monotonic time of entry (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub task: TaskId,
    /// Kernfs id of the task's memory cgroup: the one being charged.
    pub memcg_id: u64,
    /// Kernfs id of the ancestor-or-self memory cgroup furthest over its
    /// memory.high (0 if none was found over high).
    pub over_high_id: u64,
    /// That cgroup's usage and memory.high, in pages.
    pub over_high_usage: u64,
    pub over_high_limit: u64,
}

/// A complete throttle episode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThrottleEndEvent {
    pub kind: u32,
    pub nr_pages: u32,
    /// Monotonic time of exit.
    pub ts_ns: u64,
    pub task: TaskId,
    pub memcg_id: u64,
    pub over_high_id: u64,
    /// Monotonic time of entry.
    pub start_ns: u64,
    /// Time spent in memcg reclaim nested in this episode; the rest of the
    /// episode is the penalty sleep.
    pub reclaim_ns: u64,
    /// Pages reclaimed by that nested reclaim.
    pub reclaimed_pages: u64,
}

/// Flags of [`ReclaimEvent`].
pub mod reclaim_flags {
    /// The reclaim ran inside a throttle episode of the same task.
    pub const IN_THROTTLE: u32 = 1;
    /// `memcg_id` is the cgroup the kernel reclaimed from (tracepoint
    /// argument); otherwise it is the charging task's memory cgroup.
    pub const MEMCG_EXACT: u32 = 2;
}

/// One reclaim pass, memcg or global direct (see `kind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReclaimEvent {
    pub kind: u32,
    pub flags: u32,
    /// Monotonic time the pass ended.
    pub ts_ns: u64,
    pub task: TaskId,
    pub memcg_id: u64,
    pub start_ns: u64,
    pub nr_reclaimed: u64,
}

/// Flags of [`OomKillEvent`].
pub mod oom_flags {
    /// The victim's task_struct was readable: its memcg and RSS are valid.
    pub const VICTIM_TASK: u32 = 1;
    /// `oom_memcg_id` names the memory cgroup that ran out.
    pub const OOM_MEMCG: u32 = 2;
    /// RSS fields are valid.
    pub const RSS: u32 = 4;
}

/// The OOM killer marked a victim.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OomKillEvent {
    pub kind: u32,
    pub flags: u32,
    pub ts_ns: u64,
    /// The task whose allocation invoked the OOM killer.
    pub invoker: TaskId,
    pub victim: TaskId,
    /// The victim's memory cgroup.
    pub victim_memcg_id: u64,
    /// The memory cgroup that ran out (memcg OOM), 0 for a global OOM or
    /// when the kernel does not expose it.
    pub oom_memcg_id: u64,
    /// Victim RSS by type, in pages.
    pub anon_rss_pages: u64,
    pub file_rss_pages: u64,
    pub shmem_rss_pages: u64,
}

/// The in-kernel brake sent a signal to a throttled task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BrakeEvent {
    pub kind: u32,
    pub signal: u32,
    pub ts_ns: u64,
    pub task: TaskId,
    /// The cgroup whose brake rule fired.
    pub rule_memcg_id: u64,
    /// Throttled time the kernel counted in the rule's window.
    pub throttled_ns: u64,
    pub limit_ns: u64,
    /// How long the agent's heartbeat had been silent.
    pub heartbeat_age_ns: u64,
    /// Return value of `bpf_send_signal`.
    pub result: i64,
}

/// Bits of [`KernelConfig::flags`]: which parts of the config are valid.
pub mod config_flags {
    /// The cgroup walk offsets (task → css → cgroup → kernfs id) are valid.
    pub const CGROUP_WALK: u32 = 1;
    /// `task_nr_pages_over_high` is valid: entries with nothing over high
    /// are filtered in the kernel.
    pub const NR_PAGES_OVER_HIGH: u32 = 2;
    /// `memcg_usage`/`memcg_high` are valid: the over-high ancestor is found.
    pub const MEMCG_COUNTERS: u32 = 4;
    /// The `mark_victim` raw tracepoint's first argument is the victim's
    /// `task_struct *` (otherwise it is the victim's pid).
    pub const VICTIM_IS_TASK: u32 = 8;
    /// The task_struct field offsets (pid, tgid, comm) are valid.
    pub const TASK_FIELDS: u32 = 16;
    /// The mm RSS counter offsets are valid.
    pub const MM_RSS: u32 = 32;
    /// `task_group_leader`, `task_start_boottime` and `clock_tick_ns` are
    /// valid: the brake checks its victim's start time, not only its tgid.
    pub const TASK_START: u32 = 64;
    /// The reclaim end programs write a record per pass to
    /// `RECLAIM_EVENTS`; without it they only add the pass to the
    /// in-kernel totals (`RECLAIM_TOTALS`), which they always do.
    pub const RECLAIM_RECORDS: u32 = 128;
}

/// Sentinel for "this raw tracepoint has no such argument".
pub const NO_ARG: u32 = u32::MAX;

/// What user space tells the programs about the running kernel, set as the
/// `KERNEL_CONFIG` global before the object is loaded. Offsets are in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelConfig {
    pub flags: u32,
    /// `enum cgroup_subsys_id` value of the memory controller.
    pub memory_cgrp_id: u32,
    /// `task_struct.cgroups`.
    pub task_cgroups: u32,
    /// `css_set.subsys`.
    pub css_set_subsys: u32,
    /// `cgroup_subsys_state.cgroup`.
    pub css_cgroup: u32,
    /// `cgroup_subsys_state.parent`.
    pub css_parent: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`.
    pub kn_id: u32,
    /// `mem_cgroup.css`.
    pub memcg_css: u32,
    /// `mem_cgroup.memory.usage`.
    pub memcg_usage: u32,
    /// `mem_cgroup.memory.high`.
    pub memcg_high: u32,
    /// `task_struct.memcg_nr_pages_over_high`.
    pub task_nr_pages_over_high: u32,
    /// `task_struct.pid`, `.tgid`, `.comm`, `.mm`.
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    /// `mm_struct.rss_stat`, the stride between its counters, and the
    /// offset of the counter value inside one entry.
    pub mm_rss_stat: u32,
    pub mm_rss_stride: u32,
    pub mm_rss_value: u32,
    /// Indexes of MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES.
    pub rss_file_idx: u32,
    pub rss_anon_idx: u32,
    pub rss_shmem_idx: u32,
    /// Raw tracepoint argument positions, or [`NO_ARG`].
    pub memcg_reclaim_begin_memcg_arg: u32,
    pub memcg_reclaim_end_memcg_arg: u32,
    pub memcg_reclaim_end_nr_arg: u32,
    pub direct_reclaim_end_nr_arg: u32,
    /// Classic tracepoint field offsets (fallback path), from tracefs.
    pub tp_reclaim_end_nr_off: u32,
    pub tp_victim_pid_off: u32,
    /// `__data_loc char[] comm` of `oom/mark_victim`, or [`NO_ARG`].
    pub tp_victim_comm_off: u32,
    /// `anon_rss`/`file_rss`/`shmem_rss` of `oom/mark_victim` (kB), or
    /// [`NO_ARG`].
    pub tp_victim_anon_off: u32,
    pub tp_victim_file_off: u32,
    pub tp_victim_shmem_off: u32,
    /// log2 of the page size, to turn the tracepoint's kB into pages.
    pub page_shift: u32,
    /// `task_struct.group_leader` and `task_struct.start_boottime`.
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    /// Nanoseconds per clock tick (`sysconf(_SC_CLK_TCK)`): start times in
    /// `/proc/PID/stat` are in ticks.
    pub clock_tick_ns: u32,
    pub _pad: u32,
}

/// Per-task state kept between entry and exit of the throttle function.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThrottleState {
    pub start_ns: u64,
    pub memcg_id: u64,
    pub over_high_id: u64,
    pub reclaim_ns: u64,
    pub reclaimed_pages: u64,
    /// Memory cgroup id of the brake rule this episode counts toward, 0 if
    /// none.
    pub brake_rule_id: u64,
    pub nr_pages: u32,
    /// Which copies of the entry program saw this call, one bit per copy
    /// (`throttle.rs`): the second copy to run finds its sibling's bit and
    /// leaves the episode as it is.
    pub entered_by: u32,
}

/// Per-task state kept between begin and end of a reclaim pass.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReclaimState {
    pub start_ns: u64,
    /// Exact memcg id from the begin tracepoint, 0 if the kernel's
    /// tracepoint does not carry it.
    pub memcg_id: u64,
}

/// A kernel brake rule, keyed by the memory cgroup id it guards. The agent
/// writes one per budget with a brake; the programs enforce it only while
/// the agent's heartbeat is stale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BrakeRule {
    /// Throttled time allowed per window while the agent is silent.
    pub limit_ns: u64,
    pub window_ns: u64,
    /// The heartbeat is stale when older than this.
    pub stale_ns: u64,
    /// The process the agent chose as victim under the budget's policy
    /// (avoid and protect rules applied). The brake signals only this
    /// process, and only when it is the task being throttled: the kernel
    /// can signal no other task from here.
    pub victim_tgid: u32,
    pub signal: u32,
    /// The victim's start time in clock ticks since boot, as
    /// `/proc/PID/stat` gives it (0: check the tgid only): a pid reused by
    /// another process is not the victim.
    pub victim_start_ticks: u64,
}

/// Kernel-side accounting of one brake rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BrakeState {
    pub window_start_ns: u64,
    pub throttled_ns: u64,
    /// Last time the brake signalled, to avoid a signal storm.
    pub fired_ns: u64,
}

/// Upper bounds (ns) of the reclaim latency buckets of [`ReclaimTotals`]:
/// the same bounds as the metrics page's histogram (`RECLAIM_BUCKETS` in
/// the model, in seconds).
pub const RECLAIM_BOUNDS_NS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// Buckets of [`ReclaimTotals::le`]: one per bound and one past the last.
pub const RECLAIM_TOTAL_BUCKETS: usize = RECLAIM_BOUNDS_NS.len() + 1;

/// The kernel's running totals of the reclaim passes of one memory cgroup
/// (`RECLAIM_TOTALS`, by memcg id) or of global direct reclaim
/// (`DIRECT_RECLAIM_TOTALS`). Only ever added to, atomically; user space
/// takes differences.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimTotals {
    /// Passes.
    pub count: u64,
    /// Pages they reclaimed.
    pub pages: u64,
    /// Their summed duration.
    pub total_ns: u64,
    /// Passes per latency bucket, not cumulative: `le[i]` counts the
    /// passes longer than `RECLAIM_BOUNDS_NS[i - 1]` and at most
    /// `RECLAIM_BOUNDS_NS[i]`; the last counts those over every bound.
    pub le: [u64; RECLAIM_TOTAL_BUCKETS],
}

/// Index of the only slot of `RECLAIM_PASSES` and `DIRECT_RECLAIM_TOTALS`.
pub const TOTALS_SLOT: u32 = 0;

/// Index of the heartbeat slot in the `HEARTBEAT` array.
pub const HEARTBEAT_SLOT: u32 = 0;

// Layout of every struct that crosses the kernel/user boundary, checked by
// the compiler on the bpf target and on the host alike. The decoder
// (tracer/src/decode.rs) reads the records byte by byte as these structs,
// the loader writes `KERNEL_CONFIG` and the brake maps as them, and the
// programs were verified against them: a change of layout must be
// deliberate, so these numbers change in the same commit. Every struct is
// padding-free by construction (each field starts where the previous one
// ends and the size is the sum of the fields), which is what "explicit
// padding" in the crate doc means.
const _: () = {
    use core::mem::{offset_of, size_of};

    assert!(size_of::<TaskId>() == 24);
    assert!(offset_of!(TaskId, pid) == 0);
    assert!(offset_of!(TaskId, tgid) == 4);
    assert!(offset_of!(TaskId, comm) == 8);

    assert!(size_of::<ThrottleStartEvent>() == 72);
    assert!(offset_of!(ThrottleStartEvent, kind) == 0);
    assert!(offset_of!(ThrottleStartEvent, nr_pages) == 4);
    assert!(offset_of!(ThrottleStartEvent, ts_ns) == 8);
    assert!(offset_of!(ThrottleStartEvent, task) == 16);
    assert!(offset_of!(ThrottleStartEvent, memcg_id) == 40);
    assert!(offset_of!(ThrottleStartEvent, over_high_id) == 48);
    assert!(offset_of!(ThrottleStartEvent, over_high_usage) == 56);
    assert!(offset_of!(ThrottleStartEvent, over_high_limit) == 64);

    assert!(size_of::<ThrottleEndEvent>() == 80);
    assert!(offset_of!(ThrottleEndEvent, kind) == 0);
    assert!(offset_of!(ThrottleEndEvent, nr_pages) == 4);
    assert!(offset_of!(ThrottleEndEvent, ts_ns) == 8);
    assert!(offset_of!(ThrottleEndEvent, task) == 16);
    assert!(offset_of!(ThrottleEndEvent, memcg_id) == 40);
    assert!(offset_of!(ThrottleEndEvent, over_high_id) == 48);
    assert!(offset_of!(ThrottleEndEvent, start_ns) == 56);
    assert!(offset_of!(ThrottleEndEvent, reclaim_ns) == 64);
    assert!(offset_of!(ThrottleEndEvent, reclaimed_pages) == 72);

    assert!(size_of::<ReclaimEvent>() == 64);
    assert!(offset_of!(ReclaimEvent, kind) == 0);
    assert!(offset_of!(ReclaimEvent, flags) == 4);
    assert!(offset_of!(ReclaimEvent, ts_ns) == 8);
    assert!(offset_of!(ReclaimEvent, task) == 16);
    assert!(offset_of!(ReclaimEvent, memcg_id) == 40);
    assert!(offset_of!(ReclaimEvent, start_ns) == 48);
    assert!(offset_of!(ReclaimEvent, nr_reclaimed) == 56);

    assert!(size_of::<OomKillEvent>() == 104);
    assert!(offset_of!(OomKillEvent, kind) == 0);
    assert!(offset_of!(OomKillEvent, flags) == 4);
    assert!(offset_of!(OomKillEvent, ts_ns) == 8);
    assert!(offset_of!(OomKillEvent, invoker) == 16);
    assert!(offset_of!(OomKillEvent, victim) == 40);
    assert!(offset_of!(OomKillEvent, victim_memcg_id) == 64);
    assert!(offset_of!(OomKillEvent, oom_memcg_id) == 72);
    assert!(offset_of!(OomKillEvent, anon_rss_pages) == 80);
    assert!(offset_of!(OomKillEvent, file_rss_pages) == 88);
    assert!(offset_of!(OomKillEvent, shmem_rss_pages) == 96);

    assert!(size_of::<BrakeEvent>() == 80);
    assert!(offset_of!(BrakeEvent, kind) == 0);
    assert!(offset_of!(BrakeEvent, signal) == 4);
    assert!(offset_of!(BrakeEvent, ts_ns) == 8);
    assert!(offset_of!(BrakeEvent, task) == 16);
    assert!(offset_of!(BrakeEvent, rule_memcg_id) == 40);
    assert!(offset_of!(BrakeEvent, throttled_ns) == 48);
    assert!(offset_of!(BrakeEvent, limit_ns) == 56);
    assert!(offset_of!(BrakeEvent, heartbeat_age_ns) == 64);
    assert!(offset_of!(BrakeEvent, result) == 72);

    assert!(size_of::<KernelConfig>() == 148);
    assert!(offset_of!(KernelConfig, flags) == 0);
    assert!(offset_of!(KernelConfig, memory_cgrp_id) == 4);
    assert!(offset_of!(KernelConfig, task_cgroups) == 8);
    assert!(offset_of!(KernelConfig, css_set_subsys) == 12);
    assert!(offset_of!(KernelConfig, css_cgroup) == 16);
    assert!(offset_of!(KernelConfig, css_parent) == 20);
    assert!(offset_of!(KernelConfig, cgroup_kn) == 24);
    assert!(offset_of!(KernelConfig, kn_id) == 28);
    assert!(offset_of!(KernelConfig, memcg_css) == 32);
    assert!(offset_of!(KernelConfig, memcg_usage) == 36);
    assert!(offset_of!(KernelConfig, memcg_high) == 40);
    assert!(offset_of!(KernelConfig, task_nr_pages_over_high) == 44);
    assert!(offset_of!(KernelConfig, task_pid) == 48);
    assert!(offset_of!(KernelConfig, task_tgid) == 52);
    assert!(offset_of!(KernelConfig, task_comm) == 56);
    assert!(offset_of!(KernelConfig, task_mm) == 60);
    assert!(offset_of!(KernelConfig, mm_rss_stat) == 64);
    assert!(offset_of!(KernelConfig, mm_rss_stride) == 68);
    assert!(offset_of!(KernelConfig, mm_rss_value) == 72);
    assert!(offset_of!(KernelConfig, rss_file_idx) == 76);
    assert!(offset_of!(KernelConfig, rss_anon_idx) == 80);
    assert!(offset_of!(KernelConfig, rss_shmem_idx) == 84);
    assert!(offset_of!(KernelConfig, memcg_reclaim_begin_memcg_arg) == 88);
    assert!(offset_of!(KernelConfig, memcg_reclaim_end_memcg_arg) == 92);
    assert!(offset_of!(KernelConfig, memcg_reclaim_end_nr_arg) == 96);
    assert!(offset_of!(KernelConfig, direct_reclaim_end_nr_arg) == 100);
    assert!(offset_of!(KernelConfig, tp_reclaim_end_nr_off) == 104);
    assert!(offset_of!(KernelConfig, tp_victim_pid_off) == 108);
    assert!(offset_of!(KernelConfig, tp_victim_comm_off) == 112);
    assert!(offset_of!(KernelConfig, tp_victim_anon_off) == 116);
    assert!(offset_of!(KernelConfig, tp_victim_file_off) == 120);
    assert!(offset_of!(KernelConfig, tp_victim_shmem_off) == 124);
    assert!(offset_of!(KernelConfig, page_shift) == 128);
    assert!(offset_of!(KernelConfig, task_group_leader) == 132);
    assert!(offset_of!(KernelConfig, task_start_boottime) == 136);
    assert!(offset_of!(KernelConfig, clock_tick_ns) == 140);
    assert!(offset_of!(KernelConfig, _pad) == 144);

    assert!(size_of::<ThrottleState>() == 56);
    assert!(offset_of!(ThrottleState, start_ns) == 0);
    assert!(offset_of!(ThrottleState, memcg_id) == 8);
    assert!(offset_of!(ThrottleState, over_high_id) == 16);
    assert!(offset_of!(ThrottleState, reclaim_ns) == 24);
    assert!(offset_of!(ThrottleState, reclaimed_pages) == 32);
    assert!(offset_of!(ThrottleState, brake_rule_id) == 40);
    assert!(offset_of!(ThrottleState, nr_pages) == 48);
    assert!(offset_of!(ThrottleState, entered_by) == 52);

    assert!(size_of::<ReclaimState>() == 16);
    assert!(offset_of!(ReclaimState, start_ns) == 0);
    assert!(offset_of!(ReclaimState, memcg_id) == 8);

    assert!(size_of::<BrakeRule>() == 40);
    assert!(offset_of!(BrakeRule, limit_ns) == 0);
    assert!(offset_of!(BrakeRule, window_ns) == 8);
    assert!(offset_of!(BrakeRule, stale_ns) == 16);
    assert!(offset_of!(BrakeRule, victim_tgid) == 24);
    assert!(offset_of!(BrakeRule, signal) == 28);
    assert!(offset_of!(BrakeRule, victim_start_ticks) == 32);

    assert!(size_of::<ReclaimTotals>() == 144);
    assert!(offset_of!(ReclaimTotals, count) == 0);
    assert!(offset_of!(ReclaimTotals, pages) == 8);
    assert!(offset_of!(ReclaimTotals, total_ns) == 16);
    assert!(offset_of!(ReclaimTotals, le) == 24);

    assert!(size_of::<BrakeState>() == 24);
    assert!(offset_of!(BrakeState, window_start_ns) == 0);
    assert!(offset_of!(BrakeState, throttled_ns) == 8);
    assert!(offset_of!(BrakeState, fired_ns) == 16);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]` plain data with explicit padding
    // and no pointers; any bit pattern is a valid value.
    unsafe impl aya::Pod for super::KernelConfig {}
    unsafe impl aya::Pod for super::ThrottleState {}
    unsafe impl aya::Pod for super::ReclaimState {}
    unsafe impl aya::Pod for super::BrakeRule {}
    unsafe impl aya::Pod for super::BrakeState {}
    unsafe impl aya::Pod for super::ReclaimTotals {}
}
