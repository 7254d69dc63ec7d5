//! Host integration tests: memtrace on the real kernel of this machine, as
//! one test binary with a module per area. On this project's hosts the
//! memory controller is on cgroup v1 and tracing programs are refused, so
//! these exercise reclaim and OOM probes, the agent's alerts and metrics,
//! recordings, and the screens in a real terminal; real memory.high
//! throttling is in the VM tests. Root only (`--features root-tests`, as
//! `cargo xtask test` runs them).
#![cfg(feature = "root-tests")]

mod agent;
mod events;
mod examples;
mod incident;
mod reclaim;
mod record;
mod top;

use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};

use memtrace_tests::cgroup::TestCgroup;
use memtrace_tests::run::{in_cgroup, workspace_bin};

/// One host test at a time: they share the kernel, and several watch it
/// whole (the agent alerts on any OOM kill, `top` shows every cgroup), so
/// one test's squeeze must not show up in another's assertions.
fn serial() -> MutexGuard<'static, ()> {
    static HOST: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next still runs alone.
    HOST.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The parents of a nested test cgroup, removed (deepest first) when
/// dropped; they are returned before the cgroup, so dropped after it.
struct Parents(Vec<std::path::PathBuf>);

impl Drop for Parents {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A test cgroup at `top/rel` (each a path of one or more segments, as
/// systemd or a runtime would name them), and its parents to clean up.
fn nested_cgroup(top: &str, rel: &str) -> (Parents, TestCgroup) {
    let layout = memtrace::CgroupLayout::detect().unwrap();
    let mount = layout.memory.expect("a memory controller").mount;
    let mut parents = Vec::new();
    let mut at = mount.clone();
    for seg in top
        .split('/')
        .chain(rel.split('/'))
        .filter(|s| !s.is_empty())
    {
        at = at.join(seg);
        parents.push(at.clone());
    }
    parents.pop();
    parents.reverse();
    let cg = TestCgroup::create(&format!("{top}/{rel}")).unwrap();
    (Parents(parents), cg)
}

/// Squeezes a cgroup limited to 64 MiB with a 200 MiB hog until the OOM
/// killer kills it; returns the hog's pid.
fn squeeze(cg: &TestCgroup) -> u32 {
    let child = in_cgroup(&workspace_bin("hog"), &cg.procs_file())
        .args(["--mb", "200", "--step-mb", "8"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the hog should have been OOM-killed");
    pid
}
