//! `cargo xtask thrash`: the second incident (seed 003), measured. A
//! bookworm guest with swap on a throttled disk runs memtrace's agent as
//! shipped (alerts to a virtio-serial port, flight recorder on a disk of
//! its own) and node_exporter, then a build-like swarm grows until the box
//! thrashes. On the host: Prometheus scrapes both through qemu port
//! forwards (loopback only, `restrict=on`) and evaluates the seed's rule
//! and memtrace's example rules; the alert port is read and every line
//! timestamped on arrival; the console's heartbeat says when the box stops
//! speaking. Once the box is dark (or the run is over) qemu is killed
//! without a shutdown, a power cut, and the recording is read back from
//! the guest's disk with `memtrace report`.
//!
//! One run gives the three times the issue asks for: memtrace's alert, the
//! Prometheus rule, the blackout; written with the command into
//! docs/benchmarks.md ([`analysis`]).

mod analysis;
mod prom;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::cmd;
use crate::vm::debian::guest::{Disk, Guest};
use crate::vm::debian::payload::Payload;
use crate::vm::debian::{self, image};
use crate::vm::qemu::unix_now;

#[derive(Args, Debug, Clone)]
pub struct ThrashArgs {
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory_mb: u32,
    /// Swap on its own virtio disk, MiB.
    #[arg(long, default_value_t = 256)]
    pub swap_mb: u32,
    /// The swap disk's limit, bytes per second (reads and writes).
    #[arg(long, default_value_t = 4 << 20)]
    pub swap_bps: u64,
    /// Workers in the swarm (the seed's build ran ~16 compilers).
    #[arg(long, default_value_t = 12)]
    pub workers: u32,
    /// What each worker grows to, MiB.
    #[arg(long, default_value_t = 112)]
    pub worker_mib: u32,
    /// How fast each worker grows, MiB/s.
    #[arg(long, default_value_t = 0.5)]
    pub grow_mib_per_s: f64,
    /// A new worker every this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub spawn_every_s: f64,
    /// Share of its pages a worker touches every second.
    #[arg(long, default_value_t = 0.25)]
    pub touch_share: f64,
    /// The box is dark once its console and its scrapes have both been
    /// silent this long (seconds); then qemu is killed.
    #[arg(long, default_value_t = 90)]
    pub dark_s: u64,
    /// The longest run from the swarm's start, minutes.
    #[arg(long, default_value_t = 25)]
    pub max_minutes: u64,
    /// Print the results only; leave docs/ alone.
    #[arg(long)]
    pub no_docs: bool,
}

/// The guest's ports forwarded to the host's loopback.
const NODE_PORT: u16 = 9100;
const MEMTRACE_PORT: u16 = 9478;
/// The flight recorder's disk and where the guest mounts it.
const RECORD_MB: u32 = 160;
const RECORD_MOUNT: &str = "/var/lib/memtrace";

fn agent_toml() -> String {
    r#"# memtrace's agent in the thrash benchmark: the shipped [host] defaults,
# alerts to a virtio-serial port the host reads (no network needed), the
# flight recorder on a disk of its own, metrics for the host's Prometheus.
[agent]
metrics_listen = "0.0.0.0:9478"
record_dir = "/var/lib/memtrace/flight"
record_max_size = "64MiB"
kill_log = "/var/log/memtrace/kills.jsonl"

[[budget]]
name = "observe"
cgroup = "/**"
window = "10s"
max_throttled = "50%"
action = "alert"

[[alert]]
kind = "file"
name = "port"
path = "/dev/virtio-ports/memtrace.alerts"
"#
    .into()
}

const DROP_IN: &str = "# The alert port through the shipped unit's PrivateDevices=yes.
[Service]
BindPaths=/dev/virtio-ports/memtrace.alerts
DeviceAllow=/dev/virtio-ports/memtrace.alerts w
";

