//! The cgroup registry: memory cgroup id ↔ path.
//!
//! The eBPF programs identify a memory cgroup by its kernfs id, which on
//! 64-bit kernels is the inode number of the cgroup's directory. The
//! registry walks the hierarchy that holds the memory controller (cgroup v2,
//! or the v1 `memory` hierarchy on hybrid hosts) and maps ids to paths
//! relative to its mount, `/` being the root.
//!
//! It stays current two ways: with [`CgroupRegistry::watch`], inotify
//! reports each new cgroup directory the moment it is made
//! ([`CgroupRegistry::poll_new`]); and an unknown id triggers a rescan
//! (rate-limited), since a new cgroup is the usual reason for a miss.
//! While inotify watches every directory and dropped nothing
//! ([`CgroupRegistry::watching_all`]), its owner need not walk the
//! hierarchy on a timer. Kernfs ids are never
//! reused, so entries of removed cgroups stay valid for late events and are
//! only dropped after [`GONE_RETENTION`].
//!
//! Each entry carries its cgroup's [`Identity`], made once when the path is
//! learned (pure naming from the path, [`crate::names`]) and completed by
//! what enrichment learned ([`CgroupRegistry::learn`]): every lookup after
//! that only clones an `Arc`. With [`CgroupRegistry::want_names`] the
//! registry also collects what to ask the enrichment thread about
//! ([`CgroupRegistry::take_asks`]); it never asks itself. What enrichment
//! learned lives as long as a cgroup the registry holds names it: when
//! cgroups go for good, the facts and questions about what no other cgroup
//! names go with them ([`Known::retain`]), so a long-running agent on a
//! node with container churn keeps naming new containers in bounded
//! memory. A new enrichment thread ([`CgroupRegistry::want_names`] again,
//! after a reload) is asked again what the old one was asked and never
//! answered.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::kernel::{CgroupVersion, MemoryHierarchy};
use crate::model::Hierarchy;
use crate::names::{Ask, Identity, Known, Learned, Named, identify};
use crate::sys::watch::DirWatch;

/// How long a removed cgroup's path is kept for events that arrive late.
pub const GONE_RETENTION: Duration = Duration::from_secs(600);

/// Minimum time between two rescans triggered by unknown ids.
const RESCAN_INTERVAL: Duration = Duration::from_millis(200);

/// How long an id a rescan did not find is not looked for again: its
/// cgroup was removed before the scan (an event comes after its cgroup's
/// mkdir), and each look is a walk of the whole hierarchy. Events of
/// short-lived cgroups otherwise cost a walk a second each while they stay
/// in the model.
const MISS_RETRY: Duration = Duration::from_secs(60);
/// At most this many missed ids remembered; past it they are forgotten.
const MISSES_KEPT: usize = 4096;

/// The most questions for the enrichment thread remembered as asked; past
/// it the memory is cleared (and a question may be asked twice).
const MAX_ASKED: usize = 65_536;

#[derive(Clone, Debug)]
struct Entry {
    path: Arc<str>,
    name: Arc<Identity>,
    gone_since: Option<Instant>,
}

/// What the registry knows of names beyond the paths.
#[derive(Debug, Default)]
struct Names {
    known: Known,
    /// Collect questions for enrichment (only a live registry does).
    wanted: bool,
    asked: HashSet<Ask>,
    asks: Vec<Ask>,
    /// Facts were forgotten since the last [`CgroupRegistry::learn`].
    forgot: bool,
}

impl Names {
    /// The entry of a path: named now, asked about later.
    fn entry(&mut self, path: Arc<str>) -> Entry {
        let mut id = identify(&path);
        self.known.apply(&mut id);
        if self.wanted {
            self.ask(&id);
        }
        Entry {
            path,
            name: Arc::new(id),
            gone_since: None,
        }
    }

    fn ask(&mut self, id: &Identity) {
        for a in self.known.asks(id) {
            if self.asked.len() >= MAX_ASKED {
                self.asked.clear();
            }
            if self.asked.insert(a.clone()) {
                self.asks.push(a);
            }
        }
    }

    /// Forgets the facts and questions about what none of `entries`
    /// names; whether a fact was forgotten.
    fn forget_unnamed<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> bool {
        let named = Named::of(entries.into_iter().map(|e| &*e.name));
        self.asked.retain(|a| named.names(a));
        self.asks.retain(|a| named.names(a));
        self.known.retain(&named)
    }
}

#[derive(Debug)]
pub struct CgroupRegistry {
    root: Option<PathBuf>,
    version: Option<CgroupVersion>,
    by_id: HashMap<u64, Entry>,
    by_path: HashMap<Arc<str>, u64>,
    last_scan: Option<Instant>,
    watch: Option<DirWatch>,
    /// Cgroups found since the last [`CgroupRegistry::take_created`].
    created: Vec<u64>,
    names: Names,
    /// Ids a rescan made for them did not find, and when ([`MISS_RETRY`]).
    missed: HashMap<u64, Instant>,
}

