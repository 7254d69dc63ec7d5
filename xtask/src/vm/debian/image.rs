//! The cached base image of a Debian guest: `mmdebstrap` (root mode,
//! `apt` variant) with systemd as PID 1, the guards installed and
//! disabled, the kernel's modules from the same package as the kernel that
//! boots it, and one unit that runs whatever the payload disk brings.
//! Made into an ext4 image with `mke2fs -d` (no loop mount).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Suite, fnv};
use crate::cmd;
use crate::vm::kernels;

/// Bump when the recipe changes in a way the key below does not see.
const RECIPE_VERSION: &str = "2";

/// Packages every image has: systemd as init (dbus: `systemd-run --wait`
/// and `oomctl` need it; libpam-systemd: a login gets its
/// `session-N.scope` and the user's manager can start), the tools tests
/// use (tmux: a real terminal for `top`), and the guards, installed and
/// disabled. oomd pulls its libjsoncpp.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "dbus",
    "libpam-systemd",
    "passwd",
    "procps",
    "iproute2",
    "python3-minimal",
    "tmux",
    "earlyoom",
    "nohang",
    "oomd",
];

/// The user the seed's `t3-serve@.service` runs as (`t3-serve@wizard`).
pub const UNIT_USER: &str = "wizard";

/// Run inside mmdebstrap's customize hook:
/// `sh HOOK ROOT MODULES VERSION SETUP` (SETUP: the fstab and unit below).
const HOOK: &str = r#"#!/bin/sh
set -eu
root="$1"; modules="$2"; version="$3"; setup="$4"
cp "$setup/fstab" "$root/etc/fstab"
cp "$setup/memtrace-payload.service" "$root/etc/systemd/system/"
mkdir -p "$root/lib/modules"
cp -a "$modules" "$root/lib/modules/$version"
chroot "$root" depmod -a "$version"
# Installed, never started unless a run asks for it.
for u in earlyoom.service nohang.service nohang-desktop.service oomd.service \
         systemd-oomd.service systemd-oomd.socket; do
    if [ -e "$root/lib/systemd/system/$u" ] || [ -e "$root/usr/lib/systemd/system/$u" ]; then
        chroot "$root" systemctl disable "$u" >/dev/null 2>&1 || true
    fi
done
# The serial getty would mix login prompts into the console log.
chroot "$root" systemctl mask serial-getty@ttyS0.service
chroot "$root" systemctl enable memtrace-payload.service
chroot "$root" useradd --create-home --user-group --shell /bin/sh wizard
echo debian-guest > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 debian-guest\n' > "$root/etc/hosts"
mkdir -p "$root/mnt/payload"
"#;

/// The payload disk, mounted read-only wherever it is attached.
const FSTAB: &str =
    "LABEL=memtrace-payload /mnt/payload ext4 ro,nofail,x-systemd.device-timeout=60s 0 0\n";

/// The one unit of the image: runs the payload's runner, its output on
/// the journal and the console.
const PAYLOAD_UNIT: &str = "[Unit]
Description=memtrace test payload (the second disk)
After=multi-user.target
RequiresMountsFor=/mnt/payload
ConditionPathExists=/mnt/payload/plan.json

[Service]
Type=simple
ExecStart=/mnt/payload/bin/debian-guest /mnt/payload
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// A built image, ready to boot.
#[derive(Clone, Debug)]
pub struct Image {
    pub suite: Suite,
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
    pub kernel_package: String,
}

fn debian_dir() -> PathBuf {
    cmd::workspace_root().join("target/debian")
}

pub fn check_tools() -> Result<()> {
    for tool in [
        "mmdebstrap",
        "mke2fs",
        "dpkg-deb",
        "apt-get",
        "qemu-system-x86_64",
    ] {
        if !cmd::have(tool) {
            bail!("{tool} is missing: run `cargo xtask setup` (as root)");
        }
    }
    if !cmd::is_root() {
        bail!("building a Debian guest image runs mmdebstrap in root mode: run as root");
    }
    Ok(())
}

fn packages(suite: &Suite) -> Vec<&'static str> {
    let mut p = PACKAGES.to_vec();
    p.extend_from_slice(suite.extra);
    p
}

fn key(suite: &Suite, kernel_package: &str) -> String {
    let pk = packages(suite).join(",");
    let h = fnv(&[
        RECIPE_VERSION,
        suite.name,
        kernel_package,
        &pk,
        HOOK,
        FSTAB,
        PAYLOAD_UNIT,
    ]);
    format!("{h:016x}")
}

