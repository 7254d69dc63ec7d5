//! Delivering a kill: pidfds (no pid-reuse race), `process_mrelease` to
//! free the victim's memory at once, and `cgroup.kill` for whole cgroups.
//!
//! The hot path is [`Prepared::signal`]: a pidfd opened and verified ahead
//! of time (the agent prepares its candidate every second), so delivering
//! the kill is one syscall, with no allocation and no file reads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::sys::procs::{ProcessInfo, start_time};

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; a non-negative return is a
    // new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(fd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Asks the kernel to reap a killed process's memory now (Linux 5.15+).
fn process_mrelease(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a valid pidfd, no flags.
    let rc = unsafe { libc::syscall(libc::SYS_process_mrelease, fd.as_raw_fd(), 0u32) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A victim whose pidfd is open and verified.
#[derive(Debug)]
pub struct Prepared {
    pub info: ProcessInfo,
    fd: OwnedFd,
}

impl Prepared {
    /// Opens a pidfd and checks it names the process `info` describes: the
    /// pid could have been reused between reading /proc and opening it.
    pub fn new(info: ProcessInfo) -> io::Result<Self> {
        let fd = pidfd_open(info.pid)?;
        // The pidfd pins the process; if its start time still matches,
        // it is the one we chose.
        match start_time(info.pid) {
            Some(t) if t == info.start_time => Ok(Self { info, fd }),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("pid {} now names another process", info.pid),
            )),
        }
    }

    /// Sends the signal. With SIGKILL, also releases its memory at once
    /// where the kernel can (`process_mrelease`); returns whether it did.
    pub fn signal(&self, signal: i32) -> io::Result<bool> {
        pidfd_send_signal(&self.fd, signal)?;
        if signal != libc::SIGKILL {
            return Ok(false);
        }
        // The victim must be dying before its memory can be released; it
        // is, but exit may not have reached the mm yet: retry briefly.
        for _ in 0..3 {
            match process_mrelease(&self.fd) {
                Ok(()) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => std::thread::yield_now(),
                Err(_) => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Whether it is still alive and in the cgroup subtree `path`: checked
    /// right before the signal, since it was prepared up to a second ago.
    pub fn still_in(&self, path: &str, version: crate::kernel::CgroupVersion) -> bool {
        crate::sys::procs::in_cgroup(self.info.pid, path, version)
    }

    /// The pidfd, which becomes readable when the process exits.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// Runs the kill path once on the agent itself, harmlessly: signal 0
/// checks permission only, and releasing the memory of a process that is
/// not dying is refused. Its code is then resident before the agent locks
/// its memory as pages are touched, and needs no disk read at kill time.
pub fn warm_up() {
    let me = std::process::id();
    if let Ok(fd) = pidfd_open(me) {
        let _ = start_time(me);
        let _ = pidfd_send_signal(&fd, 0);
        let _ = process_mrelease(&fd);
    }
}

/// Kills every process of a cgroup with `cgroup.kill` (cgroup v2, Linux
/// 5.14+). Returns false if the kernel lacks the file.
pub fn kill_cgroup(dir: &Path) -> io::Result<bool> {
    let file = dir.join("cgroup.kill");
    if !file.exists() {
        return Ok(false);
    }
    std::fs::write(file, "1")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn kills_a_real_child_through_a_verified_pidfd() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let info = crate::sys::procs::read_process(child.id(), 4096, true).unwrap();
        let prepared = Prepared::new(info).unwrap();
        let released = prepared.signal(libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Either outcome is fine (kernel support varies); the kill is what
        // matters.
        let _ = released;
    }

    #[test]
    fn a_reused_pid_is_refused() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let mut info = crate::sys::procs::read_process(child.id(), 4096, true).unwrap();
        info.start_time += 1;
        let err = Prepared::new(info).unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_gone_process_is_an_error() {
        let mut child = Command::new("true").spawn().unwrap();
        let info = crate::sys::procs::read_process(child.id(), 4096, true);
        child.wait().unwrap();
        if let Some(info) = info {
            assert!(Prepared::new(info).is_err());
        }
    }
}

#[cfg(test)]
mod cgroup_tests {
    use crate::kernel::CgroupLayout;

    #[test]
    fn this_process_is_in_its_own_cgroup_and_not_in_another() {
        let Some(h) = CgroupLayout::detect().ok().and_then(|l| l.memory) else {
            eprintln!("skipped: no memory controller mounted");
            return;
        };
        let me = std::process::id();
        assert!(crate::sys::procs::in_cgroup(me, "/", h.version));
        assert!(!crate::sys::procs::in_cgroup(
            me,
            "/no-such-cgroup-memtrace",
            h.version
        ));
        assert!(!crate::sys::procs::in_cgroup(u32::MAX, "/", h.version));
    }
}
