//! Test kernels: Debian's cloud kernels, fetched from the package registry
//! with a private apt configuration (the system's apt state is never
//! touched), unpacked without installing, cached under `target/vmtest`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// A kernel series under test.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    pub label: &'static str,
    pub suite: &'static str,
    /// Package name around the moving number: prefix N suffix.
    prefix: &'static str,
    suffix: &'static str,
}

/// Bullseye's 5.10 cloud kernel: the oldest under test; it lacks
/// process_mrelease (5.15) and cgroup.kill (5.14), so the matrix proves
/// the fallbacks there.
pub const BULLSEYE: Series = Series {
    label: "5.10",
    suite: "bullseye",
    prefix: "linux-image-5.10.0-",
    suffix: "-cloud-amd64-unsigned",
};

pub const BOOKWORM: Series = Series {
    label: "6.1",
    suite: "bookworm",
    prefix: "linux-image-6.1.0-",
    suffix: "-cloud-amd64-unsigned",
};

pub const TRIXIE: Series = Series {
    label: "6.12",
    suite: "trixie",
    prefix: "linux-image-6.12.",
    suffix: "+deb13-cloud-amd64-unsigned",
};

pub const SID: Series = Series {
    label: "7.2",
    suite: "sid",
    prefix: "linux-binary-7.2.",
    suffix: "+deb14-cloud-amd64",
};

pub const TRIXIE_BACKPORTS: Series = Series {
    label: "7.3",
    suite: "trixie-backports",
    prefix: "linux-binary-7.3.",
    suffix: "+deb13-cloud-amd64",
};

/// The busybox matrix, oldest first.
pub const SERIES: [Series; 5] = [BULLSEYE, BOOKWORM, TRIXIE, SID, TRIXIE_BACKPORTS];

pub fn series(label: &str) -> Result<Series> {
    SERIES
        .into_iter()
        .find(|s| s.label == label)
        .with_context(|| {
            format!(
                "unknown kernel `{label}`: choose {} or all",
                SERIES.map(|s| s.label).join(", ")
            )
        })
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub label: &'static str,
    pub package: String,
    pub vmlinuz: PathBuf,
}

fn vmtest_dir() -> PathBuf {
    cmd::workspace_root().join("target/vmtest")
}

/// The private apt configuration: its own lists and cache, sources for
/// every suite of [`SERIES`] on the mirror the machine already uses.
struct Apt {
    dir: PathBuf,
    sources: String,
}

impl Apt {
    fn new() -> Result<Self> {
        let dir = vmtest_dir().join("apt");
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let mirror = system_mirror();
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let signed = if Path::new(keyring).exists() {
            format!("[signed-by={keyring}] ")
        } else {
            String::new()
        };
        let sources: String = SERIES
            .iter()
            .map(|s| format!("deb {signed}{mirror} {} main\n", s.suite))
            .collect();
        std::fs::write(dir.join("sources.list"), &sources)?;
        Ok(Self { dir, sources })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            "-oAPT::Sandbox::User=root".into(),
            "-oDebug::NoLocking=1".into(),
        ]
    }

    /// Refreshes the package lists when older than six hours or made for
    /// other sources.
    fn update(&self) -> Result<()> {
        let stamp = self.dir.join("lists/.updated");
        let same_sources = std::fs::read_to_string(&stamp).is_ok_and(|s| s == self.sources);
        let fresh = same_sources
            && std::fs::metadata(&stamp)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < Duration::from_secs(6 * 3600));
        if fresh {
            return Ok(());
        }
        cmd::run_logged(
            Command::new("apt-get").args(self.options()).arg("update"),
            &vmtest_dir().join("logs/apt-update.log"),
        )
        .context("apt-get update (private configuration for the test kernels)")?;
        std::fs::write(stamp, &self.sources)?;
        Ok(())
    }

    fn newest(&self, s: &Series) -> Result<String> {
        let out = cmd::output(Command::new("apt-cache").args(self.options()).args([
            "search",
            "--names-only",
            &format!("^{}", regex_escape(s.prefix)),
        ]))
        .context("apt-cache search failed")?;
        let mut best: Option<(u64, String)> = None;
        for name in out.lines().filter_map(|l| l.split(" - ").next()) {
            let Some(n) = name
                .strip_prefix(s.prefix)
                .and_then(|rest| rest.strip_suffix(s.suffix))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, name.to_string()));
            }
        }
        best.map(|(_, n)| n).with_context(|| {
            format!(
                "no package {}N{} in Debian {}: the registry moved; check the names in xtask/src/vm/kernels.rs",
                s.prefix, s.suffix, s.suite
            )
        })
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if ".+*?()[]{}|^$\\".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The Debian mirror of the machine's own apt sources.
pub fn system_mirror() -> String {
    let from_deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("URIs:"))
                .flat_map(|l| l.split_whitespace())
                .find(|u| !u.contains("security"))
                .map(str::to_string)
        });
    let from_list = || {
        std::fs::read_to_string("/etc/apt/sources.list")
            .ok()
            .and_then(|t| {
                t.lines()
                    .filter(|l| l.starts_with("deb "))
                    .flat_map(|l| l.split_whitespace())
                    .find(|w| w.starts_with("http") && !w.contains("security"))
                    .map(str::to_string)
            })
    };
    from_deb822
        .or_else(from_list)
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// Resolves, downloads (once) and unpacks the newest kernel of each series.
pub fn fetch(wanted: &[Series]) -> Result<Vec<Kernel>> {
    let apt = Apt::new()?;
    let update = apt.update();
    let mut kernels = Vec::new();
    for s in wanted {
        let cache = vmtest_dir().join("kernels").join(s.label);
        let resolved = update
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|()| apt.newest(s));
        let package = match resolved {
            Ok(p) => p,
            Err(e) => match cached(&cache) {
                // Offline or a registry hiccup: a kernel fetched before is
                // as good a test.
                Some(k) => {
                    eprintln!("vmtest: {}: using cached {} ({e:#})", s.label, k.package);
                    kernels.push(Kernel {
                        label: s.label,
                        ..k
                    });
                    continue;
                }
                None => return Err(e),
            },
        };
        let dir = cache.join(&package);
        let vmlinuz = dir.join("vmlinuz");
        if !vmlinuz.is_file() {
            download(&apt, &package, &dir)?;
        }
        eprintln!("vmtest: kernel {}: {package}", s.label);
        kernels.push(Kernel {
            label: s.label,
            package,
            vmlinuz,
        });
    }
    Ok(kernels)
}

