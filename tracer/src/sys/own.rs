//! The agent's own process, read the way Prometheus client libraries read
//! theirs (`process_*` metrics): /proc/self/stat, /proc/self/fd, the file
//! limit, and the boot time from /proc/stat.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the `process_*` metrics report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessUsage {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub cpu_seconds: f64,
    /// Unix time the process started, in seconds.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// Reads this process. A field that cannot be read is 0.
pub fn read(page_size: u64) -> ProcessUsage {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s))
        .unwrap_or(0);
    let mut u = parse_stat(&stat, page_size, ticks, boot).unwrap_or_default();
    u.open_fds = open_fds();
    // SAFETY: rlimit is plain data that getrlimit fills.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: lim is a valid rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        u.max_fds = lim.rlim_cur;
    }
    u
}

/// How many descriptors this process has open. Linux 6.2 and later give
/// the count as the size of /proc/self/fd: one stat, where listing it
/// (what older kernels need) costs a lookup per descriptor, and the agent
/// holds one per limited cgroup.
fn open_fds() -> u64 {
    let fd = Path::new("/proc/self/fd");
    match std::fs::metadata(fd) {
        Ok(m) if m.len() > 0 => m.len(),
        _ => std::fs::read_dir(fd).map_or(0, |d| d.count() as u64),
    }
}

/// The soft file limit the agent started with, before
/// [`raise_fd_limit`] (0: not raised).
static FD_SOFT_AT_START: AtomicU64 = AtomicU64::new(0);

/// Raises the soft file limit to the hard one, at most 65,536: the
/// sampler holds a directory open per limited cgroup (a thousand on a big
/// host), past systemd's default soft limit of 1,024. That default exists
/// for programs that use select(), which nothing in the agent does; the
/// programs it starts get the old value back ([`fd_limit_for_children`]).
pub fn raise_fd_limit() {
    // SAFETY: rlimit is plain data that getrlimit fills.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: lim is a valid rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let want = lim.rlim_max.min(65_536);
    if want <= lim.rlim_cur {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: raised is a valid rlimit; the soft value stays under the hard.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        FD_SOFT_AT_START.store(lim.rlim_cur, Ordering::Relaxed);
    }
}

/// The file limit for a program the agent starts: the soft value it
/// started with, if [`raise_fd_limit`] raised it.
pub fn fd_limit_for_children() -> Option<libc::rlimit> {
    let soft = FD_SOFT_AT_START.load(Ordering::Relaxed);
    if soft == 0 {
        return None;
    }
    // SAFETY: rlimit is plain data that getrlimit fills.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: lim is a valid rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(libc::rlimit {
        rlim_cur: soft.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    })
}

/// `btime` of /proc/stat: the boot time, in Unix seconds.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// CPU time, start time, virtual and resident size from /proc/self/stat.
fn parse_stat(stat: &str, page_size: u64, ticks: f64, boot: u64) -> Option<ProcessUsage> {
    // Fields after the comm (which may hold spaces and parentheses):
    // [0] state ... [11] utime [12] stime ... [19] starttime [20] vsize
    // [21] rss (pages).
    let rest: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let num = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(ProcessUsage {
        cpu_seconds: (num(11)? + num(12)?) as f64 / ticks,
        start_time_seconds: boot as f64 + num(19)? as f64 / ticks,
        virtual_bytes: num(20)?,
        resident_bytes: num(21)? * page_size,
        ..ProcessUsage::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line() {
        let stat = "4242 (memtrace (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 50 0 0 10 -10 \
                    9 0 12000 73400320 2048 18446744073709551615";
        let u = parse_stat(stat, 4096, 100.0, 1_700_000_000).unwrap();
        assert_eq!(u.cpu_seconds, 2.0);
        assert_eq!(u.start_time_seconds, 1_700_000_120.0);
        assert_eq!(u.virtual_bytes, 73_400_320);
        assert_eq!(u.resident_bytes, 2048 * 4096);
        assert!(parse_stat("4242 (x) S 1", 4096, 100.0, 0).is_none());
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(boot_time("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let u = read(4096);
        assert!(
            u.resident_bytes > 0 && u.virtual_bytes >= u.resident_bytes,
            "{u:?}"
        );
        assert!(u.open_fds >= 3 && u.max_fds >= u.open_fds, "{u:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started before now, and not before the test binary was built
        // (boot time and ticks agree with the wall clock to a few seconds).
        assert!(u.start_time_seconds <= now + 2.0, "{u:?}");
        assert!(now - u.start_time_seconds < 3600.0, "{u:?}");
    }
}
