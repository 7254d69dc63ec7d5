//! Reading a memory cgroup's files and the host's memory state: the
//! kernel's own counters, sampled next to the events.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::kernel::CgroupVersion;

/// PSI totals and recent averages of one pressure file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    pub some_avg10: f32,
    pub full_avg10: f32,
    /// Cumulative stall time, microseconds.
    pub some_total_us: u64,
    pub full_total_us: u64,
}

impl Psi {
    pub fn parse(text: &str) -> Option<Self> {
        let mut p = Self::default();
        let mut seen = false;
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let kind = fields.next()?;
            let (mut avg10, mut total) = (None, None);
            for f in fields {
                if let Some(v) = f.strip_prefix("avg10=") {
                    avg10 = v.parse::<f32>().ok();
                } else if let Some(v) = f.strip_prefix("total=") {
                    total = v.parse::<u64>().ok();
                }
            }
            let (Some(avg10), Some(total)) = (avg10, total) else {
                continue;
            };
            match kind {
                "some" => (p.some_avg10, p.some_total_us) = (avg10, total),
                "full" => (p.full_avg10, p.full_total_us) = (avg10, total),
                _ => continue,
            }
            seen = true;
        }
        seen.then_some(p)
    }
}

/// `memory.events` counters. None: not measured here (cgroup v1 has only
/// `oom_kill`, from memory.oom_control; an unreadable file has none), which
/// every view shows as unmeasured, never as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemEvents {
    pub low: Option<u64>,
    pub high: Option<u64>,
    pub max: Option<u64>,
    pub oom: Option<u64>,
    pub oom_kill: Option<u64>,
}

impl MemEvents {
    /// Every counter, in the order the recording stores them.
    pub fn fields(&self) -> [Option<u64>; 5] {
        [self.low, self.high, self.max, self.oom, self.oom_kill]
    }

    pub fn from_fields(f: [Option<u64>; 5]) -> Self {
        let [low, high, max, oom, oom_kill] = f;
        Self {
            low,
            high,
            max,
            oom,
            oom_kill,
        }
    }

    /// Growth of each counter from `earlier`; None where either side did
    /// not measure it.
    pub fn since(&self, earlier: &Self) -> Self {
        let d = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
        let (n, o) = (self.fields(), earlier.fields());
        Self::from_fields(std::array::from_fn(|i| d(n[i], o[i])))
    }
}

/// The share of its limit from which a cgroup counts as near it.
pub const NEAR_LIMIT: f64 = 0.8;

/// One reading of a memory cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupMemory {
    pub current: Option<u64>,
    /// None: no limit ("max").
    pub high: Option<u64>,
    pub max: Option<u64>,
    pub events: MemEvents,
    pub pressure: Option<Psi>,
}

impl CgroupMemory {
    pub fn read(dir: &Path, version: CgroupVersion) -> Self {
        Self::read_in(CgroupDir::Path(dir), version)
    }

    /// The same, from a directory held open or named by its path.
    pub fn read_in(dir: CgroupDir<'_>, version: CgroupVersion) -> Self {
        match version {
            CgroupVersion::V2 => Self::read_v2(dir),
            CgroupVersion::V1 => Self::read_v1(dir),
        }
    }

    /// What changes from one second to the next, with the limits taken
    /// from `last`, an earlier full reading: usage (and on v2 pressure and
    /// the event counters), one file of three (v1) or three of five (v2).
    /// For cgroups with nothing going on, whose limits would change only
    /// with events that make them read in full again. The v2 counters are
    /// read anew because the host's judge asks whether they grew since the
    /// last sample (a stall a cgroup's own limit explains).
    pub fn read_usage_in(dir: CgroupDir<'_>, version: CgroupVersion, last: &Self) -> Self {
        let read = |f: &CStr| dir.read(f);
        match version {
            CgroupVersion::V2 => Self {
                current: read(c"memory.current").and_then(|t| t.trim().parse().ok()),
                pressure: read(c"memory.pressure").and_then(|t| Psi::parse(&t)),
                events: read(c"memory.events").map_or(last.events, |t| parse_events(&t)),
                ..*last
            },
            CgroupVersion::V1 => Self {
                current: read(c"memory.usage_in_bytes").and_then(|t| t.trim().parse().ok()),
                ..*last
            },
        }
    }

    fn read_v2(dir: CgroupDir<'_>) -> Self {
        let read = |f: &CStr| dir.read(f);
        let events = read(c"memory.events")
            .map(|t| parse_events(&t))
            .unwrap_or_default();
        Self {
            current: read(c"memory.current").and_then(|t| t.trim().parse().ok()),
            high: read(c"memory.high").and_then(|t| limit(&t)),
            max: read(c"memory.max").and_then(|t| limit(&t)),
            events,
            pressure: read(c"memory.pressure").and_then(|t| Psi::parse(&t)),
        }
    }

