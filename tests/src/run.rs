//! Running memtrace and the scenario programs as real processes.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long memtrace may take from its start to "tracing" (events, record)
/// or "ready" (agent): loading and verifying its eBPF programs, which in
/// the VMs (TCG, three guests on two busy host cores) took at most 7.8 s.
pub const MEMTRACE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// `cargo xtask vmtest --trace` (`MEMTRACE_TEST_TRACE=1` in the guest): one
/// line per bounded wait on stderr, `wait-trace FILE:LINE took MS of
/// BOUND_MS (ok|timed out)`, naming the wait's caller: the measurements
/// behind the time bounds (docs/testing.md, "Time bounds").
pub struct WaitTrace {
    at: Option<(&'static std::panic::Location<'static>, Instant, Duration)>,
}

impl WaitTrace {
    #[track_caller]
    pub fn start(bound: Duration) -> Self {
        let on = std::env::var_os("MEMTRACE_TEST_TRACE").is_some_and(|v| v == "1");
        let caller = std::panic::Location::caller();
        Self {
            at: on.then(|| (caller, Instant::now(), bound)),
        }
    }

    /// Prints the line (when tracing) and passes `ok` through.
    pub fn end(self, ok: bool) -> bool {
        if let Some((loc, since, bound)) = self.at {
            eprintln!(
                "wait-trace {}:{} took {:.0} of {:.0} ms ({})",
                loc.file(),
                loc.line(),
                since.elapsed().as_secs_f64() * 1e3,
                bound.as_secs_f64() * 1e3,
                if ok { "ok" } else { "timed out" }
            );
        }
        ok
    }
}

/// A binary of this workspace: `$MEMTRACE_<NAME>_BIN` if set, else next to
/// the running test (`target/<profile>/`). `cargo xtask test` builds them
/// first.
pub fn workspace_bin(name: &str) -> PathBuf {
    let var = format!("MEMTRACE_{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/test-xxx → target/debug/name
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p {}` (or `cargo xtask test`), or set {var}",
        path.display(),
        if name == "memtrace" {
            "memtrace"
        } else {
            "memtrace-tests"
        }
    );
    path
}

/// A command whose child first moves itself into a cgroup, so everything
/// it allocates is charged there from its first page.
pub fn in_cgroup(program: &Path, procs_file: &Path) -> Command {
    let mut cmd = Command::new(program);
    let procs = procs_file.to_path_buf();
    // SAFETY: the closure only writes a file (async-signal-safe enough for
    // a test helper: no locks are held across fork in this process).
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, b"0\n"));
    }
    cmd
}

/// `memtrace events --json` running in the background.
pub struct EventsRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    collected: Vec<Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl EventsRun {
    /// Starts memtrace with `args` after `events --json`, and waits for it
    /// to say it is tracing.
    #[track_caller]
    pub fn start(memtrace: &Path, args: &[&str]) -> Result<Self> {
        Self::start_with_env(memtrace, args, &[])
    }

    /// Like [`Self::start`], with extra environment variables.
    #[track_caller]
    pub fn start_with_env(memtrace: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let trace = WaitTrace::start(MEMTRACE_START_TIMEOUT);
        let mut child = Command::new(memtrace)
            .envs(env.iter().copied())
            .arg("events")
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", memtrace.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = err_text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("tracing (") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let mut run = Self {
            child,
            lines,
            collected: Vec::new(),
            stderr: err_text,
        };
        let ready = ready_rx.recv_timeout(MEMTRACE_START_TIMEOUT).is_ok();
        if trace.end(ready) {
            Ok(run)
        } else {
            let _ = run.child.kill();
            bail!(
                "memtrace did not start tracing within {MEMTRACE_START_TIMEOUT:?}; stderr:\n{}",
                run.stderr_text()
            )
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Collects events until `pred` holds for one of them, or the timeout.
    #[track_caller]
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let trace = WaitTrace::start(timeout);
        let found = self.wait_for_inner(timeout, pred);
        trace.end(found.is_some());
        found
    }

    fn wait_for_inner(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(v) = self.collected.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        let hit = pred(&v);
                        self.collected.push(v.clone());
                        if hit {
                            return Some(v);
                        }
                    }
                }
                Err(_) => break,
            }
        }
        None
    }

    /// The memtrace process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops memtrace with SIGINT and returns every event it printed.
    pub fn stop(mut self) -> Result<Vec<Value>> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                self.collected.push(v);
            }
        }
        if !status.success() {
            bail!(
                "memtrace exited with {status}; stderr:\n{}",
                self.stderr_text()
            );
        }
        Ok(std::mem::take(&mut self.collected))
    }
}

impl Drop for EventsRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// From SIGTERM to the agent's exit (it finishes its loop pass, flushes and
/// detaches): measured at most 2.7 s in the VMs; past it the agent is
/// killed.
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `memtrace agent` running in the background, its log collected.
pub struct AgentRun {
    pub child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl AgentRun {
    /// Starts the agent and waits until it says it is ready. Each run has
    /// its own host lock (unless `args` name one), so tests on a machine
    /// that runs other agents do not meet theirs.
    #[track_caller]
    pub fn start(memtrace: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = Command::new(memtrace);
        cmd.arg("agent").args(args);
        if !args.contains(&"--lock-file") {
            static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cmd.arg("--lock-file").arg(
                std::env::temp_dir()
                    .join(format!("memtrace-test-{}-{n}", std::process::id()))
                    .join("agent.lock"),
            );
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} agent", memtrace.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("agent: {line}");
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let mut run = Self { child, log };
        if !run.wait_log(MEMTRACE_START_TIMEOUT, "memtrace agent ready") {
            let status = run.child.try_wait()?;
            bail!(
                "the agent did not get ready (status {status:?}); log:\n{}",
                run.log_text()
            );
        }
        Ok(run)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits for a log line containing `needle`.
    #[track_caller]
    pub fn wait_log(&mut self, timeout: Duration, needle: &str) -> bool {
        let trace = WaitTrace::start(timeout);
        let found = self.wait_log_inner(timeout, needle);
        trace.end(found)
    }

    fn wait_log_inner(&mut self, timeout: Duration, needle: &str) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self
                .log
                .lock()
                .is_ok_and(|l| l.iter().any(|x| x.contains(needle)))
            {
                return true;
            }
            if Instant::now() > end || self.child.try_wait().ok().flatten().is_some() {
                return self
                    .log
                    .lock()
                    .is_ok_and(|l| l.iter().any(|x| x.contains(needle)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stops the agent (SIGTERM) and returns its log.
    #[track_caller]
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
        let trace = WaitTrace::start(AGENT_STOP_TIMEOUT);
        let end = Instant::now() + AGENT_STOP_TIMEOUT;
        let mut stopped = false;
        while Instant::now() < end {
            if self.child.try_wait().ok().flatten().is_some() {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        trace.end(stopped);
        std::thread::sleep(Duration::from_millis(100));
        self.log_text()
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
