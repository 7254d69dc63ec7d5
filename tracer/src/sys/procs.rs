//! Processes of a cgroup subtree, as the kill policy sees them.

use std::path::Path;

use serde::Serialize;

/// What the policy needs to know about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// Arguments joined by spaces.
    pub cmdline: String,
    pub rss_bytes: u64,
    /// Process start time in clock ticks since boot: with the pid, it
    /// identifies the process (pids are reused).
    pub start_time: u64,
    pub kernel_thread: bool,
    pub oom_score_adj: i32,
    /// The cgroup path (relative to the hierarchy) it was found in.
    pub cgroup: String,
    /// Its executable (`/proc/PID/exe`), empty when unreadable: who a
    /// process is, which it cannot change by renaming itself.
    pub exe: String,
}

/// PF_KTHREAD in /proc/PID/stat flags.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Reads one process from /proc. None if it is gone. The cmdline is read
/// only `with_cmdline`: it takes the process's mmap lock, which a process
/// deep in reclaim can hold for a long time.
pub fn read_process(pid: u32, page_size: u64, with_cmdline: bool) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, ppid, flags, start_time) = parse_stat(&stat)?;
    let rss_pages = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let cmdline = if !with_cmdline {
        String::new()
    } else {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    // readlink of exe takes no mmap lock on current kernels (RCU).
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let oom_score_adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Some(ProcessInfo {
        pid,
        ppid,
        comm,
        cmdline,
        rss_bytes: rss_pages * page_size,
        start_time,
        kernel_thread: flags & PF_KTHREAD != 0 || pid == 2 || ppid == 2,
        oom_score_adj,
        cgroup: String::new(),
        exe,
    })
}

/// `(comm, ppid, flags, starttime)` from /proc/PID/stat. The comm is in
/// parentheses and may itself contain spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<(String, u32, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] = state, [1] = ppid, [6] = flags, [19] = starttime.
    let ppid = rest.get(1)?.parse().ok()?;
    let flags = rest.get(6)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, flags, start))
}

/// The start time of a process, to check a pid still names it.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, _, _, s)| s)
}

/// Every process in a cgroup directory and below; `rel` is the cgroup's
/// path, recorded on each process.
pub fn subtree_processes(
    dir: &Path,
    rel: &str,
    page_size: u64,
    with_cmdline: bool,
) -> Vec<ProcessInfo> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), rel.to_string())];
    while let Some((d, r)) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if let Some(mut p) = read_process(pid, page_size, with_cmdline) {
                    p.cgroup = r.clone();
                    out.push(p);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let child = if r == "/" {
                        format!("/{name}")
                    } else {
                        format!("{r}/{name}")
                    };
                    stack.push((e.path(), child));
                }
            }
        }
    }
    out
}

/// Whether a live (not zombie, not exiting) process's memory cgroup is
/// `path` or below, in the hierarchy of `version`.
pub fn in_cgroup(pid: u32, path: &str, version: crate::kernel::CgroupVersion) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    if matches!(state, Some("Z" | "X" | "x")) {
        return false;
    }
    let Ok(text) = std::fs::read(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    cgroup_file_in(&text, path, version)
}

/// Whether the memory hierarchy's line of a `/proc/PID/cgroup` file names
/// `path` or a cgroup below it. Allocation-free: the kill path calls it.
pub fn cgroup_file_in(text: &[u8], path: &str, version: crate::kernel::CgroupVersion) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    // Relative to this process's cgroup namespace (see `cgroupns`).
    crate::sys::cgroupns::line_of(text, version)
        .is_some_and(|own| crate::sys::cgroupns::is_under(own, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_tricky_comm() {
        let stat = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000000 250 18446744073709551615";
        let (comm, ppid, flags, start) = parse_stat(stat).unwrap();
        assert_eq!(comm, "my (weird) proc");
        assert_eq!(ppid, 1);
        assert_eq!(flags, 4194560);
        assert_eq!(start, 987654);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S").is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = read_process(std::process::id(), 4096, true).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(!me.kernel_thread);
        assert!(!me.cmdline.is_empty());
        assert_eq!(start_time(std::process::id()), Some(me.start_time));
    }

    #[test]
    fn kernel_threads_are_recognised() {
        // kthreadd is pid 2 on every Linux system.
        if let Some(k) = read_process(2, 4096, false) {
            assert!(k.kernel_thread, "{k:?}");
        }
    }

    #[test]
    fn this_process_is_in_its_own_memory_cgroup_and_its_ancestors() {
        use crate::kernel::CgroupVersion;
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let me = std::process::id();
        // Whichever hierarchy holds the memory controller here.
        let (version, own) = text
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                if c.split(',').any(|c| c == "memory") {
                    Some((CgroupVersion::V1, path.to_string()))
                } else if c.is_empty() {
                    Some((CgroupVersion::V2, path.to_string()))
                } else {
                    None
                }
            })
            .unwrap();
        assert!(in_cgroup(me, &own, version), "{own}");
        assert!(in_cgroup(me, "/", version));
        assert!(!in_cgroup(me, "/memtrace-no-such-cgroup", version));
        assert!(!in_cgroup(u32::MAX, "/", version), "no such process");
    }
}
