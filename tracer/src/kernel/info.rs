//! Static facts about the running kernel and its cgroup layout.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where cgroup hierarchies are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only cgroup v2.
    Unified,
    /// Only cgroup v1.
    Legacy,
    /// Both: some controllers on v1, the rest (maybe none) on v2.
    Hybrid,
    /// No cgroup filesystem mounted.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CgroupVersion {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
}

/// The hierarchy the memory controller is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryHierarchy {
    pub version: CgroupVersion,
    pub mount: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    pub v2_mount: Option<PathBuf>,
    pub memory: Option<MemoryHierarchy>,
}

impl CgroupLayout {
    /// Reads the layout from `/proc/self/mountinfo`.
    pub fn detect() -> std::io::Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        Ok(Self::from_mountinfo(&mountinfo, |root| {
            fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        }))
    }

    /// Parses mountinfo text; `v2_controllers` reads `cgroup.controllers` of
    /// a v2 mount (injected for tests).
    pub fn from_mountinfo(mountinfo: &str, v2_controllers: impl Fn(&Path) -> String) -> Self {
        let mut v2_mount = None;
        let mut v1_any = false;
        let mut v1_memory = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or("");
            let super_opts = right.nth(1).unwrap_or("");
            let mount_point = PathBuf::from(unescape_mount(mount_point));
            match fstype {
                "cgroup2" if v2_mount.is_none() => v2_mount = Some(mount_point),
                "cgroup" => {
                    v1_any = true;
                    if v1_memory.is_none() && super_opts.split(',').any(|o| o == "memory") {
                        v1_memory = Some(mount_point);
                    }
                }
                _ => {}
            }
        }
        let mode = match (v1_any, v2_mount.is_some()) {
            (true, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::Legacy,
            (false, true) => CgroupMode::Unified,
            (false, false) => CgroupMode::None,
        };
        let memory = match (&v1_memory, &v2_mount) {
            (Some(m), _) => Some(MemoryHierarchy {
                version: CgroupVersion::V1,
                mount: m.clone(),
            }),
            (None, Some(m)) if v2_controllers(m).split_whitespace().any(|c| c == "memory") => {
                Some(MemoryHierarchy {
                    version: CgroupVersion::V2,
                    mount: m.clone(),
                })
            }
            _ => None,
        };
        Self {
            mode,
            v2_mount,
            memory,
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Facts about the running kernel that `memtrace check` reports.
#[derive(Clone, Debug, Serialize)]
pub struct KernelInfo {
    pub release: String,
    pub hostname: String,
    pub boot_id: String,
    pub btf: bool,
    /// `/proc/pressure/memory` is readable (PSI compiled in and enabled).
    pub psi: bool,
    pub cgroups: CgroupLayout,
    /// Where tracefs is mounted, if it is.
    pub tracefs: Option<PathBuf>,
    pub page_size: u64,
    /// What the kill path can use here.
    pub kill: KillFeatures,
}

/// Kernel features of the kill path; without them the agent falls back,
/// and `check` says what that costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KillFeatures {
    /// `process_mrelease(2)` (Linux 5.15): a killed victim's memory is
    /// freed at once by the killer, not by the victim's own exit.
    pub process_mrelease: bool,
    /// `cgroup.kill` (Linux 5.14, cgroup v2): one write kills a whole
    /// cgroup, forks in flight included.
    pub cgroup_kill: bool,
}

impl KillFeatures {
    pub fn detect(v2_mount: Option<&Path>) -> Self {
        // With fd -1, a kernel that has the call answers EBADF, one that
        // lacks it ENOSYS; nothing is released either way.
        // SAFETY: no pointers are passed.
        let rc = unsafe { libc::syscall(libc::SYS_process_mrelease, -1, 0u32) };
        let process_mrelease =
            rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS);
        Self {
            process_mrelease,
            cgroup_kill: v2_mount.is_some_and(has_cgroup_kill),
        }
    }
}

/// Whether cgroups under the v2 mount have `cgroup.kill`. The root has
/// none, so a child is asked; with no child at all, nothing to kill yet,
/// the kernel's release decides.
fn has_cgroup_kill(mount: &Path) -> bool {
    let child = fs::read_dir(mount).ok().and_then(|d| {
        d.flatten()
            .find(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
    });
    match child {
        Some(dir) => dir.join("cgroup.kill").exists(),
        None => fs::read_to_string("/proc/sys/kernel/osrelease")
            .is_ok_and(|r| release_at_least(&r, (5, 14))),
    }
}

/// Whether a release string like `5.10.0-32-cloud-amd64` is at least
/// `major.minor`.
pub fn release_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= want
}

impl KernelInfo {
    pub fn detect() -> Self {
        let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string());
        let cgroups = CgroupLayout::detect().unwrap_or(CgroupLayout {
            mode: CgroupMode::None,
            v2_mount: None,
            memory: None,
        });
        Self {
            release: read("/proc/sys/kernel/osrelease").unwrap_or_else(|_| "unknown".into()),
            hostname: read("/proc/sys/kernel/hostname").unwrap_or_else(|_| "unknown".into()),
            boot_id: read("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            btf: Path::new(crate::kernel::btf::VMLINUX_BTF).exists(),
            psi: fs::read_to_string("/proc/pressure/memory").is_ok(),
            tracefs: super::tracefs::mount_point(),
            page_size: page_size(),
            kill: KillFeatures::detect(cgroups.v2_mount.as_deref()),
            cgroups,
        }
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
29 25 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn releases_compare_by_major_and_minor() {
        assert!(release_at_least("5.15.0-1-amd64", (5, 15)));
        assert!(release_at_least("6.1.0-40-cloud-amd64", (5, 15)));
        assert!(!release_at_least("5.10.0-32-cloud-amd64", (5, 14)));
        assert!(release_at_least("7.3.4+deb13-cloud-amd64", (5, 14)));
        assert!(!release_at_least("garbage", (5, 14)));
    }

    #[test]
    fn hybrid_with_memory_on_v1() {
        let l = CgroupLayout::from_mountinfo(HYBRID, |_| String::new());
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(
            l.v2_mount.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let m = l.memory.unwrap();
        assert_eq!(m.version, CgroupVersion::V1);
        assert_eq!(m.mount, Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn unified_needs_memory_in_controllers() {
        let info = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let with = CgroupLayout::from_mountinfo(info, |_| "cpuset cpu io memory pids".into());
        assert_eq!(with.mode, CgroupMode::Unified);
        assert_eq!(with.memory.unwrap().version, CgroupVersion::V2);
        let without = CgroupLayout::from_mountinfo(info, |_| "cpu io".into());
        assert!(without.memory.is_none());
    }

    #[test]
    fn escaped_mount_points_and_junk_lines() {
        let info = "garbage\n1 2 3 4 /a\\040b rw - cgroup2 x rw\n";
        let l = CgroupLayout::from_mountinfo(info, |_| String::new());
        assert_eq!(l.v2_mount.as_deref(), Some(Path::new("/a b")));
        assert_eq!(
            CgroupLayout::from_mountinfo("", |_| String::new()).mode,
            CgroupMode::None
        );
    }
}