impl CgroupRegistry {
    /// A registry of the memory controller's hierarchy (empty when the
    /// kernel has none).
    pub fn new(hierarchy: Option<&MemoryHierarchy>) -> Self {
        if let Some(h) = hierarchy
            && let Some(root) = crate::sys::cgroupns::detect(&h.mount, h.version)
        {
            log::info!(
                "memtrace runs in a cgroup namespace rooted at {root}: processes' cgroups are read relative to it"
            );
        }
        let mut r = Self {
            root: hierarchy.map(|h| h.mount.clone()),
            version: hierarchy.map(|h| h.version),
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            last_scan: None,
            watch: None,
            created: Vec::new(),
            names: Names::default(),
            missed: HashMap::new(),
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
            watch: None,
            created: Vec::new(),
            names: Names::default(),
            missed: HashMap::new(),
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
            watch: None,
            created: Vec::new(),
            names: Names::default(),
            missed: HashMap::new(),
        };
        for (id, path) in paths {
            if path.is_empty() {
                continue;
            }
            let path: Arc<str> = Arc::from(path);
            r.by_path.insert(path.clone(), id);
            let entry = r.names.entry(path);
            r.by_id.insert(id, entry);
        }
        r
    }

    /// The mount point of the hierarchy.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Walks the hierarchy and refreshes the maps. Returns whether the
    /// walk saw all of it: false when a directory or entry could not be
    /// read for another reason than being removed meanwhile, so a cgroup
    /// it did not find may still exist.
    pub fn scan(&mut self) -> bool {
        let now = Instant::now();
        let first_done = self.last_scan.is_some();
        self.last_scan = Some(now);
        let Some(root) = self.root.clone() else {
            return false;
        };
        let mut seen = HashMap::new();
        let Ok(meta) = std::fs::metadata(&root) else {
            return false;
        };
        seen.insert(meta.ino(), String::from("/"));
        let mut complete = true;
        let mut stack = vec![(root.clone(), String::from("/"))];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Removed since its parent was listed: so are its children.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => {
                    complete = false;
                    continue;
                }
            };
            for entry in entries {
                let Ok(entry) = entry else {
                    complete = false;
                    continue;
                };
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
        self.absorb(seen, now, first_done);
        complete
    }

    /// Takes in a walk's cgroups (id → path) made at `now`: new ones are
    /// named, missing ones marked gone, and those gone for
    /// [`GONE_RETENTION`] dropped with what only they named. Cgroups new
    /// after the first walk are reported as created.
    fn absorb(&mut self, seen: HashMap<u64, String>, now: Instant, first_done: bool) {
        for (id, entry) in &mut self.by_id {
            if !seen.contains_key(id) && entry.gone_since.is_none() {
                entry.gone_since = Some(now);
            }
        }
        let before = self.by_id.len();
        self.by_id.retain(|_, e| {
            e.gone_since
                .is_none_or(|t| now.duration_since(t) < GONE_RETENTION)
        });
        let dropped = self.by_id.len() != before;
        for (id, path) in seen {
            match self.by_id.get_mut(&id) {
                Some(e) if *e.path == *path => e.gone_since = None,
                old => {
                    // A renamed cgroup (v1 allows it) keeps its id.
                    if let Some(e) = old {
                        self.by_path.remove(&e.path);
                    } else if first_done
                        && let Some(w) = &mut self.watch
                        && let Some(root) = &self.root
                    {
                        // Only a watching registry reports new cgroups (its
                        // sampler takes them); others would only pile them up.
                        self.created.push(id);
                        if let Some(dir) = dir_of(root, &path) {
                            w.add(&dir);
                        }
                    }
                    let path: Arc<str> = Arc::from(path);
                    self.by_path.insert(path.clone(), id);
                    let entry = self.names.entry(path);
                    self.by_id.insert(id, entry);
                }
            }
        }
        let by_id = &self.by_id;
        self.by_path.retain(|_, id| by_id.contains_key(id));
        if dropped && self.names.forget_unnamed(self.by_id.values()) {
            self.names.forgot = true;
        }
        if let Some(w) = &mut self.watch {
            w.walked();
        }
    }

    /// Whether inotify watches the whole hierarchy and missed nothing
    /// since the last walk: new cgroups then need no periodic walk.
    pub fn watching_all(&self) -> bool {
        self.watch.as_ref().is_some_and(DirWatch::complete)
    }

    /// Starts watching the hierarchy for new cgroups with inotify. False
    /// when it cannot (no hierarchy, no inotify): rescans still find them.
    pub fn watch(&mut self) -> bool {
        if self.watch.is_some() {
            return true;
        }
        let Some(root) = self.root.clone() else {
            return false;
        };
        let Some(mut w) = DirWatch::new() else {
            return false;
        };
        let mut all = true;
        for e in self.by_id.values().filter(|e| e.gone_since.is_none()) {
            if let Some(dir) = dir_of(&root, &e.path) {
                all &= w.add(&dir);
            }
        }
        if !all {
            log::debug!("inotify: not every cgroup directory is watched; rescans cover the rest");
        }
        self.watch = Some(w);
        true
    }

