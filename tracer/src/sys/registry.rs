//! The cgroup registry: memory cgroup id ↔ path.
//!
//! The eBPF programs identify a memory cgroup by its kernfs id, which on
//! 64-bit kernels is the inode number of the cgroup's directory. The
//! registry walks the hierarchy that holds the memory controller (cgroup v2,
//! or the v1 `memory` hierarchy on hybrid hosts) and maps ids to paths
//! relative to its mount, `/` being the root.
//!
//! It stays current lazily: an unknown id triggers a rescan (rate-limited),
//! since a new cgroup is the usual reason for a miss. Kernfs ids are never
//! reused, so entries of removed cgroups stay valid for late events and are
//! only dropped after [`GONE_RETENTION`].

use std::collections::HashMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::kernel::{CgroupVersion, MemoryHierarchy};
use crate::model::Hierarchy;

/// How long a removed cgroup's path is kept for events that arrive late.
pub const GONE_RETENTION: Duration = Duration::from_secs(600);

/// Minimum time between two rescans triggered by unknown ids.
const RESCAN_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
struct Entry {
    path: Arc<str>,
    gone_since: Option<Instant>,
}

#[derive(Debug)]
pub struct CgroupRegistry {
    root: Option<PathBuf>,
    version: Option<CgroupVersion>,
    by_id: HashMap<u64, Entry>,
    by_path: HashMap<Arc<str>, u64>,
    last_scan: Option<Instant>,
}

impl CgroupRegistry {
    /// A registry of the memory controller's hierarchy (empty when the
    /// kernel has none).
    pub fn new(hierarchy: Option<&MemoryHierarchy>) -> Self {
        let mut r = Self {
            root: hierarchy.map(|h| h.mount.clone()),
            version: hierarchy.map(|h| h.version),
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            last_scan: None,
        };
        r.scan();
        r
    }

    /// A registry of the cgroup tree mounted at `root`.
    pub fn for_root(root: &Path) -> Self {
        let mut r = Self {
            root: Some(root.to_path_buf()),
            version: None,
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            last_scan: None,
        };
        r.scan();
        r
    }

    /// A registry of known paths only (a recording's tables): no
    /// filesystem behind it.
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = (u64, &'a str)>) -> Self {
        let mut r = Self {
            root: None,
            version: None,
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            last_scan: None,
        };
        for (id, path) in paths {
            if path.is_empty() {
                continue;
            }
            let path: Arc<str> = Arc::from(path);
            r.by_path.insert(path.clone(), id);
            r.by_id.insert(
                id,
                Entry {
                    path,
                    gone_since: None,
                },
            );
        }
        r
    }

    /// The mount point of the hierarchy.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Walks the hierarchy and refreshes the maps.
    pub fn scan(&mut self) {
        let now = Instant::now();
        self.last_scan = Some(now);
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut seen = HashMap::new();
        let Ok(meta) = std::fs::metadata(&root) else {
            return;
        };
        seen.insert(meta.ino(), String::from("/"));
        let mut stack = vec![(root.clone(), String::from("/"))];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                // The directory entry's type and inode number (the cgroup
                // id) come with the listing: no stat per cgroup.
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    seen.insert(entry.ino(), child.clone());
                    stack.push((entry.path(), child));
                }
            }
        }
        for (id, entry) in &mut self.by_id {
            if !seen.contains_key(id) && entry.gone_since.is_none() {
                entry.gone_since = Some(now);
            }
        }
        self.by_id.retain(|_, e| {
            e.gone_since
                .is_none_or(|t| now.duration_since(t) < GONE_RETENTION)
        });
        for (id, path) in seen {
            match self.by_id.get_mut(&id) {
                Some(e) if *e.path == *path => e.gone_since = None,
                old => {
                    // A renamed cgroup (v1 allows it) keeps its id.
                    if let Some(e) = old {
                        self.by_path.remove(&e.path);
                    }
                    let path: Arc<str> = Arc::from(path);
                    self.by_path.insert(path.clone(), id);
                    self.by_id.insert(
                        id,
                        Entry {
                            path,
                            gone_since: None,
                        },
                    );
                }
            }
        }
        let by_id = &self.by_id;
        self.by_path.retain(|_, id| by_id.contains_key(id));
    }

    /// The path of a cgroup id, rescanning once if it is unknown (I/O:
    /// the collection stage calls this before the model sees the id).
    pub fn resolve(&mut self, id: u64) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        if let Some(e) = self.by_id.get(&id) {
            return Some(e.path.clone());
        }
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= RESCAN_INTERVAL);
        if due && self.root.is_some() {
            self.scan();
        }
        self.by_id.get(&id).map(|e| e.path.clone())
    }

    /// The path of a cgroup id, without rescanning.
    pub fn lookup(&self, id: u64) -> Option<Arc<str>> {
        self.by_id.get(&id).map(|e| e.path.clone())
    }

    /// The id of a cgroup path (as the registry spells it, `/a/b`).
    pub fn id(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Whether the cgroup still exists as of the last scan.
    pub fn is_live(&self, id: u64) -> bool {
        self.by_id.get(&id).is_some_and(|e| e.gone_since.is_none())
    }

    /// The directory of a cgroup path in the mounted hierarchy.
    pub fn dir(&self, path: &str) -> Option<PathBuf> {
        let root = self.root.as_ref()?;
        let rel = path.trim_start_matches('/');
        Some(if rel.is_empty() {
            root.clone()
        } else {
            root.join(rel)
        })
    }

    /// Every known cgroup, live or recently gone.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Arc<str>)> {
        self.by_id.iter().map(|(id, e)| (*id, &e.path))
    }

    /// Completes an event from the system before the model sees it: an OOM
    /// victim whose memory cgroup the kernel record could not name gets it
    /// from `/proc/PID/cgroup`, and every id the event names is resolved,
    /// so that the model and the presenters look them up without I/O.
    pub fn complete(&mut self, e: &mut Event) {
        if let Event::OomKill(o) = e
            && o.victim_memcg_id == 0
            && let Some((id, _)) = self.cgroup_of_pid(o.victim.tgid.max(o.victim.pid))
        {
            o.victim_memcg_id = id;
        }
        for id in e.cgroup_ids() {
            self.resolve(id);
        }
    }

    /// The memory cgroup of a live process, from `/proc/PID/cgroup`; for
    /// events whose kernel record could not name it.
    pub fn cgroup_of_pid(&mut self, pid: u32) -> Option<(u64, Arc<str>)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = cgroup_line(&text, self.version?)?;
        let id = match self.id(&path) {
            Some(id) => id,
            None => {
                self.scan();
                self.id(&path)?
            }
        };
        Some((id, self.lookup(id)?))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl Hierarchy for CgroupRegistry {
    fn path(&self, id: u64) -> Option<Arc<str>> {
        self.lookup(id)
    }

    fn id(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Only a registry of a mounted hierarchy knows what was removed.
    fn removed(&self, id: u64) -> bool {
        self.root.is_some() && !self.is_live(id)
    }
}

/// The memory hierarchy's path in `/proc/PID/cgroup` text: the `0::` line
/// in v2, the line whose controllers include `memory` in v1.
fn cgroup_line(text: &str, version: CgroupVersion) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match version {
            CgroupVersion::V2 => controllers.is_empty(),
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        hit.then(|| path.to_string())
    })
}

