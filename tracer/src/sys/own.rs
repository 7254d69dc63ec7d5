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

/// Unmaps, from this process only, the pages of its read-only file
/// mappings (code, read-only data of the binary and its libraries) that
/// hold nothing of its own: what setup ran (BTF parsing, loading the
/// programs, the command line) stays resident otherwise, and locking then
/// keeps it for good. The files' pages stay in the page cache; what the
/// loop runs next is faulted back in, and locked as it is. Returns the
/// bytes given back; must run before memory is locked (the kernel refuses
/// locked pages).
pub fn drop_clean_file_pages() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    for r in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole mapping of this process that
        // nothing can write (no `w`) and that holds no private copy of a
        // page (`Anonymous: 0`): its pages read back the same from the
        // file. Nothing here is locked yet.
        if unsafe { libc::madvise(r.start as *mut libc::c_void, r.len, libc::MADV_DONTNEED) } == 0 {
            dropped += r.resident_bytes;
        }
    }
    dropped
}

/// One mapping [`drop_clean_file_pages`] may give back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CleanMapping {
    start: usize,
    len: usize,
    resident_bytes: u64,
}

/// The mappings of a smaps text that are private, not writable, backed by
/// a file (a path) and hold no anonymous (copied-on-write) page: relro
/// (written by the dynamic loader, then made read-only) has such pages
/// and is never included.
fn clean_file_mappings(smaps: &str) -> Vec<CleanMapping> {
    struct Current {
        m: CleanMapping,
        eligible: bool,
        anon_seen: bool,
    }
    fn finish(c: Option<Current>, out: &mut Vec<CleanMapping>) {
        if let Some(c) = c
            && c.eligible
            && c.anon_seen
            && c.m.resident_bytes > 0
        {
            out.push(c.m);
        }
    }
    let mut out = Vec::new();
    let mut cur: Option<Current> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            finish(cur.take(), &mut out);
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            let eligible = perms.len() == 4
                && !perms.contains('w')
                && perms.ends_with('p')
                && path.starts_with('/')
                && end > start;
            cur = Some(Current {
                m: CleanMapping {
                    start,
                    len: end.saturating_sub(start),
                    resident_bytes: 0,
                },
                eligible,
                anon_seen: false,
            });
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        let kb = || f.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Rss:" => c.m.resident_bytes = kb().unwrap_or(0) * 1024,
            "Anonymous:" => {
                c.anon_seen = true;
                c.eligible &= kb() == Some(0);
            }
            "Locked:" => c.eligible &= kb() == Some(0),
            _ => {}
        }
    }
    finish(cur.take(), &mut out);
    out
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
    fn gives_back_only_clean_read_only_file_mappings() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fe:00 42   /usr/bin/memtrace
Rss:                 512 kB
Anonymous:             0 kB
Locked:                0 kB
55d0a0100000-55d0a0700000 r-xp 00100000 fe:00 42   /usr/bin/memtrace
Rss:                6072 kB
Anonymous:             0 kB
Locked:                0 kB
55d0a0700000-55d0a0760000 r--p 00700000 fe:00 42   /usr/bin/memtrace
Rss:                 392 kB
Anonymous:           388 kB
Locked:                0 kB
55d0a0760000-55d0a0770000 rw-p 00760000 fe:00 42   /usr/bin/memtrace
Rss:                  64 kB
Anonymous:            64 kB
Locked:                0 kB
7f0000000000-7f0000201000 r--s 00001000 00:10 26   anon_inode:bpf-map
Rss:                2052 kB
Anonymous:             0 kB
Locked:                0 kB
7f0000300000-7f0000400000 r-xp 00026000 fe:00 7    /usr/lib/libc.so.6
Rss:                 984 kB
Anonymous:             0 kB
Locked:              984 kB
7f0000500000-7f0000600000 r-xp 00026000 fe:00 8    /usr/lib/libm.so.6
Rss:                   0 kB
Anonymous:             0 kB
Locked:                0 kB
7f0000700000-7f0000701000 r-xp 00000000 00:00 0    [vdso]
Rss:                   4 kB
Anonymous:             0 kB
Locked:                0 kB
";
        let got = clean_file_mappings(smaps);
        // The binary's read-only data and code; not relro (copied pages),
        // not the writable data, the shared BPF map, a locked mapping, an
        // empty one or the vDSO.
        assert_eq!(
            got,
            vec![
                CleanMapping {
                    start: 0x55d0_a000_0000,
                    len: 0x10_0000,
                    resident_bytes: 512 * 1024
                },
                CleanMapping {
                    start: 0x55d0_a010_0000,
                    len: 0x60_0000,
                    resident_bytes: 6072 * 1024
                },
            ]
        );
        // A mapping whose smaps entry lacks `Anonymous:` is not trusted.
        let cut = "55d0a0000000-55d0a0100000 r--p 00000000 fe:00 42 /x\nRss: 8 kB\n";
        assert!(clean_file_mappings(cut).is_empty());
    }

    #[test]
    fn this_process_runs_on_after_its_clean_pages_are_given_back() {
        let file_kb = || {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let v = s.lines().find_map(|l| l.strip_prefix("RssFile:")).unwrap();
            v.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        let before = file_kb();
        let dropped = drop_clean_file_pages();
        let after = file_kb();
        assert!(dropped > 0, "the test binary's code was resident");
        // Other tests run on and fault some of it back; not all of it.
        assert!(
            after < before,
            "file pages resident: {before} kB, then {after} kB"
        );
        // The code given back runs again, from the file.
        assert!(read(4096).resident_bytes > 0);
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
