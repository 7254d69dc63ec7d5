//! Task exit: a thread that dies takes its map entries with it.
//!
//! The per-task maps (`THROTTLE`, `MEMCG_RECLAIM`, `DIRECT_RECLAIM`,
//! `OOM_MEMCG`) are preallocated hash maps, not LRU ones, so that no live
//! entry is ever evicted; the price is that an entry whose exit was missed
//! would stay forever. `sched_process_exit` runs in the exiting thread,
//! which deletes whatever it left. Raw tracepoint, or the classic one.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{DIRECT_RECLAIM, MEMCG_RECLAIM, OOM_MEMCG, THROTTLE};

#[inline(always)]
fn forget_current() {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = THROTTLE.remove(tid);
    let _ = MEMCG_RECLAIM.remove(tid);
    let _ = DIRECT_RECLAIM.remove(tid);
    let _ = OOM_MEMCG.remove(tid);
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn task_exit_raw(_ctx: RawTracePointContext) -> i32 {
    forget_current();
    0
}

#[tracepoint]
pub fn task_exit_tp(_ctx: TracePointContext) -> u32 {
    forget_current();
    0
}
