//! Fills the eBPF programs' [`KernelConfig`] from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the programs cannot name kernel
//! struct fields; they read raw memory at offsets this module looks up.
//! Each group of offsets has a flag: a group that BTF cannot resolve is left
//! off and the programs skip what depends on it, and the reason is recorded
//! for `memtrace check`.

use tracer_ebpf::{KernelConfig, NO_ARG, config_flags};

use crate::kernel::btf::{Btf, Kind};
use crate::kernel::tracefs::Format;

/// Throttle function names, newest first: 7.x splits the function into an
/// inline wrapper and `__mem_cgroup_handle_over_high`.
pub const THROTTLE_FUNCTIONS: [&str; 2] = [
    "__mem_cgroup_handle_over_high",
    "mem_cgroup_handle_over_high",
];

/// The function the memcg OOM path runs, whose first argument is the memory
/// cgroup that ran out.
pub const OOM_MEMCG_FUNCTION: &str = "mem_cgroup_out_of_memory";

/// The function that marks an OOM victim, whose first argument is the
/// victim's task: traced where `mark_victim` passes only a pid.
pub const OOM_VICTIM_FUNCTION: &str = "mark_oom_victim";

/// The configuration plus what could not be resolved.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    pub config: KernelConfig,
    /// The throttle function this kernel has, if any.
    pub throttle_fn: Option<&'static str>,
    /// Whether the kernel has [`OOM_MEMCG_FUNCTION`] as a traceable function.
    pub oom_memcg_fn: bool,
    /// Whether the kernel has [`OOM_VICTIM_FUNCTION`] as a traceable function.
    pub oom_victim_fn: bool,
    /// One line per group that could not be resolved, with the reason.
    pub problems: Vec<String>,
}

impl Resolved {
    pub fn has(&self, flag: u32) -> bool {
        self.config.flags & flag != 0
    }
}

fn group<T>(
    problems: &mut Vec<String>,
    what: &str,
    r: Result<T, crate::kernel::btf::BtfError>,
) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{what}: {e}"));
            None
        }
    }
}

