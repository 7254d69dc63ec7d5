//! The second incident in a Debian guest (`cargo xtask thrash`): a box
//! with swap on a slow disk, memtrace's agent as shipped (its alerts to a
//! virtio-serial port, its flight recorder on a disk of its own),
//! node_exporter, and a build-like swarm of workers that each grow and
//! keep touching what they have, until the box thrashes.
//!
//! The guest only sets up and starts: everything measured is measured on
//! the host (alert arrival, Prometheus's scrapes and rules, the console),
//! because the point is what still reaches the host when the box stops
//! answering. The runner says on the console once a second that it is
//! alive, with the guest's clock and memory, written straight to the
//! serial port (not through journald), so the host sees when the box
//! stops speaking.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use super::systemd::{Edit, Install, install_files, log, sh, systemctl, unit_prop};

/// What the host asks for (`plan.json` with `"kind": "thrash"`).
#[derive(Debug, Deserialize)]
pub struct ThrashPlan {
    pub run: String,
    #[serde(default)]
    pub install: Vec<Install>,
    #[serde(default)]
    pub edits: Vec<Edit>,
    /// The swap disk (`/dev/disk/by-id/virtio-swap`).
    pub swap_device: String,
    /// The flight recorder's disk, mounted at `record_mount`.
    pub record_device: String,
    pub record_mount: String,
    /// Units started before the swarm, in order (networkd, node_exporter,
    /// the agent).
    pub start: Vec<String>,
    /// The swarm: `workers` processes, one every `spawn_every_s`, each
    /// growing by `grow_mib_per_s` to `worker_mib` and touching its pages.
    pub workers: u32,
    pub worker_mib: u32,
    pub grow_mib_per_s: f64,
    pub spawn_every_s: f64,
    /// Each second a worker touches this share of what it holds.
    pub touch_share: f64,
    /// Seconds to wait after the agent is up before the swarm starts (a
    /// calm baseline for the trends and for Prometheus).
    pub baseline_s: f64,
}

fn meminfo_kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn wall_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Waits for a device node udev makes.
fn wait_for_path(p: &str, timeout: Duration) -> Result<()> {
    if crate::guest::wait_until(timeout, || Path::new(p).exists()) {
        Ok(())
    } else {
        bail!("{p} did not appear within {timeout:?}")
    }
}

