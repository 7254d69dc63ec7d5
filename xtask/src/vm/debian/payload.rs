//! The per-run payload: a small ext4 disk (`mke2fs -d`, label
//! `memtrace-payload`) with the plan, the binaries built on this host and
//! every unit and configuration the run installs. The image's
//! `memtrace-payload.service` runs `bin/debian-guest` from it, which
//! copies each file where the plan says.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cmd;

/// Where the image mounts the payload.
pub const MOUNT: &str = "/mnt/payload";

pub struct Payload {
    staging: PathBuf,
    installs: Vec<Value>,
    /// Bring the host's C library (guests older than the build host).
    own_libc: bool,
    libs: Vec<PathBuf>,
}

impl Payload {
    pub fn new(run_dir: &Path, own_libc: bool) -> Result<Self> {
        let staging = run_dir.join("payload");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(staging.join("bin"))?;
        std::fs::create_dir_all(staging.join("files"))?;
        Ok(Self {
            staging,
            installs: Vec::new(),
            own_libc,
            libs: Vec::new(),
        })
    }

    /// A binary built on this host, as `bin/NAME` on the payload; with
    /// `to`, also installed there in the guest.
    pub fn binary(&mut self, host: &Path, to: Option<&str>) -> Result<()> {
        let name = host
            .file_name()
            .with_context(|| format!("{} has no file name", host.display()))?
            .to_string_lossy()
            .into_owned();
        let dest = self.staging.join("bin").join(&name);
        std::fs::copy(host, &dest).with_context(|| {
            format!(
                "copying {} (is it built? cargo xtask builds it first)",
                host.display()
            )
        })?;
        if self.own_libc {
            self.point_at_own_libc(host, &dest)?;
        }
        if let Some(to) = to {
            self.install(&format!("bin/{name}"), to, 0o755);
        }
        Ok(())
    }

    /// A file built on this host (a package), copied as it is (no
    /// library rewrite), installed in the guest at `to`.
    pub fn copy(&mut self, host: &Path, to: &str, mode: u32) -> Result<()> {
        let rel = format!("files/{}", self.installs.len());
        std::fs::copy(host, self.staging.join(&rel))
            .with_context(|| format!("copying {}", host.display()))?;
        self.install(&rel, to, mode);
        Ok(())
    }

    /// A file with `contents`, installed in the guest at `to`.
    pub fn file(&mut self, to: &str, contents: &str, mode: u32) -> Result<()> {
        let rel = format!("files/{}", self.installs.len());
        std::fs::write(self.staging.join(&rel), contents)?;
        self.install(&rel, to, mode);
        Ok(())
    }

    fn install(&mut self, rel: &str, to: &str, mode: u32) {
        self.installs
            .push(json!({ "from": rel, "to": to, "mode": mode }));
    }

    /// The guest's glibc is older than the one the binaries were linked
    /// against: ship the host's libraries and loader, and point the binary
    /// at them (its name, and so its `comm`, stays the same).
    fn point_at_own_libc(&mut self, host: &Path, dest: &Path) -> Result<()> {
        let out = Command::new("ldd")
            .arg(host)
            .output()
            .context("running ldd")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let libdir = self.staging.join("lib");
        std::fs::create_dir_all(&libdir)?;
        let mut interp = None;
        for line in text.lines() {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|w| w.starts_with('/')),
            };
            let Some(p) = path.filter(|p| p.starts_with('/')).map(PathBuf::from) else {
                continue;
            };
            let Some(file) = p.file_name() else { continue };
            if file.to_string_lossy().starts_with("ld-linux") {
                interp = Some(file.to_string_lossy().into_owned());
            }
            if !self.libs.contains(&p) {
                std::fs::copy(&p, libdir.join(file))
                    .with_context(|| format!("copying {}", p.display()))?;
                self.libs.push(p);
            }
        }
        let interp = interp.with_context(|| format!("ldd {} names no loader", host.display()))?;
        if !cmd::have("patchelf") {
            bail!("patchelf is missing: run `cargo xtask setup`");
        }
        cmd::run(
            Command::new("patchelf")
                .arg("--set-interpreter")
                .arg(format!("{MOUNT}/lib/{interp}"))
                .arg("--set-rpath")
                .arg(format!("{MOUNT}/lib"))
                .arg(dest),
        )
    }

    /// Writes `plan` (with the install list) and makes the disk image.
    pub fn build(self, mut plan: Value, image: &Path) -> Result<PathBuf> {
        if let Some(o) = plan.as_object_mut() {
            o.insert("install".into(), Value::Array(self.installs));
        }
        std::fs::write(
            self.staging.join("plan.json"),
            serde_json::to_string_pretty(&plan)?,
        )?;
        let out = cmd::output(Command::new("du").arg("-sm").arg(&self.staging))
            .and_then(|o| o.split_whitespace().next()?.parse::<u64>().ok())
            .with_context(|| format!("du -sm {}", self.staging.display()))?;
        let size = out * 5 / 4 + 16;
        let _ = std::fs::remove_file(image);
        let log = image.with_extension("mke2fs.log");
        cmd::run_logged(
            Command::new("mke2fs")
                .args(["-q", "-t", "ext4", "-L", "memtrace-payload", "-d"])
                .arg(&self.staging)
                .arg(image)
                .arg(format!("{size}M")),
            &log,
        )
        .context("making the payload disk (mke2fs -d)")?;
        Ok(image.to_path_buf())
    }
}
