//! The first incident in a Debian guest, as its operators configured it:
//! the seeds' `t3-serve@.service` (MemoryHigh below MemoryMax, no swap,
//! `OOMPolicy=continue`) scaled to the guest, a server in it whose child
//! plateaus between the two limits and keeps scanning, a client outside
//! the unit, and one guard per boot, each configured as its own
//! documentation and the seeds have it. `cargo xtask shootout` runs every
//! guard; `cargo xtask test` runs memtrace's (see [`ci_case`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cmd;
use crate::vm::debian::guest::Guest;
use crate::vm::debian::image::{Image, UNIT_USER};
use crate::vm::debian::payload::Payload;

mod ci;
mod names;

pub use ci::ci_case;

/// The seed's limits (MemoryHigh=12G, MemoryMax=16G on a 23 GiB host)
/// scaled to a 512 MiB guest, in the same 3:4 ratio.
pub const HIGH_MB: u32 = 96;
pub const MAX_MB: u32 = 128;
/// The scanner plateaus here, between the two (the seed's ugrep: 12.3 GiB).
pub const SCAN_MB: u32 = 112;
pub const PORT: u16 = 8300;
pub const INTERVAL_MS: u64 = 100;
/// The t3 clients gave up on a connection after 20 s; scaled like the
/// limits, one second here (ten requests' worth).
pub const WATCHDOG_MS: u64 = 1000;
pub const BASELINE_S: f64 = 5.0;
/// Where docs/examples/agent.toml's webhook posts.
const RECEIVER_PORT: u16 = 8080;
/// The PSI trigger the agent's host alert rested on before the verdict
/// ("some" 300 ms within 2 s): the contained incident must stall the host
/// more than this, or the check that it pages no `host` alert proves
/// nothing.
const OLD_HOST_TRIGGER_MS: f64 = 300.0;
/// Consecutive replies within normal latency that make a recovery (1 s).
pub const RECOVERY_RUN: usize = 10;

pub fn unit_name() -> String {
    format!("t3-serve@{UNIT_USER}.service")
}

