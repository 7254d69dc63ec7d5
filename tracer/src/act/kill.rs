//! Delivering a kill: pidfds (no pid-reuse race), `process_mrelease` to
//! free the victim's memory at once, and `cgroup.kill` for whole cgroups.
//!
//! The hot path is [`Prepared::signal`]: a pidfd opened and verified ahead
//! of time (the agent prepares its candidate every second, on a thread of
//! its own), so delivering the kill is one syscall. The checks right
//! before it ([`Prepared::still_in`], [`CauseMemory::over_high`]) read
//! in-memory kernel files through descriptors opened with the victim, into
//! stack buffers: no path lookup, no allocation, no disk.

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
    /// `/proc/PID`, opened with the pidfd: its `cgroup` file says where the
    /// process is right before the signal.
    proc_dir: Option<OwnedFd>,
    /// The memory files of the cgroup whose memory.high caused the
    /// throttling, to confirm it is still over right before the signal.
    pub cause: Option<CauseMemory>,
}

impl Prepared {
    /// Opens a pidfd and checks it names the process `info` describes: the
    /// pid could have been reused between reading /proc and opening it.
    pub fn new(info: ProcessInfo) -> io::Result<Self> {
        let fd = pidfd_open(info.pid)?;
        // The pidfd pins the process; if its start time still matches,
        // it is the one we chose, and so is the /proc directory opened
        // after it.
        match start_time(info.pid) {
            Some(t) if t == info.start_time => {
                let proc_dir = open_dir(&format!("/proc/{}", info.pid)).ok();
                Ok(Self {
                    info,
                    fd,
                    proc_dir,
                    cause: None,
                })
            }
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("pid {} now names another process", info.pid),
            )),
        }
    }

    /// Also keeps the cause's memory files open (cgroup v2).
    pub fn with_cause(mut self, cause_dir: &Path) -> Self {
        self.cause = CauseMemory::open(cause_dir).ok();
        self
    }

    /// Sends the signal. With SIGKILL, also releases its memory at once
    /// where the kernel can (`process_mrelease`); returns whether the
    /// memory is gone when this returns: reaped here, or already given
    /// back by the victim's own exit (a throttled victim wakes at the
    /// signal and can exit on another CPU first: ESRCH, no mm left).
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
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => std::thread::yield_now(),
                // ENOSYS (before 5.15), EAGAIN (the reap could not finish):
                // the victim's exit frees it.
                Err(_) => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Whether it is still in the cgroup subtree `path` (relative to the
    /// memory hierarchy): checked right before the signal, since it was
    /// prepared up to a second ago and a process can be moved.
    pub fn still_in(&self, path: &str, version: crate::kernel::CgroupVersion) -> bool {
        let Some(dir) = &self.proc_dir else {
            return crate::sys::procs::in_cgroup(self.info.pid, path, version);
        };
        let mut buf = [0u8; 4096];
        match read_at(dir, c"cgroup", &mut buf) {
            Some(n) => crate::sys::procs::cgroup_file_in(&buf[..n], path, version),
            None => false,
        }
    }

    /// The pidfd, which becomes readable when the process exits.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// `memory.current` and `memory.high` of one cgroup, open for reading.
#[derive(Debug)]
pub struct CauseMemory {
    current: OwnedFd,
    high: OwnedFd,
}

impl CauseMemory {
    pub fn open(dir: &Path) -> io::Result<Self> {
        let dir = open_dir_path(dir)?;
        let file = |name: &std::ffi::CStr| -> io::Result<OwnedFd> {
            // SAFETY: a valid directory fd and a NUL-terminated name.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor we own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Ok(Self {
            current: file(c"memory.current")?,
            high: file(c"memory.high")?,
        })
    }

    /// Whether usage is over memory.high right now; `None` when the files
    /// cannot be read (the cgroup is gone).
    pub fn over_high(&self) -> Option<bool> {
        let mut cur = [0u8; 32];
        let mut high = [0u8; 32];
        let n = pread_all(&self.current, &mut cur)?;
        let m = pread_all(&self.high, &mut high)?;
        let current = parse_u64(&cur[..n])?;
        let high = trim(&high[..m]);
        if high == b"max" {
            return Some(false);
        }
        Some(current > parse_u64(high)?)
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..end]
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(trim(b)).ok()?.parse().ok()
}

fn pread_all(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).ok()
}

fn open_dir(path: &str) -> io::Result<OwnedFd> {
    open_dir_path(Path::new(path))
}

fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads a file under a directory fd into `buf`; `None` on any error.
fn read_at(dir: &OwnedFd, name: &std::ffi::CStr, buf: &mut [u8]) -> Option<usize> {
    use std::os::fd::AsFd;
    let file = crate::sys::cgroupfs::open_at(dir.as_fd(), name)?;
    pread_all(&file, buf)
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
