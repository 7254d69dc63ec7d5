//! The memory-cgroup walk every hook shares.
//!
//! Owns the way from a task to its memory cgroup (`task->cgroups->
//! subsys[memory]`, never `bpf_get_current_cgroup_id`, which is the v2
//! cgroup even on hybrid hosts), from a css or `mem_cgroup *` to the kernfs
//! id user space knows, and the walk up the hierarchy. The throttle hook
//! ([`super::throttle`]) uses [`walk_ancestry`] to find the cgroup over
//! memory.high and the brake rule; reclaim and OOM use the ids alone. Every
//! offset comes from `KERNEL_CONFIG`, valid only when
//! `config_flags::CGROUP_WALK` (and `MEMCG_COUNTERS` for the counters) is
//! set.

use aya_ebpf::helpers::bpf_get_current_task;
use tracer_ebpf::{MAX_CGROUP_DEPTH, config_flags};

use crate::{BRAKE_RULES, has, read};

/// The memory controller's css of a task: its memory cgroup (in cgroup v2
/// the nearest ancestor-or-self with the controller enabled).
#[inline(always)]
pub(crate) fn task_memory_css(task: u64) -> u64 {
    if !has(config_flags::CGROUP_WALK) {
        return 0;
    }
    let Some(css_set) = read::<u64>(task, kc!(task_cgroups)) else {
        return 0;
    };
    let slot = kc!(css_set_subsys).wrapping_add(kc!(memory_cgrp_id).wrapping_mul(8));
    read::<u64>(css_set, slot).unwrap_or(0)
}

/// The kernfs id of a css's cgroup: the cgroup's inode number in cgroupfs.
#[inline(always)]
pub(crate) fn css_cgroup_id(css: u64) -> u64 {
    let Some(cgroup) = read::<u64>(css, kc!(css_cgroup)) else {
        return 0;
    };
    let Some(kn) = read::<u64>(cgroup, kc!(cgroup_kn)) else {
        return 0;
    };
    read::<u64>(kn, kc!(kn_id)).unwrap_or(0)
}

/// The kernfs id of a `struct mem_cgroup *` (a tracepoint or function
/// argument), 0 for a null pointer.
#[inline(always)]
pub(crate) fn memcg_ptr_id(memcg: u64) -> u64 {
    if memcg == 0 || !has(config_flags::CGROUP_WALK) {
        return 0;
    }
    css_cgroup_id(memcg.wrapping_add(kc!(memcg_css) as u64))
}

/// The kernfs id of the current task's memory cgroup.
#[inline(always)]
pub(crate) fn current_memcg_id() -> u64 {
    let task = unsafe { bpf_get_current_task() };
    css_cgroup_id(task_memory_css(task))
}

/// The nearest cgroup with a brake rule from `css_start` up to, and
/// including, `stop` (the cause); 0 if none. A second walk rather than a
/// level count in the first: per-level constants in the unrolled loop
/// multiply the states the verifier must visit.
#[inline(always)]
fn nearest_rule(css_start: u64, stop: u64) -> u64 {
    let mut css = css_start;
    for _ in 0..MAX_CGROUP_DEPTH {
        if css == 0 {
            return 0;
        }
        let id = css_cgroup_id(css);
        if unsafe { BRAKE_RULES.get(id) }.is_some() {
            return id;
        }
        if id == stop {
            return 0;
        }
        css = read::<u64>(css, kc!(css_parent)).unwrap_or(0);
    }
    0
}

/// What the walk up from the charged memory cgroup found.
pub(crate) struct Ancestry {
    pub(crate) memcg_id: u64,
    pub(crate) over_high_id: u64,
    pub(crate) over_high_usage: u64,
    pub(crate) over_high_limit: u64,
    pub(crate) brake_rule_id: u64,
}

/// Walks from a memory cgroup to the root: finds the ancestor-or-self
/// furthest over its memory.high (the kernel's own penalty comes from the
/// largest overage: the cause of the throttling) and the nearest cgroup
/// with a brake rule at or below that cause. A rule above the cause is
/// never used: its victim could sit outside the subtree whose memory.high
/// is enforced, and killing it would not end this throttling.
#[inline(always)]
pub(crate) fn walk_ancestry(css_start: u64) -> Ancestry {
    let mut out = Ancestry {
        memcg_id: css_cgroup_id(css_start),
        over_high_id: 0,
        over_high_usage: 0,
        over_high_limit: 0,
        brake_rule_id: 0,
    };
    let counters = has(config_flags::MEMCG_COUNTERS);
    let mut best_overage = 0u64;
    let mut css = css_start;
    for _ in 0..MAX_CGROUP_DEPTH {
        if css == 0 {
            break;
        }
        let id = css_cgroup_id(css);
        if counters {
            let memcg = css.wrapping_sub(kc!(memcg_css) as u64);
            let usage = read::<u64>(memcg, kc!(memcg_usage)).unwrap_or(0);
            let high = read::<u64>(memcg, kc!(memcg_high)).unwrap_or(u64::MAX);
            if high > 0 && usage > high {
                // Same fixed-point ratio as the kernel's calculate_overage().
                let overage = ((usage - high) << 20) / high;
                if overage > best_overage {
                    best_overage = overage;
                    out.over_high_id = id;
                    out.over_high_usage = usage;
                    out.over_high_limit = high;
                }
            }
        }
        css = read::<u64>(css, kc!(css_parent)).unwrap_or(0);
    }
    if out.over_high_id != 0 {
        out.brake_rule_id = nearest_rule(css_start, out.over_high_id);
    }
    out
}
