//! Cgroup namespaces: `/proc/PID/cgroup` tells a process's cgroup relative
//! to the *reader's* cgroup namespace root, the hierarchy memtrace walks is
//! the host's.
//!
//! On a host both are the same. In a container (the DaemonSet of
//! docs/examples) the runtime gives memtrace a cgroup namespace of its own
//! unless the pod is privileged, and mounts the host's hierarchy in for
//! it: then memtrace's own cgroup reads `/`, and a service outside the
//! container reads `/../../../system.slice/ssh.service`. [`detect`] finds
//! the namespace root once (the cgroup of the mounted hierarchy whose
//! `cgroup.procs` holds this process, less what `/proc/self/cgroup` says
//! below it), and [`host_path`] and [`is_under`] read every such path as
//! the hierarchy's. The kill path's check that a victim is still inside
//! its line goes through [`is_under`], which allocates nothing.

use std::path::Path;
use std::sync::OnceLock;

use crate::kernel::CgroupVersion;

static ROOT: OnceLock<String> = OnceLock::new();

/// The namespace root as a path of the mounted hierarchy: `/` unless
/// [`detect`] found another.
pub fn root() -> &'static str {
    ROOT.get().map_or("/", String::as_str)
}

/// This process's line of `/proc/self/cgroup` for the memory hierarchy.
pub fn line_of(text: &str, version: CgroupVersion) -> Option<&str> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match version {
            CgroupVersion::V2 => controllers.is_empty(),
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        hit.then_some(path.trim_end())
    })
}

/// Finds this process's cgroup namespace root in the hierarchy mounted at
/// `mount`, once per process; the root when it is not `/`.
pub fn detect(mount: &Path, version: CgroupVersion) -> Option<&'static str> {
    let root = ROOT.get_or_init(|| find_root(mount, version).unwrap_or_else(|| "/".into()));
    (root != "/").then_some(root.as_str())
}

fn holds_me(dir: &Path) -> bool {
    let me = std::process::id().to_string();
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == me))
}

fn find_root(mount: &Path, version: CgroupVersion) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = line_of(&text, version)?.to_string();
    let rel = |p: &str| mount.join(p.trim_start_matches('/'));
    if own.starts_with("/..") || holds_me(&rel(&own)) {
        // The mount is the namespace's view, or there is no namespace.
        return None;
    }
    // Where am I in the mounted tree? Walked once, at start.
    let mut stack = vec![(mount.to_path_buf(), String::from("/"))];
    while let Some((dir, path)) = stack.pop() {
        if holds_me(&dir) {
            let root = path.strip_suffix(own.as_str()).unwrap_or(&path);
            let root = if own == "/" { path.as_str() } else { root };
            let root = if root.is_empty() { "/" } else { root };
            return Some(root.to_string());
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                stack.push((e.path(), child));
            }
        }
    }
    None
}

/// The segments of a path as the hierarchy spells it, for a path
/// `/proc/PID/cgroup` gave relative to the namespace `root`: `None` when
/// it climbs above the hierarchy's root.
fn segments<'a>(root: &'a str, rel: &'a str) -> Option<impl Iterator<Item = &'a str>> {
    let parts = rel.split('/').filter(|s| !s.is_empty());
    let ups = parts.clone().take_while(|s| *s == "..").count();
    let base = root.split('/').filter(|s| !s.is_empty());
    let keep = base.clone().count().checked_sub(ups)?;
    Some(base.take(keep).chain(parts.skip(ups)))
}

/// A `/proc/PID/cgroup` path as a path of the mounted hierarchy.
pub fn host_path(rel: &str) -> Option<String> {
    host_path_in(root(), rel)
}

fn host_path_in(root: &str, rel: &str) -> Option<String> {
    let mut out = String::new();
    for s in segments(root, rel)? {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Whether a `/proc/PID/cgroup` path is `path` (a path of the mounted
/// hierarchy) or below it. Allocation-free: the kill path calls it.
pub fn is_under(rel: &str, path: &str) -> bool {
    is_under_in(root(), rel, path)
}

fn is_under_in(root: &str, rel: &str, path: &str) -> bool {
    let Some(mut have) = segments(root, rel) else {
        return false;
    };
    path.split('/')
        .filter(|s| !s.is_empty())
        .all(|want| have.next() == Some(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DaemonSet's container in a Burstable pod, reading paths from its
    /// own cgroup namespace.
    const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8e3f1a52_7c4d_4b2a_9f10_2d6e5a7b8c9d.slice/cri-containerd-1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119.scope";

    #[test]
    fn paths_relative_to_a_namespace_read_as_the_hosts() {
        let unit = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
        let rel = format!("/../../../..{unit}");
        assert_eq!(host_path_in(POD, &rel).as_deref(), Some(unit));
        assert!(is_under_in(POD, &rel, unit));
        assert!(is_under_in(POD, &rel, "/system.slice"));
        assert!(is_under_in(POD, &rel, "/"));
        assert!(!is_under_in(POD, &rel, "/system.slice/ssh.service"));
        // Its own cgroup and below.
        assert_eq!(host_path_in(POD, "/").as_deref(), Some(POD));
        assert!(is_under_in(POD, "/alerts", POD));
        // Above the hierarchy's root: nothing.
        assert_eq!(host_path_in(POD, "/../../../../../x"), None);
        assert!(!is_under_in(POD, "/../../../../../x", "/"));
        // No namespace: the path as it is.
        assert_eq!(host_path_in("/", unit).as_deref(), Some(unit));
        assert!(is_under_in("/", unit, unit));
        assert!(!is_under_in("/", "/system.slice", unit));
        // A sibling with the same prefix is not below.
        assert!(!is_under_in("/", "/worker", "/work"));
    }

    #[test]
    fn the_memory_line_of_either_version() {
        let text = "12:pids:/a\n4:memory:/test\n0::/user.slice/x\n";
        assert_eq!(line_of(text, CgroupVersion::V1), Some("/test"));
        assert_eq!(line_of(text, CgroupVersion::V2), Some("/user.slice/x"));
        assert_eq!(line_of("garbage", CgroupVersion::V2), None);
    }
}