/// Resolves everything from BTF. `mark_victim` and `reclaim_end` are the
/// classic tracepoint formats for the fallback path, when tracefs had them.
pub fn resolve(
    btf: &Btf,
    page_size: u64,
    mark_victim: Option<&Format>,
    reclaim_end: Option<&Format>,
) -> Resolved {
    let mut r = Resolved::default();
    let c = &mut r.config;
    let p = &mut r.problems;

    let walk = group(
        p,
        "memory cgroup identification",
        (|| {
            let memory_cgrp_id = btf.enum_value("memory_cgrp_id").ok_or_else(|| {
                crate::kernel::btf::BtfError::NotFound {
                    kind: "enumerator",
                    name: "memory_cgrp_id".into(),
                }
            })?;
            Ok((
                memory_cgrp_id as u32,
                btf.field_offset("task_struct", &["cgroups"])?,
                btf.field_offset("css_set", &["subsys"])?,
                btf.field_offset("cgroup_subsys_state", &["cgroup"])?,
                btf.field_offset("cgroup_subsys_state", &["parent"])?,
                btf.field_offset("cgroup", &["kn"])?,
                btf.field_offset("kernfs_node", &["id"])?,
                btf.field_offset("mem_cgroup", &["css"])?,
            ))
        })(),
    );
    if let Some((id, cgroups, subsys, cgroup, parent, kn, kn_id, memcg_css)) = walk {
        c.memory_cgrp_id = id;
        c.task_cgroups = cgroups;
        c.css_set_subsys = subsys;
        c.css_cgroup = cgroup;
        c.css_parent = parent;
        c.cgroup_kn = kn;
        c.kn_id = kn_id;
        c.memcg_css = memcg_css;
        c.flags |= config_flags::CGROUP_WALK;
    }

    if let Some((usage, high)) = group(
        p,
        "memory.high counters",
        (|| {
            Ok((
                btf.field_offset("mem_cgroup", &["memory", "usage"])?,
                btf.field_offset("mem_cgroup", &["memory", "high"])?,
            ))
        })(),
    ) {
        c.memcg_usage = usage;
        c.memcg_high = high;
        c.flags |= config_flags::MEMCG_COUNTERS;
    }

    if let Some(off) = group(
        p,
        "in-kernel filter of empty throttle calls",
        btf.field_offset("task_struct", &["memcg_nr_pages_over_high"]),
    ) {
        c.task_nr_pages_over_high = off;
        c.flags |= config_flags::NR_PAGES_OVER_HIGH;
    }

    if let Some((pid, tgid, comm, mm)) = group(
        p,
        "OOM victim identity",
        (|| {
            Ok((
                btf.field_offset("task_struct", &["pid"])?,
                btf.field_offset("task_struct", &["tgid"])?,
                btf.field_offset("task_struct", &["comm"])?,
                btf.field_offset("task_struct", &["mm"])?,
            ))
        })(),
    ) {
        c.task_pid = pid;
        c.task_tgid = tgid;
        c.task_comm = comm;
        c.task_mm = mm;
        c.flags |= config_flags::TASK_FIELDS;
    }

    if let Some((leader, start)) = group(
        p,
        "kernel brake victim start time",
        (|| {
            Ok((
                btf.field_offset("task_struct", &["group_leader"])?,
                btf.field_offset("task_struct", &["start_boottime"])?,
            ))
        })(),
    ) {
        c.task_group_leader = leader;
        c.task_start_boottime = start;
        // /proc/PID/stat start times are in clock ticks of the boot clock.
        // SAFETY: sysconf takes a constant and returns a number.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks > 0 {
            c.clock_tick_ns = (1_000_000_000 / ticks) as u32;
            c.flags |= config_flags::TASK_START;
        }
    }

    if let Some((base, stride, value)) = group(p, "OOM victim RSS", rss_layout(btf)) {
        let idx = |name: &str| btf.enum_value(name).map(|v| v as u32);
        match (
            idx("MM_FILEPAGES"),
            idx("MM_ANONPAGES"),
            idx("MM_SHMEMPAGES"),
        ) {
            (Some(file), Some(anon), Some(shmem)) => {
                c.mm_rss_stat = base;
                c.mm_rss_stride = stride;
                c.mm_rss_value = value;
                c.rss_file_idx = file;
                c.rss_anon_idx = anon;
                c.rss_shmem_idx = shmem;
                c.flags |= config_flags::MM_RSS;
            }
            _ => p.push("OOM victim RSS: MM_*PAGES enumerators missing from BTF".into()),
        }
    }

    // Raw tracepoint argument layouts.
    c.memcg_reclaim_begin_memcg_arg = NO_ARG;
    c.memcg_reclaim_end_memcg_arg = NO_ARG;
    c.memcg_reclaim_end_nr_arg = 0;
    c.direct_reclaim_end_nr_arg = 0;
    if let Ok(params) = btf.raw_tracepoint_params("mm_vmscan_memcg_reclaim_begin") {
        c.memcg_reclaim_begin_memcg_arg = ptr_arg(btf, &params, "mem_cgroup");
    }
    if let Ok(params) = btf.raw_tracepoint_params("mm_vmscan_memcg_reclaim_end") {
        c.memcg_reclaim_end_memcg_arg = ptr_arg(btf, &params, "mem_cgroup");
        c.memcg_reclaim_end_nr_arg = int_arg(btf, &params).unwrap_or(0);
    }
    if let Ok(params) = btf.raw_tracepoint_params("mm_vmscan_direct_reclaim_end") {
        c.direct_reclaim_end_nr_arg = int_arg(btf, &params).unwrap_or(0);
    }
    // Before Linux 6.8 the tracepoint passes only a pid; the loader then
    // traces mark_oom_victim instead (see probe/attach.rs).
    if let Ok(params) = btf.raw_tracepoint_params("mark_victim")
        && params
            .first()
            .is_some_and(|&t| btf.is_ptr_to_struct(t, "task_struct"))
    {
        c.flags |= config_flags::VICTIM_IS_TASK;
    }

    // Classic tracepoint fields, for the fallback programs.
    c.tp_reclaim_end_nr_off = reclaim_end
        .and_then(|f| f.offset("nr_reclaimed"))
        .unwrap_or(8);
    c.tp_victim_pid_off = mark_victim.and_then(|f| f.offset("pid")).unwrap_or(8);
    let field = |name: &str| mark_victim.and_then(|f| f.offset(name)).unwrap_or(NO_ARG);
    c.tp_victim_comm_off = field("comm");
    c.tp_victim_anon_off = field("anon_rss");
    c.tp_victim_file_off = field("file_rss");
    c.tp_victim_shmem_off = field("shmem_rss");
    if c.tp_victim_file_off == NO_ARG || c.tp_victim_shmem_off == NO_ARG {
        c.tp_victim_anon_off = NO_ARG;
    }
    c.page_shift = page_size.trailing_zeros();

    r.throttle_fn = THROTTLE_FUNCTIONS.into_iter().find(|f| btf.has_func(f));
    if r.throttle_fn.is_none() {
        r.problems.push(format!(
            "throttle function: neither {} is in BTF (kernel without CONFIG_MEMCG, or inlined)",
            THROTTLE_FUNCTIONS.join(" nor ")
        ));
    }
    r.oom_memcg_fn = btf.has_func(OOM_MEMCG_FUNCTION);
    r.oom_victim_fn = btf.has_func(OOM_VICTIM_FUNCTION);
    r
}