    fn read_v1(dir: CgroupDir<'_>) -> Self {
        let read = |f: &CStr| dir.read(f);
        let oom_kill = read(c"memory.oom_control").and_then(|t| flat(&t, "oom_kill"));
        Self {
            current: read(c"memory.usage_in_bytes").and_then(|t| t.trim().parse().ok()),
            high: None,
            max: read(c"memory.limit_in_bytes").and_then(|t| limit(&t)),
            events: MemEvents {
                oom_kill,
                ..Default::default()
            },
            pressure: None,
        }
    }

    /// Usage over memory.high, if it is set and exceeded.
    pub fn over_high(&self) -> bool {
        matches!((self.current, self.high), (Some(c), Some(h)) if c > h)
    }

    /// Usage at or above [`NEAR_LIMIT`] of the lower of memory.high and
    /// memory.max: the cgroups whose processes an operator must see.
    pub fn near_limit(&self) -> bool {
        let Some(current) = self.current else {
            return false;
        };
        let limit = match (self.high, self.max) {
            (Some(h), Some(m)) => h.min(m),
            (Some(l), None) | (None, Some(l)) => l,
            (None, None) => return false,
        };
        current as f64 >= limit as f64 * NEAR_LIMIT
    }
}

/// A cgroup's directory, to read its memory files from.
#[derive(Clone, Copy, Debug)]
pub enum CgroupDir<'a> {
    /// Held open (`O_PATH`): each file is then one name looked up in it,
    /// not a walk of the whole path from `/` (the sampler's case: the same
    /// cgroups every second). It stays the same cgroup if renamed.
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

impl CgroupDir<'_> {
    /// A memory file of a few lines: open, one read, close. None if the
    /// file (or the cgroup) is not there.
    pub fn read(&self, file: &CStr) -> Option<String> {
        let f = match self {
            Self::Fd(dir) => std::fs::File::from(open_at(*dir, file)?),
            Self::Path(dir) => {
                std::fs::File::open(dir.join(OsStr::from_bytes(file.to_bytes()))).ok()?
            }
        };
        read_small(f)
    }
}

/// Opens `name` in the directory `dir` for reading (openat: one name
/// looked up, not a whole path); None on any error.
pub fn open_at(dir: BorrowedFd<'_>, name: &CStr) -> Option<OwnedFd> {
    // SAFETY: dir is an open descriptor for the borrow's length and name a
    // NUL-terminated string; the result is checked before it is owned.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a fresh descriptor nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a cgroup's directory to read its files from ([`CgroupDir::Fd`]),
/// if it is still the cgroup `id` (its inode number): a path can name a
/// new cgroup since the id was learned.
pub fn open_dir(dir: &Path, id: u64) -> Option<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)
        .ok()?;
    (f.metadata().ok()?.ino() == id).then(|| f.into())
}

/// Whether the cgroup at `dir` has a memory limit (memory.high or
/// memory.max; memory.limit_in_bytes on v1): one or two small reads, where
/// a whole [`CgroupMemory::read`] is five.
pub fn has_limit(dir: &Path, version: CgroupVersion) -> bool {
    let dir = CgroupDir::Path(dir);
    let limited = |f: &CStr| dir.read(f).and_then(|t| limit(&t)).is_some();
    match version {
        CgroupVersion::V2 => limited(c"memory.high") || limited(c"memory.max"),
        CgroupVersion::V1 => limited(c"memory.limit_in_bytes"),
    }
}

/// Whether the v2 cgroup at `dir` is over its memory.high now: two small
/// reads, for decisions that must not trust a sample a second old. A
/// cgroup that is gone is not over anything.
pub fn over_high_now(dir: &Path) -> bool {
    let dir = CgroupDir::Path(dir);
    let current = dir
        .read(c"memory.current")
        .and_then(|t| t.trim().parse::<u64>().ok());
    let high = dir.read(c"memory.high").and_then(|t| limit(&t));
    matches!((current, high), (Some(c), Some(h)) if c > h)
}

/// One read of an opened cgroup file. `read_to_string` would also stat it
/// for a size hint, a third more system calls on the agent's
/// once-a-second path.
fn read_small(mut f: std::fs::File) -> Option<String> {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    if n == buf.len() {
        // Longer than any memory file here: read it whole.
        let mut rest = String::from_utf8_lossy(&buf).into_owned();
        let mut more = Vec::new();
        f.read_to_end(&mut more).ok()?;
        rest.push_str(&String::from_utf8_lossy(&more));
        return Some(rest);
    }
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// "max" (v2) or a v1 limit near 2^63 both mean no limit.
fn limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|&v| v < (1 << 62))
}

fn flat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

fn parse_events(text: &str) -> MemEvents {
    MemEvents {
        low: flat(text, "low"),
        high: flat(text, "high"),
        max: flat(text, "max"),
        oom: flat(text, "oom"),
        oom_kill: flat(text, "oom_kill"),
    }
}

/// The host's memory, from /proc/meminfo and /proc/pressure/memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMemory {
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub pressure: Option<Psi>,
}

