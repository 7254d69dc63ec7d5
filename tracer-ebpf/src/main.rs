//! memtrace's kernel hooks: the first stage of the pipeline.
//!
//! ```text
//! throttle fn entry/exit ─┐
//! memcg reclaim begin/end ├─► EVENTS ring buffer ─► user space (decode)
//! direct reclaim, OOM ────┘      (reservation failures counted in LOST)
//! ```
//!
//! Each probe has more than one attach mechanism (fentry/fexit or
//! kprobe/kretprobe for the throttle function, raw tracepoint or classic
//! tracepoint for reclaim and OOM); user space loads the programs of the
//! mechanism the kernel allows and leaves the others unloaded. The shared
//! logic lives in plain functions the per-mechanism entry points call.
//!
//! Kernel struct offsets come from the `KERNEL_CONFIG` global, which user
//! space fills from BTF before loading: Rust eBPF has no CO-RE.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
compile_error!(
    "tracer-ebpf's programs build only for the bpf target; `cargo build -p memtrace` builds and embeds them"
);

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_send_signal,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use aya_log_ebpf::warn;
use tracer_ebpf::{
    BrakeEvent, BrakeRule, BrakeState, COMM_LEN, HEARTBEAT_SLOT, KernelConfig, MAX_CGROUP_DEPTH,
    NO_ARG, OomKillEvent, ReclaimEvent, ReclaimState, TaskId, ThrottleEndEvent, ThrottleStartEvent,
    ThrottleState, config_flags, kind, oom_flags, reclaim_flags,
};

#[unsafe(no_mangle)]
static KERNEL_CONFIG: KernelConfig = unsafe { core::mem::zeroed() };

/// Reads one field of `KERNEL_CONFIG`. Volatile, so the compiler cannot
/// fold the zeroed initial value: the loader patches it before loading.
macro_rules! kc {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const KERNEL_CONFIG.$field) }
    };
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Ring-buffer reservation failures per record kind.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Tasks inside the throttle function, by thread id.
#[map]
static THROTTLE: LruHashMap<u32, ThrottleState> = LruHashMap::with_max_entries(16384, 0);

/// Tasks inside a memcg reclaim pass, by thread id.
#[map]
static MEMCG_RECLAIM: LruHashMap<u32, ReclaimState> = LruHashMap::with_max_entries(16384, 0);

/// Tasks inside a direct reclaim pass, by thread id.
#[map]
static DIRECT_RECLAIM: LruHashMap<u32, ReclaimState> = LruHashMap::with_max_entries(16384, 0);

/// The memory cgroup being OOM-handled by a task, by thread id.
#[map]
static OOM_MEMCG: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// Brake rules by memory cgroup id, written by the agent.
#[map]
static BRAKE_RULES: HashMap<u64, BrakeRule> = HashMap::with_max_entries(256, 0);

/// Kernel-side accounting of each brake rule, created only for a cgroup
/// with a rule. User space deletes an entry with its rule. Not LRU: an LRU
/// map this small evicts live entries before it is full (per-CPU free
/// lists), which would restart a window and delay the brake. Four times
/// the rules leaves room for an entry recreated while its rule was
/// being deleted.
#[map]
static BRAKE_STATE: HashMap<u64, BrakeState> = HashMap::with_max_entries(1024, 0);

/// The agent's heartbeat: its last monotonic timestamp.
#[map]
static HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

/// Minimum time between two brake signals for one rule.
const BRAKE_REFIRE_NS: u64 = 1_000_000_000;

#[inline(always)]
fn count_lost(record_kind: u32) {
    if let Some(slot) = LOST.get_ptr_mut(record_kind) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn emit<T: 'static>(record_kind: u32, record: &T) {
    if EVENTS.output::<T>(record, 0).is_err() {
        count_lost(record_kind);
    }
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    let addr = base.wrapping_add(off as u64) as *const T;
    unsafe { bpf_probe_read_kernel(addr) }.ok()
}

