//! The kernel's own counters for the BPF programs a memtrace process
//! holds: how often the kernel skipped one (`recursion_misses`: the
//! program was already running on that CPU, e.g. a task preempted inside
//! it). The scenarios report them next to the PSI comparison, so a
//! mismatch says whether skipped programs were in play.

use std::collections::HashMap;

/// Sum of `recursion_misses` over the programs of process `pid` whose
/// name (as the kernel keeps it: 15 bytes at most) `wanted` accepts, from
/// `/proc/PID/fdinfo` (the kernel counts misses whether or not BPF stats
/// are enabled). `None` if the process holds no such program or the kernel
/// does not count misses (before 5.12).
pub fn recursion_misses(pid: u32, wanted: impl Fn(&str) -> bool) -> Option<u64> {
    // fdinfo has the program's id, not its name.
    let names: HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_string())))
        .collect();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut total = None;
    for fd in fds.filter_map(Result::ok) {
        let is_prog =
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("bpf-prog"));
        if !is_prog {
            continue;
        }
        let path = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        let Ok(info) = std::fs::read_to_string(path) else {
            continue;
        };
        let field = |key: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        let named = field("prog_id")
            .and_then(|id| names.get(&u32::try_from(id).ok()?))
            .is_some_and(|n| wanted(n));
        if let (true, Some(m)) = (named, field("recursion_misses")) {
            total = Some(total.unwrap_or(0) + m);
        }
    }
    total
}
