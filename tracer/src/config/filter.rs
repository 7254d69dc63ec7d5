//! Cgroup path globs, as used by `--cgroup` and the agent's budgets.
//!
//! `*` and `?` stay inside one path segment and `**` crosses segments, as in
//! gitignore: `/system.slice/*.service` matches the services but nothing
//! below them. `\` is an ordinary character, as in the paths systemd
//! writes (`/system.slice/system-t3\x2dserve.slice`, what `systemctl show
//! -p ControlGroup` prints), so a path pasted from systemd matches itself;
//! a literal `*` is `[*]`. A [`CgroupFilter`] selects a cgroup *and its
//! subtree*: it matches a path when the glob matches the path or one of
//! its ancestors.

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::event::Event;
use crate::sys::registry::{CgroupRegistry, ancestors};

/// Compiles one cgroup glob, with an error that names the glob.
pub fn cgroup_glob(pattern: &str) -> Result<GlobMatcher, String> {
    if !pattern.starts_with('/') && !pattern.starts_with('*') {
        return Err(format!(
            "cgroup glob `{pattern}` must start with `/` (paths are relative to the cgroup mount, \
             e.g. /system.slice/foo.service)"
        ));
    }
    let glob: Glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map_err(|e| format!("bad cgroup glob `{pattern}`: {}", e.kind()))?;
    Ok(glob.compile_matcher())
}

/// Any of several globs, matching a cgroup or any of its ancestors.
#[derive(Clone, Debug, Default)]
pub struct CgroupFilter {
    globs: Vec<GlobMatcher>,
}

impl CgroupFilter {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let globs = patterns
            .iter()
            .map(|p| cgroup_glob(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { globs })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    pub fn matches(&self, path: &str) -> bool {
        self.globs.is_empty() || ancestors(path).any(|p| self.globs.iter().any(|g| g.is_match(p)))
    }

    /// Whether an event belongs to a selected cgroup: its own, or for an
    /// OOM kill the one that ran out. Lost-event reports belong to none and
    /// always pass.
    pub fn matches_event(&self, registry: &mut CgroupRegistry, event: &Event) -> bool {
        if self.globs.is_empty() || matches!(event, Event::Lost(_)) {
            return true;
        }
        let mut ids = vec![event.memcg_id()];
        if let Event::OomKill(o) = event {
            ids.push(o.oom_memcg_id);
        }
        ids.into_iter()
            .filter_map(|id| registry.resolve(id))
            .any(|path| self.matches(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_in_a_segment_and_subtrees_follow() {
        let f = CgroupFilter::new(&["/system.slice/*.service"]).unwrap();
        assert!(f.matches("/system.slice/ssh.service"));
        assert!(f.matches("/system.slice/ssh.service/child"));
        assert!(!f.matches("/system.slice"));
        assert!(!f.matches("/user.slice/x.service"));
        let deep = CgroupFilter::new(&["/**/hog"]).unwrap();
        assert!(deep.matches("/a/b/hog"));
        assert!(CgroupFilter::new::<&str>(&[]).unwrap().matches("/anything"));
    }

    /// systemd's own spelling of the first incident's cgroup, pasted from
    /// `systemctl show -p ControlGroup`, selects it.
    #[test]
    fn paths_as_systemd_writes_them_match_themselves() {
        let unit = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
        let f = CgroupFilter::new(&[unit]).unwrap();
        assert!(f.matches(unit));
        assert!(f.matches(&format!("{unit}/agents")));
        assert!(!f.matches("/system.slice/system-t3x2dserve.slice/t3-serve@wizard.service"));
        let slice = CgroupFilter::new(&[r"/system.slice/system-t3\x2dserve.slice/*"]).unwrap();
        assert!(slice.matches(unit));
        assert!(CgroupFilter::new(&["/a[*]"]).unwrap().matches("/a*"));
        assert!(!CgroupFilter::new(&["/a[*]"]).unwrap().matches("/ab"));
    }

    #[test]
    fn bad_globs_are_named() {
        let e = CgroupFilter::new(&["/a/[b"]).unwrap_err();
        assert!(e.contains("/a/[b"), "{e}");
        let e = CgroupFilter::new(&["system.slice"]).unwrap_err();
        assert!(e.contains("must start with `/`"), "{e}");
    }
}
