//! `cargo xtask vmtest`: memtrace against real memory.high throttling, in
//! qemu VMs booting Debian's 5.10, 6.1, 6.12, 7.2 and 7.3 kernels.
//!
//! One boot per kernel runs every requested scenario in turn; the guest
//! (`tests/src/bin/vm-guest.rs`) reports one JSON line per scenario on its
//! second serial port, and this module turns those into a pass/fail table.

pub mod debian;
mod initramfs;
pub(crate) mod kernels;
pub(crate) mod qemu;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::cmd;

#[derive(Args, Debug, Clone)]
pub struct VmtestArgs {
    /// Kernel series: 5.10, 6.1, 6.12, 7.2, 7.3, or all (comma-separated list allowed).
    #[arg(long, default_value = "all")]
    pub kernel: String,
    /// Scenario to run (repeatable); default: all of them.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Keep the initramfs staging tree for inspection.
    #[arg(long)]
    pub keep: bool,
    /// VMs to boot at once.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Build memtrace with a deliberate fault (harness self-test), e.g.
    /// `wrong-cgroup`.
    #[arg(long, value_name = "FAULT")]
    pub fault: Option<String>,
    /// Succeed only if some scenario fails with a message containing TEXT
    /// (with --fault: proves the harness catches the fault).
    #[arg(long, value_name = "TEXT")]
    pub expect_failure: Option<String>,
    /// Timing lines on the console: every hog's allocation steps (length,
    /// slowest page fault) and how long each bounded wait of a scenario
    /// took, the measurements behind the time bounds (docs/testing.md).
    #[arg(long)]
    pub trace: bool,
    /// More words for the guests' kernel command line (a scenario's
    /// parameters, such as `memtrace.bench.breaches=40`).
    #[arg(long, value_name = "WORDS")]
    pub append: Option<String>,
}

/// A boot must reach the scenario runner within this. Nothing bounds a
/// boot but the CPU it gets: the report line's "init after" measured at
/// most 35.5 s with three guests on two host cores, other builds and a
/// busy loop beside them (load average 17), 26.5 s without the busy loop;
/// 90 s is two and a half times the worst seen. A guest that does not make
/// it, or ends before init (an early panic), is booted once more.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// The runner must report progress (a line at each scenario's start and
/// end) at least this often. It is the backstop for a guest that stopped
/// enforcing its own bounds, so it must exceed the longest a scenario can
/// take with every one of its waits running to its bound: 235 s
/// (`agent-actions`, docs/testing.md "Time bounds"), where the guest's own,
/// more precise failure would come first. Passing scenarios took at most
/// 40 s under the same load (the report's "longest silence").
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(300);

