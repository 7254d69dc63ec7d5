//! `memtrace top` from inside the incident: an operator's shell may sit in
//! the very cgroup that is livelocked, where every page `top` charges
//! would throttle it like the hog. So `top`, when it is root, moves itself
//! into a cgroup of its own without limits before it starts, and locks its
//! memory so what it already has is never reclaimed under it.

use std::path::{Path, PathBuf};

use crate::kernel::{CgroupVersion, MemoryHierarchy};
use crate::sys::registry::ancestors;

/// The cgroup `top` moves into, under the hierarchy's root.
pub const OWN_CGROUP: &str = "memtrace-top";

/// What [`leave_limited_cgroup`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Escape {
    /// Not in a cgroup with a memory limit: nothing to do.
    Unlimited,
    /// Moved from `from` (whose line has a limit) to `to`.
    Moved { from: String, to: String },
    /// In a limited cgroup and could not leave it.
    Stuck { from: String, why: String },
}

/// The memory cgroup path of this process in `hierarchy` (as mounted, not
/// as its cgroup namespace shows it).
fn own_cgroup(h: &MemoryHierarchy) -> Option<String> {
    crate::sys::cgroupns::detect(&h.mount, h.version);
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    crate::sys::cgroupns::line_of(&text, h.version).and_then(crate::sys::cgroupns::host_path)
}

/// Whether the cgroup at `dir` has a memory limit of its own.
fn limited(dir: &Path, version: CgroupVersion) -> bool {
    let set = |f: &str| {
        std::fs::read_to_string(dir.join(f)).is_ok_and(|t| {
            let t = t.trim();
            t != "max" && t.parse::<u64>().is_ok_and(|v| v < 1 << 62)
        })
    };
    match version {
        CgroupVersion::V2 => set("memory.high") || set("memory.max"),
        CgroupVersion::V1 => set("memory.limit_in_bytes"),
    }
}

/// Moves this process out of a memory-limited cgroup line into
/// [`OWN_CGROUP`] (made if missing), when it is in one.
pub fn leave_limited_cgroup(h: &MemoryHierarchy) -> Escape {
    let Some(own) = own_cgroup(h) else {
        return Escape::Unlimited;
    };
    let dir = |p: &str| -> PathBuf {
        let rel = p.trim_start_matches('/');
        if rel.is_empty() {
            h.mount.clone()
        } else {
            h.mount.join(rel)
        }
    };
    let target = format!("/{OWN_CGROUP}");
    if own == target || !ancestors(&own).any(|p| p != "/" && limited(&dir(p), h.version)) {
        return Escape::Unlimited;
    }
    let to = dir(&target);
    let moved = std::fs::create_dir(&to)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })
        .and_then(|()| std::fs::write(to.join("cgroup.procs"), std::process::id().to_string()));
    match moved {
        Ok(()) => Escape::Moved {
            from: own,
            to: target,
        },
        Err(e) => Escape::Stuck {
            from: own,
            why: format!("cannot move into {}: {e}", to.display()),
        },
    }
}

/// Locks this process's memory, now and to come: pages it has are never
/// reclaimed from under it while the host or a cgroup is short.
pub fn lock_memory() -> Result<(), std::io::Error> {
    // SAFETY: plain syscall with constant flags.
    let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The line `top` shows about it, if any.
pub fn describe(e: &Escape) -> Option<String> {
    match e {
        Escape::Unlimited => None,
        Escape::Moved { from, to } => Some(format!(
            "memtrace top moved itself from {from} (memory-limited) to {to}, so it keeps drawing while {from} is throttled"
        )),
        Escape::Stuck { from, why } => Some(format!(
            "memtrace top runs in memory-limited {from} and {why}: if {from} is throttled, so is this screen"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_without_limits_is_left_alone() {
        let root = std::env::temp_dir().join(format!("memtrace-escape-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/memory.high"), "max\n").unwrap();
        std::fs::write(root.join("a/memory.max"), "max\n").unwrap();
        assert!(!limited(&root.join("a"), CgroupVersion::V2));
        std::fs::write(root.join("a/memory.high"), "67108864\n").unwrap();
        assert!(limited(&root.join("a"), CgroupVersion::V2));
        std::fs::write(
            root.join("a/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert!(
            !limited(&root.join("a"), CgroupVersion::V1),
            "v1's 'no limit'"
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert!(describe(&Escape::Unlimited).is_none());
        let m = describe(&Escape::Moved {
            from: "/livelock".into(),
            to: "/memtrace-top".into(),
        })
        .unwrap();
        assert!(
            m.contains("from /livelock") && m.contains("to /memtrace-top"),
            "{m}"
        );
    }
}
