//! Bench only: the empty programs of tracer-ebpf's `baseline.rs`, attached
//! with the same mechanism to the same hooks as each probe that attached,
//! and every loaded program's kernel accounting (`run_time_ns`,
//! `run_cnt`, counted while `kernel.bpf_stats_enabled` is 1). The agent and
//! the commands never call this; `cargo xtask bench` does, on the host and
//! in a VM.

use std::os::fd::{AsFd, AsRawFd};

use super::attach::{Hook, attach};
use super::{Mechanism, Probe, Tracer};
use crate::kernel::offsets::OOM_MEMCG_FUNCTION;

/// The empty programs for a probe attached with `m`.
fn hooks(probe: Probe, m: Mechanism, throttle_fn: Option<&str>) -> Vec<Hook> {
    let pair = |entry: &'static str, exit: &'static str, func: &str| match m {
        Mechanism::Fentry => vec![
            Hook::Fentry {
                prog: entry,
                func: func.to_string(),
            },
            Hook::Fexit {
                prog: exit,
                func: func.to_string(),
            },
        ],
        _ => Vec::new(),
    };
    let raw = |progs: &[(&'static str, &'static str)]| match m {
        Mechanism::RawTracepoint => progs
            .iter()
            .map(|&(prog, tp)| Hook::Raw { prog, tp })
            .collect(),
        _ => Vec::new(),
    };
    match probe {
        Probe::Throttle => match (m, throttle_fn) {
            (Mechanism::Kprobe, Some(f)) => vec![
                Hook::Kprobe {
                    prog: "baseline_throttle_kprobe",
                    func: f.to_string(),
                },
                Hook::Kretprobe {
                    prog: "baseline_throttle_kretprobe",
                    func: f.to_string(),
                },
            ],
            (_, Some(f)) => pair("baseline_throttle_fentry", "baseline_throttle_fexit", f),
            (_, None) => Vec::new(),
        },
        Probe::OomMemcg => pair(
            "baseline_oom_memcg_fentry",
            "baseline_oom_memcg_fexit",
            OOM_MEMCG_FUNCTION,
        ),
        Probe::MemcgReclaim => raw(&[
            (
                "baseline_memcg_reclaim_begin_raw",
                "mm_vmscan_memcg_reclaim_begin",
            ),
            (
                "baseline_memcg_reclaim_end_raw",
                "mm_vmscan_memcg_reclaim_end",
            ),
        ]),
        Probe::DirectReclaim => raw(&[
            (
                "baseline_direct_reclaim_begin_raw",
                "mm_vmscan_direct_reclaim_begin",
            ),
            (
                "baseline_direct_reclaim_end_raw",
                "mm_vmscan_direct_reclaim_end",
            ),
        ]),
        Probe::OomKill => raw(&[("baseline_mark_victim_raw", "mark_victim")]),
        Probe::TaskExit => raw(&[("baseline_task_exit_raw", "sched_process_exit")]),
    }
}

/// Attaches the empty programs beside every probe that attached. Returns
/// what could not be attached, one line each.
pub fn attach_baselines(tracer: &mut Tracer) -> Vec<String> {
    let btf = aya::Btf::from_sys_fs().ok();
    let attached: Vec<(Probe, Mechanism)> = tracer
        .caps
        .probes
        .iter()
        .filter_map(|p| Some((p.probe, p.attached?)))
        .collect();
    let throttle_fn = tracer.caps.throttle_function;
    let mut errors = Vec::new();
    for (probe, m) in attached {
        for hook in hooks(probe, m, throttle_fn) {
            if let Err(e) = attach(
                &mut tracer.ebpf,
                btf.as_ref(),
                &hook,
                &mut tracer.kretprobes,
            ) {
                errors.push(format!("{} ({}): {e}", probe.name(), m.as_str()));
            }
        }
    }
    errors
}

/// One loaded program's kernel accounting.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProgramStats {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The accounting of every program loaded, from its fd's fdinfo.
pub fn program_stats(tracer: &Tracer) -> Vec<ProgramStats> {
    let mut out = Vec::new();
    for (name, prog) in tracer.ebpf.programs() {
        let Ok(fd) = prog.fd() else { continue };
        let raw = fd.as_fd().as_raw_fd();
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")) else {
            continue;
        };
        let get = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.push(ProgramStats {
            name: name.to_string(),
            run_time_ns: get("run_time_ns:"),
            run_cnt: get("run_cnt:"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