/// The image for `suite`, built if the cache has none for this recipe and
/// the registry's newest kernel.
pub fn image(suite: &Suite) -> Result<Image> {
    check_tools()?;
    let images = debian_dir().join("images");
    let kernel_package = match kernels::newest_package(&suite.kernel) {
        Ok(p) => p,
        Err(e) => {
            // Offline or a registry hiccup: the newest image built before.
            if let Some(img) = cached(suite, &images) {
                eprintln!(
                    "debian: {}: the registry did not answer ({e:#}); using the cached image {}",
                    suite.name,
                    img.root.display()
                );
                return Ok(img);
            }
            return Err(e.context(format!(
                "resolving the {} kernel for the {} image",
                suite.kernel.label, suite.name
            )));
        }
    };
    let dir = images.join(format!(
        "{}-{}-{}",
        suite.name,
        kernel_package,
        key(suite, &kernel_package)
    ));
    let img = Image {
        suite: *suite,
        root: dir.join("root.img"),
        vmlinuz: dir.join("vmlinuz"),
        kernel_package: kernel_package.clone(),
    };
    if dir.join("complete").is_file() && img.root.is_file() && img.vmlinuz.is_file() {
        eprintln!("debian: {} image cached: {}", suite.name, dir.display());
        return Ok(img);
    }
    build(suite, &kernel_package, &dir)?;
    // Older images of this suite: another recipe or kernel, never used again.
    if let Ok(entries) = std::fs::read_dir(&images) {
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p != dir && name.starts_with(&format!("{}-", suite.name)) {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }
    Ok(img)
}

fn cached(suite: &Suite, images: &Path) -> Option<Image> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(images)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{}-", suite.name)))
                && p.join("complete").is_file()
        })
        .collect();
    dirs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let dir = dirs.pop()?;
    let kernel_package = std::fs::read_to_string(dir.join("complete")).ok()?;
    Some(Image {
        suite: *suite,
        root: dir.join("root.img"),
        vmlinuz: dir.join("vmlinuz"),
        kernel_package: kernel_package.trim().to_string(),
    })
}

fn build(suite: &Suite, kernel_package: &str, dir: &Path) -> Result<()> {
    let start = std::time::Instant::now();
    let work = debian_dir().join("build").join(suite.name);
    let logs = debian_dir().join("logs");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    eprintln!(
        "debian: building the {} image with {kernel_package} (mmdebstrap, about a minute)",
        suite.name
    );

    // The kernel: vmlinuz to boot, modules into the image.
    let (package, deb) = kernels::fetch_deb(&suite.kernel, &work.join("deb"))?;
    if package != kernel_package {
        bail!("the registry moved from {kernel_package} to {package} during the build: run again");
    }
    let tree = work.join("kernel");
    cmd::run_logged(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        &logs.join(format!("unpack-{package}.log")),
    )?;
    let vmlinuz =
        kernels::find_vmlinuz(&tree).with_context(|| format!("no vmlinuz inside {package}"))?;
    let (modules, version) =
        modules_dir(&tree).with_context(|| format!("no lib/modules/VERSION inside {package}"))?;

    let hook = work.join("hook.sh");
    std::fs::write(&hook, HOOK)?;
    let rootfs = work.join("rootfs");
    let setup = work.join("setup");
    std::fs::create_dir_all(&setup)?;
    std::fs::write(setup.join("fstab"), FSTAB)?;
    std::fs::write(setup.join("memtrace-payload.service"), PAYLOAD_UNIT)?;
    let mirror = kernels::system_mirror();
    let include = packages(suite).join(",");
    cmd::run_logged(
        Command::new("mmdebstrap")
            .args(["--mode=root", "--variant=apt"])
            .arg(format!("--include={include}"))
            .arg(format!(
                "--customize-hook=sh {} \"$1\" {} {version} {}",
                hook.display(),
                modules.display(),
                setup.display()
            ))
            .arg(suite.name)
            .arg(&rootfs)
            .arg(&mirror),
        &logs.join(format!("mmdebstrap-{}.log", suite.name)),
    )
    .with_context(|| {
        format!(
            "mmdebstrap {} failed: is {mirror} reachable? (the log above says what failed)",
            suite.name
        )
    })?;

    std::fs::create_dir_all(dir)?;
    let used = du_bytes(&rootfs)?;
    // Room for the run's own files (journal, flight recorder) on top.
    let size_mb = (used / (1 << 20)) * 3 / 2 + 512;
    let part = dir.join("root.img.part");
    let _ = std::fs::remove_file(&part);
    cmd::run_logged(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "root", "-d"])
            .arg(&rootfs)
            .arg(&part)
            .arg(format!("{size_mb}M")),
        &logs.join(format!("mke2fs-{}.log", suite.name)),
    )?;
    std::fs::rename(&part, dir.join("root.img"))?;
    std::fs::copy(&vmlinuz, dir.join("vmlinuz"))?;
    std::fs::write(
        dir.join("recipe.txt"),
        format!(
            "suite {}\nkernel {package}\nrecipe {RECIPE_VERSION}\npackages {include}\nmirror {mirror}\n\n{HOOK}\n{FSTAB}\n{PAYLOAD_UNIT}",
            suite.name
        ),
    )?;
    std::fs::write(dir.join("complete"), &package)?;
    let _ = std::fs::remove_dir_all(&work);
    eprintln!(
        "debian: {} image built in {:.0} s: {} ({} MiB of files in a {size_mb} MiB sparse image)",
        suite.name,
        start.elapsed().as_secs_f64(),
        dir.display(),
        used >> 20
    );
    Ok(())
}

/// `lib/modules/VERSION` (or `usr/lib/modules/VERSION`) of an unpacked
/// kernel package.
fn modules_dir(tree: &Path) -> Option<(PathBuf, String)> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let Ok(entries) = std::fs::read_dir(tree.join(base)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.join("kernel").is_dir() {
                let v = e.file_name().to_string_lossy().into_owned();
                return Some((p, v));
            }
        }
    }
    None
}

fn du_bytes(dir: &Path) -> Result<u64> {
    let out = cmd::output(Command::new("du").args(["-sb"]).arg(dir))
        .with_context(|| format!("du -sb {}", dir.display()))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du -sb {}: unexpected output `{out}`", dir.display()))
}
