//! The once-a-second sample: each memory cgroup in scope (its memory files
//! and largest processes) and the host. Processes are listed for every
//! cgroup that matters (active, new, near or over a limit), so the hog of a
//! cgroup at 57M/64M is in view before anything else happens.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::filter::CgroupFilter;
use crate::kernel::CgroupVersion;
use crate::sys::cgroupfs::{CgroupDir, CgroupMemory, HostMemory, open_dir};
use crate::sys::procs::subtree_processes;
use crate::sys::registry::CgroupRegistry;

/// One process in a cgroup sample.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
}

/// One cgroup's memory files and largest processes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupSample {
    pub id: u64,
    pub mem: CgroupMemory,
    /// Largest by RSS, largest first.
    pub top: Vec<ProcSample>,
}

/// The once-a-second sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub ts_ns: u64,
    pub host: HostMemory,
    pub cgroups: Vec<CgroupSample>,
}

/// Processes listed per cgroup.
pub const TOP_PROCESSES: usize = 5;
/// How often the set of cgroups with a memory limit is refreshed (and the
/// hierarchy walked, when inotify does not watch all of it).
const LIMIT_SCAN: Duration = Duration::from_secs(10);
/// How often the hierarchy is walked while inotify watches every
/// directory of it: a safety net only. New cgroups come from inotify at
/// once, and a removed one shows as a read that fails.
const SAFETY_WALK: Duration = Duration::from_secs(300);
/// A new cgroup is sampled every tick for this long, limit or not: its
/// limit is usually written just after the mkdir, and a cgroup that fills
/// fast must have a sample from before it ran out.
const YOUNG: Duration = Duration::from_secs(10);
/// How long a cgroup found without a limit is not asked again.
const UNLIMITED_RECHECK: Duration = Duration::from_secs(60);
/// A quiet cgroup's limits (and on v1 its OOM counter) are read one quiet
/// sample in this many (a minute at one in ten); the others read its usage
/// (and on v2 pressure and event counters) alone: a thousand quiet
/// cgroups' unchanged limit files were two thirds of the sampler's reads
/// on cgroup v1.
const QUIET_FULL_EVERY: u64 = 6;

pub struct Sampler {
    scope: CgroupFilter,
    version: Option<CgroupVersion>,
    page_size: u64,
    limited: HashSet<u64>,
    young: HashMap<u64, Instant>,
    last_scan: Option<Instant>,
    last_walk: Option<Instant>,
    /// Limited cgroups' directories, held open: a sample reads each file
    /// relative to one, not by its whole path ([`CgroupDir::Fd`]).
    dirs: HashMap<u64, OwnedFd>,
    /// A limited cgroup with nothing going on is sampled one tick in this
    /// many ([`Sampler::spread`]); 1 samples every one every tick.
    quiet_every: u64,
    ticks: u64,
    /// Cgroups near or over a limit at their last sample: every tick.
    hot: HashSet<u64>,
    /// Cgroups found without a limit, and when.
    unlimited: std::collections::HashMap<u64, Instant>,
    /// Each limited cgroup's last full reading, for the quiet samples that
    /// read its usage alone ([`QUIET_FULL_EVERY`]).
    last_full: HashMap<u64, CgroupMemory>,
}

impl Sampler {
    pub fn new(scope: CgroupFilter, version: Option<CgroupVersion>, page_size: u64) -> Self {
        Self {
            scope,
            version,
            page_size,
            limited: HashSet::new(),
            young: HashMap::new(),
            last_scan: None,
            last_walk: None,
            dirs: HashMap::new(),
            quiet_every: 1,
            ticks: 0,
            hot: HashSet::new(),
            unlimited: std::collections::HashMap::new(),
            last_full: HashMap::new(),
        }
    }

    /// Samples each quiet limited cgroup one tick in `every` (spread over
    /// the ticks by id), instead of every tick. Cgroups with recent events
    /// (`active`) and those near or over a limit stay every tick. The
    /// agent uses this: with a thousand watched cgroups, reading every
    /// one's files every second is most of its CPU, while a breach comes
    /// from the throttle events, never from a sample.
    pub fn spread(mut self, every: u32) -> Self {
        self.quiet_every = u64::from(every.max(1));
        self
    }

