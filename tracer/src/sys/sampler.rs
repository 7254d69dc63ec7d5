//! The once-a-second sample: each memory cgroup in scope (its memory files
//! and largest processes) and the host. Processes are listed for every
//! cgroup that matters (active, new, near or over a limit), so the hog of a
//! cgroup at 57M/64M is in view before anything else happens.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::filter::CgroupFilter;
use crate::kernel::CgroupVersion;
use crate::sys::cgroupfs::{CgroupMemory, HostMemory};
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
/// How often the set of cgroups with a memory limit is refreshed.
const LIMIT_SCAN: Duration = Duration::from_secs(10);
/// A new cgroup is sampled every tick for this long, limit or not: its
/// limit is usually written just after the mkdir, and a cgroup that fills
/// fast must have a sample from before it ran out.
const YOUNG: Duration = Duration::from_secs(10);

pub struct Sampler {
    scope: CgroupFilter,
    version: Option<CgroupVersion>,
    page_size: u64,
    limited: HashSet<u64>,
    young: HashMap<u64, Instant>,
    last_scan: Option<Instant>,
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
        }
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
        if self.last_scan.is_none_or(|t| t.elapsed() >= LIMIT_SCAN) {
            reg.scan();
            self.limited = reg
                .entries()
                .filter(|(_, p)| p.as_ref() != "/" && self.scope.matches(p))
                .filter_map(|(id, p)| {
                    let dir = reg.dir(p)?;
                    let m = CgroupMemory::read(&dir, version);
                    (m.high.is_some() || m.max.is_some()).then_some(id)
                })
                .collect();
            self.last_scan = Some(Instant::now());
        }
        let now = Instant::now();
        for id in reg.take_created() {
            self.young.insert(id, now);
        }
        self.young.retain(|_, t| now.duration_since(*t) < YOUNG);
        let mut ids: Vec<u64> = self.limited.iter().copied().collect();
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
        for id in ids {
            let Some(path) = reg.lookup(id) else { continue };
            let Some(dir) = reg.dir(&path) else { continue };
            if !dir.exists() {
                continue;
            }
            let mem = CgroupMemory::read(&dir, version);
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
            cgroups.push(CgroupSample { id, mem, top });
        }
        Sample {
            ts_ns,
            host,
            cgroups,
        }
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
