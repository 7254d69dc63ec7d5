//! The test runner inside a Debian guest with systemd (started by the
//! image's `memtrace-payload.service` from the payload disk):
//! `debian-guest /mnt/payload` reads `plan.json` there, runs it
//! (`memtrace_tests::guest::systemd`), writes the result as one JSON line
//! to the results port (`/dev/ttyS1`, read by the host) and powers the
//! guest off.

use std::path::Path;

use memtrace_tests::guest::ResultsPort;
use memtrace_tests::guest::systemd::{self, Plan};
use serde_json::json;

fn main() {
    let payload = std::env::args()
        .nth(1)
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
    let plan: Result<Plan, String> = std::fs::read_to_string(&plan_path)
        .map_err(|e| format!("reading {}: {e}", plan_path.display()))
        .and_then(|t| {
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