fn ptr_arg(btf: &Btf, params: &[u32], strukt: &str) -> u32 {
    params
        .iter()
        .position(|&t| btf.is_ptr_to_struct(t, strukt))
        .map_or(NO_ARG, |i| i as u32)
}

fn int_arg(btf: &Btf, params: &[u32]) -> Option<u32> {
    params.iter().position(|&t| btf.is_int(t)).map(|i| i as u32)
}

/// Where the RSS counters live in `mm_struct`: `(base, stride, value)`.
/// Since 6.2 `rss_stat` is an array of `percpu_counter` (read its `count`);
/// before, a `struct mm_rss_stat { atomic_long_t count[]; }`.
fn rss_layout(btf: &Btf) -> Result<(u32, u32, u32), crate::kernel::btf::BtfError> {
    let (ty, base) = btf.field("mm_struct", &["rss_stat"])?;
    let bad =
        || crate::kernel::btf::BtfError::Malformed("unexpected mm_struct.rss_stat layout".into());
    let t = btf.type_by_id(btf.resolve(ty)).ok_or_else(bad)?;
    match t.kind {
        Kind::Array => {
            let elem = btf.resolve(t.type_id);
            let et = btf.type_by_id(elem).ok_or_else(bad)?;
            let stride = btf.size_of(elem).ok_or_else(bad)? as u32;
            if et.kind == Kind::Struct && et.name == "percpu_counter" {
                let value = btf.field_offset("percpu_counter", &["count"])?;
                Ok((base, stride, value))
            } else {
                // atomic_long_t: { counter } at offset 0.
                Ok((base, stride, 0))
            }
        }
        Kind::Struct => {
            let (_, count) = btf.member(btf.resolve(ty), "count").ok_or_else(bad)?;
            Ok((base + count, 8, 0))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::tests::Builder;

    /// A miniature kernel BTF with the fields memtrace reads.
    fn kernel(percpu_rss: bool, with_memcg_arg: bool) -> Btf {
        let mut b = Builder::new();
        let u64t = b.int("long unsigned int", 8);
        let u32t = b.int("unsigned int", 4);
        let i32t = b.int("int", 4);
        let counter = b.strukt("", 8, &[("counter", u64t, 0)]);
        let atomic = b.typedef("atomic_long_t", counter);
        let kn = b.strukt("kernfs_node", 128, &[("id", u64t, 104)]);
        let kn_ptr = b.ptr(kn);
        let cgroup = b.strukt("cgroup", 512, &[("kn", kn_ptr, 264)]);
        let cgroup_ptr = b.ptr(cgroup);
        let css_fwd = b.strukt(
            "cgroup_subsys_state",
            200,
            &[("cgroup", cgroup_ptr, 0), ("parent", u64t, 168)],
        );
        let css_ptr = b.ptr(css_fwd);
        let subsys = b.array(css_ptr, u32t, 14);
        b.strukt("css_set", 300, &[("subsys", subsys, 8)]);
        let pc = b.strukt(
            "page_counter",
            192,
            &[("usage", atomic, 0), ("high", u64t, 184)],
        );
        let memcg = b.strukt(
            "mem_cgroup",
            2048,
            &[("css", css_fwd, 0), ("memory", pc, 256)],
        );
        let memcg_ptr = b.ptr(memcg);
        let chart = b.int("char", 1);
        let comm = b.array(chart, u32t, 16);
        let rss = if percpu_rss {
            let pcc = b.strukt("percpu_counter", 40, &[("count", u64t, 8)]);
            b.array(pcc, u32t, 4)
        } else {
            let arr = b.array(atomic, u32t, 4);
            b.strukt("mm_rss_stat", 32, &[("count", arr, 0)])
        };
        let inner = b.strukt("", 512, &[("rss_stat", rss, 200)]);
        b.strukt("mm_struct", 1024, &[("", inner, 64)]);
        let task = b.strukt(
            "task_struct",
            4096,
            &[
                ("pid", i32t, 1000),
                ("tgid", i32t, 1004),
                ("mm", u64t, 900),
                ("comm", comm, 1500),
                ("cgroups", u64t, 2000),
                ("memcg_nr_pages_over_high", u32t, 2400),
                ("group_leader", u64t, 2600),
                ("start_boottime", u64t, 2700),
            ],
        );
        b.enumeration("cgroup_subsys_id", &[("memory_cgrp_id", 4)]);
        b.enumeration(
            "",
            &[
                ("MM_FILEPAGES", 0),
                ("MM_ANONPAGES", 1),
                ("MM_SWAPENTS", 2),
                ("MM_SHMEMPAGES", 3),
            ],
        );
        let void_ptr = b.ptr(0);
        let task_ptr = b.ptr(task);
        let tp = |b: &mut Builder, name: &str, params: &[u32]| {
            let mut all = vec![void_ptr];
            all.extend_from_slice(params);
            let proto = b.func_proto(0, &all);
            let fptr = b.ptr(proto);
            b.typedef(&format!("btf_trace_{name}"), fptr);
        };
        tp(&mut b, "mark_victim", &[task_ptr, u32t]);
        if with_memcg_arg {
            tp(
                &mut b,
                "mm_vmscan_memcg_reclaim_begin",
                &[u64t, i32t, memcg_ptr],
            );
            tp(&mut b, "mm_vmscan_memcg_reclaim_end", &[u64t, memcg_ptr]);
        } else {
            tp(&mut b, "mm_vmscan_memcg_reclaim_begin", &[i32t, u64t]);
            tp(&mut b, "mm_vmscan_memcg_reclaim_end", &[u64t]);
        }
        tp(&mut b, "mm_vmscan_direct_reclaim_end", &[u64t]);
        let proto = b.func_proto(0, &[u32t]);
        b.func("__mem_cgroup_handle_over_high", proto);
        b.func("mem_cgroup_out_of_memory", proto);
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn resolves_every_group_from_btf() {
        let r = resolve(&kernel(true, true), 4096, None, None);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let c = r.config;
        assert_eq!(c.memory_cgrp_id, 4);
        assert_eq!((c.task_cgroups, c.css_set_subsys, c.kn_id), (2000, 8, 104));
        assert_eq!((c.css_cgroup, c.css_parent, c.cgroup_kn), (0, 168, 264));
        assert_eq!((c.memcg_usage, c.memcg_high), (256, 256 + 184));
        assert_eq!(c.task_nr_pages_over_high, 2400);
        assert_eq!(
            (c.task_pid, c.task_tgid, c.task_comm, c.task_mm),
            (1000, 1004, 1500, 900)
        );
        // rss_stat sits in an anonymous struct at 64, itself at 200.
        assert_eq!(
            (c.mm_rss_stat, c.mm_rss_stride, c.mm_rss_value),
            (264, 40, 8)
        );
        assert_eq!((c.rss_file_idx, c.rss_anon_idx, c.rss_shmem_idx), (0, 1, 3));
        assert_eq!(c.memcg_reclaim_begin_memcg_arg, 2);
        assert_eq!(
            (c.memcg_reclaim_end_nr_arg, c.memcg_reclaim_end_memcg_arg),
            (0, 1)
        );
        assert_eq!(c.page_shift, 12);
        let all = config_flags::CGROUP_WALK
            | config_flags::MEMCG_COUNTERS
            | config_flags::NR_PAGES_OVER_HIGH
            | config_flags::VICTIM_IS_TASK
            | config_flags::TASK_FIELDS
            | config_flags::MM_RSS
            | config_flags::TASK_START;
        assert_eq!(c.flags, all);
        assert_eq!((c.task_group_leader, c.task_start_boottime), (2600, 2700));
        assert_eq!(c.clock_tick_ns, 10_000_000);
        assert_eq!(r.throttle_fn, Some("__mem_cgroup_handle_over_high"));
        assert!(r.oom_memcg_fn);
    }

    #[test]
    fn older_layouts() {
        let r = resolve(&kernel(false, false), 4096, None, None);
        let c = r.config;
        // struct mm_rss_stat { atomic_long_t count[4]; }
        assert_eq!(
            (c.mm_rss_stat, c.mm_rss_stride, c.mm_rss_value),
            (264, 8, 0)
        );
        assert_eq!(c.memcg_reclaim_begin_memcg_arg, NO_ARG);
        assert_eq!(c.memcg_reclaim_end_memcg_arg, NO_ARG);
        assert_eq!(c.memcg_reclaim_end_nr_arg, 0);
    }

    #[test]
    fn missing_fields_degrade_one_group_with_a_reason() {
        let mut b = Builder::new();
        let u32t = b.int("unsigned int", 4);
        b.strukt("task_struct", 64, &[("pid", u32t, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let r = resolve(&btf, 4096, None, None);
        assert_eq!(r.config.flags, 0);
        assert!(r.throttle_fn.is_none());
        let text = r.problems.join("\n");
        assert!(text.contains("memory cgroup identification"), "{text}");
        assert!(text.contains("memcg_nr_pages_over_high"), "{text}");
        assert!(
            text.contains("neither __mem_cgroup_handle_over_high"),
            "{text}"
        );
    }

    #[test]
    fn tracepoint_fallback_fields_come_from_tracefs() {
        let f = Format::parse(
            "\tfield:int pid;\toffset:8;\tsize:4;\n\
             \tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\n\
             \tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\n\
             \tfield:unsigned long file_rss;\toffset:32;\tsize:8;\n\
             \tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\n",
        );
        let r = resolve(&kernel(true, true), 4096, Some(&f), None);
        let c = r.config;
        assert_eq!((c.tp_victim_pid_off, c.tp_victim_comm_off), (8, 12));
        assert_eq!(
            (
                c.tp_victim_anon_off,
                c.tp_victim_file_off,
                c.tp_victim_shmem_off
            ),
            (24, 32, 40)
        );
        let old = Format::parse("\tfield:int pid;\toffset:8;\tsize:4;\n");
        let c = resolve(&kernel(true, true), 4096, Some(&old), None).config;
        assert_eq!(
            (c.tp_victim_comm_off, c.tp_victim_anon_off),
            (NO_ARG, NO_ARG)
        );
    }

    #[test]
    fn running_kernel_resolves() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!(
                "skipped: no readable {} on this kernel",
                crate::kernel::btf::VMLINUX_BTF
            );
            return;
        };
        let r = resolve(&btf, 4096, None, None);
        // Every kernel memtrace targets has these.
        assert!(r.has(config_flags::CGROUP_WALK), "{:?}", r.problems);
        assert!(r.has(config_flags::MEMCG_COUNTERS), "{:?}", r.problems);
        assert!(r.has(config_flags::NR_PAGES_OVER_HIGH), "{:?}", r.problems);
        assert!(r.throttle_fn.is_some(), "{:?}", r.problems);
    }
}
