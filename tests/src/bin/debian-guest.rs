//! The test runner inside a Debian guest with systemd (started by the
//! image's `memtrace-payload.service` from the payload disk):
//! `debian-guest /mnt/payload` reads `plan.json` there, runs it
//! (`memtrace_tests::guest::systemd`), writes the result as one JSON line
//! to the results port (`/dev/ttyS1`, read by the host) and powers the
//! guest off. A thrash plan (`cargo xtask thrash`) sets the guest up,
//! starts the swarm (`--swarm`, whose workers are `--worker`, this same
//! binary) and runs until the host kills the VM.

use std::path::Path;

use memtrace_tests::guest::ResultsPort;
use memtrace_tests::guest::systemd::{self, Plan};
use memtrace_tests::guest::thrash;
use serde_json::json;

fn main() {
    // The thrash benchmark's swarm and its workers are this same binary.
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--swarm") => exit_with(thrash::swarm(&args[1..])),
        Some("--worker") => exit_with(thrash::worker(&args[1..])),
        _ => {}
    }
    let payload = args
        .first()
        .cloned()
        .unwrap_or_else(|| "/mnt/payload".into());
    let port_path = std::env::var("MEMTRACE_RESULTS").unwrap_or_else(|_| "/dev/ttyS1".into());
    let mut port = match ResultsPort::open(&port_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("debian-guest: cannot open results port {port_path}: {e}");
            poweroff();
            std::process::exit(1);
        }
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("")
        .trim_matches('"')
        .to_string();
    port.send(&json!({ "hello": kernel, "os": os }));
    let plan_path = Path::new(&payload).join("plan.json");
    let text = std::fs::read_to_string(&plan_path)
        .map_err(|e| format!("reading {}: {e}", plan_path.display()));
    if let Ok(t) = &text
        && serde_json::from_str::<serde_json::Value>(t).is_ok_and(|v| v["kind"] == "thrash")
    {
        let result = serde_json::from_str::<thrash::ThrashPlan>(t)
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", plan_path.display()))
            .and_then(|plan| {
                eprintln!("debian-guest: === {} ===", plan.run);
                thrash::run(Path::new(&payload), &plan, &mut |v| port.send(v))
            });
        // It returns only when setting up failed: say so, and stay up so
        // the host reads the console.
        if let Err(e) = result {
            eprintln!("debian-guest: FAILED: {e:#}");
            port.send(&json!({ "error": format!("{e:#}") }));
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let plan: Result<Plan, String> = text.and_then(|t| {
        serde_json::from_str(&t).map_err(|e| format!("parsing {}: {e}", plan_path.display()))
    });
    let result = match plan {
        Ok(plan) => {
            eprintln!("debian-guest: === {} ===", plan.run);
            systemd::run(Path::new(&payload), &plan)
                .unwrap_or_else(|e| json!({ "run": plan.run, "error": format!("{e:#}") }))
        }
        Err(e) => json!({ "error": e }),
    };
    if let Some(e) = result.get("error") {
        eprintln!("debian-guest: FAILED: {e}");
    }
    port.send(&result);
    port.send(&json!({ "done": true }));
    eprintln!("debian-guest: done, powering off");
    poweroff();
}

fn poweroff() {
    let _ = std::process::Command::new("systemctl")
        .args(["poweroff", "--no-block"])
        .status();
}

fn exit_with(r: anyhow::Result<()>) -> ! {
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("debian-guest: {e:#}");
            std::process::exit(1);
        }
    }
}