#[inline(always)]
fn has(flag: u32) -> bool {
    kc!(flags) & flag != 0
}

#[inline(always)]
fn current_task_id() -> TaskId {
    let pid_tgid = bpf_get_current_pid_tgid();
    TaskId {
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// The memory controller's css of a task: its memory cgroup (in cgroup v2
/// the nearest ancestor-or-self with the controller enabled).
#[inline(always)]
fn task_memory_css(task: u64) -> u64 {
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
fn css_cgroup_id(css: u64) -> u64 {
    let Some(cgroup) = read::<u64>(css, kc!(css_cgroup)) else {
        return 0;
    };
    let Some(kn) = read::<u64>(cgroup, kc!(cgroup_kn)) else {
        return 0;
    };
    read::<u64>(kn, kc!(kn_id)).unwrap_or(0)
}

#[inline(always)]
fn memcg_ptr_id(memcg: u64) -> u64 {
    if memcg == 0 || !has(config_flags::CGROUP_WALK) {
        return 0;
    }
    css_cgroup_id(memcg.wrapping_add(kc!(memcg_css) as u64))
}

#[inline(always)]
fn current_memcg_id() -> u64 {
    let task = unsafe { bpf_get_current_task() };
    css_cgroup_id(task_memory_css(task))
}

/// What the walk up from the charged memory cgroup found.
struct Ancestry {
    memcg_id: u64,
    over_high_id: u64,
    over_high_usage: u64,
    over_high_limit: u64,
    brake_rule_id: u64,
}

/// Walks from a memory cgroup to the root: finds the ancestor-or-self
/// furthest over its memory.high (the kernel's own penalty comes from the
/// largest overage) and the nearest cgroup with a brake rule.
#[inline(always)]
fn walk_ancestry(css_start: u64) -> Ancestry {
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
        if out.brake_rule_id == 0 && unsafe { BRAKE_RULES.get(id) }.is_some() {
            out.brake_rule_id = id;
        }
        css = read::<u64>(css, kc!(css_parent)).unwrap_or(0);
    }
    out
}

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
    if THROTTLE.insert(who.pid, state, 0).is_err() {
        count_lost(kind::THROTTLE_END);
        return;
    }
    emit(
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

/// Adds a finished episode to its brake rule's tumbling window.
#[inline(always)]
fn brake_account(rule_id: u64, now: u64, duration: u64) {
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
fn brake_check<C: EbpfContext>(ctx: &C, rule_id: u64, now: u64, who: &TaskId) {
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

/// Reads raw tracepoint argument `n`; the index must be a constant for the
/// verifier, hence the match.
#[inline(always)]
fn raw_arg(ctx: &RawTracePointContext, n: u32) -> u64 {
    match n {
        0 => ctx.arg::<u64>(0),
        1 => ctx.arg::<u64>(1),
        2 => ctx.arg::<u64>(2),
        3 => ctx.arg::<u64>(3),
        _ => 0,
    }
}

#[inline(always)]
fn reclaim_begin(map: &LruHashMap<u32, ReclaimState>, memcg_id: u64) {
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
    map: &LruHashMap<u32, ReclaimState>,
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

/// Fills the victim's identity, memory cgroup and RSS from its task_struct.
#[inline(always)]
fn victim_from_task(task: u64, event: &mut OomKillEvent) {
    if has(config_flags::TASK_FIELDS) {
        event.victim.pid = read::<u32>(task, kc!(task_pid)).unwrap_or(0);
        event.victim.tgid = read::<u32>(task, kc!(task_tgid)).unwrap_or(0);
        let comm = task.wrapping_add(kc!(task_comm) as u64) as *const u8;
        let _ = unsafe { bpf_probe_read_kernel_buf(comm, &mut event.victim.comm) };
        event.flags |= oom_flags::VICTIM_TASK;
    }
    event.victim_memcg_id = css_cgroup_id(task_memory_css(task));
    if has(config_flags::MM_RSS)
        && let Some(mm) = read::<u64>(task, kc!(task_mm))
        && mm != 0
    {
        let base = kc!(mm_rss_stat);
        let stride = kc!(mm_rss_stride);
        let value = kc!(mm_rss_value);
        let counter = |idx: u32| -> u64 {
            let off = base
                .wrapping_add(idx.wrapping_mul(stride))
                .wrapping_add(value);
            // Per-cpu counters can read slightly negative.
            read::<i64>(mm, off).unwrap_or(0).max(0) as u64
        };
        event.anon_rss_pages = counter(kc!(rss_anon_idx));
        event.file_rss_pages = counter(kc!(rss_file_idx));
        event.shmem_rss_pages = counter(kc!(rss_shmem_idx));
        event.flags |= oom_flags::RSS;
    }
}

#[inline(always)]
fn oom_event_base() -> OomKillEvent {
    let invoker = current_task_id();
    let mut event = OomKillEvent {
        kind: kind::OOM_KILL,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        invoker,
        ..Default::default()
    };
    if let Some(memcg_id) = unsafe { OOM_MEMCG.get(invoker.pid) } {
        event.oom_memcg_id = *memcg_id;
        event.flags |= oom_flags::OOM_MEMCG;
    }
    event
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mark_victim_raw(ctx: RawTracePointContext) -> i32 {
    let mut event = oom_event_base();
    let arg0 = raw_arg(&ctx, 0);
    if has(config_flags::VICTIM_IS_TASK) {
        victim_from_task(arg0, &mut event);
    } else {
        event.victim.pid = arg0 as u32;
    }
    emit(kind::OOM_KILL, &event);
    0
}

#[tracepoint]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    let mut event = oom_event_base();
    let pid_off = kc!(tp_victim_pid_off) as usize;
    event.victim.pid = unsafe { ctx.read_at::<u32>(pid_off) }.unwrap_or(0);
    let comm_off = kc!(tp_victim_comm_off);
    if comm_off != NO_ARG
        && let Ok(loc) = unsafe { ctx.read_at::<u32>(comm_off as usize) }
    {
        // __data_loc: low 16 bits offset in the record, high 16 bits length.
        let src = (ctx.as_ptr() as u64).wrapping_add((loc & 0xffff) as u64) as *const u8;
        let _ = unsafe { bpf_probe_read_kernel_buf(src, &mut event.victim.comm) };
    }
    let anon_off = kc!(tp_victim_anon_off);
    if anon_off != NO_ARG {
        // The tracepoint reports kB.
        let shift = kc!(page_shift).saturating_sub(10);
        let kb = |off: u32| unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0) >> shift;
        event.anon_rss_pages = kb(anon_off);
        event.file_rss_pages = kb(kc!(tp_victim_file_off));
        event.shmem_rss_pages = kb(kc!(tp_victim_shmem_off));
        event.flags |= oom_flags::RSS;
    }
    emit(kind::OOM_KILL, &event);
    0
}

#[inline(always)]
fn oom_memcg_enter(memcg: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = OOM_MEMCG.insert(tid, memcg_ptr_id(memcg), 0);
}

#[inline(always)]
fn oom_memcg_exit() {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = OOM_MEMCG.remove(tid);
}

#[fentry(function = "mem_cgroup_out_of_memory")]
pub fn oom_memcg_fentry(ctx: FEntryContext) -> u32 {
    oom_memcg_enter(ctx.arg::<u64>(0));
    0
}

#[fexit(function = "mem_cgroup_out_of_memory")]
pub fn oom_memcg_fexit(_ctx: FExitContext) -> u32 {
    oom_memcg_exit();
    0
}

#[kprobe]
pub fn oom_memcg_kprobe(ctx: ProbeContext) -> u32 {
    oom_memcg_enter(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn oom_memcg_kretprobe(_ctx: RetProbeContext) -> u32 {
    oom_memcg_exit();
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_send_signal and bpf_get_current_task are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
