//! Debian guests with systemd as PID 1, for tests that need a real init:
//! units with `MemoryHigh=`, journald, and the OOM guards people run
//! (earlyoom, nohang, oomd, systemd-oomd) beside memtrace's agent.
//!
//! - [`image`]: a bootable ext4 image per suite, built with `mmdebstrap`
//!   from Debian's registry only and cached under `target/debian/images/`,
//!   keyed by everything that goes into it (recipe version, suite, kernel
//!   package, package list, hook, units).
//! - [`payload`]: what a run brings (memtrace and the test programs built
//!   on this host, unit files, configurations, the plan): a second small
//!   ext4 disk made with `mke2fs -d`, so a new memtrace build never
//!   rebuilds the image.
//! - [`guest`]: one boot: the image as an NVMe root (`snapshot=on`: the
//!   cached image is never written), the payload on virtio-blk, the
//!   console to a log, results on the second serial port.
//!
//! docs/testing.md ("Debian guests") describes the whole path.

pub mod guest;
pub mod image;
pub mod payload;

use anyhow::{Result, bail};

use super::kernels::{self, Series};

/// A Debian release the guests are built from, with its kernel.
#[derive(Clone, Copy, Debug)]
pub struct Suite {
    pub name: &'static str,
    pub kernel: Series,
    /// Packages beyond the common set (a guard that only some releases
    /// package).
    pub extra: &'static [&'static str],
    /// Whether this release's glibc is older than the build host's (Debian
    /// 12's 2.36): the payload then brings the host's C library and
    /// points its binaries at it.
    pub old_glibc: bool,
}

pub const SUITES: [Suite; 3] = [
    Suite {
        name: "bookworm",
        kernel: kernels::BOOKWORM,
        extra: &["systemd-oomd"],
        old_glibc: false,
    },
    Suite {
        name: "trixie",
        kernel: kernels::TRIXIE,
        extra: &["systemd-oomd"],
        old_glibc: false,
    },
    Suite {
        name: "bullseye",
        kernel: kernels::BULLSEYE,
        // systemd 247: no systemd-oomd package.
        extra: &[],
        old_glibc: true,
    },
];

pub fn suite(name: &str) -> Result<Suite> {
    match SUITES
        .iter()
        .find(|s| s.name == name || s.kernel.label == name)
    {
        Some(s) => Ok(*s),
        None => bail!(
            "unknown Debian suite `{name}`: choose {}",
            SUITES.map(|s| s.name).join(", ")
        ),
    }
}

/// 64-bit FNV-1a: a cache key that stays the same across toolchains.
pub fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
