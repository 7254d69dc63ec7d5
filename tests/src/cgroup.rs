//! Test cgroups in whatever hierarchy holds the memory controller.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use memtrace::{CgroupLayout, CgroupVersion, MemoryHierarchy};

/// A cgroup created for a test and removed when dropped (its processes
/// are killed first).
pub struct TestCgroup {
    pub hierarchy: MemoryHierarchy,
    /// Path relative to the mount, as memtrace prints it: `/name`.
    pub path: String,
    pub dir: PathBuf,
}

impl TestCgroup {
    /// Creates `name` under the memory hierarchy's root.
    pub fn create(name: &str) -> Result<Self> {
        let layout = CgroupLayout::detect().context("reading /proc/self/mountinfo")?;
        let Some(hierarchy) = layout.memory else {
            bail!("no memory controller mounted: cannot run memory cgroup tests");
        };
        Self::create_in(&hierarchy, name)
    }

    pub fn create_in(hierarchy: &MemoryHierarchy, name: &str) -> Result<Self> {
        let dir = hierarchy.mount.join(name.trim_start_matches('/'));
        if dir.exists() {
            // Left over by a killed earlier run.
            let _ = kill_all(&dir);
            let _ = fs::remove_dir(&dir);
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if hierarchy.version == CgroupVersion::V2 {
            // Children need the memory controller enabled in the parent.
            if let Some(parent) = dir.parent() {
                let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory");
            }
        }
        Ok(Self {
            hierarchy: hierarchy.clone(),
            path: format!("/{}", name.trim_start_matches('/')),
            dir,
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.hierarchy.version
    }

    /// Sets the hard limit: `memory.limit_in_bytes` (v1) or `memory.max`
    /// with swap off (v2).
    pub fn set_max(&self, bytes: u64) -> Result<()> {
        match self.version() {
            CgroupVersion::V1 => self.write("memory.limit_in_bytes", &bytes.to_string()),
            CgroupVersion::V2 => {
                self.write("memory.max", &bytes.to_string())?;
                // Absent when the kernel has no swap accounting.
                let _ = self.write("memory.swap.max", "0");
                Ok(())
            }
        }
    }

    pub fn write(&self, file: &str, value: &str) -> Result<()> {
        fs::write(self.dir.join(file), value)
            .with_context(|| format!("writing {value:?} to {}", self.dir.join(file).display()))
    }

    pub fn read(&self, file: &str) -> Result<String> {
        fs::read_to_string(self.dir.join(file))
            .with_context(|| format!("reading {}", self.dir.join(file).display()))
    }

    /// A `key value` line of a flat-keyed file (`memory.events`,
    /// `memory.oom_control`).
    pub fn stat(&self, file: &str, key: &str) -> Result<u64> {
        let text = self.read(file)?;
        flat_key(&text, key).with_context(|| format!("no `{key}` in {file}: {text}"))
    }

    /// The file processes are moved in through.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The number of OOM kills the kernel counted in this cgroup.
    pub fn oom_kills(&self) -> Result<u64> {
        match self.version() {
            CgroupVersion::V1 => self.stat("memory.oom_control", "oom_kill"),
            CgroupVersion::V2 => self.stat("memory.events", "oom_kill"),
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = kill_all(&self.dir);
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn kill_all(dir: &Path) -> Result<()> {
    let procs = fs::read_to_string(dir.join("cgroup.procs"))?;
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    Ok(())
}

/// Reads `key` from `key value` lines.
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// `total=` of the `some` or `full` line of a PSI file, in microseconds.
pub fn psi_total(text: &str, line: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(line))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_keyed_and_psi_files() {
        assert_eq!(flat_key("low 0\nhigh 480\nmax 0\n", "high"), Some(480));
        assert_eq!(
            flat_key("oom_kill_disable 0\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(flat_key("high x\n", "high"), None);
        let psi = "some avg10=1.00 avg60=0.50 avg300=0.10 total=9500000\n\
                   full avg10=0.80 avg60=0.40 avg300=0.08 total=9100000\n";
        assert_eq!(psi_total(psi, "full"), Some(9_100_000));
        assert_eq!(psi_total(psi, "some"), Some(9_500_000));
        assert_eq!(psi_total("", "full"), None);
    }
}