    /// Samples the host and the cgroups in scope that have a memory limit,
    /// are new, or appear in `active` (cgroups with recent events). The
    /// largest processes are listed for every cgroup that is active, new,
    /// or near or over a limit: the ones an operator must be able to act
    /// on.
    pub fn sample(&mut self, ts_ns: u64, reg: &mut CgroupRegistry, active: &[u64]) -> Sample {
        let host = HostMemory::read();
        let Some(version) = self.version else {
            return Sample {
                ts_ns,
                host,
                cgroups: Vec::new(),
            };
        };
        // New cgroups at once, not at the next scan.
        reg.watch();
        reg.poll_new();
        let walk_every = if reg.watching_all() {
            SAFETY_WALK
        } else {
            LIMIT_SCAN
        };
        if self.last_walk.is_none_or(|t| t.elapsed() >= walk_every) {
            reg.scan();
            self.last_walk = Some(Instant::now());
        }
        if self.last_scan.is_none_or(|t| t.elapsed() >= LIMIT_SCAN) {
            // A limited cgroup's own samples say when its limit goes; the
            // others are looked at again at most once a minute.
            let now = Instant::now();
            let (limited, unlimited) = (&self.limited, &mut self.unlimited);
            let found: Vec<u64> = reg
                .entries()
                .filter(|(_, p)| p.as_ref() != "/" && self.scope.matches(p))
                .filter_map(|(id, p)| {
                    if limited.contains(&id)
                        || unlimited
                            .get(&id)
                            .is_some_and(|t| now - *t < UNLIMITED_RECHECK)
                    {
                        return limited.contains(&id).then_some(id);
                    }
                    let dir = reg.dir(p)?;
                    if crate::sys::cgroupfs::has_limit(&dir, version) {
                        unlimited.remove(&id);
                        Some(id)
                    } else {
                        unlimited.insert(id, now);
                        None
                    }
                })
                .collect();
            self.limited = found.into_iter().collect();
            let live = &self.limited;
            self.unlimited
                .retain(|id, _| !live.contains(id) && reg.lookup(*id).is_some());
            self.dirs.retain(|id, _| live.contains(id));
            self.last_full.retain(|id, _| live.contains(id));
            self.last_scan = Some(now);
        }
        let now = Instant::now();
        for id in reg.take_created() {
            self.young.insert(id, now);
        }
        self.young.retain(|_, t| now.duration_since(*t) < YOUNG);
        self.ticks += 1;
        let (every, tick) = (self.quiet_every, self.ticks);
        let mut ids: Vec<u64> = self
            .limited
            .iter()
            .copied()
            .filter(|id| id.wrapping_add(tick) % every == 0 || self.hot.contains(id))
            .collect();
        // Sampled only because its turn came: quiet (not hot, active or
        // young). With spreading off (estimates need every counter every
        // second) every sample is full.
        let quiet_turn = |id: u64| {
            every > 1
                && !self.hot.contains(&id)
                && !active.contains(&id)
                && !self.young.contains_key(&id)
                && (id.wrapping_add(tick) / every) % QUIET_FULL_EVERY != 0
        };
        for &id in active.iter().chain(self.young.keys()) {
            if reg
                .lookup(id)
                .is_some_and(|p| p.as_ref() != "/" && self.scope.matches(&p))
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut cgroups = Vec::with_capacity(ids.len());
        let partial: Vec<bool> = ids.iter().map(|&id| quiet_turn(id)).collect();
        for (id, partial) in ids.into_iter().zip(partial) {
            let Some(path) = reg.lookup(id) else { continue };
            let Some(dir) = reg.dir(&path) else { continue };
            let last = if partial {
                self.last_full.get(&id).copied()
            } else {
                None
            };
            let fd = self.dir_fd(id, &dir);
            let at = match &fd {
                Some(fd) => CgroupDir::Fd(fd.as_fd()),
                None => CgroupDir::Path(&dir),
            };
            let mem = match &last {
                Some(last) => CgroupMemory::read_usage_in(at, version, last),
                None => CgroupMemory::read_in(at, version),
            };
            // Gone since the last scan (every cgroup below the root has
            // a usage file): no stat first, the read tells.
            if mem.current.is_none() {
                self.dirs.remove(&id);
                self.last_full.remove(&id);
                continue;
            }
            if last.is_none() && fd.is_some() {
                self.last_full.insert(id, mem);
            }
            if mem.high.is_some() || mem.max.is_some() {
                self.limited.insert(id);
            }
            let wanted = active.contains(&id)
                || self.young.contains_key(&id)
                || mem.over_high()
                || mem.near_limit();
            let top = if wanted {
                self.processes(&dir, &path)
            } else {
                Vec::new()
            };
            if mem.high.is_none() && mem.max.is_none() {
                self.limited.remove(&id);
            }
            if mem.near_limit() || mem.over_high() {
                self.hot.insert(id);
            } else {
                self.hot.remove(&id);
            }
            cgroups.push(CgroupSample { id, mem, top });
        }
        let limited = &self.limited;
        self.hot.retain(|id| limited.contains(id));
        Sample {
            ts_ns,
            host,
            cgroups,
        }
    }

    /// The held directory of a limited cgroup, opened on first use while
    /// the file limit leaves room; None: read by path.
    fn dir_fd(&mut self, id: u64, dir: &Path) -> Option<&OwnedFd> {
        if !self.limited.contains(&id) {
            return None;
        }
        if !self.dirs.contains_key(&id) && self.dirs.len() < dir_budget() {
            let fd = open_dir(dir, id)?;
            self.dirs.insert(id, fd);
        }
        self.dirs.get(&id)
    }

    /// The largest processes of a cgroup and its subtree, largest first
    /// (ties by pid, so the list is the same for the same system).
    pub fn processes(&self, dir: &Path, path: &str) -> Vec<ProcSample> {
        let mut procs = subtree_processes(dir, path, self.page_size, false);
        procs.sort_by_key(|p| (std::cmp::Reverse(p.rss_bytes), p.pid));
        procs
            .into_iter()
            .take(TOP_PROCESSES)
            .map(|p| ProcSample {
                pid: p.pid,
                comm: p.comm,
                rss_bytes: p.rss_bytes,
            })
            .collect()
    }
}

/// How many cgroup directories the sampler holds open: half of what the
/// file limit leaves, so the rest of the agent never runs short.
fn dir_budget() -> usize {
    // SAFETY: rlimit is plain data that getrlimit fills.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: lim is a valid rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    usize::try_from(lim.rlim_cur / 2)
        .unwrap_or(usize::MAX)
        .min(65_536)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1-like cgroup tree in a temporary directory: `/a` with a limit.
    fn tree() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("memtrace-sampler-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        let write = |f: &str, v: &str| std::fs::write(dir.join("a").join(f), v).unwrap();
        write("memory.usage_in_bytes", "100\n");
        write("memory.limit_in_bytes", "1000\n");
        write(
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        );
        dir
    }

    #[test]
    fn a_quiet_cgroup_reads_its_usage_every_turn_and_its_limits_one_turn_in_six() {
        let dir = tree();
        let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.join("a")).unwrap());
        let mut reg = CgroupRegistry::for_root(&dir);
        let mut s = Sampler::new(CgroupFilter::default(), Some(CgroupVersion::V1), 4096).spread(2);
        // Ten seconds of ticks, each with the files changed before it: the
        // usage is always the file's, the limit and OOM kills are those of
        // the last full read (the first sample, then one turn in six).
        let mut turns = Vec::new();
        for t in 1..=40u64 {
            let write = |f: &str, v: String| std::fs::write(dir.join("a").join(f), v).unwrap();
            write("memory.usage_in_bytes", format!("{}\n", 100 + t));
            write("memory.limit_in_bytes", format!("{}\n", 1000 + t));
            write("memory.oom_control", format!("oom_kill {t}\n"));
            // Past the young period's every-tick samples: the first one
            // finds it, the rest are its turns.
            s.young.clear();
            let sample = s.sample(t, &mut reg, &[]);
            if let Some(c) = sample.cgroups.iter().find(|c| c.id == id) {
                turns.push((t, c.mem.current, c.mem.max, c.mem.events.oom_kill));
            }
        }
        assert!(turns.len() >= 19, "sampled one tick in two: {turns:?}");
        let mut full = 0;
        let mut last_full = None;
        for &(t, current, max, oom_kill) in &turns {
            assert_eq!(current, Some(100 + t), "usage read every turn: {turns:?}");
            if max == Some(1000 + t) {
                full += 1;
                assert_eq!(oom_kill, Some(t));
                last_full = Some(t);
            } else {
                let l = last_full.expect("the first sample reads every file");
                assert_eq!((max, oom_kill), (Some(1000 + l), Some(l)), "{turns:?}");
            }
        }
        // The first, then one turn in six.
        assert!((3..=5).contains(&full), "{full} full reads in {turns:?}");
        // A hot cgroup (near its limit) is read in full every tick.
        std::fs::write(dir.join("a/memory.usage_in_bytes"), "105\n").unwrap();
        let mut maxes = Vec::new();
        for t in 41..=60u64 {
            let limit = 120 + t % 2;
            std::fs::write(dir.join("a/memory.limit_in_bytes"), format!("{limit}\n")).unwrap();
            let sample = s.sample(t, &mut reg, &[]);
            let c = sample.cgroups.iter().find(|c| c.id == id);
            maxes.push((limit, c.and_then(|c| c.mem.max)));
        }
        // From its next full read on (it is not known to be near before).
        let seen = maxes
            .iter()
            .position(|(l, m)| *m == Some(*l))
            .expect("read in full");
        assert!(seen <= 12, "{maxes:?}");
        assert!(
            maxes[seen..].iter().all(|(l, m)| *m == Some(*l)),
            "{maxes:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
