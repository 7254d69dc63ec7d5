//! Reclaim passes: memcg reclaim and global direct reclaim, begin to end.
//!
//! Owns `MEMCG_RECLAIM` and `DIRECT_RECLAIM` (per-task start of a pass),
//! the in-kernel totals (`RECLAIM_TOTALS` per memory cgroup,
//! `DIRECT_RECLAIM_TOTALS`, the `RECLAIM_PASSES` counter) every pass is
//! added to, and the `Reclaim` and `DirectReclaim` records, written only
//! when the loader asked for them (`config_flags::RECLAIM_RECORDS`). Each pass has a raw
//! tracepoint entry point (arguments at the positions `KERNEL_CONFIG` gives
//! from the `btf_trace_*` typedefs, so the exact memcg when the kernel
//! passes it) and a classic tracepoint fallback (fields at tracefs
//! offsets; the memcg is then the charging task's). A memcg pass that ends
//! inside a throttle episode of the same task adds its time and pages to
//! that task's `THROTTLE` entry, where [`super::throttle`] reads them at
//! exit.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{raw_tracepoint, tracepoint},
    maps::HashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_ebpf::{
    NO_ARG, RECLAIM_BOUNDS_NS, ReclaimEvent, ReclaimState, ReclaimTotals, TOTALS_SLOT,
    config_flags, kind, reclaim_flags,
};

use crate::cgroup::{current_memcg_id, memcg_ptr_id};
use crate::{
    DIRECT_RECLAIM, DIRECT_RECLAIM_TOTALS, MEMCG_RECLAIM, RECLAIM_EVENTS, RECLAIM_PASSES,
    RECLAIM_TOTALS, THROTTLE, current_task_id, emit, has, raw_arg,
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

/// Adds one pass to a totals entry. Many CPUs end passes of one cgroup at
/// once: every field is added atomically. The result is unused, so this is
/// BPF's plain atomic add (XADD), which every kernel we support accepts on
/// a map value (a fetching add needs 5.12); the bpf target has no
/// compare-and-swap, hence the intrinsic.
#[inline(always)]
fn add_pass(totals: *mut ReclaimTotals, duration: u64, pages: u64) {
    // A compare chain the verifier follows without a loop; `bucket` stays
    // below `RECLAIM_TOTAL_BUCKETS`, so the slot is inside the value.
    let b = &RECLAIM_BOUNDS_NS;
    let bucket = if duration <= b[0] {
        0
    } else if duration <= b[1] {
        1
    } else if duration <= b[2] {
        2
    } else if duration <= b[3] {
        3
    } else if duration <= b[4] {
        4
    } else if duration <= b[5] {
        5
    } else if duration <= b[6] {
        6
    } else if duration <= b[7] {
        7
    } else if duration <= b[8] {
        8
    } else if duration <= b[9] {
        9
    } else if duration <= b[10] {
        10
    } else if duration <= b[11] {
        11
    } else if duration <= b[12] {
        12
    } else if duration <= b[13] {
        13
    } else {
        14
    };
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*totals).count, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*totals).pages, pages);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*totals).total_ns, duration);
        let slot = (&raw mut (*totals).le as *mut u64).add(bucket);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1);
    }
}

/// Counts one pass in the in-kernel totals: the cgroup's entry (created
/// zeroed on its first pass) or direct reclaim's slot, then the global
/// pass counter. The counter comes last: a reader that sees it move
/// finds the pass already in the totals, or half added, and then reads
/// again at the next move.
#[inline(always)]
fn aggregate(record_kind: u32, memcg_id: u64, duration: u64, pages: u64) {
    if record_kind == kind::DIRECT_RECLAIM {
        if let Some(t) = DIRECT_RECLAIM_TOTALS.get_ptr_mut(TOTALS_SLOT) {
            add_pass(t, duration, pages);
        }
    } else if memcg_id != 0 {
        // The model has no cgroup 0: neither do the totals.
        match RECLAIM_TOTALS.get_ptr_mut(memcg_id) {
            Some(t) => add_pass(t, duration, pages),
            None => {
                // Another CPU may create it in between: NOEXIST keeps its
                // entry, and the second lookup adds to whichever won.
                let _ =
                    RECLAIM_TOTALS.insert(memcg_id, ReclaimTotals::default(), BPF_NOEXIST as u64);
                if let Some(t) = RECLAIM_TOTALS.get_ptr_mut(memcg_id) {
                    add_pass(t, duration, pages);
                }
            }
        }
    }
    if let Some(passes) = RECLAIM_PASSES.get_ptr_mut(TOTALS_SLOT) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(passes, 1) };
    }
}

#[inline(always)]
fn reclaim_end(
    record_kind: u32,
    map: &HashMap<u32, ReclaimState>,
    nr_reclaimed: u64,
    memcg_at_end: u64,
) {
    let pid = bpf_get_current_pid_tgid() as u32;
    let Some(state) = (unsafe { map.get(pid) }).copied() else {
        return;
    };
    let _ = map.remove(pid);
    let now = unsafe { bpf_ktime_get_ns() };
    let duration = now.saturating_sub(state.start_ns);
    let mut flags = 0;
    let mut memcg_id = if state.memcg_id != 0 {
        state.memcg_id
    } else {
        memcg_at_end
    };
    let records = has(config_flags::RECLAIM_RECORDS);
    if memcg_id != 0 {
        flags |= reclaim_flags::MEMCG_EXACT;
    } else if record_kind == kind::RECLAIM || records {
        // Direct reclaim's totals have no cgroup: only its record needs
        // the task's.
        memcg_id = current_memcg_id();
    }
    if record_kind == kind::RECLAIM
        && let Some(episode) = THROTTLE.get_ptr_mut(pid)
    {
        flags |= reclaim_flags::IN_THROTTLE;
        unsafe {
            (*episode).reclaim_ns += duration;
            (*episode).reclaimed_pages += nr_reclaimed;
        }
    }
    aggregate(record_kind, memcg_id, duration, nr_reclaimed);
    // The agent's default: the totals only, no record, no comm read.
    if !records {
        return;
    }
    emit(
        &RECLAIM_EVENTS,
        record_kind,
        &ReclaimEvent {
            kind: record_kind,
            flags,
            ts_ns: now,
            task: current_task_id(),
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
