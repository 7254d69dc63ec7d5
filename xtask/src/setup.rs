//! `cargo xtask setup`: everything the build and the tests need, installed
//! on a fresh Debian machine. Each step checks first and does nothing when
//! its tool is already there, so a second run takes a second or two.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Debian packages: LLVM 22 for bpf-linker, qemu/busybox/cpio for the VM
/// tests, tmux for the terminal tests; mmdebstrap, e2fsprogs (`mke2fs -d`)
/// and patchelf for the Debian guests (xtask/src/vm/debian/); musl-tools
/// for the static binary (ring's C parts); promtool (prometheus) for the
/// alert rules; and what the package checks run: lintian, systemd-analyze,
/// man, readelf, and the shells whose completions are loaded; openssl
/// makes the TLS test's private CA; chromium for the HTML report test;
/// protoc to check Perfetto exports against Perfetto's schema.
const APT_PACKAGES: [&str; 20] = [
    "llvm-22-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "tmux",
    "mmdebstrap",
    "e2fsprogs",
    "patchelf",
    "musl-tools",
    "prometheus",
    "lintian",
    "systemd",
    "man-db",
    "binutils",
    "bash",
    "zsh",
    "fish",
    "openssl",
    "chromium",
    "protobuf-compiler",
];
/// The static binary's target.
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// aya-ebpf 0.2 needs at least this nightly.
const MIN_NIGHTLY_MINOR: u32 = 87;

pub fn run() -> Result<()> {
    step("Debian packages", apt_packages)?;
    step("nightly Rust toolchain", nightly)?;
    step("musl target (static binary)", musl_target)?;
    step("rust-src for nightly", rust_src)?;
    step("bpf-linker (LLVM 22)", bpf_linker)?;
    step("cargo-fuzz", cargo_fuzz)?;
    Ok(())
}

/// Runs one step, printing what it did, and names the step on failure.
fn step(name: &str, f: fn() -> Result<String>) -> Result<()> {
    let start = Instant::now();
    match f() {
        Ok(what) => {
            eprintln!("setup: {name}: {what} ({:.1?})", start.elapsed());
            Ok(())
        }
        Err(e) => Err(e.context(format!("setup step `{name}` failed"))),
    }
}

fn log_path(name: &str) -> PathBuf {
    cmd::workspace_root()
        .join("target/xtask-logs")
        .join(format!("{name}.log"))
}

fn installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s == "install ok installed")
}

/// A command that runs as root: directly when we are, through sudo when
/// we are not.
fn as_root(program: &str) -> Result<Command> {
    if cmd::is_root() {
        return Ok(Command::new(program));
    }
    if !cmd::have("sudo") {
        bail!("installing system packages needs root: run `cargo xtask setup` as root");
    }
    let mut c = Command::new("sudo");
    c.arg("-n").arg(program);
    Ok(c)
}

fn apt_packages() -> Result<String> {
    let missing: Vec<&str> = APT_PACKAGES.into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok("all present".into());
    }
    if !cmd::have("apt-get") {
        bail!(
            "apt-get not found: memtrace's setup supports Debian; install {} by hand",
            missing.join(" ")
        );
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let lock = "-oDPkg::Lock::Timeout=300";
    cmd::run_logged(
        as_root("apt-get")?.envs(env).args([lock, "update"]),
        &log_path("apt-update"),
    )
    .context("apt-get update")?;
    cmd::run_logged(
        as_root("apt-get")?
            .envs(env)
            .args([lock, "install", "-y", "--no-install-recommends"])
            .args(&missing),
        &log_path("apt-install"),
    )
    .with_context(|| format!("apt-get install {}", missing.join(" ")))?;
    Ok(format!("installed {}", missing.join(" ")))
}

fn nightly_version() -> Option<String> {
    cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
}

fn nightly() -> Result<String> {
    if !cmd::have("rustup") {
        bail!("rustup not found: install Rust with rustup (https://rustup.rs), then rerun");
    }
    if nightly_version().is_none() {
        cmd::run_logged(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
            &log_path("rustup-nightly"),
        )
        .context(
            "the eBPF programs build with the `nightly` toolchain, which is missing and could \
             not be installed",
        )?;
    }
    let version = nightly_version().context("`rustup run nightly rustc --version` fails")?;
    // "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)"
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= MIN_NIGHTLY_MINOR => Ok(version),
        _ => bail!(
            "{version} is too old: aya-ebpf needs rustc 1.{MIN_NIGHTLY_MINOR} or newer (rustup update nightly)"
        ),
    }
}

fn musl_target() -> Result<String> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    if installed.lines().any(|l| l.trim() == MUSL_TARGET) {
        return Ok("present".into());
    }
    cmd::run_logged(
        Command::new("rustup").args(["target", "add", MUSL_TARGET]),
        &log_path("rustup-musl"),
    )?;
    Ok(format!("installed {MUSL_TARGET}"))
}

fn rust_src() -> Result<String> {
    let sysroot =
        cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .context("cannot find the nightly sysroot")?;
    let core = PathBuf::from(&sysroot).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if core.exists() {
        return Ok("present".into());
    }
    cmd::run_logged(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        &log_path("rust-src"),
    )?;
    Ok("installed".into())
}

fn bpf_linker_version() -> Option<String> {
    cmd::output(Command::new("bpf-linker").arg("--version"))
}

fn bpf_linker() -> Result<String> {
    if let Some(v) = bpf_linker_version() {
        return Ok(format!("present ({v})"));
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin/bpf-linker"));
    if let Some(p) = cargo_bin.as_ref().filter(|p| p.is_file()) {
        bail!(
            "bpf-linker is installed at {} but its directory is not on PATH: add it to PATH",
            p.display()
        );
    }
    if !PathBuf::from(LLVM_PREFIX).join("bin/llvm-config").is_file() {
        bail!(
            "{LLVM_PREFIX}/bin/llvm-config is missing: the llvm-22-dev package did not install it"
        );
    }
    // bpf-linker must link the LLVM that rustc's nightly uses (22 here);
    // its default feature wants LLVM 23.
    cmd::run_logged(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
        &log_path("bpf-linker"),
    )?;
    let v = bpf_linker_version().context("bpf-linker installed but does not run")?;
    Ok(format!("installed {v}"))
}

fn cargo_fuzz() -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if let Some(v) = cmd::output(Command::new(&cargo).args(["fuzz", "--version"])) {
        return Ok(format!("present ({v})"));
    }
    cmd::run_logged(
        Command::new(&cargo).args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]),
        &log_path("cargo-fuzz"),
    )?;
    let v = cmd::output(Command::new(&cargo).args(["fuzz", "--version"]))
        .context("cargo-fuzz installed but does not run")?;
    Ok(format!("installed {v}"))
}