/// The seeds' unit (seed 001 before its 2026-07-02 amendment: the
/// MemoryHigh band that livelocked), with the stand-in server.
fn t3_unit() -> String {
    format!(
        "# The seeds' t3-serve@.service (infra/scripts/t3-serve@.service before the
# 2026-07-02 amendment), scaled to the guest: MemoryHigh 12G -> {HIGH_MB}M,
# MemoryMax 16G -> {MAX_MB}M. The server is memtrace's stand-in for `t3 serve`.
[Unit]
Description=T3 Code server for %i (t3 serve, per-user; memtrace's stand-in)
After=network.target

[Service]
Type=simple
User=%i
Group=%i
Environment=HOME=/home/%i
Environment=PATH=/usr/local/bin:/usr/bin:/bin
Environment=T3_PORT={PORT}
WorkingDirectory=/home/%i
ExecStart=/usr/bin/t3 serve --host 127.0.0.1 --port ${{T3_PORT}} --base-dir /home/%i/.t3 --scan-mb {SCAN_MB}
Restart=on-failure
RestartSec=5
MemoryHigh={HIGH_MB}M
MemoryMax={MAX_MB}M
MemorySwapMax=0
OOMPolicy=continue

[Install]
WantedBy=multi-user.target
"
    )
}

/// The slice systemd puts template instances in.
const T3_SLICE: &str = "system-t3\\x2dserve.slice";

/// A guard: what it installs and starts, and the log lines that show it
/// was running as configured (for the report).
pub struct Guard {
    pub name: &'static str,
    pub label: &'static str,
    /// How it is configured, for docs/benchmarks.md.
    pub config: &'static str,
    files: Vec<(String, String)>,
    edits: Vec<(String, String, String)>,
    start: Vec<&'static str>,
    probes: Vec<Vec<&'static str>>,
    collect: Vec<&'static str>,
    /// Commands the guest runs after the incident (plan `after`).
    after: Vec<Value>,
    memtrace: bool,
    /// memtrace's Debian package: installed with apt in the guest (its
    /// unit and configuration as packaged), instead of the release binary
    /// and the example unit copied in place.
    deb: Option<PathBuf>,
    /// The systemd packages some suites lack (systemd-oomd on bullseye).
    needs_package: Option<&'static str>,
    /// A real HTTP receiver on this guest loopback port for the guard's
    /// alerts.
    receiver_port: Option<u16>,
}

impl Guard {
    fn new(name: &'static str, label: &'static str, config: &'static str) -> Self {
        Self {
            name,
            label,
            config,
            files: Vec::new(),
            edits: Vec::new(),
            start: Vec::new(),
            probes: Vec::new(),
            collect: Vec::new(),
            after: Vec::new(),
            memtrace: false,
            deb: None,
            needs_package: None,
            receiver_port: None,
        }
    }

    pub fn available_on(&self, image: &Image) -> bool {
        self.needs_package
            .is_none_or(|p| image.suite.extra.contains(&p))
    }
}

/// oomd's documented ruleset (its shipped /etc/oomd/oomd.json and
/// docs/core_plugins.md): pressure_above AND memory_reclaim, then
/// kill_by_memory_size_or_growth; pointed at the slice the unit is in.
fn oomd_config(threshold: &str, duration: &str, with_reclaim: bool) -> String {
    let slice = "system.slice/system-t3*serve.slice";
    let reclaim = if with_reclaim {
        format!(
            r#",
                    {{ "name": "memory_reclaim", "args": {{ "cgroup": "{slice}", "duration": "10" }} }}"#
        )
    } else {
        String::new()
    };
    format!(
        r#"{{
    "rulesets": [
        {{
            "name": "t3 overview",
            "silence-logs": "engine",
            "detectors": [
                [ "records t3 stats",
                  {{ "name": "dump_cgroup_overview", "args": {{ "cgroup": "{slice}" }} }} ]
            ],
            "actions": [ {{ "name": "continue", "args": {{}} }} ]
        }},
        {{
            "name": "t3 protection",
            "detectors": [
                [ "t3 pressure above {threshold} for {duration}s",
                    {{ "name": "pressure_above", "args": {{ "cgroup": "{slice}", "resource": "memory", "threshold": "{threshold}", "duration": "{duration}" }} }}{reclaim}
                ]
            ],
            "actions": [
                {{ "name": "kill_by_memory_size_or_growth", "args": {{ "cgroup": "{slice}/*" }} }}
            ]
        }}
    ]
}}
"#
    )
}

