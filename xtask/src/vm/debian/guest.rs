//! One boot of a Debian guest: the cached image as the NVMe root
//! (`snapshot=on`, so the image is never written and serves every boot),
//! the payload and any further disks on virtio-blk (the image's udev loads
//! the modules), the console (ttyS0) to `console.log`, and the results
//! port (ttyS1) to `results.jsonl` in the run's directory.
//!
//! What later tests attach goes into [`Guest::extra`] as qemu arguments,
//! one device each (see docs/testing.md, "Debian guests: adding devices").

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use super::image::Image;
use crate::vm::qemu;

/// A disk beside the root.
pub struct Disk {
    pub path: PathBuf,
    /// The serial the guest sees (`/dev/disk/by-id/virtio-SERIAL`).
    pub serial: String,
    /// Guest writes go to a temporary overlay, not to the file.
    pub snapshot: bool,
    /// qemu's I/O limits for the drive (`throttling.bps-total=N,...`): a
    /// slow disk.
    pub throttle: Option<String>,
}

pub struct Guest<'a> {
    pub label: String,
    pub image: &'a Image,
    pub disks: Vec<Disk>,
    /// More qemu arguments (network, virtio-serial ports).
    pub extra: Vec<String>,
    pub memory_mb: u32,
    pub run_dir: PathBuf,
    pub boot_timeout: Duration,
    pub progress_timeout: Duration,
}

/// Console lines that show the runner is making progress.
fn progress(line: &str) -> bool {
    line.contains("debian-guest: ")
}

impl Guest<'_> {
    pub fn new<'a>(label: &str, image: &'a Image, payload: &Path, run_dir: PathBuf) -> Guest<'a> {
        Guest {
            label: label.to_string(),
            image,
            disks: vec![Disk {
                path: payload.to_path_buf(),
                serial: "payload".into(),
                snapshot: true,
                throttle: None,
            }],
            extra: Vec::new(),
            memory_mb: 512,
            run_dir,
            // systemd is up in 12-15 s alone, 25-30 s beside another VM.
            boot_timeout: Duration::from_secs(180),
            progress_timeout: Duration::from_secs(150),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-drive".to_string(),
            format!(
                "file={},format=raw,if=none,id=root,snapshot=on",
                self.image.root.display()
            ),
            "-device".into(),
            "nvme,drive=root,serial=root".into(),
        ];
        for (i, d) in self.disks.iter().enumerate() {
            a.push("-drive".into());
            a.push(format!(
                "file={},format=raw,if=none,id=disk{i}{}{}",
                d.path.display(),
                if d.snapshot { ",snapshot=on" } else { "" },
                d.throttle
                    .as_ref()
                    .map(|t| format!(",{t}"))
                    .unwrap_or_default()
            ));
            a.push("-device".into());
            a.push(format!("virtio-blk-pci,drive=disk{i},serial={}", d.serial));
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    fn spec(&self) -> qemu::BootSpec<'_> {
        qemu::BootSpec {
            label: &self.label,
            vmlinuz: &self.image.vmlinuz,
            initramfs: None,
            // rw: the fstab has no root line; a read-only root degrades
            // the system and makes shutdown take 100 s.
            append: "console=ttyS0 root=/dev/nvme0n1 rw panic=-1 psi=1".into(),
            memory_mb: self.memory_mb,
            extra_args: self.args(),
            progress,
            boot_timeout: self.boot_timeout,
            progress_timeout: self.progress_timeout,
            run_dir: self.run_dir.clone(),
        }
    }

    /// Boots and runs to the guest's power-off (or a timeout).
    pub fn boot(&self) -> Result<qemu::Boot> {
        qemu::boot(&self.spec())
    }

    /// Starts the guest and returns at once: the caller watches it and
    /// ends it (the thrash benchmark kills it, a power cut).
    pub fn spawn(&self) -> Result<qemu::Running> {
        qemu::spawn(&self.spec())
    }
}
