//! Booting one test VM under qemu (TCG: KVM is not usable on the CI
//! machines) and collecting what it reports.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

/// What one boot produced.
pub struct Boot {
    pub console: Vec<String>,
    pub results: Vec<Value>,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// From starting qemu to the guest's init reporting (the bound is the
    /// boot timeout); None if it never did.
    pub reached_init: Option<Duration>,
    /// The longest wait between two progress lines once up (the bound is
    /// the progress timeout).
    pub longest_silence: Duration,
}

impl Boot {
    /// The scenario the guest was running last, from its console.
    pub fn last_scenario(&self) -> Option<String> {
        self.console.iter().rev().find_map(|l| {
            l.split("=== ")
                .nth(1)
                .and_then(|r| r.strip_suffix(" ==="))
                .map(str::to_string)
        })
    }

    pub fn console_tail(&self, n: usize) -> String {
        let start = self.console.len().saturating_sub(n);
        self.console[start..].join("\n")
    }
}

pub struct BootSpec<'a> {
    pub label: &'a str,
    pub vmlinuz: &'a Path,
    /// None: the kernel mounts its root from a disk in `extra_args`.
    pub initramfs: Option<&'a Path>,
    pub memory_mb: u32,
    /// Disks and devices (the busybox guests' slow disk, the Debian
    /// guests' root and payload disks).
    pub extra_args: Vec<String>,
    /// Console lines that show the guest is making progress.
    pub progress: fn(&str) -> bool,
    pub append: String,
    /// Time allowed until the guest's init reports it is up.
    pub boot_timeout: Duration,
    /// Time allowed between two progress lines of the scenario runner.
    pub progress_timeout: Duration,
    pub run_dir: PathBuf,
}

/// How slow the busybox guests' slow disk is: 256 KiB/s and 8 requests/s
/// of writes, so that one fsync of a few journal blocks takes about a
/// second and a MiB several.
pub const SLOW_DISK_THROTTLE: &str = "throttling.bps-write=262144,throttling.iops-write=8";

/// The qemu arguments of the busybox guests' slow disk: an ext4 image as
/// an NVMe drive whose writes qemu throttles; `snapshot=on`, so the image
/// is never written.
pub fn slow_disk_args(image: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!(
            "file={},format=raw,if=none,id=slow,snapshot=on,{SLOW_DISK_THROTTLE}",
            image.display()
        ),
        "-device".into(),
        "nvme,drive=slow,serial=slow".into(),
    ]
}

/// Console lines of the busybox guests that show progress.
pub fn busybox_progress(line: &str) -> bool {
    line.starts_with("init: ") || line.starts_with("vm-guest: ")
}

/// A guest that is running: its console as it arrives (with the host's
/// wall-clock time of each line), and qemu to wait for or kill.
pub struct Running {
    pub child: std::process::Child,
    /// Console lines and when each arrived (host Unix time, seconds).
    pub console: Arc<Mutex<Vec<(f64, String)>>>,
    pub results_path: PathBuf,
    pub started: Instant,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The host's wall clock, Unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Running {
    /// The console lines only.
    pub fn lines(&self) -> Vec<String> {
        self.console
            .lock()
            .map(|c| c.iter().map(|(_, l)| l.clone()).collect())
            .unwrap_or_default()
    }

    /// Kills qemu at once (a power cut for the guest) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join();
    }

    fn join(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// The results port's JSON lines so far.
    pub fn results(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.results_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l.trim()).ok())
            .collect()
    }
}

/// Starts qemu for `spec` and streams its console; see [`boot`] for a
/// boot that runs to its end.
pub fn spawn(spec: &BootSpec<'_>) -> Result<Running> {
    std::fs::create_dir_all(&spec.run_dir)?;
    let results_path = spec.run_dir.join("results.jsonl");
    let console_path = spec.run_dir.join("console.log");
    let _ = std::fs::remove_file(&results_path);
    let start = Instant::now();
    // `-cx16`: qemu 7.2's multi-threaded TCG corrupts EFLAGS around
    // cmpxchg16b, which crashed one guest boot in four (random oopses in
    // SLUB and text patching); without the feature the guest's SLUB takes
    // its locked path and boots reliably (docs/testing.md).
    // `thread=single`: with one host thread per vCPU, a vCPU went on
    // running code another had just patched (the BPF trampoline's call
    // site when an agent detached: `Oops: int3` at it on 6.12, both vCPUs
    // looping there on 5.10 and 6.1); one thread running both vCPUs
    // orders a patch before the other vCPU's next instruction.
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-cpu", "max,-cx16", "-accel", "tcg,thread=single", "-m"])
        .arg(spec.memory_mb.to_string())
        .args(["-smp", "2"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-serial")
        .arg(format!("file:{}", results_path.display()))
        .arg("-kernel")
        .arg(spec.vmlinuz);
    if let Some(initramfs) = spec.initramfs {
        qemu.arg("-initrd").arg(initramfs);
    }
    let mut child = qemu
        .args(&spec.extra_args)
        .arg("-append")
        .arg(&spec.append)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;

    let console = Arc::new(Mutex::new(Vec::<(f64, String)>::new()));
    let mut log = std::fs::File::create(&console_path)?;
    let prefix = format!("[{}] ", spec.label);
    let sink = console.clone();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let is_progress = spec.progress;
    let reader = std::thread::spawn(move || {
        // The kernel's boot messages go to console.log (and the failure
        // report of a boot that hangs), not to the terminal.
        let mut up = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let at = unix_now();
            let line = line.trim_end_matches('\r').to_string();
            up |= is_progress(&line);
            if up {
                eprintln!("{prefix}{line}");
            }
            let _ = writeln!(log, "{line}");
            if let Ok(mut c) = sink.lock() {
                c.push((at, line));
            }
        }
    });
    let stderr = child.stderr.take().context("qemu stderr")?;
    let label = spec.label.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{label} qemu] {line}");
        }
    });
    Ok(Running {
        child,
        console,
        results_path,
        started: start,
        reader: Some(reader),
    })
}

pub fn boot(spec: &BootSpec<'_>) -> Result<Boot> {
    let mut running = spawn(spec)?;
    let start = running.started;
    let console = running.console.clone();
    let child = &mut running.child;
    let mut timed_out = false;
    let mut seen = 0;
    let mut last_progress = Instant::now();
    let mut booted = false;
    let mut reached_init = None;
    let mut longest_silence = Duration::ZERO;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if let Ok(c) = console.lock() {
            for (_, line) in &c[seen..] {
                if (spec.progress)(line) {
                    if booted {
                        longest_silence = longest_silence.max(last_progress.elapsed());
                    } else {
                        reached_init = Some(start.elapsed());
                    }
                    booted = true;
                    last_progress = Instant::now();
                }
            }
            seen = c.len();
        }
        let allowed = if booted {
            spec.progress_timeout
        } else {
            spec.boot_timeout
        };
        if last_progress.elapsed() > allowed {
            timed_out = true;
            eprintln!(
                "[{}] no progress for {:.0?} ({}): stopping the VM",
                spec.label,
                allowed,
                if booted {
                    "scenario stuck"
                } else {
                    "boot hung"
                }
            );
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    running.join();
    let results = running.results();
    let console = running.lines();
    Ok(Boot {
        console,
        results,
        timed_out,
        elapsed: start.elapsed(),
        reached_init,
        longest_silence,
    })
}