/// Once a second on the serial console: alive, the guest's wall clock,
/// and its memory (`beat N wall_ms=.. avail_kb=.. swapfree_kb=.. psi_some_us=..`).
fn heartbeat() {
    std::thread::spawn(|| {
        let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/ttyS0") else {
            log("no /dev/ttyS0 for the heartbeat");
            return;
        };
        let mut n = 0u64;
        loop {
            n += 1;
            let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
            let psi = std::fs::read_to_string("/proc/pressure/memory").unwrap_or_default();
            let line = format!(
                "debian-guest: beat {n} wall_ms={} avail_kb={} swapfree_kb={} psi_some_us={}\n",
                wall_ms(),
                meminfo_kb(&mem, "MemAvailable"),
                meminfo_kb(&mem, "SwapFree"),
                crate::cgroup::psi_total(&psi, "some").unwrap_or(0)
            );
            let _ = tty.write_all(line.as_bytes());
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

/// Sets the guest up, starts the swarm and keeps the heartbeat going; the
/// host ends the run (it kills the VM). `ready` sends a line on the
/// results port: the setup when the swarm starts, and when it ended if the
/// box lives to see it.
pub fn run(payload: &Path, plan: &ThrashPlan, ready: &mut dyn FnMut(&Value)) -> Result<()> {
    install_files(payload, &plan.install, &plan.edits)?;
    let state = Command::new("systemctl")
        .args(["is-system-running", "--wait"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    log(&format!("system {state}"));
    wait_for_path(&plan.swap_device, Duration::from_secs(30))?;
    sh("mkswap", &[&plan.swap_device])?;
    sh("swapon", &[&plan.swap_device])?;
    wait_for_path(&plan.record_device, Duration::from_secs(30))?;
    std::fs::create_dir_all(&plan.record_mount)?;
    sh("mount", &[&plan.record_device, &plan.record_mount])?;
    wait_for_path("/dev/virtio-ports/memtrace.alerts", Duration::from_secs(30))?;
    systemctl(&["daemon-reload"])?;
    for u in &plan.start {
        systemctl(&["start", u]).with_context(|| format!("starting {u}"))?;
        log(&format!("{u}: {}", unit_prop(u, "ActiveState")));
        if u.contains("networkd") {
            // The port forwards reach the guest once DHCP gave it its address.
            let up = crate::guest::wait_until(Duration::from_secs(60), || {
                sh("ip", &["-4", "-o", "addr", "show", "scope", "global"])
                    .is_ok_and(|a| !a.trim().is_empty())
            });
            if !up {
                bail!("no IPv4 address from DHCP within 60 s");
            }
        }
    }
    let addr = sh("ip", &["-4", "-o", "addr", "show", "scope", "global"]).unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    heartbeat();
    std::thread::sleep(Duration::from_secs_f64(plan.baseline_s));
    let exe = std::env::current_exe().context("the runner's own path")?;
    let swarm_args: Vec<String> = [
        "--swarm".to_string(),
        plan.workers.to_string(),
        plan.worker_mib.to_string(),
        plan.grow_mib_per_s.to_string(),
        plan.spawn_every_s.to_string(),
        plan.touch_share.to_string(),
    ]
    .into();
    let mut run_args: Vec<String> = vec![
        "--unit=build".into(),
        "--description=the 3 a.m. build (memtrace's thrash benchmark)".into(),
        "--property=Slice=system.slice".into(),
        exe.display().to_string(),
    ];
    run_args.extend(swarm_args);
    let args: Vec<&str> = run_args.iter().map(String::as_str).collect();
    sh("systemd-run", &args)?;
    log(&format!("swarm started wall_ms={}", wall_ms()));
    ready(&json!({
        "run": plan.run,
        "ready": true,
        "swarm_wall_ms": wall_ms(),
        "mem_total_kb": meminfo_kb(&mem, "MemTotal"),
        "mem_available_kb": meminfo_kb(&mem, "MemAvailable"),
        "swap_total_kb": meminfo_kb(&mem, "SwapTotal"),
        "swaps": swaps.trim(),
        "address": addr.trim(),
        "units": plan.start.iter().map(|u| (u.clone(), json!(unit_prop(u, "ActiveState")))).collect::<serde_json::Map<_, _>>(),
    }));
    // The box may come back (the OOM killer ends the swarm): say when.
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let active = unit_prop("build.service", "ActiveState");
        if active != "active" && active != "activating" && active != "deactivating" {
            log(&format!("swarm ended ({active}) wall_ms={}", wall_ms()));
            ready(&json!({ "run": plan.run, "swarm_ended_wall_ms": wall_ms(), "build": active }));
            // Stay up: the host decides when the run is over.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

/// `debian-guest --swarm N MIB RATE EVERY SHARE`: the build. Starts `N`
/// workers, one every `EVERY` seconds, and waits for them.
pub fn swarm(args: &[String]) -> Result<()> {
    let num = |i: usize| -> Result<f64> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("--swarm N MIB RATE EVERY SHARE: argument {i} missing"))
    };
    let (n, mib, rate, every, share) = (num(0)?, num(1)?, num(2)?, num(3)?, num(4)?);
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..n as u32 {
        let c = Command::new(&exe)
            .args([
                "--worker".to_string(),
                mib.to_string(),
                rate.to_string(),
                share.to_string(),
            ])
            .spawn()
            .with_context(|| format!("starting worker {i}"))?;
        children.push(c);
        std::thread::sleep(Duration::from_secs_f64(every));
    }
    let mut failed = 0;
    for mut c in children {
        if !c.wait().is_ok_and(|s| s.success()) {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} workers did not finish (killed?)");
    }
    Ok(())
}

/// `debian-guest --worker MIB RATE SHARE`: one compiler. Grows by `RATE`
/// MiB a second to `MIB`, and each second writes to `SHARE` of its pages
/// (its working set), so what the kernel swaps out comes back in. Holds
/// its memory for a minute once grown, then exits.
pub fn worker(args: &[String]) -> Result<()> {
    let num = |i: usize| -> Result<f64> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("--worker MIB RATE SHARE: argument {i} missing"))
    };
    let (mib, rate, share) = (num(0)?, num(1)?, num(2)?);
    const PAGE: usize = 4096;
    let len = (mib * f64::from(1u32 << 20)) as usize;
    // SAFETY: an anonymous private mapping; only this function touches it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        bail!("mmap of {mib} MiB failed");
    }
    let base = base.cast::<u8>();
    let pages = len / PAGE;
    let per_s = ((rate * f64::from(1u32 << 20)) as usize / PAGE).max(1);
    let mut grown = 0usize;
    let mut cursor = 0usize;
    let mut full_since: Option<Instant> = None;
    let mut stamp = 1u8;
    while full_since.is_none_or(|t| t.elapsed() < Duration::from_secs(60)) {
        // Grow: a tenth of a second's worth at a time, so growth is smooth.
        let step = (per_s / 10).max(1);
        for _ in 0..10 {
            let slice = Instant::now();
            let until = (grown + step).min(pages);
            for p in grown..until {
                // SAFETY: p < pages, inside the mapping.
                unsafe { base.add(p * PAGE).write_volatile(stamp) };
            }
            grown = until;
            // The working set: touch the next share of what is held.
            let touch = ((grown as f64 * share) as usize / 10)
                .max(1)
                .min(grown.max(1));
            for _ in 0..touch {
                if grown == 0 {
                    break;
                }
                cursor = (cursor + 1) % grown;
                // SAFETY: cursor < grown <= pages.
                unsafe { base.add(cursor * PAGE).write_volatile(stamp) };
            }
            stamp = stamp.wrapping_add(1);
            // A thrashing box makes the slice longer: no catching up.
            std::thread::sleep(Duration::from_millis(100).saturating_sub(slice.elapsed()));
        }
        if grown == pages && full_since.is_none() {
            full_since = Some(Instant::now());
        }
    }
    Ok(())
}