impl HostMemory {
    pub fn read() -> Self {
        let mut h = std::fs::read_to_string("/proc/meminfo")
            .map(|t| Self::parse_meminfo(&t))
            .unwrap_or_default();
        h.pressure = std::fs::read_to_string("/proc/pressure/memory")
            .ok()
            .and_then(|t| Psi::parse(&t));
        h
    }

    pub fn parse_meminfo(text: &str) -> Self {
        let kb = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |v| v * 1024)
        };
        Self {
            mem_total: kb("MemTotal"),
            mem_available: kb("MemAvailable"),
            swap_total: kb("SwapTotal"),
            swap_free: kb("SwapFree"),
            pressure: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_v2_read_takes_fresh_counters_and_the_last_limits() {
        let dir = crate::test_util::tempdir("cgroupfs");
        let write = |f: &str, v: &str| std::fs::write(dir.join(f), v).unwrap();
        write("memory.current", "4096\n");
        write("memory.high", "8192\n");
        write("memory.max", "max\n");
        write("memory.events", "low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\n");
        write(
            "memory.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\n",
        );
        let last = CgroupMemory::read_in(CgroupDir::Path(&dir), CgroupVersion::V2);
        assert_eq!((last.high, last.events.high), (Some(8192), Some(3)));
        write("memory.current", "5000\n");
        write("memory.high", "9000\n");
        write("memory.events", "low 0\nhigh 7\nmax 1\noom 0\noom_kill 0\n");
        let quiet = CgroupMemory::read_usage_in(CgroupDir::Path(&dir), CgroupVersion::V2, &last);
        assert_eq!(quiet.current, Some(5000));
        assert_eq!((quiet.events.high, quiet.events.max), (Some(7), Some(1)));
        // The limit is the last full read's until the next one.
        assert_eq!(quiet.high, Some(8192));
    }

    #[test]
    fn psi_and_events() {
        let p = Psi::parse(
            "some avg10=12.50 avg60=3.00 avg300=1.00 total=9500000\n\
             full avg10=10.00 avg60=2.00 avg300=0.50 total=9100000\n",
        )
        .unwrap();
        assert_eq!((p.some_total_us, p.full_total_us), (9_500_000, 9_100_000));
        assert_eq!(p.some_avg10, 12.5);
        assert!(Psi::parse("garbage").is_none());
        let e = parse_events("low 0\nhigh 480\nmax 2\noom 1\noom_kill 1\n");
        assert_eq!((e.high, e.max, e.oom_kill), (Some(480), Some(2), Some(1)));
        let later = parse_events("high 500\nmax 2\n");
        let d = later.since(&e);
        assert_eq!((d.high, d.max, d.oom_kill), (Some(20), Some(0), None));
    }

    #[test]
    fn limits_and_meminfo() {
        assert_eq!(limit("max\n"), None);
        assert_eq!(limit("67108864\n"), Some(64 << 20));
        assert_eq!(limit("9223372036854771712\n"), None);
        let h = HostMemory::parse_meminfo(
            "MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\nSwapTotal:       2097148 kB\nSwapFree:         500000 kB\n",
        );
        assert_eq!(h.mem_total, 24_000_000 * 1024);
        assert_eq!(h.swap_free, 500_000 * 1024);
    }

    #[test]
    fn reads_a_cgroup_directory() {
        let dir = std::env::temp_dir().join(format!("memtrace-cgfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.current"), "100\n").unwrap();
        std::fs::write(dir.join("memory.high"), "50\n").unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.join("memory.events"), "high 3\n").unwrap();
        let m = CgroupMemory::read(&dir, CgroupVersion::V2);
        assert_eq!((m.current, m.high, m.max), (Some(100), Some(50), None));
        assert!(m.over_high());
        assert_eq!(m.events.high, Some(3));
        assert!(m.near_limit());
        let v1 = CgroupMemory::read(&dir, CgroupVersion::V1);
        assert_eq!(v1.events.high, None, "v1 has no memory.events");
        assert!(m.pressure.is_none());
        // Through the directory held open: the same reading, and it
        // follows the directory when it is renamed (v1 allows that).
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&dir).unwrap().ino();
        assert!(open_dir(&dir, ino + 1).is_none(), "another cgroup's id");
        let fd = open_dir(&dir, ino).unwrap();
        let held = CgroupMemory::read_in(CgroupDir::Fd(fd.as_fd()), CgroupVersion::V2);
        assert_eq!(held, m);
        let moved = dir.with_extension("moved");
        std::fs::rename(&dir, &moved).unwrap();
        let after = CgroupMemory::read_in(CgroupDir::Fd(fd.as_fd()), CgroupVersion::V2);
        assert_eq!(after, m);
        std::fs::remove_dir_all(&moved).unwrap();
        let gone = CgroupMemory::read_in(CgroupDir::Fd(fd.as_fd()), CgroupVersion::V2);
        assert_eq!(gone.current, None, "a removed cgroup reads as gone");
    }
}
