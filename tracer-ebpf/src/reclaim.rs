//! Reclaim passes: memcg reclaim and global direct reclaim, begin to end.
//!
//! Owns `MEMCG_RECLAIM` and `DIRECT_RECLAIM` (per-task start of a pass)
//! and the `Reclaim` and `DirectReclaim` records. Each pass has a raw
//! tracepoint entry point (arguments at the positions `KERNEL_CONFIG` gives
//! from the `btf_trace_*` typedefs, so the exact memcg when the kernel
//! passes it) and a classic tracepoint fallback (fields at tracefs
//! offsets; the memcg is then the charging task's). A memcg pass that ends
//! inside a throttle episode of the same task adds its time and pages to
//! that task's `THROTTLE` entry, where [`super::throttle`] reads them at
//! exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{raw_tracepoint, tracepoint},
    maps::HashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_ebpf::{NO_ARG, ReclaimEvent, ReclaimState, kind, reclaim_flags};

use crate::cgroup::{current_memcg_id, memcg_ptr_id};
use crate::{
    DIRECT_RECLAIM, MEMCG_RECLAIM, RECLAIM_EVENTS, THROTTLE, current_task_id, emit, raw_arg,
};

#[inline(always)]
fn reclaim_begin(map: &HashMap<u32, ReclaimState>, memcg_id: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let state = ReclaimState {
        start_ns: unsafe { bpf_ktime_get_ns() },
        memcg_id,
    };
    let _ = map.insert(tid, state, 0);
}

#[inline(always)]
fn reclaim_end(
    record_kind: u32,
    map: &HashMap<u32, ReclaimState>,
    nr_reclaimed: u64,
    memcg_at_end: u64,
) {
    let who = current_task_id();
    let Some(state) = (unsafe { map.get(who.pid) }).copied() else {
        return;
    };
    let _ = map.remove(who.pid);
    let now = unsafe { bpf_ktime_get_ns() };
    let duration = now.saturating_sub(state.start_ns);
    let mut flags = 0;
    let mut memcg_id = if state.memcg_id != 0 {
        state.memcg_id
    } else {
        memcg_at_end
    };
    if memcg_id != 0 {
        flags |= reclaim_flags::MEMCG_EXACT;
    } else {
        memcg_id = current_memcg_id();
    }
    if record_kind == kind::RECLAIM
        && let Some(episode) = THROTTLE.get_ptr_mut(who.pid)
    {
        flags |= reclaim_flags::IN_THROTTLE;
        unsafe {
            (*episode).reclaim_ns += duration;
            (*episode).reclaimed_pages += nr_reclaimed;
        }
    }
    emit(
        &RECLAIM_EVENTS,
        record_kind,
        &ReclaimEvent {
            kind: record_kind,
            flags,
            ts_ns: now,
            task: who,
            memcg_id,
            start_ns: state.start_ns,
            nr_reclaimed,
        },
    );
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin_raw(ctx: RawTracePointContext) -> i32 {
    let arg = kc!(memcg_reclaim_begin_memcg_arg);
    let memcg_id = if arg == NO_ARG {
        0
    } else {
        memcg_ptr_id(raw_arg(&ctx, arg))
    };
    reclaim_begin(&MEMCG_RECLAIM, memcg_id);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end_raw(ctx: RawTracePointContext) -> i32 {
    let nr = raw_arg(&ctx, kc!(memcg_reclaim_end_nr_arg));
    let arg = kc!(memcg_reclaim_end_memcg_arg);
    let memcg_id = if arg == NO_ARG {
        0
    } else {
        memcg_ptr_id(raw_arg(&ctx, arg))
    };
    reclaim_end(kind::RECLAIM, &MEMCG_RECLAIM, nr, memcg_id);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin_raw(_ctx: RawTracePointContext) -> i32 {
    reclaim_begin(&DIRECT_RECLAIM, 0);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_end")]
pub fn direct_reclaim_end_raw(ctx: RawTracePointContext) -> i32 {
    let nr = raw_arg(&ctx, kc!(direct_reclaim_end_nr_arg));
    reclaim_end(kind::DIRECT_RECLAIM, &DIRECT_RECLAIM, nr, 0);
    0
}

#[tracepoint]
pub fn memcg_reclaim_begin_tp(_ctx: TracePointContext) -> u32 {
    reclaim_begin(&MEMCG_RECLAIM, 0);
    0
}

#[tracepoint]
pub fn memcg_reclaim_end_tp(ctx: TracePointContext) -> u32 {
    let off = kc!(tp_reclaim_end_nr_off) as usize;
    let nr = unsafe { ctx.read_at::<u64>(off) }.unwrap_or(0);
    reclaim_end(kind::RECLAIM, &MEMCG_RECLAIM, nr, 0);
    0
}

#[tracepoint]
pub fn direct_reclaim_begin_tp(_ctx: TracePointContext) -> u32 {
    reclaim_begin(&DIRECT_RECLAIM, 0);
    0
}

#[tracepoint]
pub fn direct_reclaim_end_tp(ctx: TracePointContext) -> u32 {
    let off = kc!(tp_reclaim_end_nr_off) as usize;
    let nr = unsafe { ctx.read_at::<u64>(off) }.unwrap_or(0);
    reclaim_end(kind::DIRECT_RECLAIM, &DIRECT_RECLAIM, nr, 0);
    0
}
