//! The in-kernel brake: the last resort when the agent cannot act.
//!
//! Owns `BRAKE_STATE` (each rule's tumbling window of throttled time) and
//! reads `BRAKE_RULES` and `HEARTBEAT`, which the agent writes
//! (`tracer/src/probe/brake.rs`). The throttle hook ([`super::throttle`])
//! calls [`brake_check`] at entry, with the nearest rule at or below the
//! cause the cgroup walk found, and [`brake_account`] at exit, with the
//! episode's length. A signal leaves as a `Brake` record in `EVENTS` and
//! as an aya-log warning.
//!
//! Episodes end on many CPUs at once: the window's time is added
//! atomically, and the window itself is a bucket of the clock (`now /
//! window`), so a reset needs no lock either (two CPUs resetting the same
//! bucket at once lose at most one episode of it).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_task, bpf_send_signal},
};
use aya_log_ebpf::warn;
use tracer_ebpf::{BrakeEvent, BrakeState, HEARTBEAT_SLOT, TaskId, config_flags, kind};

use crate::{BRAKE_RULES, BRAKE_STATE, EVENTS, HEARTBEAT, emit, has, read};

/// Minimum time between two brake signals for one rule.
const BRAKE_REFIRE_NS: u64 = 1_000_000_000;

/// Adds a finished episode to its brake rule's tumbling window.
#[inline(always)]
pub(crate) fn brake_account(rule_id: u64, now: u64, duration: u64) {
    let Some(rule) = (unsafe { BRAKE_RULES.get(rule_id) }).copied() else {
        return;
    };
    let window = if rule.window_ns == 0 {
        1
    } else {
        rule.window_ns
    };
    let bucket = now / window * window;
    if let Some(state) = BRAKE_STATE.get_ptr_mut(rule_id) {
        add(state, bucket, duration);
        return;
    }
    let fresh = BrakeState {
        window_start_ns: bucket,
        throttled_ns: duration,
        fired_ns: 0,
    };
    // Another CPU may have created it in between: then add to its entry.
    if BRAKE_STATE
        .insert(rule_id, fresh, BPF_NOEXIST as u64)
        .is_err()
        && let Some(state) = BRAKE_STATE.get_ptr_mut(rule_id)
    {
        add(state, bucket, duration);
    }
}

#[inline(always)]
fn add(state: *mut BrakeState, bucket: u64, duration: u64) {
    unsafe {
        if (*state).window_start_ns != bucket {
            (*state).window_start_ns = bucket;
            (*state).throttled_ns = 0;
        }
        // The result is unused, so this is BPF's plain atomic add, which
        // every kernel accepts (a fetching add needs 5.12). The bpf target
        // has no compare-and-swap, hence the intrinsic instead of
        // `AtomicU64::fetch_add`.
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*state).throttled_ns,
            duration,
        );
    }
}

/// Whether the current task is the process the rule names: its tgid and,
/// where the kernel's layout is known, its start time (a reused pid is
/// another process).
#[inline(always)]
fn is_victim(rule_tgid: u32, rule_start_ticks: u64, who: &TaskId) -> bool {
    if rule_tgid == 0 || rule_tgid != who.tgid {
        return false;
    }
    if !has(config_flags::TASK_START) || rule_start_ticks == 0 {
        return true;
    }
    let task = unsafe { bpf_get_current_task() };
    let Some(leader) = read::<u64>(task, kc!(task_group_leader)) else {
        return false;
    };
    let Some(start_ns) = read::<u64>(leader, kc!(task_start_boottime)) else {
        return false;
    };
    let tick = kc!(clock_tick_ns) as u64;
    tick != 0 && start_ns / tick == rule_start_ticks
}

/// The kernel brake: only while the agent's heartbeat is stale, signal the
/// agent's chosen victim when it is the task being throttled and the rule's
/// window is over its limit. A frozen or starved agent still ends the
/// livelock.
#[inline(always)]
pub(crate) fn brake_check<C: EbpfContext>(ctx: &C, rule_id: u64, now: u64, who: &TaskId) {
    let Some(rule) = (unsafe { BRAKE_RULES.get(rule_id) }).copied() else {
        return;
    };
    if !is_victim(rule.victim_tgid, rule.victim_start_ticks, who) {
        return;
    }
    // Armed only once the agent has beaten: a heartbeat never written is
    // an agent still starting, not a frozen one.
    let heartbeat = HEARTBEAT.get(HEARTBEAT_SLOT).copied().unwrap_or(0);
    if heartbeat == 0 {
        return;
    }
    let age = now.saturating_sub(heartbeat);
    if age < rule.stale_ns {
        return;
    }
    let Some(state) = BRAKE_STATE.get_ptr_mut(rule_id) else {
        return;
    };
    let (start, throttled, fired) = unsafe {
        (
            (*state).window_start_ns,
            (*state).throttled_ns,
            (*state).fired_ns,
        )
    };
    // A window that has ended counts nothing: only recent throttling fires.
    let throttled = if now.saturating_sub(start) >= rule.window_ns {
        0
    } else {
        throttled
    };
    if throttled < rule.limit_ns || (fired != 0 && now.saturating_sub(fired) < BRAKE_REFIRE_NS) {
        return;
    }
    let result = unsafe { bpf_send_signal(rule.signal) };
    unsafe { (*state).fired_ns = now };
    warn!(
        ctx,
        "brake: signal {} to tgid {} (throttled {} ns, limit {} ns, heartbeat {} ns old)",
        rule.signal,
        who.tgid,
        throttled,
        rule.limit_ns,
        age
    );
    emit(
        &EVENTS,
        kind::BRAKE,
        &BrakeEvent {
            kind: kind::BRAKE,
            signal: rule.signal,
            ts_ns: now,
            task: *who,
            rule_memcg_id: rule_id,
            throttled_ns: throttled,
            limit_ns: rule.limit_ns,
            heartbeat_age_ns: age,
            result: result as i64,
        },
    );
}
