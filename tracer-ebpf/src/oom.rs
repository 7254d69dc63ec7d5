//! OOM kills: the victim the kernel marked, and the memcg that ran out.
//!
//! Owns `OOM_MEMCG` (the memory cgroup a task is OOM-handling, set at
//! entry of `mem_cgroup_out_of_memory` and cleared at exit) and the
//! `OomKill` record, written whenever `oom/mark_victim` fires; inside that
//! window the record also names the memcg that ran out. The raw tracepoint
//! reads the victim's task_struct (identity, memory cgroup through
//! [`super::cgroup`], RSS) when the kernel passes it; the classic
//! tracepoint reads the record's pid, comm and kB fields. Where the raw
//! tracepoint passes only a pid (before Linux 6.8), `mark_oom_victim`,
//! which fires it, is traced instead for the task. The record goes
//! to `EVENTS`, which user space decodes into `Event::OomKill`.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    macros::{fentry, fexit, kprobe, kretprobe, raw_tracepoint, tracepoint},
    programs::{
        FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use tracer_ebpf::{NO_ARG, OomKillEvent, config_flags, kind, oom_flags};

use crate::cgroup::{css_cgroup_id, memcg_ptr_id, task_memory_css};
use crate::{EVENTS, OOM_MEMCG, current_task_id, emit, has, raw_arg, read};

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

/// The invoker's part of the record, and the memcg it is OOM-handling.
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
    emit(&EVENTS, kind::OOM_KILL, &event);
    0
}

/// Where `mark_victim` passes only a pid (before Linux 6.8): the function
/// that fires it, whose argument is the victim's task.
#[fentry(function = "mark_oom_victim")]
pub fn oom_victim_fentry(ctx: FEntryContext) -> u32 {
    victim_at_mark(ctx.arg::<u64>(0));
    0
}

#[kprobe]
pub fn oom_victim_kprobe(ctx: ProbeContext) -> u32 {
    victim_at_mark(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[inline(always)]
fn victim_at_mark(task: u64) {
    let mut event = oom_event_base();
    victim_from_task(task, &mut event);
    emit(&EVENTS, kind::OOM_KILL, &event);
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
    emit(&EVENTS, kind::OOM_KILL, &event);
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