pub fn guards() -> Vec<Guard> {
    let mut v = Vec::new();
    v.push(Guard::new(
        "none",
        "no guard",
        "nothing but the unit's limits",
    ));

    let mut g = Guard::new(
        "earlyoom",
        "earlyoom",
        "seed 000's flags: SIGTERM at 5 % MemAvailable, SIGKILL at 3 %, swap ignored (`-s 100`), \
         `--avoid` the admin's daemons, `--prefer` the agent and browser hogs; `-r 10` adds a memory report every 10 s",
    );
    g.files.push((
        "/etc/default/earlyoom".into(),
        // No quotes around the regexes: systemd splits $EARLYOOM_ARGS at
        // whitespace and passes quotes through literally.
        "EARLYOOM_ARGS=\"-m 5,3 -s 100 -r 10 --avoid ^(sshd|systemd|dockerd|containerd|t3-dispatch|tmux)$ --prefer ^(claude|node|chrome|chromium|ugrep|rg)$\"\n".into(),
    ));
    g.start.push("earlyoom.service");
    v.push(g);

    let mut g = Guard::new(
        "systemd-oomd",
        "systemd-oomd",
        "seed 002's backstop: `ManagedOOMMemoryPressure=kill` on the unit's slice, with its defaults \
         (`oomctl`: 60 % memory pressure for 20 s)",
    );
    g.files.push((
        format!("/etc/systemd/system/{T3_SLICE}.d/50-managed-oom.conf"),
        "[Slice]\nManagedOOMMemoryPressure=kill\n".into(),
    ));
    g.start.push("systemd-oomd.service");
    g.probes.push(vec!["oomctl"]);
    g.needs_package = Some("systemd-oomd");
    v.push(g);

    let mut g = Guard::new(
        "oomd",
        "oomd (documented)",
        "its documented ruleset on the unit's slice: `pressure_above` 60 % for 30 s AND `memory_reclaim` \
         within 10 s, then `kill_by_memory_size_or_growth`; Debian's options without the cgroup-v1 path",
    );
    g.files.push((
        "/etc/default/oomd".into(),
        "DAEMON_OPTS=\"--interval 1 --config /etc/oomd/oomd.json\"\n".into(),
    ));
    g.files
        .push(("/etc/oomd/oomd.json".into(), oomd_config("60", "30", true)));
    g.start.push("oomd.service");
    g.probes
        .push(vec!["oomd", "--check-config", "/etc/oomd/oomd.json"]);
    v.push(g);

    let mut g = Guard::new(
        "oomd-aggressive",
        "oomd (aggressive)",
        "the most aggressive setting it accepts: `pressure_above` 0 % for 0 s alone (any pressure, at once), \
         1 s polling, the same kill plugin",
    );
    g.files.push((
        "/etc/default/oomd".into(),
        "DAEMON_OPTS=\"--interval 1 --config /etc/oomd/oomd.json\"\n".into(),
    ));
    g.files
        .push(("/etc/oomd/oomd.json".into(), oomd_config("0", "0", false)));
    g.start.push("oomd.service");
    g.probes
        .push(vec!["oomd", "--check-config", "/etc/oomd/oomd.json"]);
    v.push(g);

    let mut g = Guard::new(
        "nohang",
        "nohang",
        "its packaged nohang.conf with `psi_checking_enabled = True` (system-wide `full_avg10`, soft 40, \
         hard 90, for 30 s); its configuration and PSI readings logged (`print_config_at_startup`, `debug_psi`)",
    );
    for (from, to) in [
        (
            "psi_checking_enabled = False",
            "psi_checking_enabled = True",
        ),
        (
            "print_config_at_startup = False",
            "print_config_at_startup = True",
        ),
        ("debug_psi = False", "debug_psi = True"),
    ] {
        g.edits
            .push(("/etc/nohang/nohang.conf".into(), from.into(), to.into()));
    }
    g.start.push("nohang.service");
    v.push(g);

    let mut g = Guard::new(
        "memtrace",
        "memtrace agent",
        "as shipped: docs/examples/memtrace-agent.service and docs/examples/agent.toml (budget `work`: \
         30 % of 10 s throttled on `/system.slice/**/t3-serve@*.service`, kill-largest, avoid `^t3$`)",
    );
    g.memtrace = true;
    // The shipped configuration's sinks read their secrets from the
    // unit's EnvironmentFile, as an operator sets them up: both point at
    // a real receiver in the guest (the webhook's own URL in agent.toml is
    // http://127.0.0.1:8080/memtrace).
    g.files.push((
        "/etc/memtrace/secrets.env".into(),
        format!(
            "MEMTRACE_DISCORD_URL=http://127.0.0.1:{RECEIVER_PORT}/discord\nMEMTRACE_WEBHOOK_TOKEN=ci-token\n"
        ),
    ));
    g.receiver_port = Some(RECEIVER_PORT);
    g.start.push("memtrace-agent.service");
    g.probes.push(vec![
        "/usr/bin/memtrace",
        "agent",
        "--check-config",
        "--config",
        "/etc/memtrace/agent.toml",
    ]);
    g.collect.push("/var/log/memtrace/kills.jsonl");
    v.push(g);
    v
}

pub fn guard(name: &str) -> Result<Guard> {
    let all = guards();
    let names: Vec<&str> = all.iter().map(|g| g.name).collect();
    let names = names.join(", ");
    all.into_iter()
        .find(|g| g.name == name)
        .with_context(|| format!("unknown guard `{name}`: choose {names}"))
}

