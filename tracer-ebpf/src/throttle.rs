//! The memory.high throttle function: one episode per entry with pages
//! charged over high.
//!
//! Owns the `THROTTLE` entry of a task from entry to exit of the throttle
//! function (`__mem_cgroup_handle_over_high` on 7.x,
//! `mem_cgroup_handle_over_high` on 6.x; the loader attaches to the one
//! BTF names, whatever the macros say) and the `ThrottleStart` and
//! `ThrottleEnd` records. At entry it walks the hierarchy
//! ([`super::cgroup::walk_ancestry`]) and hands the nearest brake rule to
//! [`super::brake::brake_check`]; at exit it adds the episode to the rule's
//! window ([`super::brake::brake_account`]). Nested memcg reclaim
//! ([`super::reclaim`]) adds its time to the same `THROTTLE` entry before
//! the exit reads it.
//!
//! Each of entry and exit is two programs with the same code. A tracing
//! program can be preempted (7.x kernels preempt lazily inside the kernel;
//! a ring buffer wakeup or a map lock's `preempt_enable` is enough), and
//! while it is, the kernel's recursion guard skips that program for every
//! other task entering the function on the same CPU: their episodes went
//! unseen, up to 2 s each (measured on 7.2: 1-3 skipped entries and 1-2
//! skipped exits per `many` run, counted in each program's
//! `recursion_misses`). The guard is per program, so a second copy runs
//! when the first is skipped; an episode is lost only if both are, which
//! needs two tasks preempted inside the two copies on one CPU at once.
//! Entry copies dedupe through [`ThrottleState::entered_by`]; the exit
//! copies through the map itself (the first removes the entry).

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_task, bpf_ktime_get_ns},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use tracer_ebpf::{ThrottleEndEvent, ThrottleStartEvent, ThrottleState, config_flags, kind};

use crate::brake::{brake_account, brake_check};
use crate::cgroup::{task_memory_css, walk_ancestry};
use crate::{EVENTS, THROTTLE, count_lost, current_task_id, emit, has, read};

/// Entry of the throttle function, whatever hooked it; `copy` is the bit
/// of the program copy running (kprobes have one copy: they run with
/// preemption off, so nothing is skipped while one is preempted).
#[inline(always)]
fn throttle_enter<C: EbpfContext>(ctx: &C, copy: u32) {
    let task = unsafe { bpf_get_current_task() };
    let mut nr_pages = 0u32;
    if has(config_flags::NR_PAGES_OVER_HIGH) {
        nr_pages = read::<u32>(task, kc!(task_nr_pages_over_high)).unwrap_or(0);
        // The function runs on every return to user space and returns at
        // once when nothing was charged over high: not an episode.
        if nr_pages == 0 {
            return;
        }
    }
    let who = current_task_id();
    // An entry this call already made, by the other copy: this copy has
    // nothing to add. Its own bit there means the entry is an older call's.
    if let Some(state) = THROTTLE.get_ptr_mut(who.pid) {
        let seen = unsafe { (*state).entered_by };
        if seen != 0 && seen & copy == 0 {
            unsafe { (*state).entered_by = seen | copy };
            return;
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let ancestry = walk_ancestry(task_memory_css(task));
    let state = ThrottleState {
        start_ns: now,
        memcg_id: ancestry.memcg_id,
        over_high_id: ancestry.over_high_id,
        reclaim_ns: 0,
        reclaimed_pages: 0,
        brake_rule_id: ancestry.brake_rule_id,
        nr_pages,
        entered_by: copy,
    };
    // An entry left by this thread means its last exit was never seen (a
    // kretprobe out of instances, both fexit copies skipped): that
    // episode's end is lost.
    if unsafe { THROTTLE.get(who.pid) }.is_some() {
        count_lost(kind::THROTTLE_END);
    }
    if THROTTLE.insert(who.pid, state, 0).is_err() {
        count_lost(kind::THROTTLE_START);
        return;
    }
    emit(
        &EVENTS,
        kind::THROTTLE_START,
        &ThrottleStartEvent {
            kind: kind::THROTTLE_START,
            nr_pages,
            ts_ns: now,
            task: who,
            memcg_id: ancestry.memcg_id,
            over_high_id: ancestry.over_high_id,
            over_high_usage: ancestry.over_high_usage,
            over_high_limit: ancestry.over_high_limit,
        },
    );
    if ancestry.brake_rule_id != 0 {
        brake_check(ctx, ancestry.brake_rule_id, now, &who);
    }
}

/// Exit of the throttle function: one complete episode.
#[inline(always)]
fn throttle_exit() {
    let who = current_task_id();
    let Some(state) = (unsafe { THROTTLE.get(who.pid) }).copied() else {
        return;
    };
    let _ = THROTTLE.remove(who.pid);
    let now = unsafe { bpf_ktime_get_ns() };
    let duration = now.saturating_sub(state.start_ns);
    if state.brake_rule_id != 0 {
        brake_account(state.brake_rule_id, now, duration);
    }
    emit(
        &EVENTS,
        kind::THROTTLE_END,
        &ThrottleEndEvent {
            kind: kind::THROTTLE_END,
            nr_pages: state.nr_pages,
            ts_ns: now,
            task: who,
            memcg_id: state.memcg_id,
            over_high_id: state.over_high_id,
            start_ns: state.start_ns,
            reclaim_ns: state.reclaim_ns,
            reclaimed_pages: state.reclaimed_pages,
        },
    );
}

/// The entry copies' bits in [`ThrottleState::entered_by`].
const COPY_A: u32 = 1;
const COPY_B: u32 = 2;

#[fentry(function = "mem_cgroup_handle_over_high")]
pub fn throttle_fentry(ctx: FEntryContext) -> u32 {
    throttle_enter(&ctx, COPY_A);
    0
}

/// The second copy of the entry: runs when the kernel skips the first.
#[fentry(function = "mem_cgroup_handle_over_high")]
pub fn throttle_b_fentry(ctx: FEntryContext) -> u32 {
    throttle_enter(&ctx, COPY_B);
    0
}

#[fexit(function = "mem_cgroup_handle_over_high")]
pub fn throttle_fexit(_ctx: FExitContext) -> u32 {
    throttle_exit();
    0
}

/// The second copy of the exit: the first that runs ends the episode.
#[fexit(function = "mem_cgroup_handle_over_high")]
pub fn throttle_b_fexit(_ctx: FExitContext) -> u32 {
    throttle_exit();
    0
}

#[kprobe]
pub fn throttle_kprobe(ctx: ProbeContext) -> u32 {
    throttle_enter(&ctx, COPY_A);
    0
}

#[kretprobe]
pub fn throttle_kretprobe(_ctx: RetProbeContext) -> u32 {
    throttle_exit();
    0
}
