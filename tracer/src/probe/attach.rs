//! Attaching: each probe's candidate mechanisms in order (fentry/fexit,
//! then kprobe/kretprobe; raw tracepoint, then classic tracepoint), an
//! entry/exit pair attached all-or-nothing, and the kernel's refusals
//! explained in words a user can act on.

use std::path::Path;

use aya::Ebpf;
use aya::programs::{FEntry, FExit, KProbe, RawTracePoint, TracePoint};

use super::LoadOptions;
use super::caps::{Attempt, Mechanism, Probe, ProbeReport};
use super::kretprobe::Kretprobe;
use crate::kernel::offsets::{OOM_MEMCG_FUNCTION, OOM_VICTIM_FUNCTION, Resolved};
use crate::kernel::tracefs;

/// One program and where it goes.
#[derive(Clone, Debug)]
pub(super) enum Hook {
    Fentry {
        prog: &'static str,
        func: String,
    },
    Fexit {
        prog: &'static str,
        func: String,
    },
    Kprobe {
        prog: &'static str,
        func: String,
    },
    Kretprobe {
        prog: &'static str,
        func: String,
    },
    Raw {
        prog: &'static str,
        tp: &'static str,
    },
    Tp {
        prog: &'static str,
        category: &'static str,
        name: &'static str,
    },
}

impl Hook {
    fn prog(&self) -> &'static str {
        match self {
            Self::Fentry { prog, .. }
            | Self::Fexit { prog, .. }
            | Self::Kprobe { prog, .. }
            | Self::Kretprobe { prog, .. }
            | Self::Raw { prog, .. }
            | Self::Tp { prog, .. } => prog,
        }
    }
}

/// A way to attach one probe: a mechanism and the programs it needs.
pub(super) struct Candidate {
    mechanism: Mechanism,
    target: String,
    hooks: Vec<Hook>,
    /// Why this candidate cannot work here, found before trying.
    precondition: Option<String>,
}