/// The release binaries the payload brings.
pub fn build_binaries() -> Result<PathBuf> {
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "memtrace",
        "-p",
        "memtrace-tests",
        "--bin",
        "memtrace",
        "--bin",
        "debian-guest",
        "--bin",
        "t3-standin",
        "--bin",
        "hog",
    ])
    .context("building memtrace and the Debian guest's programs (release)")?;
    Ok(cmd::workspace_root().join("target/release"))
}

pub struct Timing {
    /// Seconds to watch after the plateau when nothing ends the incident.
    pub observe_s: f64,
    /// Seconds to keep watching after a recovery.
    pub after_recovery_s: f64,
}

/// The example configuration's secrets (its Discord and webhook sinks name
/// them with `url_env`/`token_env`, and a file whose variables are unset
/// does not load), as an operator puts them beside it for the unit's
/// `EnvironmentFile=`. They point at a closed port on the guest's own
/// loopback: those deliveries fail and are counted.
const SECRETS: &str =
    "MEMTRACE_DISCORD_URL=http://127.0.0.1:9/discord\nMEMTRACE_WEBHOOK_TOKEN=ci-token\n";

/// A configuration that parses as TOML but does not validate: the
/// packaged unit's reload must refuse it and keep the running one.
const BROKEN_CONFIG: &str = "[[budget]]\ncgroup = \"/system.slice/**\"\nmax_throttled = \"300%\"\n";

/// What the CI case does with the package before the incident, in order;
/// each step must end as expected or the run fails there. The packaged
/// configuration kills nothing, so the kill that follows also proves the
/// reload to the example configuration took effect.
fn package_steps() -> Vec<Value> {
    let step = |name: &str, argv: &[&str], succeed: bool| json!({ "name": name, "argv": argv, "succeed": succeed });
    let unit = "memtrace-agent.service";
    vec![
        step(
            "install",
            &[
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                "/root/memtrace.deb",
            ],
            true,
        ),
        step(
            "started by the package",
            &["systemctl", "is-active", unit],
            true,
        ),
        step(
            "pid before",
            &["systemctl", "show", "-p", "MainPID", "--value", unit],
            true,
        ),
        step(
            "break the file",
            &["cp", "/root/broken.toml", "/etc/memtrace/agent.toml"],
            true,
        ),
        step(
            "reload a broken file",
            &["systemctl", "reload", unit],
            false,
        ),
        step("still active", &["systemctl", "is-active", unit], true),
        step(
            "pid after",
            &["systemctl", "show", "-p", "MainPID", "--value", unit],
            true,
        ),
        step(
            "configure",
            &["cp", "/root/agent.toml", "/etc/memtrace/agent.toml"],
            true,
        ),
        step("reload", &["systemctl", "reload", unit], true),
        step(
            "active after reload",
            &["systemctl", "is-active", unit],
            true,
        ),
    ]
}