const NODE_UNIT: &str = "[Unit]
Description=Prometheus node exporter (Debian's prometheus-node-exporter)
After=network-online.target

[Service]
ExecStart=/usr/local/bin/node_exporter --web.listen-address=:9100
Restart=always
";

const NETWORK: &str = "[Match]
Name=en*

[Network]
DHCP=ipv4
";

/// Debian's node_exporter, unpacked from its package (never installed on
/// the host: its unit would start an exporter here).
fn node_exporter() -> Result<PathBuf> {
    let dir = cmd::workspace_root().join("target/thrash/node-exporter");
    let bin = dir.join("usr/bin/prometheus-node-exporter");
    if bin.is_file() {
        return Ok(bin);
    }
    let dl = dir.join("deb");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    cmd::run(
        Command::new("apt-get")
            .args(["download", "prometheus-node-exporter"])
            .current_dir(&dl),
    )
    .context("apt-get download prometheus-node-exporter")?;
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    if !bin.is_file() {
        bail!("{} has no usr/bin/prometheus-node-exporter", deb.display());
    }
    Ok(bin)
}

/// Lines of the alert port, each with the host's time it arrived.
struct PortReader {
    file: std::fs::File,
    partial: Vec<u8>,
    lines: Vec<(f64, Value)>,
}

impl PortReader {
    fn poll(&mut self) {
        let mut buf = Vec::new();
        if self.file.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return;
        }
        let at = unix_now();
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line);
            let v = serde_json::from_str(text.trim()).unwrap_or(json!({ "raw": text.trim() }));
            eprintln!(
                "thrash: alert arrived: [{}] {}",
                v["event"].as_str().unwrap_or("?"),
                v["summary"].as_str().unwrap_or("")
            );
            self.lines.push((at, v));
        }
    }
}