pub fn run(args: &VmtestArgs) -> Result<()> {
    let outcomes = boot(args)?;
    let failures = report(&outcomes);
    if let Some(text) = &args.expect_failure {
        if !failures.iter().any(|f| f.contains(text.as_str())) {
            bail!(
                "expected a failure mentioning `{text}` from the deliberately broken build; got {}",
                if failures.is_empty() {
                    "none".to_string()
                } else {
                    failures.join("\n  ")
                }
            );
        }
        eprintln!("vmtest: the broken build failed as expected (`{text}`)");
        return Ok(());
    }
    if !failures.is_empty() {
        bail!(
            "{} VM test failure(s):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// Boots the kernels and runs the scenarios, as `run` does, and returns
/// every kernel's result lines (for the benchmarks, which read numbers,
/// not verdicts). Fails like `run` when a scenario fails.
pub fn measure(args: &VmtestArgs) -> Result<Vec<(&'static str, Vec<Value>)>> {
    let outcomes = boot(args)?;
    let failures = report(&outcomes);
    if !failures.is_empty() {
        bail!(
            "{} VM failure(s):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(outcomes
        .into_iter()
        .filter_map(|o| o.boot.ok().map(|b| (o.kernel.label, b.results)))
        .collect())
}

/// Builds what the guests run, boots every requested kernel and collects
/// what each reported.
fn boot(args: &VmtestArgs) -> Result<Vec<Outcome>> {
    kernels::check_tools()?;
    let wanted: Vec<kernels::Series> = if args.kernel == "all" {
        kernels::SERIES.to_vec()
    } else {
        args.kernel
            .split(',')
            .map(kernels::series)
            .collect::<Result<_>>()?
    };

    let (target_dir, features) = match &args.fault {
        Some(_) => (
            cmd::workspace_root().join("target/fault"),
            vec!["--features", "memtrace/fault-injection"],
        ),
        None => (cmd::workspace_root().join("target"), vec![]),
    };
    let target_arg = target_dir.display().to_string();
    let mut build = vec![
        "build",
        "--release",
        "-p",
        "memtrace-tests",
        "--bins",
        "--target-dir",
        &target_arg,
    ];
    // The guests run the shipped binary: static (musl), stripped, built as
    // `cargo xtask dist` builds it, so every scenario on every kernel is a
    // test of what operators install. The deliberately broken build of the
    // harness self-check is a plain release build (it tests the harness,
    // and a second LTO build would cost CI minutes for nothing).
    if args.fault.is_some() {
        build.extend(["-p", "memtrace"]);
    }
    build.extend(features.iter().copied());
    cmd::cargo(&build).context("building the guest binaries")?;
    let release = target_dir.join("release");
    let memtrace = if args.fault.is_some() {
        release.join("memtrace")
    } else {
        let source = crate::dist::Source::of_workspace()?;
        crate::dist::static_binary(&source, &target_dir, &[])?
    };
    let mut binaries: Vec<PathBuf> = vec![memtrace];
    binaries.extend(
        ["vm-guest", "hog", "latency-server", "env-dump"]
            .iter()
            .map(|b| release.join(b)),
    );

    let kernels = kernels::fetch(&wanted)?;
    let vmtest = cmd::workspace_root().join("target/vmtest");
    let image = vmtest.join(if args.fault.is_some() {
        "initramfs-fault.cpio"
    } else {
        "initramfs.cpio"
    });
    let size = initramfs::build(&binaries, &image)?;
    let slow_disk = slow_disk(&vmtest)?;
    eprintln!(
        "vmtest: initramfs {} ({:.1} MiB)",
        image.display(),
        size as f64 / (1 << 20) as f64
    );
    if !args.keep {
        let _ = std::fs::remove_dir_all(image.with_extension("d"));
    }

    // Not `quiet`: a boot that hangs must leave the kernel's messages in
    // its console log. `no_timer_check`: the kernel's early check that the
    // IO-APIC timer ticks busy-waits for ticks a starved TCG vCPU may not
    // see in time, and then panics ("IO-APIC + timer doesn't work!"): seen
    // on 6.1 and 6.12 with three guests on two loaded host cores.
    let mut append = "console=ttyS0 earlyprintk=ttyS0 panic=-1 psi=1 no_timer_check".to_string();
    if !args.scenarios.is_empty() {
        append.push_str(&format!(" memtrace.scenarios={}", args.scenarios.join(",")));
    }
    if let Some(f) = &args.fault {
        append.push_str(&format!(" memtrace.fault={f}"));
    }
    if args.trace {
        append.push_str(" memtrace.trace=1");
    }
    if let Some(extra) = &args.append {
        append.push(' ');
        append.push_str(extra);
    }

    boot_all(
        &kernels,
        &image,
        &slow_disk,
        &append,
        args.jobs.max(1),
        &vmtest,
    )
}

struct Outcome {
    kernel: kernels::Kernel,
    boot: Result<qemu::Boot>,
}

/// An empty 64 MiB ext4 image, made once: the guests' slow disk.
fn slow_disk(vmtest: &std::path::Path) -> Result<PathBuf> {
    let img = vmtest.join("slow-disk.img");
    if img.is_file() {
        return Ok(img);
    }
    std::fs::create_dir_all(vmtest)?;
    let tmp = img.with_extension("tmp");
    cmd::run(
        std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "slow"])
            .arg(&tmp)
            .arg("64M"),
    )
    .context("making the guests' slow disk with mke2fs (package e2fsprogs)")?;
    std::fs::rename(&tmp, &img)?;
    Ok(img)
}

/// Boots every kernel, `jobs` at a time, from a work queue: each worker
/// takes the next kernel as soon as its VM is done, so one slow guest holds
/// up one worker, not a whole batch. Outcomes come back in `kernels` order.
fn boot_all(
    kernels: &[kernels::Kernel],
    image: &std::path::Path,
    slow_disk: &std::path::Path,
    append: &str,
    jobs: usize,
    vmtest: &std::path::Path,
) -> Result<Vec<Outcome>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Outcome>>> = kernels.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.min(kernels.len()))
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(k) = kernels.get(i) else { break };
                        let outcome = boot_one(k.clone(), image, slow_disk, append, vmtest);
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some(outcome);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a VM thread panicked"))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| anyhow::anyhow!("a VM thread panicked"))
        })
        .collect()
}

