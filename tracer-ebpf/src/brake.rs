//! The in-kernel brake: the last resort when the agent cannot act.
//!
//! Owns `BRAKE_STATE` (each rule's tumbling window of throttled time) and
//! reads `BRAKE_RULES` and `HEARTBEAT`, which the agent writes
//! (`tracer/src/brake.rs`). The throttle hook ([`super::throttle`]) calls
//! [`brake_check`] at entry, with the nearest rule the cgroup walk found,
//! and [`brake_account`] at exit, with the episode's length. A signal
//! leaves as a `Brake` record in `EVENTS` and as an aya-log warning.

use aya_ebpf::{EbpfContext, helpers::bpf_send_signal};
use aya_log_ebpf::warn;
use tracer_ebpf::{BrakeEvent, BrakeState, HEARTBEAT_SLOT, TaskId, kind};

use crate::{BRAKE_RULES, BRAKE_STATE, HEARTBEAT, emit};

/// Minimum time between two brake signals for one rule.
const BRAKE_REFIRE_NS: u64 = 1_000_000_000;

/// Adds a finished episode to its brake rule's tumbling window.
#[inline(always)]
pub(crate) fn brake_account(rule_id: u64, now: u64, duration: u64) {
    let Some(rule) = (unsafe { BRAKE_RULES.get(rule_id) }).copied() else {
        return;
    };
    match BRAKE_STATE.get_ptr_mut(rule_id) {
        Some(state) => unsafe {
            if now.saturating_sub((*state).window_start_ns) > rule.window_ns {
                (*state).window_start_ns = now;
                (*state).throttled_ns = 0;
            }
            (*state).throttled_ns += duration;
        },
        None => {
            let fresh = BrakeState {
                window_start_ns: now,
                throttled_ns: duration,
                fired_ns: 0,
            };
            let _ = BRAKE_STATE.insert(rule_id, fresh, 0);
        }
    }
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
    if rule.victim_tgid == 0 || rule.victim_tgid != who.tgid {
        return;
    }
    let heartbeat = HEARTBEAT.get(HEARTBEAT_SLOT).copied().unwrap_or(0);
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
    let throttled = if now.saturating_sub(start) > rule.window_ns {
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