pub fn run(args: &ThrashArgs) -> Result<()> {
    crate::setup::run()?;
    for tool in ["e2fsck", "debugfs", "mke2fs", "prometheus"] {
        if !cmd::have(tool) {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    let release = crate::incident::build_binaries()?;
    let suite = debian::suite("bookworm")?;
    let image = image::image(&suite)?;
    let node = node_exporter()?;
    let run_dir = cmd::workspace_root().join("target/thrash/run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;

    // The disks: swap (sparse, throttled) and the flight recorder's.
    let swap = run_dir.join("swap.img");
    std::fs::File::create(&swap)?.set_len(u64::from(args.swap_mb) << 20)?;
    let record = run_dir.join("record.img");
    cmd::run(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "memtrace-record"])
            .arg(&record)
            .arg(format!("{RECORD_MB}M")),
    )?;

    let mut p = Payload::new(&run_dir, false)?;
    p.binary(&release.join("debian-guest"), None)?;
    p.binary(&release.join("memtrace"), Some("/usr/bin/memtrace"))?;
    p.binary(&node, Some("/usr/local/bin/node_exporter"))?;
    let root = cmd::workspace_root();
    let unit = std::fs::read_to_string(root.join("docs/examples/memtrace-agent.service"))?;
    p.file("/etc/systemd/system/memtrace-agent.service", &unit, 0o644)?;
    p.file(
        "/etc/systemd/system/memtrace-agent.service.d/alert-port.conf",
        DROP_IN,
        0o644,
    )?;
    p.file("/etc/memtrace/agent.toml", &agent_toml(), 0o644)?;
    p.file(
        "/etc/systemd/system/node-exporter.service",
        NODE_UNIT,
        0o644,
    )?;
    p.file("/etc/systemd/network/50-en.network", NETWORK, 0o644)?;
    let plan = json!({
        "kind": "thrash",
        "run": "thrash",
        "swap_device": "/dev/disk/by-id/virtio-swap",
        "record_device": "/dev/disk/by-id/virtio-record",
        "record_mount": RECORD_MOUNT,
        "start": ["systemd-networkd.service", "node-exporter.service", "memtrace-agent.service"],
        "workers": args.workers,
        "worker_mib": args.worker_mib,
        "grow_mib_per_s": args.grow_mib_per_s,
        "spawn_every_s": args.spawn_every_s,
        "touch_share": args.touch_share,
        "baseline_s": 60.0,
    });
    let payload = p.build(plan, &run_dir.join("payload.img"))?;

    let node_host = prom::free_port()?;
    let memtrace_host = prom::free_port()?;
    let alerts_raw = run_dir.join("alerts.raw");
    std::fs::File::create(&alerts_raw)?;
    let mut guest = Guest::new("thrash", &image, &payload, run_dir.clone());
    guest.memory_mb = args.memory_mb;
    guest.disks.push(Disk {
        path: swap,
        serial: "swap".into(),
        snapshot: false,
        throttle: Some(format!(
            "throttling.bps-total={},throttling.iops-total=256",
            args.swap_bps
        )),
    });
    guest.disks.push(Disk {
        path: record.clone(),
        serial: "record".into(),
        snapshot: false,
        throttle: None,
    });
    guest.extra.extend([
        "-netdev".into(),
        format!(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{node_host}-:{NODE_PORT},hostfwd=tcp:127.0.0.1:{memtrace_host}-:{MEMTRACE_PORT}"
        ),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
        "-device".into(),
        "virtio-serial-pci".into(),
        "-chardev".into(),
        format!("file,id=alerts,path={}", alerts_raw.display()),
        "-device".into(),
        "virtserialport,chardev=alerts,name=memtrace.alerts".into(),
    ]);
    let prometheus =
        prom::Prometheus::start(&run_dir.join("prometheus"), node_host, memtrace_host)?;
    eprintln!(
        "thrash: prometheus on http://127.0.0.1:{} scraping node 127.0.0.1:{node_host}, memtrace 127.0.0.1:{memtrace_host}",
        prometheus.port
    );
    let started = unix_now();
    let mut vm = guest.spawn()?;
    let mut port = PortReader {
        file: std::fs::File::open(&alerts_raw)?,
        partial: Vec::new(),
        lines: Vec::new(),
    };
    let mut swarm_at: Option<f64> = None;
    let mut ended_at: Option<f64> = None;
    let mut last_ok_scrape: Option<f64> = None;
    let mut seen_firing: Vec<(String, f64)> = Vec::new();
    let mut last_poll = 0.0;
    let outcome;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = unix_now();
        port.poll();
        if vm.child.try_wait()?.is_some() {
            outcome = "qemu exited";
            break;
        }
        let results = vm.results();
        if let Some(e) = results.iter().find_map(|r| r.get("error")) {
            vm.kill();
            prometheus.stop();
            bail!(
                "the guest's setup failed: {e}; console in {}",
                run_dir.join("console.log").display()
            );
        }
        if swarm_at.is_none() && results.iter().any(|r| r["ready"] == true) {
            swarm_at = Some(now);
            eprintln!(
                "thrash: the swarm started ({:.0} s after qemu)",
                now - started
            );
        }
        if ended_at.is_none()
            && results
                .iter()
                .any(|r| r.get("swarm_ended_wall_ms").is_some())
        {
            ended_at = Some(now);
            eprintln!("thrash: the swarm ended and the box still speaks");
        }
        if now - last_poll >= 1.0 {
            last_poll = now;
            if prometheus
                .targets()
                .iter()
                .any(|(job, up)| job == "node" && *up)
            {
                last_ok_scrape = Some(now);
            }
            for (name, state) in prometheus.alerts() {
                if state == "firing" && !seen_firing.iter().any(|(n, _)| *n == name) {
                    eprintln!("thrash: prometheus: {name} firing");
                    seen_firing.push((name, now));
                }
            }
        }
        let Some(swarm) = swarm_at else {
            if now - started > 600.0 {
                outcome = "the guest never started the swarm";
                break;
            }
            continue;
        };
        let last_console = vm
            .console
            .lock()
            .ok()
            .and_then(|c| c.last().map(|l| l.0))
            .unwrap_or(started);
        let dark = args.dark_s as f64;
        if now - last_console >= dark && last_ok_scrape.is_none_or(|t| now - t >= dark) {
            outcome = "dark: console and scrapes silent";
            break;
        }
        if ended_at.is_some_and(|e| now - e >= 30.0) {
            outcome = "recovered: the swarm ended and the box kept speaking";
            break;
        }
        if now - swarm >= args.max_minutes as f64 * 60.0 {
            outcome = "time limit";
            break;
        }
    }
    let killed_at = unix_now();
    eprintln!("thrash: {outcome}; killing qemu (a power cut)");
    vm.kill();
    port.poll();
    // Prometheus's own record of the run, before it stops.
    let up = prometheus.range("up[2h]");
    let alerts_series = prometheus.range("ALERTS[2h]");
    prometheus.stop();

    let recording = read_recording(&record, &run_dir, &release)?;
    let console = vm.console.lock().map(|c| c.clone()).unwrap_or_default();
    let results = vm.results();
    let input = analysis::Input {
        args: args.clone(),
        image_kernel: image.kernel_package.clone(),
        started,
        swarm_at,
        ended_at,
        killed_at,
        outcome: outcome.to_string(),
        console,
        results,
        alerts: port.lines,
        up,
        alerts_series,
        recording,
    };
    let r = analysis::analyse(&input);
    std::fs::write(
        run_dir.join("result.json"),
        serde_json::to_string_pretty(&r)?,
    )?;
    let text = analysis::markdown(&r);
    println!("\n{text}");
    if !args.no_docs {
        analysis::write_docs(&text)?;
        eprintln!("thrash: results written to docs/benchmarks.md");
    }
    eprintln!("thrash: the run's files: {}", run_dir.display());
    Ok(())
}