fn entry_exit(
    mechanism: Mechanism,
    func: Option<&str>,
    progs: [&'static str; 4],
    missing: &str,
) -> Candidate {
    let Some(func) = func else {
        return Candidate {
            mechanism,
            target: "-".into(),
            hooks: Vec::new(),
            precondition: Some(missing.to_string()),
        };
    };
    let f = func.to_string();
    // The exit first: a task that enters after the entry program is
    // attached must find its exit watched, or its episode never ends.
    let (hooks, precondition) = match mechanism {
        Mechanism::Fentry => (
            vec![
                Hook::Fexit {
                    prog: progs[1],
                    func: f.clone(),
                },
                Hook::Fentry {
                    prog: progs[0],
                    func: f.clone(),
                },
            ],
            None,
        ),
        _ => (
            vec![
                Hook::Kretprobe {
                    prog: progs[3],
                    func: f.clone(),
                },
                Hook::Kprobe {
                    prog: progs[2],
                    func: f.clone(),
                },
            ],
            kprobes_missing(),
        ),
    };
    Candidate {
        mechanism,
        target: f,
        hooks,
        precondition,
    }
}

pub(super) fn candidates(probe: Probe, r: &Resolved) -> Vec<Candidate> {
    match probe {
        Probe::Throttle => {
            let progs = [
                "throttle_fentry",
                "throttle_fexit",
                "throttle_kprobe",
                "throttle_kretprobe",
            ];
            let missing = "no memory.high throttle function in this kernel's BTF";
            let mut fentry = entry_exit(Mechanism::Fentry, r.throttle_fn, progs, missing);
            // A second copy of each program (tracer-ebpf/src/throttle.rs):
            // the kernel skips a tracing program on a CPU while a preempted
            // task is inside it, and then the copy records the episode.
            if let Some(func) = r.throttle_fn {
                let func = func.to_string();
                fentry.hooks.insert(
                    1,
                    Hook::Fexit {
                        prog: "throttle_b_fexit",
                        func: func.clone(),
                    },
                );
                fentry.hooks.push(Hook::Fentry {
                    prog: "throttle_b_fentry",
                    func,
                });
            }
            vec![
                fentry,
                entry_exit(Mechanism::Kprobe, r.throttle_fn, progs, missing),
            ]
        }
        Probe::OomMemcg => {
            let progs = [
                "oom_memcg_fentry",
                "oom_memcg_fexit",
                "oom_memcg_kprobe",
                "oom_memcg_kretprobe",
            ];
            let func = r.oom_memcg_fn.then_some(OOM_MEMCG_FUNCTION);
            let missing = "mem_cgroup_out_of_memory is not in this kernel's BTF";
            vec![
                entry_exit(Mechanism::Fentry, func, progs, missing),
                entry_exit(Mechanism::Kprobe, func, progs, missing),
            ]
        }
        Probe::MemcgReclaim => tracepoint_pair(
            ("memcg_reclaim_begin_raw", "memcg_reclaim_end_raw"),
            ("memcg_reclaim_begin_tp", "memcg_reclaim_end_tp"),
            (
                "mm_vmscan_memcg_reclaim_begin",
                "mm_vmscan_memcg_reclaim_end",
            ),
        ),
        Probe::DirectReclaim => tracepoint_pair(
            ("direct_reclaim_begin_raw", "direct_reclaim_end_raw"),
            ("direct_reclaim_begin_tp", "direct_reclaim_end_tp"),
            (
                "mm_vmscan_direct_reclaim_begin",
                "mm_vmscan_direct_reclaim_end",
            ),
        ),
        Probe::TaskExit => vec![
            Candidate {
                mechanism: Mechanism::RawTracepoint,
                target: "sched_process_exit".into(),
                hooks: vec![Hook::Raw {
                    prog: "task_exit_raw",
                    tp: "sched_process_exit",
                }],
                precondition: None,
            },
            Candidate {
                mechanism: Mechanism::Tracepoint,
                target: "sched/sched_process_exit".into(),
                hooks: vec![Hook::Tp {
                    prog: "task_exit_tp",
                    category: "sched",
                    name: "sched_process_exit",
                }],
                precondition: None,
            },
        ],
        // The victim's task (name, RSS, memory cgroup) before its pid:
        // the tracepoint where it passes the task (Linux 6.8+), else the
        // function around it, else the tracepoint's pid alone.
        Probe::OomKill => vec![
            Candidate {
                mechanism: Mechanism::RawTracepoint,
                target: "mark_victim".into(),
                hooks: vec![Hook::Raw {
                    prog: "mark_victim_raw",
                    tp: "mark_victim",
                }],
                precondition: (!r.has(tracer_ebpf::config_flags::VICTIM_IS_TASK)).then(|| {
                    "mark_victim passes only the victim's pid on this kernel (the task from \
                     Linux 6.8)"
                        .into()
                }),
            },
            Candidate {
                precondition: (r.config.tp_victim_comm_off == tracer_ebpf::NO_ARG).then(|| {
                    "the tracepoint's record has no victim name on this kernel (from Linux 6.8)"
                        .into()
                }),
                ..mark_victim_tp("oom/mark_victim")
            },
            victim_function(Mechanism::Fentry, r),
            victim_function(Mechanism::Kprobe, r),
            Candidate {
                mechanism: Mechanism::RawTracepoint,
                target: "mark_victim (pid only)".into(),
                hooks: vec![Hook::Raw {
                    prog: "mark_victim_raw",
                    tp: "mark_victim",
                }],
                precondition: None,
            },
            mark_victim_tp("oom/mark_victim (pid only)"),
        ],
    }
}

/// The classic `oom/mark_victim` tracepoint.
fn mark_victim_tp(target: &str) -> Candidate {
    Candidate {
        mechanism: Mechanism::Tracepoint,
        target: target.into(),
        hooks: vec![Hook::Tp {
            prog: "mark_victim_tp",
            category: "oom",
            name: "mark_victim",
        }],
        precondition: None,
    }
}

/// `mark_oom_victim(task)`, traced at entry, for kernels whose
/// tracepoint passes only a pid.
fn victim_function(mechanism: Mechanism, r: &Resolved) -> Candidate {
    let func = OOM_VICTIM_FUNCTION.to_string();
    let (hook, unsupported) = if mechanism == Mechanism::Fentry {
        let hook = Hook::Fentry {
            prog: "oom_victim_fentry",
            func: func.clone(),
        };
        (hook, None)
    } else {
        let hook = Hook::Kprobe {
            prog: "oom_victim_kprobe",
            func: func.clone(),
        };
        (hook, kprobes_missing())
    };
    let precondition = if r.oom_victim_fn {
        unsupported
    } else {
        Some(format!("{OOM_VICTIM_FUNCTION} is not in this kernel's BTF"))
    };
    Candidate {
        mechanism,
        target: func,
        hooks: vec![hook],
        precondition,
    }
}

fn tracepoint_pair(
    raw: (&'static str, &'static str),
    tp: (&'static str, &'static str),
    names: (&'static str, &'static str),
) -> Vec<Candidate> {
    vec![
        Candidate {
            mechanism: Mechanism::RawTracepoint,
            target: format!("{}/{}", names.0, names.1),
            hooks: vec![
                Hook::Raw {
                    prog: raw.0,
                    tp: names.0,
                },
                Hook::Raw {
                    prog: raw.1,
                    tp: names.1,
                },
            ],
            precondition: None,
        },
        Candidate {
            mechanism: Mechanism::Tracepoint,
            target: format!("vmscan/{}, vmscan/{}", names.0, names.1),
            hooks: vec![
                Hook::Tp {
                    prog: tp.0,
                    category: "vmscan",
                    name: names.0,
                },
                Hook::Tp {
                    prog: tp.1,
                    category: "vmscan",
                    name: names.1,
                },
            ],
            precondition: None,
        },
    ]
}

/// Why no kprobe candidate can work here, if it cannot.
fn kprobes_missing() -> Option<String> {
    (!kprobes_supported())
        .then(|| "the kernel has no kprobe support (built without CONFIG_KPROBES)".into())
}

fn kprobes_supported() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
        || tracefs::mount_point().is_some_and(|t| t.join("kprobe_events").exists())
}

