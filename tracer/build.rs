//! Builds memtrace's eBPF programs (the `tracer-ebpf` crate) for the bpf
//! target and leaves the object in OUT_DIR, where `src/probes.rs` embeds it.
//!
//! That needs the nightly toolchain with `rust-src` (for `-Z build-std`) and
//! `bpf-linker`. Each is checked first, so a missing one is named together
//! with the command that installs it, instead of a cryptic cargo failure.

use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP: &str = "cargo xtask setup";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow::anyhow!("tracer has no parent directory"))?
        .join("tracer-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf_dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    version_info(&manifest_dir);

    check_prerequisites()?;

    // aya-build forwards every stderr line of the nested cargo as a cargo
    // warning, which cargo replays on each rebuild; quiet cargo leaves only
    // real diagnostics.
    // SAFETY: build scripts are single-threaded here.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };

    let root = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

/// The commit memtrace is built from, for `--version` and
/// `memtrace_build_info`: `MEMTRACE_COMMIT` and `MEMTRACE_DIRTY` when the
/// caller sets them (`cargo xtask dist` does, so a release says exactly
/// what it is), else asked of git; `unknown` outside a git checkout.
fn version_info(manifest_dir: &Path) {
    println!("cargo:rerun-if-env-changed=MEMTRACE_COMMIT");
    println!("cargo:rerun-if-env-changed=MEMTRACE_DIRTY");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(manifest_dir)
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = std::env::var("MEMTRACE_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::env::var("MEMTRACE_DIRTY").ok().unwrap_or_else(|| {
        match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if s.is_empty() => "false".into(),
            Some(_) => "true".into(),
            None => "unknown".into(),
        }
    });
    // A new commit or a change to what is staged rebuilds with the new
    // answer; edits not yet staged may keep an older `dirty` in plain
    // builds (release builds go through `cargo xtask dist`, which says).
    // (Only files that exist: cargo reruns a script on every build for a
    // missing one, and a packed ref has no file.)
    let mut watch = vec!["HEAD".to_string(), "index".to_string()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for what in &watch {
        if let Some(p) = git(&["rev-parse", "--git-path", what]) {
            let p = manifest_dir.join(p);
            if p.is_file() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rustc-env=MEMTRACE_COMMIT={commit}");
    println!("cargo:rustc-env=MEMTRACE_DIRTY={dirty}");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let tree = match dirty.as_str() {
        "true" => ", dirty tree",
        "false" => "",
        _ => ", tree state unknown",
    };
    println!("cargo:rustc-env=MEMTRACE_LONG_VERSION={version} (commit {commit}{tree})");
}

fn missing(what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "\n\nmemtrace's eBPF programs cannot be built: {what}.\n\
         Run `{SETUP}` to install the eBPF toolchain (nightly + rust-src, bpf-linker, LLVM 22).\n"
    )
}

fn check_prerequisites() -> anyhow::Result<()> {
    let rustc = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match rustc {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(_) => return Err(missing("the `nightly` Rust toolchain is not installed")),
        Err(_) => return Err(missing("`rustup` is not on PATH")),
    };
    if !sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        return Err(missing(
            "the nightly toolchain lacks the `rust-src` component",
        ));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !on_path {
        let home_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
            .map(|d| d.join("bin/bpf-linker"));
        let hint = match home_bin {
            Some(p) if p.is_file() => format!(
                "`bpf-linker` is installed at {} but that directory is not on PATH",
                p.display()
            ),
            _ => "`bpf-linker` is not installed".to_string(),
        };
        return Err(missing(&hint));
    }
    Ok(())
}
