//! TEMPORARY debug for the `many` investigation: samples each hog's kernel
//! stack and each cgroup's memory.pressure, for an artifact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Value>>,
}

impl Sampler {
    pub fn start(pids: Vec<u64>, cgroups: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut last: Vec<String> = vec![String::new(); pids.len()];
            let mut last_psi: Vec<String> = vec![String::new(); cgroups.len()];
            while !flag.load(Ordering::Relaxed) {
                let t = mono_ns();
                for (i, pid) in pids.iter().enumerate() {
                    let stack = std::fs::read_to_string(format!("/proc/{pid}/stack"))
                        .unwrap_or_default();
                    let frames: Vec<&str> = stack
                        .lines()
                        .filter_map(|l| l.split_whitespace().nth(1))
                        .take(14)
                        .collect();
                    let s = frames.join(" ");
                    if s != last[i] {
                        out.push(json!({"t": t, "pid": pid, "stack": s}));
                        last[i] = s;
                    }
                }
                for (i, cg) in cgroups.iter().enumerate() {
                    let p = std::fs::read_to_string(format!("/sys/fs/cgroup{cg}/memory.pressure"))
                        .unwrap_or_default();
                    let some = p.lines().next().unwrap_or_default().to_string();
                    if some != last_psi[i] {
                        out.push(json!({"t": t, "cg": cg, "psi": some}));
                        last_psi[i] = some;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            out
        });
        Self { stop, handle }
    }

    pub fn finish(self) -> Vec<Value> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

pub fn kallsyms() -> Vec<String> {
    std::fs::read_to_string("/proc/kallsyms")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            ["over_high", "try_charge", "reclaim_high", "charge_memcg", "memcg_stock", "obj_cgroup_charge", "high_work"]
                .iter()
                .any(|k| l.contains(k))
        })
        .map(str::to_string)
        .collect()
}

/// Each BPF program memtrace holds: id, name, run count and the kernel's
/// recursion misses (invocations skipped because the same program was
/// already running on that CPU), from /proc/PID/fdinfo.
pub fn bpf_misses() -> Vec<Value> {
    let names: std::collections::HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.filter_map(Result::ok) {
        let pid = p.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "memtrace" {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let link = std::fs::read_link(fd.path()).unwrap_or_default();
            if !link.to_string_lossy().contains("bpf-prog") {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().trim_start_matches(':').trim().to_string())
                    .unwrap_or_default()
            };
            let id: u32 = field("prog_id").parse().unwrap_or(0);
            out.push(json!({
                "pid": pid,
                "id": id,
                "name": names.get(&id),
                "run_cnt": field("run_cnt"),
                "recursion_misses": field("recursion_misses"),
            }));
        }
    }
    out
}

/// THP and memory.events/memory.stat lines that say whether anything but
/// the throttle stalled the cgroup.
pub fn cgroup_extra(cg: &str) -> Value {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup{cg}/{f}")).unwrap_or_default();
    let stat: Vec<String> = read("memory.stat")
        .lines()
        .filter(|l| ["thp", "pgfault", "pgmajfault", "pgscan", "pgsteal", "workingset_refault", "anon ", "kernel", "pagetables", "compact"].iter().any(|k| l.starts_with(k)))
        .map(str::to_string)
        .collect();
    json!({
        "events": read("memory.events"),
        "stat": stat,
        "thp_enabled": std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default(),
        "thp_defrag": std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/defrag").unwrap_or_default(),
    })
}