/// Kretprobes made through tracefs, by program name: the loader keeps
/// them for as long as the programs run.
pub(super) type Kretprobes = Vec<(&'static str, Kretprobe)>;

pub(super) fn attach_first(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    opts: &LoadOptions,
    probe: Probe,
    candidates: &[Candidate],
    kretprobes: &mut Kretprobes,
) -> ProbeReport {
    let mut report = ProbeReport {
        probe,
        what: probe.what(),
        attached: None,
        attempts: Vec::new(),
    };
    for c in candidates {
        let error = if opts.deny.contains(&c.mechanism) {
            Some("denied by MEMTRACE_DENY_ATTACH".to_string())
        } else if let Some(why) = &c.precondition {
            Some(why.clone())
        } else {
            attach_all(ebpf, btf, &c.hooks, kretprobes).err()
        };
        let ok = error.is_none();
        report.attempts.push(Attempt {
            mechanism: c.mechanism,
            target: c.target.clone(),
            error,
        });
        if ok {
            report.attached = Some(c.mechanism);
            break;
        }
    }
    report
}

/// Attaches every hook of a candidate, or none: a half-attached entry/exit
/// pair would record episodes that never end.
fn attach_all(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    hooks: &[Hook],
    kretprobes: &mut Kretprobes,
) -> Result<(), String> {
    for (i, hook) in hooks.iter().enumerate() {
        if let Err(e) = attach(ebpf, btf, hook, kretprobes) {
            for done in &hooks[..i] {
                unload(ebpf, done, kretprobes);
            }
            unload(ebpf, hook, kretprobes);
            return Err(e);
        }
    }
    Ok(())
}

pub(super) fn attach(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    hook: &Hook,
    kretprobes: &mut Kretprobes,
) -> Result<(), String> {
    let name = hook.prog();
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the eBPF object"))?;
    let no_btf = || {
        format!(
            "needs BTF ({}), which this kernel lacks",
            crate::kernel::btf::VMLINUX_BTF
        )
    };
    match hook {
        Hook::Fentry { func, .. } => {
            let p: &mut FEntry = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load(func, btf.ok_or_else(no_btf)?)
                .map_err(|e| explain(Mechanism::Fentry, &e))?;
            p.attach()
                .map(drop)
                .map_err(|e| explain(Mechanism::Fentry, &e))
        }
        Hook::Fexit { func, .. } => {
            let p: &mut FExit = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load(func, btf.ok_or_else(no_btf)?)
                .map_err(|e| explain(Mechanism::Fentry, &e))?;
            p.attach()
                .map(drop)
                .map_err(|e| explain(Mechanism::Fentry, &e))
        }
        Hook::Kprobe { func, .. } => {
            let p: &mut KProbe = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| explain(Mechanism::Kprobe, &e))?;
            p.attach(func, 0)
                .map(drop)
                .map_err(|e| explain(Mechanism::Kprobe, &e))
        }
        Hook::Kretprobe { func, prog: name } => {
            let p: &mut KProbe = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| explain(Mechanism::Kprobe, &e))?;
            // Room for every task asleep in the function, through tracefs;
            // the kernel's default instances only when that is refused.
            let made = tracefs::mount_point().and_then(|dir| {
                let fd = p.fd().ok()?;
                Kretprobe::attach(dir, name, func, fd)
                    .map_err(|e| log::debug!("kretprobe {name} through tracefs: {e}"))
                    .ok()
            });
            match made {
                Some(k) => {
                    kretprobes.push((name, k));
                    Ok(())
                }
                None => p
                    .attach(func, 0)
                    .map(drop)
                    .map_err(|e| explain(Mechanism::Kprobe, &e)),
            }
        }
        Hook::Raw { tp, .. } => {
            let p: &mut RawTracePoint = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load()
                .map_err(|e| explain(Mechanism::RawTracepoint, &e))?;
            p.attach(tp)
                .map(drop)
                .map_err(|e| explain(Mechanism::RawTracepoint, &e))
        }
        Hook::Tp { category, name, .. } => {
            let p: &mut TracePoint = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| explain(Mechanism::Tracepoint, &e))?;
            p.attach(category, name)
                .map(drop)
                .map_err(|e| explain(Mechanism::Tracepoint, &e))
        }
    }
}

