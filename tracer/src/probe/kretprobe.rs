//! A kretprobe with room for every task that can sleep in the function.
//!
//! A kretprobe keeps one instance per task between entry and return; when
//! they run out the return is missed and its episode never ends. The
//! kernel's default (`maxactive` of about twice the CPUs) is far too few
//! for the throttle function, where every throttled task of a cgroup can
//! sleep at once for up to two seconds. aya 0.14 attaches kretprobes
//! through the perf PMU, which takes no `maxactive`, so this creates the
//! probe through tracefs (`r<maxactive>:` in `kprobe_events`, the kernel's
//! maximum), opens it as a perf tracepoint and attaches the program with
//! `PERF_EVENT_IOC_SET_BPF`. A probe made this way also shows its missed
//! count in `kprobe_profile`, which [`Kretprobe::missed`] reads, so a miss
//! is reported as lost, never silent.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// The most instances the kernel allows (KRETPROBE_MAXACTIVE_MAX).
pub const MAXACTIVE: u32 = 4096;

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
// _IOW('$', 8, u32) and _IO('$', 0).
// `Ioctl` is the request type of the C library: c_ulong in glibc, c_int in
// musl (the static build); both values fit either.
const PERF_EVENT_IOC_SET_BPF: libc::Ioctl = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::Ioctl = 0x2400;

/// A kretprobe created through tracefs, removed when dropped.
#[derive(Debug)]
pub struct Kretprobe {
    tracefs: PathBuf,
    /// `memtrace_<pid>/<name>`, as tracefs spells the event.
    event: String,
    perf: Option<OwnedFd>,
}

/// The part of `struct perf_event_attr` a tracepoint needs; the kernel
/// takes any size from the first version (64 bytes) on.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

impl Kretprobe {
    /// Creates `r<MAXACTIVE>` on `func` and attaches the loaded kprobe
    /// program `prog` to it.
    pub fn attach(tracefs: PathBuf, name: &str, func: &str, prog: impl AsFd) -> io::Result<Self> {
        let group = format!("memtrace_{}", std::process::id());
        let event = format!("{group}/{name}");
        remove(&tracefs, &event);
        let def = format!("r{MAXACTIVE}:{event} {func}");
        append(&tracefs, &def)
            .map_err(|e| io::Error::new(e.kind(), format!("kprobe_events `{def}`: {e}")))?;
        match open_and_attach(&tracefs, &group, name, prog) {
            Ok(perf) => Ok(Self {
                tracefs,
                event,
                perf: Some(perf),
            }),
            Err(e) => {
                remove(&tracefs, &event);
                Err(e)
            }
        }
    }

    /// Returns the kernel missed on this probe so far (its instances ran
    /// out), from `kprobe_profile`.
    pub fn missed(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.tracefs.join("kprobe_profile")).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == self.event)
                .then(|| f.nth(1)?.parse().ok())
                .flatten()
        })
    }
}

impl Drop for Kretprobe {
    fn drop(&mut self) {
        // An event in use cannot be removed: detach first.
        drop(self.perf.take());
        remove(&self.tracefs, &self.event);
    }
}

fn open_and_attach(
    tracefs: &std::path::Path,
    group: &str,
    name: &str,
    prog: impl AsFd,
) -> io::Result<OwnedFd> {
    let id: u64 =
        std::fs::read_to_string(tracefs.join("events").join(group).join(name).join("id"))?
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad tracepoint id"))?;
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        wakeup_events: 1,
        ..PerfEventAttr::default()
    };
    // SAFETY: a valid attr for the call; pid -1 with cpu 0 is how a
    // tracepoint is opened for every task (the program runs on every CPU).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let perf = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let prog_fd = prog.as_fd().as_raw_fd();
    // SAFETY: ioctls on our perf fd with a program fd argument.
    if unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog_fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(perf)
}

fn append(tracefs: &std::path::Path, line: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(tracefs.join("kprobe_events"))?;
    f.write_all(format!("{line}\n").as_bytes())
}

fn remove(tracefs: &std::path::Path, event: &str) {
    let _ = append(tracefs, &format!("-:{event}"));
}
