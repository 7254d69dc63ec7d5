//! The scenario runner inside a test VM (started by the initramfs `init`).
//!
//! Runs the scenarios named by `memtrace.scenarios=a,b` on the kernel
//! command line, prints progress on the console, and writes one JSON line
//! per scenario to the results port, `/dev/ttyS1`, which
//! `cargo xtask vmtest` reads on the host. Ends with `{"done":true}`.

use std::time::Instant;

use memtrace_tests::guest::scenarios::{self, ALL, Ctx};
use memtrace_tests::guest::{Checks, ResultsPort, result_line};
use serde_json::json;

fn main() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let wanted: Vec<String> = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("memtrace.scenarios="))
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| ALL.iter().map(|(n, _)| n.to_string()).collect());
    let port_path = std::env::var("MEMTRACE_RESULTS").unwrap_or_else(|_| "/dev/ttyS1".into());
    let mut port = match ResultsPort::open(&port_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vm-guest: cannot open results port {port_path}: {e}");
            std::process::exit(1);
        }
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    // Faults are injected (harness self-test) through the kernel command
    // line, for the memtrace processes the scenarios start.
    if let Some(fault) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("memtrace.fault="))
    {
        // SAFETY: single-threaded here, before any scenario starts threads.
        unsafe { std::env::set_var("MEMTRACE_FAULT", fault) };
    }
    // `cargo xtask vmtest --trace`: hogs report their steps, scenarios how
    // long each bounded wait took.
    if cmdline.split_whitespace().any(|w| w == "memtrace.trace=1") {
        // SAFETY: as above.
        unsafe { std::env::set_var("MEMTRACE_TEST_TRACE", "1") };
    }
    let capabilities =
        scenarios::capabilities().unwrap_or_else(|e| json!({ "error": e.to_string() }));
    port.send(&json!({ "hello": kernel, "scenarios": wanted, "capabilities": capabilities }));
    let ctx = Ctx {
        kernel: kernel.clone(),
        capabilities,
    };
    for name in &wanted {
        eprintln!("vm-guest: === {name} ===");
        let start = Instant::now();
        let mut checks = Checks::default();
        let error = match ALL.iter().chain(scenarios::BENCH).find(|(n, _)| n == name) {
            Some((_, f)) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                f(&ctx, &mut checks)
            })) {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("the scenario panicked".into()),
            },
            None => Some(format!("no scenario named `{name}`")),
        };
        for (file, bytes) in std::mem::take(&mut checks.artifacts) {
            port.send_file(&file, &bytes);
        }
        let line = result_line(&kernel, name, checks, error, start.elapsed());
        eprintln!("vm-guest: {name}: {}", line["status"]);
        port.send(&line);
    }
    port.send(&json!({ "done": true }));
}
