//! Programs the agent starts (`exec` alert sinks) run as ordinary
//! processes, not as the agent: nice 0 instead of its -10, oom_score_adj 0
//! instead of its -1000, the file limit it started with (it raises its
//! own, [`crate::sys::own::raise_fd_limit`]), and outside the agent's
//! cgroup, whose memory.min protects the agent alone. Each is set in the child between fork and
//! exec, so the program's first instruction already runs that way.
//!
//! The cgroup: a sibling of the agent's own, `memtrace-alerts` next to
//! it (under systemd `/system.slice/memtrace-alerts`), created at start.
//! Not the parent: a cgroup whose children use controllers cannot hold
//! processes itself (cgroup v2's no-internal-processes rule), which is
//! always so for a systemd slice. Not a child of the agent's cgroup: the
//! protection of memory.min covers the whole subtree. A sibling in the
//! same slice is under the slice's limits like any other service, is not
//! protected, and a budget on `/system.slice/*.service` does not match it.
//! Only where the memory controller is on cgroup v2; an agent in the root
//! cgroup has nothing to move out of.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The sibling cgroup's name.
pub const ALERTS_CGROUP: &str = "memtrace-alerts";

/// Prepared once, applied to every child.
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// `cgroup.procs` of the cgroup children move to, open for writing.
    procs: Option<OwnedFd>,
    /// Its directory, removed at stop when empty.
    dir: Option<PathBuf>,
}

impl ChildSetup {
    /// Children move to a sibling of this process's cgroup in the cgroup
    /// v2 hierarchy mounted at `v2_mount` (None: leave the cgroup alone).
    pub fn prepare(v2_mount: Option<&Path>) -> Self {
        let Some(mount) = v2_mount else {
            return Self::default();
        };
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| own_v2_cgroup(&t));
        let Some(parent) = own.as_deref().and_then(sibling_parent) else {
            return Self::default();
        };
        let rel = if parent == "/" {
            format!("/{ALERTS_CGROUP}")
        } else {
            format!("{parent}/{ALERTS_CGROUP}")
        };
        let dir = mount.join(rel.trim_start_matches('/'));
        let opened = match std::fs::create_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
        });
        match opened {
            Ok(f) => {
                log::info!("exec alerts run in cgroup {rel}, outside the agent's");
                Self {
                    procs: Some(f.into()),
                    dir: Some(dir),
                }
            }
            Err(e) => {
                log::warn!(
                    "exec alerts run in the agent's cgroup: cannot prepare {}: {e}",
                    dir.display()
                );
                Self::default()
            }
        }
    }

    /// Makes `cmd`'s child a normal process before it execs.
    pub fn apply(&self, cmd: &mut Command) {
        let procs = self.procs.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let nofile = crate::sys::own::fd_limit_for_children();
        // SAFETY: between fork and exec only async-signal-safe calls run:
        // write(2) on an fd opened before the fork, setpriority(2),
        // setrlimit(2) of a value made before the fork, open(2) of a
        // literal path and close(2). Nothing allocates or locks. A failure
        // leaves that one setting as the agent's; the program runs.
        unsafe {
            cmd.pre_exec(move || {
                if procs >= 0 {
                    libc::write(procs, c"0".as_ptr().cast(), 1);
                }
                libc::setpriority(libc::PRIO_PROCESS, 0, 0);
                if let Some(lim) = &nofile {
                    libc::setrlimit(libc::RLIMIT_NOFILE, lim);
                }
                let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::write(fd, c"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
                Ok(())
            });
        }
    }
}

impl ChildSetup {
    /// Removes the cgroup if it is empty (the agent stops). One still
    /// running an alert program stays, and the next start uses it again.
    pub fn remove(&self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The cgroup v2 path of `/proc/self/cgroup` (the `0::` line).
fn own_v2_cgroup(text: &str) -> Option<String> {
    // As mounted, not as a cgroup namespace shows it (see `cgroupns`).
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| crate::sys::cgroupns::host_path(p.trim()))
}

/// The parent a sibling of `own` goes under; None for the root cgroup.
fn sibling_parent(own: &str) -> Option<&str> {
    let own = own.trim_end_matches('/');
    if own.is_empty() || !own.starts_with('/') {
        return None;
    }
    match own.rsplit_once('/') {
        Some(("", _)) => Some("/"),
        Some((parent, _)) => Some(parent),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sibling_goes_under_the_parent() {
        assert_eq!(
            own_v2_cgroup("12:memory:/x\n0::/system.slice/memtrace-agent.service\n").as_deref(),
            Some("/system.slice/memtrace-agent.service")
        );
        assert_eq!(own_v2_cgroup("3:cpu:/a\n"), None);
        assert_eq!(
            sibling_parent("/system.slice/memtrace-agent.service"),
            Some("/system.slice")
        );
        assert_eq!(sibling_parent("/agent"), Some("/"));
        assert_eq!(sibling_parent("/"), None);
        assert_eq!(sibling_parent(""), None);
        assert_eq!(sibling_parent("relative"), None);
    }

    /// A real child of a process with a raised oom_score_adj starts at 0.
    /// (The nice value is tested with the agent, as root: lowering it back
    /// needs the privilege the agent has.)
    #[test]
    fn the_child_starts_with_oom_score_adj_0() {
        let path = "/proc/self/oom_score_adj";
        let before = std::fs::read_to_string(path).unwrap();
        // Raising is allowed to anyone, and so is going back to 0.
        std::fs::write(path, "500").unwrap();
        let mut cmd = Command::new("/bin/cat");
        cmd.arg(path);
        ChildSetup::default().apply(&mut cmd);
        let out = cmd.output();
        let mut plain = Command::new("/bin/cat");
        let inherited = plain.arg(path).output();
        std::fs::write(path, before.trim()).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.unwrap().stdout).trim(), "0");
        assert_eq!(
            String::from_utf8_lossy(&inherited.unwrap().stdout).trim(),
            "500",
            "without the setup the child inherits the parent's"
        );
    }

    /// The agent raises its file limit; a program it starts gets the soft
    /// limit it started with (some still use select()).
    #[test]
    fn the_child_gets_the_file_limit_back() {
        let get = || {
            // SAFETY: plain data that getrlimit fills.
            let mut l: libc::rlimit = unsafe { std::mem::zeroed() };
            // SAFETY: l is a valid rlimit.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
            l
        };
        let set = |l: &libc::rlimit| {
            // SAFETY: l is a valid rlimit, soft at most hard.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, l) }, 0);
        };
        let at_start = get();
        // One below where the tests run: room to raise, harmless to others.
        let start = libc::rlimit {
            rlim_cur: at_start.rlim_cur - 1,
            ..at_start
        };
        set(&start);
        crate::sys::own::raise_fd_limit();
        let raised = get();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "ulimit -n"]);
        ChildSetup::default().apply(&mut cmd);
        let out = cmd.output();
        set(&at_start);
        assert_eq!(
            raised.rlim_cur,
            start.rlim_cur.max(at_start.rlim_max.min(65_536))
        );
        assert_eq!(
            String::from_utf8_lossy(&out.unwrap().stdout).trim(),
            start.rlim_cur.to_string()
        );
    }
}
