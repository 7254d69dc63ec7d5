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

/// Entry of the throttle function, whatever hooked it.
#[inline(always)]
fn throttle_enter<C: EbpfContext>(ctx: &C) {
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
    let now = unsafe { bpf_ktime_get_ns() };
    let who = current_task_id();
    let ancestry = walk_ancestry(task_memory_css(task));
    let state = ThrottleState {
        start_ns: now,
        memcg_id: ancestry.memcg_id,
        over_high_id: ancestry.over_high_id,
        reclaim_ns: 0,
        reclaimed_pages: 0,
        brake_rule_id: ancestry.brake_rule_id,
        nr_pages,
        _pad: 0,
    };
    // An entry left by this thread means its last exit was never seen (a
    // kretprobe out of instances): that episode's end is lost.
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

#[fentry(function = "mem_cgroup_handle_over_high")]
pub fn throttle_fentry(ctx: FEntryContext) -> u32 {
    throttle_enter(&ctx);
    0
}

#[fexit(function = "mem_cgroup_handle_over_high")]
pub fn throttle_fexit(_ctx: FExitContext) -> u32 {
    throttle_exit();
    0
}

#[kprobe]
pub fn throttle_kprobe(ctx: ProbeContext) -> u32 {
    throttle_enter(&ctx);
    0
}

#[kretprobe]
pub fn throttle_kretprobe(_ctx: RetProbeContext) -> u32 {
    throttle_exit();
    0
}