/// Boots one guest with one guard and returns its result line.
pub fn run(
    image: &Image,
    g: &Guard,
    release: &Path,
    run_name: &str,
    timing: &Timing,
) -> Result<Value> {
    let run_dir = cmd::workspace_root()
        .join("target/debian/runs")
        .join(image.suite.name)
        .join(run_name);
    std::fs::create_dir_all(&run_dir)?;
    let mut p = Payload::new(&run_dir, image.suite.old_glibc)?;
    p.binary(&release.join("debian-guest"), None)?;
    // The names checks squeeze a transient scope with it.
    p.binary(&release.join("hog"), Some("/usr/bin/hog"))?;
    p.binary(&release.join("t3-standin"), Some("/usr/bin/t3"))?;
    p.file("/etc/systemd/system/t3-serve@.service", &t3_unit(), 0o644)?;
    for (to, text) in &g.files {
        p.file(to, text, 0o644)?;
    }
    let root = cmd::workspace_root();
    let example = || {
        std::fs::read_to_string(root.join("docs/examples/agent.toml"))
            .context("reading docs/examples/agent.toml")
    };
    let mut steps = Vec::new();
    match (&g.deb, g.memtrace) {
        (Some(deb), true) => {
            p.copy(deb, "/root/memtrace.deb", 0o644)?;
            p.file("/root/agent.toml", &example()?, 0o644)?;
            p.file("/root/broken.toml", BROKEN_CONFIG, 0o644)?;
            names::pager(&mut p)?;
            p.file("/etc/memtrace/secrets.env", SECRETS, 0o600)?;
            steps = package_steps();
        }
        (None, true) => {
            p.binary(&release.join("memtrace"), Some("/usr/bin/memtrace"))?;
            let unit = std::fs::read_to_string(root.join("docs/examples/memtrace-agent.service"))
                .context("reading docs/examples/memtrace-agent.service")?;
            p.file("/etc/systemd/system/memtrace-agent.service", &unit, 0o644)?;
            p.file("/etc/memtrace/agent.toml", &example()?, 0o644)?;
            names::pager(&mut p)?;
            p.file("/etc/memtrace/secrets.env", SECRETS, 0o600)?;
        }
        _ => {}
    }
    let plan = json!({
        "run": run_name,
        "guard": g.name,
        "start": g.start,
        "journal_units": g.start,
        "edits": g.edits.iter().map(|(f, a, b)| json!({"file": f, "replace": a, "with": b})).collect::<Vec<_>>(),
        "steps": steps,
        "probes": g.probes,
        "collect": g.collect,
        "after": g.after,
        "unit": unit_name(),
        "port": PORT,
        "interval_ms": INTERVAL_MS,
        "watchdog_ms": WATCHDOG_MS,
        "baseline_s": BASELINE_S,
        "observe_s": timing.observe_s,
        "after_recovery_s": timing.after_recovery_s,
        "recovery_run": RECOVERY_RUN,
        "receiver_port": g.receiver_port,
    });
    let disk = p.build(plan, &run_dir.join("payload.img"))?;
    let label = format!("{} {}", image.suite.name, g.name);
    let mut guest = Guest::new(&label, image, &disk, run_dir.clone());
    // The scenario reports every 10 s; a whole run is under three minutes.
    guest.progress_timeout = Duration::from_secs(120);
    let mut boot = guest.boot()?;
    if boot.timed_out && boot.results.is_empty() {
        eprintln!(
            "[{label}] the guest never reported; booting it once more. Its console:\n{}",
            boot.console_tail(15)
        );
        boot = guest.boot()?;
    }
    let result = boot
        .results
        .iter()
        .find(|r| r.get("run").is_some())
        .cloned();
    let Some(mut result) = result else {
        bail!(
            "[{label}] the guest sent no result ({}, {:.0} s); console ({}):\n{}",
            if boot.timed_out {
                "timed out"
            } else {
                "it powered off"
            },
            boot.elapsed.as_secs_f64(),
            run_dir.join("console.log").display(),
            boot.console_tail(40)
        );
    };
    if let Some(e) = result.get("error") {
        bail!(
            "[{label}] the guest's run failed: {}; console ({}):\n{}",
            e.as_str().unwrap_or("?"),
            run_dir.join("console.log").display(),
            boot.console_tail(40)
        );
    }
    if let Some(o) = result.as_object_mut() {
        o.insert(
            "vm_seconds".into(),
            json!(boot.elapsed.as_secs_f64().round()),
        );
        o.insert("kernel_package".into(), json!(image.kernel_package));
        if let Some(h) = boot.results.iter().find(|r| r.get("hello").is_some()) {
            o.insert("kernel".into(), h["hello"].clone());
            o.insert("os".into(), h["os"].clone());
        }
    }
    std::fs::write(
        run_dir.join("result.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    Ok(result)
}

/// The kills the kernel saw in a run, less udev's own housekeeping
/// (systemd-udevd ends its idle workers with SIGTERM a few seconds after
/// any device event).
pub fn kills(r: &Value) -> Vec<&Value> {
    r["kills"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| !(k["killer_comm"] == "systemd-udevd" && k["comm"] == "(udev-worker)"))
        .collect()
}