/// The flight recorder as the power cut left it: the disk image copied,
/// its journal replayed by e2fsck (as the next boot would), the directory
/// copied out with debugfs (no mount), then `memtrace report --json` and
/// `memtrace export --format jsonl` of it.
fn read_recording(img: &Path, run_dir: &Path, release: &Path) -> Result<Value> {
    let copy = run_dir.join("record-after.img");
    std::fs::copy(img, &copy)?;
    let fsck = Command::new("e2fsck")
        .args(["-fy"])
        .arg(&copy)
        .output()
        .context("running e2fsck")?;
    // 0: clean, 1: errors corrected (a replayed journal); above: trouble.
    let fsck_code = fsck.status.code().unwrap_or(-1);
    let out = run_dir.join("flight");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let dump = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump /flight {}", out.display()))
        .arg(&copy)
        .output()
        .context("running debugfs")?;
    let dir = out.join("flight");
    let files: Vec<Value> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| json!({ "name": e.file_name().to_string_lossy(), "bytes": e.metadata().map(|m| m.len()).unwrap_or(0) }))
        .collect();
    let memtrace = release.join("memtrace");
    let report = Command::new(&memtrace)
        .arg("report")
        .arg(&dir)
        .arg("--json")
        .output()
        .context("running memtrace report")?;
    let export = Command::new(&memtrace)
        .arg("export")
        .arg(&dir)
        .args(["--format", "jsonl"])
        .output()
        .context("running memtrace export")?;
    std::fs::write(run_dir.join("flight-report.json"), &report.stdout)?;
    let samples: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "sample")
        .map(|v| json!({ "ts": v["ts"], "host": v["host"] }))
        .collect();
    Ok(json!({
        "e2fsck_exit": fsck_code,
        "e2fsck": String::from_utf8_lossy(&fsck.stdout).lines().take(20).collect::<Vec<_>>(),
        "debugfs_ok": dump.status.success(),
        "files": files,
        "report_exit": report.status.code(),
        "report_stderr": String::from_utf8_lossy(&report.stderr).trim(),
        "report": serde_json::from_slice::<Value>(&report.stdout).unwrap_or(Value::Null),
        "export_exit": export.status.code(),
        "samples": samples,
    }))
}
