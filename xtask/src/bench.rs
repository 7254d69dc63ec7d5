//! `cargo xtask bench`: the host benchmarks (`tests/src/bin/bench/`, with
//! the VM's `probe-cost` figures) and the kill path's, breach to signal
//! over many real breaches in one VM per kernel
//! (`tests/src/guest/kill_bench.rs`). Results go to
//! target/bench.md; docs/benchmarks.md holds the last ones and says how to
//! read them.

use anyhow::{Context, Result};
use clap::Args;

use crate::vm::{self, VmtestArgs};
use crate::{cmd, setup};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Kernel series for the kill-path benchmark, comma-separated (5.10,
    /// 6.1, 6.12, 7.2, 7.3), one guest after the other.
    #[arg(long, default_value = "6.12")]
    pub kernel: String,
    /// Livelocks, each ended by one kill, per guest.
    #[arg(long, default_value_t = 30)]
    pub breaches: u32,
    /// Only the host benchmarks (no guest boots).
    #[arg(long, conflicts_with = "vm_only")]
    pub no_vm: bool,
    /// Only the kill-path benchmark.
    #[arg(long)]
    pub vm_only: bool,
    /// Skip the thrash run (a Debian guest driven into swap, ~10 minutes).
    #[arg(long)]
    pub no_thrash: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    setup::run()?;
    let root = cmd::workspace_root();
    let out = root.join("target/bench.md");
    let mut text = String::new();
    if !args.vm_only {
        cmd::cargo(&[
            "build",
            "--release",
            "-p",
            "memtrace",
            "-p",
            "memtrace-tests",
            "--bins",
        ])?;
        if !args.no_vm {
            // The throttle programs run only in a VM: measure them there
            // first; the host benchmark reads what the guest sent back.
            let probes = vm::run(&VmtestArgs {
                kernel: "6.12".into(),
                scenarios: vec!["probe-cost".into()],
                keep: false,
                jobs: 1,
                fault: None,
                expect_failure: None,
                trace: false,
                append: None,
            });
            if let Err(e) = probes {
                eprintln!("xtask: the VM probe-cost run failed ({e:#}); its rows will say so");
            }
        }
        let host = root.join("target/bench-host.md");
        cmd::run(
            std::process::Command::new(root.join("target/release/bench"))
                .arg(&host)
                .current_dir(&root),
        )?;
        text.push_str(&std::fs::read_to_string(&host).context("reading the host results")?);
        text.push('\n');
    }
    if !args.no_vm {
        text.push_str(&kill_path(args)?);
    }
    std::fs::write(&out, &text)?;
    println!("{text}");
    eprintln!("\nresults written to {}", out.display());
    if !(args.no_vm || args.vm_only || args.no_thrash) {
        // The thrash run is a benchmark too: docs/benchmarks.md gets its
        // times.
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: crate::thrash::ThrashArgs,
        }
        crate::thrash::run(&Defaults::parse_from(["thrash"]).args)?;
    }
    Ok(())
}

/// The host's 1-minute load average: other engineers' builds and VMs share
/// these cores, and a TCG guest's timing depends on them.
fn host_load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// One guest per kernel, one after the other, each running `bench-kill`.
fn kill_path(args: &BenchArgs) -> Result<String> {
    let mut rows = vec![
        "| kernel | breaches | p50 | p99 | max | host load average (before, after) | guest load average (max) |".to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut samples = Vec::new();
    let mut steps = Vec::new();
    for kernel in args.kernel.split(',') {
        let before = host_load();
        let results = vm::measure(&VmtestArgs {
            kernel: kernel.to_string(),
            scenarios: vec!["bench-kill".into()],
            keep: false,
            jobs: 1,
            fault: None,
            expect_failure: None,
            trace: false,
            append: Some(format!("memtrace.bench.breaches={}", args.breaches)),
        })?;
        let after = host_load();
        for (label, lines) in results {
            let Some(m) = lines
                .iter()
                .find(|r| r["scenario"] == "bench-kill")
                .map(|r| &r["metrics"])
            else {
                continue;
            };
            let num = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
            rows.push(format!(
                "| {label} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {before:.1}, {after:.1} | {:.1} |",
                m["breaches"],
                num("p50_ms"),
                num("p99_ms"),
                num("max_ms"),
                num("guest_load_max"),
            ));
            samples.push(format!(
                "{label}: {}",
                m["samples_ms"].as_str().unwrap_or("")
            ));
            if let Some(obj) = m.as_object() {
                let mut s: Vec<String> = obj
                    .iter()
                    .filter(|(k, _)| k.starts_with("step_"))
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("")))
                    .collect();
                s.push(format!(
                    "woken by the timer: {} of {}",
                    m["woken_by_timer"], m["breaches"]
                ));
                steps.push(format!("{label}: {}", s.join("; ")));
            }
        }
    }
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("- {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(format!(
        "\nKill path: breach to signal (`cargo xtask bench --vm-only --kernel {} --breaches {}`)\n\n{}\n\nEvery sample, ms, sorted:\n\n{}\n\nWhere it went, µs (the agent's `kill path steps` lines):\n\n{}\n",
        args.kernel,
        args.breaches,
        rows.join("\n"),
        list(&samples),
        list(&steps),
    ))
}
