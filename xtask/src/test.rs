//! `cargo xtask test`: the whole suite, in the order CI runs it. Each step
//! is named when it starts and when it fails, with its duration.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::vm::VmtestArgs;
use crate::{cmd, incident, setup, vm};

#[derive(Args, Debug, Default)]
pub struct TestArgs {
    /// Skip the lint step (rustfmt, clippy).
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the VM steps (they need qemu and take minutes).
    #[arg(long)]
    pub no_vm: bool,
}

struct Suite {
    start: Instant,
    done: Vec<(String, f64)>,
}

impl Suite {
    fn step(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        eprintln!("\n==> {name}");
        let start = Instant::now();
        f().with_context(|| format!("test step `{name}` failed"))?;
        let secs = start.elapsed().as_secs_f64();
        eprintln!("<== {name}: ok ({secs:.0} s)");
        self.done.push((name.to_string(), secs));
        Ok(())
    }
}

pub fn run(args: &TestArgs) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "the suite loads eBPF programs, creates cgroups and boots VMs: run it as root \
             (sudo -E cargo xtask test)"
        );
    }
    let mut suite = Suite {
        start: Instant::now(),
        done: Vec::new(),
    };
    suite.step("setup", setup::run)?;
    if !args.no_lint {
        suite.step("lint", lint)?;
    }
    suite.step("build", || {
        cmd::cargo(&["build", "-p", "memtrace", "-p", "memtrace-tests", "--bins"])
    })?;
    suite.step("unit and host integration tests", || {
        cmd::cargo(&["test", "--features", "memtrace-tests/root-tests"])
    })?;
    suite.step("alert rules and dashboard: promtool", crate::rules::check)?;
    suite.step("package: static binary and .deb, built and checked", || {
        let source = crate::dist::Source::of_workspace()?;
        let built = crate::dist::build(&source, &cmd::workspace_root().join("target"), &[])?;
        crate::dist::check(&built)
    })?;
    suite.step(
        "fuzz: recording reader, chunk decoder and config parser",
        || fuzz(&FUZZ_CI),
    )?;
    if !args.no_vm {
        suite.step(
            "VM matrix: every scenario on 5.10, 6.1, 6.12, 7.2, 7.3",
            || {
                vm::run(&VmtestArgs {
                    kernel: "all".into(),
                    scenarios: Vec::new(),
                    keep: false,
                    jobs: 3,
                    fault: None,
                    expect_failure: None,
                    trace: false,
                    append: None,
                })
            },
        )?;
        suite.step(
            "VM harness self-check: a probe reading the wrong cgroup must fail",
            || {
                vm::run(&VmtestArgs {
                    kernel: "6.12".into(),
                    scenarios: vec!["livelock".into()],
                    keep: false,
                    jobs: 1,
                    fault: Some("wrong-cgroup".into()),
                    expect_failure: Some("attributed to another cgroup".into()),
                    trace: false,
                    append: None,
                })
            },
        )?;
        suite.step(
            "Debian guest: memtrace's agent, started by its unit, ends the incident (bookworm 6.1)",
            incident::ci_case,
        )?;
    }
    eprintln!(
        "\nall tests passed in {:.0} s:",
        suite.start.elapsed().as_secs_f64()
    );
    for (name, secs) in &suite.done {
        eprintln!("  {name:<40} {secs:>6.0} s");
    }
    Ok(())
}

pub fn lint() -> Result<()> {
    cmd::cargo(&["fmt", "--all", "--", "--check"])
        .context("code is not formatted: run `cargo fmt --all`")?;
    cmd::cargo(&[
        "clippy",
        "--all-targets",
        "--features",
        "memtrace-tests/root-tests",
        "--",
        "-D",
        "warnings",
    ])?;
    // The eBPF crate builds only for the bpf target, with nightly.
    cmd::run(
        Command::new("rustup")
            .args(["run", "nightly", "cargo", "clippy", "-p", "tracer-ebpf"])
            .args([
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
            ])
            .args(["--", "-D", "warnings"])
            .current_dir(cmd::workspace_root()),
    )
}

/// Fuzz targets and how long CI runs each.
pub const FUZZ_CI: [(&str, u32); 3] = [
    ("read_recording", 40),
    ("decode_chunk", 40),
    ("parse_config", 15),
];

/// Runs cargo-fuzz targets (nightly, AddressSanitizer) for a while each,
/// starting from the committed seeds; new inputs go to a scratch corpus
/// under tests/fuzz/corpus.
pub fn fuzz(targets: &[(&str, u32)]) -> Result<()> {
    let root = cmd::workspace_root();
    for (target, secs) in targets {
        let corpus = root.join("tests/fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = root.join("tests/fuzz/seeds").join(target);
        cmd::run(
            Command::new("rustup")
                .args([
                    "run",
                    "nightly",
                    "cargo",
                    "fuzz",
                    "run",
                    target,
                    "--fuzz-dir",
                    "tests/fuzz",
                ])
                .arg(&corpus)
                .arg(&seeds)
                .args([
                    "--",
                    &format!("-max_total_time={secs}"),
                    // An input that takes seconds is a bug (a quadratic
                    // path a hostile file could use), not a slow machine.
                    "-timeout=10",
                    "-print_final_stats=1",
                ])
                .current_dir(&root),
        )
        .with_context(|| {
            format!(
                "fuzz target {target} found a crash: the input is in tests/fuzz/artifacts/{target}/"
            )
        })?;
    }
    Ok(())
}
