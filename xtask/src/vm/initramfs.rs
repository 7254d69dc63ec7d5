//! The guest's initramfs: busybox-static as the userland, an `init` that
//! mounts what memtrace needs and runs the scenario runner, and the test
//! binaries with the shared libraries `ldd` says they load.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd;

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
ip link set lo up
# The slow disk (an NVMe drive qemu throttles), for the scenarios that need
# fsync to stall.
if [ -b /dev/nvme0n1 ]; then
  mkdir -p /slow && mount -t ext4 /dev/nvme0n1 /slow || echo "init: the slow disk did not mount"
fi
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
echo "init: $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
/bin/vm-guest
echo "init: scenarios finished, powering off"
poweroff -f
"#;

/// Builds `out` from the given binaries; returns its size.
pub fn build(binaries: &[PathBuf], out: &Path) -> Result<u64> {
    let root = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&root);
    for dir in [
        "bin", "proc", "sys", "dev", "tmp", "etc", "lib64", "usr/lib",
    ] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() || is_dynamic(busybox) {
        bail!("/bin/busybox is missing or not static: install busybox-static (cargo xtask setup)");
    }
    copy_exec(busybox, &root.join("bin/busybox"))?;
    let init = root.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;

    let mut libs = BTreeSet::new();
    for bin in binaries {
        let name = bin.file_name().context("binary without a name")?;
        copy_exec(bin, &root.join("bin").join(name))?;
        libs.extend(shared_libs(bin)?);
    }
    for lib in &libs {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(lib));
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Follow symlinks: the guest gets the real file under the name the
        // loader asks for.
        std::fs::copy(lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }

    let mut files = Vec::new();
    collect(&root, &root, &mut files)?;
    files.sort();
    let archive = std::fs::File::create(out)?;
    let mut child = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(archive)
        .spawn()
        .context("running cpio (cargo xtask setup installs it)")?;
    {
        let mut stdin = child.stdin.take().context("cpio stdin")?;
        for f in &files {
            writeln!(stdin, "{f}")?;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cpio failed ({status})");
    }
    Ok(std::fs::metadata(out)?.len())
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn is_dynamic(bin: &Path) -> bool {
    cmd::output(Command::new("ldd").arg(bin))
        .is_some_and(|o| o.contains("=>") || o.contains("ld-linux"))
}

/// The libraries a dynamically linked binary loads, from `ldd`.
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|w| w.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
        out.push(rel);
        if path.is_dir() && !path.is_symlink() {
            collect(root, &path, out)?;
        }
    }
    Ok(())
}
