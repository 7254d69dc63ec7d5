//! The VM guest runner's framework: what every scenario needs.
//!
//! Inside a test VM, `vm-guest` runs named scenarios one after another and
//! writes one JSON result line per scenario to the results port
//! (`/dev/ttyS1`, read by `cargo xtask vmtest` on the host). A scenario
//! collects every failed check rather than stopping at the first, so a
//! failure report says everything that was wrong.

pub mod agent;
pub mod host_psi;
pub mod kill_bench;
pub mod ops;
pub mod probe_cost;
pub mod probe_long;
pub mod progstats;
pub mod record;
pub mod safety;
pub mod scenarios;
pub mod screens;
pub mod systemd;
pub mod thrash;
pub mod workload;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// Results of one scenario: failed checks and measured numbers.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
    metrics: Map<String, Value>,
    skipped: Option<String>,
    /// Files to send to the host after the scenario.
    pub artifacts: Vec<(String, Vec<u8>)>,
}

impl Checks {
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    pub fn metric(&mut self, name: &str, value: impl Into<Value>) {
        self.metrics.insert(name.to_string(), value.into());
    }

    /// Records `value` unless the metric already holds a larger one.
    pub fn metric_max(&mut self, name: &str, value: f64) {
        let old = self.metrics.get(name).and_then(Value::as_f64);
        if old.is_none_or(|o| value > o) {
            self.metric(name, value);
        }
    }

    /// The kernel lacks what the scenario needs; says why.
    pub fn skip(&mut self, why: impl Into<String>) {
        self.skipped = Some(why.into());
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }
}

/// One scenario's result line.
pub fn result_line(
    kernel: &str,
    scenario: &str,
    checks: Checks,
    error: Option<String>,
    took: Duration,
) -> Value {
    let mut failures = checks.failures;
    if let Some(e) = error {
        failures.push(format!("scenario error: {e}"));
    }
    let status = if !failures.is_empty() {
        "fail"
    } else if checks.skipped.is_some() {
        "skip"
    } else {
        "pass"
    };
    json!({
        "kernel": kernel,
        "scenario": scenario,
        "status": status,
        "failures": failures,
        "skipped": checks.skipped,
        "metrics": checks.metrics,
        "seconds": took.as_secs_f64(),
    })
}

/// The results port: the second serial port, in raw mode so bytes pass
/// unchanged (the tty layer would turn `\n` into `\r\n`).
pub struct ResultsPort {
    file: std::fs::File,
}

impl ResultsPort {
    pub fn open(path: &str) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        // SAFETY: termios is plain data; the fd is valid for the calls.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(file.as_raw_fd(), &mut t) == 0 {
                libc::cfmakeraw(&mut t);
                libc::tcsetattr(file.as_raw_fd(), libc::TCSANOW, &t);
            }
        }
        Ok(Self { file })
    }

    /// Sends a file to the host (it lands in target/vmtest/artifacts/).
    pub fn send_file(&mut self, name: &str, bytes: &[u8]) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.send(&json!({ "artifact": name, "base64": b64 }));
    }

    pub fn send(&mut self, v: &Value) {
        let _ = writeln!(self.file, "{v}");
        let _ = self.file.flush();
    }
}

/// A monotonic stopwatch in milliseconds since the scenario started.
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    pub fn ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1e3
    }
}

/// Polls `f` until it returns true or the timeout passes.
#[track_caller]
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let trace = crate::run::WaitTrace::start(timeout);
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return trace.end(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    trace.end(f())
}