fn cached(series_dir: &Path) -> Option<Kernel> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(series_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("vmlinuz").is_file())
        .collect();
    entries.sort();
    let dir = entries.pop()?;
    Some(Kernel {
        label: "",
        package: dir.file_name()?.to_string_lossy().into_owned(),
        vmlinuz: dir.join("vmlinuz"),
    })
}

/// A kernel package for a Debian guest image: the newest of the series,
/// downloaded as a .deb into `dir`. Returns the package name and the file.
pub fn fetch_deb(s: &Series, dir: &Path) -> Result<(String, PathBuf)> {
    let apt = Apt::new()?;
    apt.update()?;
    let package = apt.newest(s)?;
    std::fs::create_dir_all(dir)?;
    cmd::run_logged(
        Command::new("apt-get")
            .args(apt.options())
            .args(["download", &package])
            .current_dir(dir),
        &vmtest_dir().join(format!("logs/download-{package}.log")),
    )
    .with_context(|| format!("downloading {package}"))?;
    let deb = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&package))
        })
        .with_context(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                dir.display()
            )
        })?;
    Ok((package, deb))
}

/// The newest kernel package name of a series, from the registry.
pub fn newest_package(s: &Series) -> Result<String> {
    let apt = Apt::new()?;
    apt.update()?;
    apt.newest(s)
}

fn download(apt: &Apt, package: &str, dir: &Path) -> Result<()> {
    let work = vmtest_dir().join("download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    cmd::run_logged(
        Command::new("apt-get")
            .args(apt.options())
            .args(["download", package])
            .current_dir(&work),
        &vmtest_dir().join(format!("logs/download-{package}.log")),
    )
    .with_context(|| format!("downloading {package}"))?;
    let deb = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let tree = work.join("tree");
    cmd::run_logged(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        &vmtest_dir().join(format!("logs/unpack-{package}.log")),
    )?;
    let vmlinuz = find_vmlinuz(&tree).with_context(|| format!("no vmlinuz inside {package}"))?;
    std::fs::create_dir_all(dir)?;
    std::fs::copy(&vmlinuz, dir.join("vmlinuz.part"))?;
    std::fs::rename(dir.join("vmlinuz.part"), dir.join("vmlinuz"))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// `boot/vmlinuz-*` (6.1, 6.12) or `usr/lib/modules/*/vmlinuz` (7.x).
pub fn find_vmlinuz(tree: &Path) -> Option<PathBuf> {
    let boot = std::fs::read_dir(tree.join("boot")).ok().and_then(|d| {
        d.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
    });
    boot.or_else(|| {
        std::fs::read_dir(tree.join("usr/lib/modules"))
            .ok()?
            .flatten()
            .map(|e| e.path().join("vmlinuz"))
            .find(|p| p.is_file())
    })
}

pub fn check_tools() -> Result<()> {
    for tool in [
        "apt-get",
        "apt-cache",
        "dpkg-deb",
        "qemu-system-x86_64",
        "cpio",
    ] {
        if !cmd::have(tool) {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    Ok(())
}
