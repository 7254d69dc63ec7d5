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