/// The parent of a cgroup path (`/a/b` → `/a`, `/a` → `/`), `None` for `/`.
pub fn parent_path(path: &str) -> Option<&str> {
    if path == "/" || path.is_empty() {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The path and its ancestors, nearest first, ending with `/`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| parent_path(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_inodes_to_relative_paths_and_back() {
        let dir = tempdir();
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::create_dir_all(dir.join("c")).unwrap();
        std::fs::write(dir.join("a/memory.current"), "1\n").unwrap();
        let mut r = CgroupRegistry::for_root(&dir);
        let ino = |p: &str| std::fs::metadata(dir.join(p)).unwrap().ino();
        assert_eq!(r.resolve(ino("a/b")).as_deref(), Some("/a/b"));
        assert_eq!(r.resolve(ino("c")).as_deref(), Some("/c"));
        assert_eq!(r.resolve(ino("")).as_deref(), Some("/"));
        assert_eq!(r.id("/a"), Some(ino("a")));
        assert_eq!(r.len(), 4);
        assert_eq!(r.dir("/a/b"), Some(dir.join("a/b")));
        assert_eq!(r.dir("/"), Some(dir.clone()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_cgroups_are_found_on_miss_and_removed_ones_kept() {
        let dir = tempdir();
        let mut r = CgroupRegistry::for_root(&dir);
        std::fs::create_dir(dir.join("late")).unwrap();
        let late = std::fs::metadata(dir.join("late")).unwrap().ino();
        // Let the rescan rate limit pass.
        std::thread::sleep(RESCAN_INTERVAL);
        assert_eq!(r.resolve(late).as_deref(), Some("/late"));
        assert!(r.is_live(late));
        std::fs::remove_dir(dir.join("late")).unwrap();
        r.scan();
        assert_eq!(r.lookup(late).as_deref(), Some("/late"));
        assert!(!r.is_live(late));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_and_zero_ids() {
        let mut r = CgroupRegistry::new(None);
        assert!(r.resolve(0).is_none());
        assert!(r.resolve(12345).is_none());
        assert!(r.is_empty());
    }

    #[test]
    fn proc_cgroup_lines() {
        let text = "12:pids:/a\n4:memory:/test\n0::/user.slice/x\n";
        assert_eq!(
            cgroup_line(text, CgroupVersion::V1).as_deref(),
            Some("/test")
        );
        assert_eq!(
            cgroup_line(text, CgroupVersion::V2).as_deref(),
            Some("/user.slice/x")
        );
        assert_eq!(cgroup_line("garbage", CgroupVersion::V2), None);
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent_path("/a/b"), Some("/a"));
        assert_eq!(parent_path("/a"), Some("/"));
        assert_eq!(parent_path("/"), None);
        assert_eq!(ancestors("/a/b").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "memtrace-registry-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
