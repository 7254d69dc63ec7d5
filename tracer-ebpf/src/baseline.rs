//! Bench only: empty programs on the same hooks as memtrace's, so that
//! `cargo xtask bench` measures each program's cost beside the cost of
//! running any program there at all (the kernel's trampoline or
//! tracepoint dispatch), in the same run, under the same load. The loader
//! never loads these; `memtrace::probe::baseline` does, for benchmarks.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, raw_tracepoint},
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};

#[fentry(function = "mem_cgroup_handle_over_high")]
pub fn baseline_throttle_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit(function = "mem_cgroup_handle_over_high")]
pub fn baseline_throttle_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[kprobe]
pub fn baseline_throttle_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[kretprobe]
pub fn baseline_throttle_kretprobe(_ctx: RetProbeContext) -> u32 {
    0
}

#[fentry(function = "mem_cgroup_out_of_memory")]
pub fn baseline_oom_memcg_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit(function = "mem_cgroup_out_of_memory")]
pub fn baseline_oom_memcg_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_begin")]
pub fn baseline_memcg_reclaim_begin_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_end")]
pub fn baseline_memcg_reclaim_end_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_begin")]
pub fn baseline_direct_reclaim_begin_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_end")]
pub fn baseline_direct_reclaim_end_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn baseline_mark_victim_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn baseline_task_exit_raw(_ctx: RawTracePointContext) -> i32 {
    0
}