    /// Adds the cgroups inotify reported since the last call (and any made
    /// inside them before their watch was in place); returns how many.
    pub fn poll_new(&mut self) -> usize {
        let (Some(root), Some(w)) = (self.root.clone(), self.watch.as_mut()) else {
            return 0;
        };
        let mut stack: Vec<PathBuf> = w.poll().into_iter().map(|c| c.dir).collect();
        let mut found = 0;
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let Some(rel) = dir
                .strip_prefix(&root)
                .ok()
                .and_then(|r| r.to_str())
                .map(|r| format!("/{r}"))
            else {
                continue;
            };
            if let Some(w) = self.watch.as_mut() {
                w.add(&dir);
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            let id = meta.ino();
            if self.by_id.get(&id).is_some_and(|e| *e.path == *rel) {
                continue;
            }
            if let Some(old) = self.by_id.get(&id) {
                self.by_path.remove(&old.path);
            }
            let path: Arc<str> = Arc::from(rel);
            self.by_path.insert(path.clone(), id);
            let entry = self.names.entry(path);
            self.by_id.insert(id, entry);
            self.created.push(id);
            found += 1;
        }
        found
    }

    /// The cgroups found (by inotify or a rescan) since the last call.
    pub fn take_created(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.created)
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
        if self
            .missed
            .get(&id)
            .is_some_and(|t| t.elapsed() < MISS_RETRY)
        {
            return None;
        }
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= RESCAN_INTERVAL);
        if due && self.root.is_some() {
            // Only a walk that saw everything may say the id is gone.
            let complete = self.scan();
            if complete && !self.by_id.contains_key(&id) {
                if self.missed.len() >= MISSES_KEPT {
                    self.missed.clear();
                }
                self.missed.insert(id, Instant::now());
            }
        }
        self.by_id.get(&id).map(|e| e.path.clone())
    }

    /// The path of a cgroup id, without rescanning.
    pub fn lookup(&self, id: u64) -> Option<Arc<str>> {
        self.by_id.get(&id).map(|e| e.path.clone())
    }

    /// Who a cgroup is, without rescanning.
    pub fn name(&self, id: u64) -> Option<Arc<Identity>> {
        self.by_id.get(&id).map(|e| e.name.clone())
    }

    /// From now on, collect what to ask enrichment about every cgroup
    /// (those known already included). Called again for a new enrichment
    /// thread (a reload): what the old one was asked and never answered
    /// is asked again, since its answers went with it.
    pub fn want_names(&mut self) {
        self.names.wanted = true;
        let known = &self.names.known;
        self.names.asked.retain(|a| known.answers(a));
        // Whatever was queued is asked again below, once.
        self.names.asks.clear();
        let ids: Vec<Arc<Identity>> = self.by_id.values().map(|e| e.name.clone()).collect();
        for id in ids {
            self.names.ask(&id);
        }
    }

    /// No enrichment thread any more: nothing is collected for one.
    pub fn stop_names(&mut self) {
        self.names.wanted = false;
        self.names.asked.clear();
        self.names.asks.clear();
    }

    /// The questions for enrichment collected since the last call.
    pub fn take_asks(&mut self) -> Vec<Ask> {
        std::mem::take(&mut self.names.asks)
    }

    /// Questions that could not be sent: asked again with the next batch.
    pub fn requeue(&mut self, asks: Vec<Ask>) {
        self.names.asks.extend(asks);
    }

    /// Keeps what enrichment learned and renames the cgroups it is about;
    /// whether what is known changed (by these facts, or by facts
    /// forgotten since the last call), for copies of it to follow.
    pub fn learn(&mut self, facts: impl IntoIterator<Item = Learned>) -> bool {
        let mut changed = std::mem::take(&mut self.names.forgot);
        let mut forgot = false;
        for f in facts {
            // A full table first makes room: what no cgroup names any more.
            if !forgot && self.names.known.is_full() {
                forgot = true;
                changed |= self.names.forget_unnamed(self.by_id.values());
            }
            changed |= self.names.known.learn(f);
        }
        if changed {
            let known = &self.names.known;
            for e in self.by_id.values_mut() {
                let mut id = Identity::clone(&e.name);
                known.apply(&mut id);
                if id != *e.name {
                    e.name = Arc::new(id);
                }
            }
        }
        changed
    }

    /// What enrichment learned so far.
    pub fn known(&self) -> &Known {
        &self.names.known
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

    fn identity(&self, id: u64) -> Option<Arc<Identity>> {
        self.name(id)
    }

    /// Only a registry of a mounted hierarchy knows what was removed.
    fn removed(&self, id: u64) -> bool {
        self.root.is_some() && !self.is_live(id)
    }
}

/// A registry path's directory under the mount.
fn dir_of(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.trim_start_matches('/');
    Some(if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    })
}

/// The memory hierarchy's path in `/proc/PID/cgroup` text: the `0::` line
/// in v2, the line whose controllers include `memory` in v1.
fn cgroup_line(text: &str, version: CgroupVersion) -> Option<String> {
    // Relative to this process's cgroup namespace (see `cgroupns`).
    crate::sys::cgroupns::line_of(text, version).and_then(crate::sys::cgroupns::host_path)
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
mod tests;