fn boot_one(
    k: kernels::Kernel,
    image: &std::path::Path,
    slow_disk: &std::path::Path,
    append: &str,
    vmtest: &std::path::Path,
) -> Outcome {
    let spec = qemu::BootSpec {
        label: k.label,
        vmlinuz: &k.vmlinuz,
        initramfs: Some(image),
        append: append.to_string(),
        memory_mb: 1024,
        extra_args: qemu::slow_disk_args(slow_disk),
        progress: qemu::busybox_progress,
        boot_timeout: BOOT_TIMEOUT,
        progress_timeout: PROGRESS_TIMEOUT,
        run_dir: vmtest.join("runs").join(k.label),
    };
    let mut boot = qemu::boot(&spec);
    // A guest that never reached init tested nothing: TCG under load has
    // hung there, or panicked early. One more boot, said out loud; a second
    // such boot fails the run with its console.
    if let Ok(b) = &boot
        && b.reached_init.is_none()
        && b.results.is_empty()
    {
        eprintln!(
            "[{}] the guest never reached init; booting it once more. Its console:\n{}",
            k.label,
            b.console_tail(15)
        );
        boot = qemu::boot(&spec);
    }
    Outcome { kernel: k, boot }
}

/// Prints the table and returns one line per failure, naming kernel and
/// scenario.
fn report(outcomes: &[Outcome]) -> Vec<String> {
    let mut failures = Vec::new();
    eprintln!("\nvmtest results");
    for o in outcomes {
        let label = o.kernel.label;
        let boot = match &o.boot {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("kernel {label}: the VM did not run: {e:#}"));
                continue;
            }
        };
        let hello = boot.results.iter().find(|r| r.get("hello").is_some());
        let Some(hello) = hello else {
            failures.push(format!(
                "kernel {label}: the guest never reported (boot {}); console:\n{}",
                if boot.timed_out { "timed out" } else { "ended" },
                boot.console_tail(30)
            ));
            continue;
        };
        eprintln!(
            "  kernel {label} ({}, {:.0} s; init after {:.1} s, longest silence {:.0} s)",
            hello["hello"].as_str().unwrap_or("?"),
            boot.elapsed.as_secs_f64(),
            boot.reached_init.unwrap_or_default().as_secs_f64(),
            boot.longest_silence.as_secs_f64()
        );
        save_artifacts(label, &boot.results);
        let expected: Vec<String> = hello["scenarios"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for (i, name) in expected.iter().enumerate() {
            // A scenario named twice (`--scenario many --scenario many`)
            // has one result per run: the n-th name takes the n-th result.
            let nth = expected[..i].iter().filter(|n| *n == name).count();
            let result = boot
                .results
                .iter()
                .filter(|r| r["scenario"] == name.as_str() && r.get("status").is_some())
                .nth(nth);
            match result {
                Some(r) => {
                    let status = r["status"].as_str().unwrap_or("?");
                    eprintln!(
                        "    {name:<14} {:<5} {:>5.0} s  {}",
                        status.to_uppercase(),
                        r["seconds"].as_f64().unwrap_or(0.0),
                        metrics_line(&r["metrics"])
                    );
                    if status == "skip" {
                        eprintln!("      skipped: {}", r["skipped"].as_str().unwrap_or(""));
                    }
                    if status == "fail" {
                        for f in r["failures"].as_array().into_iter().flatten() {
                            let f = f.as_str().unwrap_or("");
                            eprintln!("      - {f}");
                            failures.push(format!("kernel {label}, scenario {name}: {f}"));
                        }
                    }
                }
                None => {
                    let why = if boot.timed_out {
                        format!(
                            "the VM timed out during {}",
                            boot.last_scenario().unwrap_or_default()
                        )
                    } else {
                        "the guest stopped before reporting it".into()
                    };
                    eprintln!("    {name:<14} MISSING ({why})");
                    failures.push(format!(
                        "kernel {label}, scenario {name}: no result: {why}; console:\n{}",
                        boot.console_tail(20)
                    ));
                }
            }
        }
        if !boot.results.iter().any(|r| r.get("done").is_some()) && !boot.timed_out {
            failures.push(format!("kernel {label}: the guest did not finish its run"));
        }
    }
    failures
}

/// Files the guest sent back (recordings), under target/vmtest/artifacts/.
fn save_artifacts(label: &str, results: &[Value]) {
    use base64::Engine;
    let dir = cmd::workspace_root()
        .join("target/vmtest/artifacts")
        .join(label);
    for r in results {
        let (Some(name), Some(b64)) = (r["artifact"].as_str(), r["base64"].as_str()) else {
            continue;
        };
        // Only a plain file name: the guest does not choose host paths.
        if name.contains('/') || name.starts_with('.') {
            continue;
        }
        match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(bytes) => {
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(name);
                match std::fs::write(&path, bytes) {
                    Ok(()) => eprintln!("    artifact {}", path.display()),
                    Err(e) => eprintln!("    artifact {name} not saved: {e}"),
                }
            }
            Err(e) => eprintln!("    artifact {name} undecodable: {e}"),
        }
    }
}

fn metrics_line(m: &Value) -> String {
    m.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