fn unload(ebpf: &mut Ebpf, hook: &Hook, kretprobes: &mut Kretprobes) {
    kretprobes.retain(|(name, _)| *name != hook.prog());
    let Some(prog) = ebpf.program_mut(hook.prog()) else {
        return;
    };
    // Unloading detaches every link of the program; errors only mean it
    // was not loaded.
    let _ = match hook {
        Hook::Fentry { .. } => <&mut FEntry>::try_from(prog).map(aya::programs::FEntry::unload),
        Hook::Fexit { .. } => <&mut FExit>::try_from(prog).map(aya::programs::FExit::unload),
        Hook::Kprobe { .. } | Hook::Kretprobe { .. } => {
            <&mut KProbe>::try_from(prog).map(aya::programs::KProbe::unload)
        }
        Hook::Raw { .. } => {
            <&mut RawTracePoint>::try_from(prog).map(aya::programs::RawTracePoint::unload)
        }
        Hook::Tp { .. } => <&mut TracePoint>::try_from(prog).map(aya::programs::TracePoint::unload),
    };
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// Turns a program error into a sentence an operator can act on.
fn explain(m: Mechanism, e: &aya::programs::ProgramError) -> String {
    use aya::programs::ProgramError;
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = e
    {
        let errno = io_error.raw_os_error().unwrap_or(0);
        if errno == libc::EPERM || errno == libc::EACCES {
            let what = match m {
                Mechanism::Fentry => "tracing programs (fentry/fexit)",
                Mechanism::Kprobe => "kprobe programs",
                Mechanism::RawTracepoint => "raw tracepoint programs",
                Mechanism::Tracepoint => "tracepoint programs",
            };
            return format!(
                "the kernel refused {what} ({io_error}): lockdown, a BPF LSM policy or a \
                 restricted kernel build"
            );
        }
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return format!(
            "the verifier rejected the program ({io_error}): {}",
            tail.join(" | ")
        );
    }
    let chain = error_chain(e);
    if m == Mechanism::Kprobe && !kprobes_supported() {
        return format!("the kernel has no kprobe support ({chain})");
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exits before entries (an entry must find its exit watched), and two
    /// copies of each through fentry/fexit, so an episode survives the
    /// kernel skipping one copy while a preempted task is inside it.
    #[test]
    fn the_throttle_fentry_candidate_has_two_copies_exits_first() {
        let r = Resolved {
            throttle_fn: Some("__mem_cgroup_handle_over_high"),
            ..Resolved::default()
        };
        let c = candidates(Probe::Throttle, &r);
        let progs: Vec<&str> = c[0].hooks.iter().map(Hook::prog).collect();
        assert_eq!(
            progs,
            [
                "throttle_fexit",
                "throttle_b_fexit",
                "throttle_fentry",
                "throttle_b_fentry"
            ]
        );
        assert!(c[0].hooks.iter().all(|h| matches!(
            h,
            Hook::Fentry { func, .. } | Hook::Fexit { func, .. } if func == "__mem_cgroup_handle_over_high"
        )));
        // Kprobes run with preemption off: one copy is enough.
        let kprobes: Vec<&str> = c[1].hooks.iter().map(Hook::prog).collect();
        assert_eq!(kprobes, ["throttle_kretprobe", "throttle_kprobe"]);
    }

    #[test]
    fn no_throttle_function_means_no_hooks_and_a_reason() {
        let c = candidates(Probe::Throttle, &Resolved::default());
        assert!(
            c.iter()
                .all(|c| c.hooks.is_empty() && c.precondition.is_some())
        );
    }
}
