//! A memory hog for memtrace's scenarios: allocates anonymous memory in
//! steps, touching every page so it is really charged, then holds it.
//! While holding it can keep charging a little memory (`--churn-kb`) the way
//! a real workload does, which is what keeps a task over memory.high
//! throttled on every return to user space.
//!
//! hog --mb 100 [--step-mb 4] [--hold 8] [--churn-kb 256] [--threads N] [--until SECS] [--ready FILE]
//!
//! `--threads N` churns from N threads at once while holding: N tasks that
//! the kernel throttles, each with its own episodes.
//!
//! Writes "allocated N MiB" to stdout when done allocating, and creates
//! `--ready FILE` at that moment if asked. `--hold` starts when allocation is
//! done; `--until` bounds the hog's whole life, counted from its start.
//!
//! `--until` is a hard bound, whatever the kernel does. Over memory.high the
//! kernel throttles a task on its way back to user space
//! (`mem_cgroup_handle_over_high`): up to 16 retries of reclaim, then a
//! sleep of up to 2 s, once per charge batch (64 pages). A batch is not
//! 64 page faults, though: the per-CPU charge stock caches one cgroup (6.1,
//! 6.12), so when two throttled cgroups share a CPU each drains the other's
//! stock, and the first fault after the other cgroup ran charges, and pays
//! for, a fresh batch. One 2 MiB step has taken 26 s (68 penalties in its
//! 512 faults, 6.1 with three guests on two host cores), so a deadline
//! checked between steps held only as well as the host was idle. Now the
//! deadline is checked before every page, so the hog stops at the first
//! return to user space after it (one throttle call late at most), and a
//! watchdog thread ends the process [`BACKSTOP`] after the deadline if even
//! that did not happen: exit_group SIGKILLs the allocating thread, which
//! wakes from the penalty's `schedule_timeout_killable` at once. Reaching
//! `--until` is a normal end: exit status 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// With tracing: when the step in progress started (µs since the hog's
/// start, plus one; 0 between steps) and its slow faults so far, for the
/// watchdog's line when the deadline cuts a step short.
static STEP_START_US: AtomicU64 = AtomicU64::new(0);
static STEP_SLOW: AtomicU64 = AtomicU64::new(0);

fn main() {
    let mut mb = 64usize;
    let mut step_mb = 4usize;
    let mut hold: Option<f64> = None;
    let mut churn_kb = 0usize;
    let mut ready: Option<String> = None;
    let mut until_secs: Option<f64> = None;
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--mb" => mb = num(&val()),
            "--step-mb" => step_mb = num::<usize>(&val()).max(1),
            "--hold" => hold = Some(num(&val())),
            "--churn-kb" => churn_kb = num(&val()),
            "--ready" => ready = Some(val()),
            "--until" => until_secs = Some(num(&val())),
            "--threads" => threads = num::<usize>(&val()).max(1),
            // A marker for avoid/prefer rules, which match the cmdline.
            "--tag" => drop(val()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let page = 4096;
    let born = Instant::now();
    let trace = Trace::from_env(born);
    let end_of_life = until_secs.map(|s| born + Duration::from_secs_f64(s));
    if let Some(deadline) = end_of_life {
        watchdog(deadline + BACKSTOP, trace);
    }
    let expired = || end_of_life.is_some_and(|t| Instant::now() >= t);
    let mut held: Vec<Region> = Vec::new();
    let mut done = 0;
    while done < mb && !expired() {
        let n = step_mb.min(mb - done);
        held.push(Region::touch(n << 20, page, trace, "alloc", end_of_life));
        done += n;
    }
    println!("allocated {done} MiB");
    if let Some(path) = ready {
        let _ = std::fs::write(path, format!("{}\n", std::process::id()));
    }
    // Holding ends after `--hold`, at the end of life, or at once.
    let hold_end = hold.map(|h| Instant::now() + Duration::from_secs_f64(h));
    let until = match (hold_end, end_of_life) {
        (Some(h), Some(t)) => h.min(t),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => Instant::now(),
    };
    let churn = move || {
        while Instant::now() < until {
            if churn_kb > 0 {
                drop(Region::touch(
                    churn_kb << 10,
                    page,
                    trace,
                    "churn",
                    end_of_life,
                ));
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let others: Vec<_> = (1..threads)
        .filter_map(|_| std::thread::Builder::new().spawn(churn).ok())
        .collect();
    churn();
    for t in others {
        let _ = t.join();
    }
    drop(held);
    trace.line(format_args!("exit at={:.2}", born.elapsed().as_secs_f64()));
}

/// `MEMTRACE_TEST_TRACE=1`: one stderr line per step (its start, length,
/// slowest page fault and faults slower than 200 ms, which are throttle
/// penalties) and one at the end, for measuring what throttling does to a
/// hog (`cargo xtask vmtest --trace`).
#[derive(Clone, Copy)]
struct Trace {
    on: bool,
    born: Instant,
}

impl Trace {
    fn from_env(born: Instant) -> Self {
        let on = std::env::var_os("MEMTRACE_TEST_TRACE").is_some_and(|v| v == "1");
        Self { on, born }
    }

    /// One line in one write(2), so lines of hogs sharing a console do not
    /// interleave.
    fn line(&self, what: std::fmt::Arguments<'_>) {
        if self.on {
            use std::io::Write;
            let text = format!("hog-trace {} {what}\n", std::process::id());
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

/// How long after `--until` the watchdog ends the process if the main
/// thread has not: the main thread stops at the deadline by itself, at the
/// latest when the page fault in flight returns, which is one throttle call
/// (reclaim, then at most 2 s of penalty; the slowest fault seen took
/// 2.12 s). Stopping from user space, rather than killing the thread inside
/// the kernel's throttle path, leaves the throttle episodes as the kernel
/// ran them (killed there at the deadline, PSI once counted 0.3 s of stall
/// after the last episode had ended). The watchdog fires mostly while the
/// hog is already unmapping its memory on the way out, which can take
/// seconds with eight hogs exiting at once.
const BACKSTOP: Duration = Duration::from_secs(3);

/// Ends the whole process at `deadline`, wherever its main thread is: in
/// user space, in reclaim, or asleep in the kernel's throttle penalty.
fn watchdog(deadline: Instant, trace: Trace) {
    let spawned = std::thread::Builder::new()
        .name("hog-deadline".into())
        // It never allocates: its stack is touched once, at start.
        .stack_size(64 << 10)
        .spawn(move || {
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                std::thread::sleep(left);
            }
            let now = trace.born.elapsed();
            let step = STEP_START_US.load(Ordering::Relaxed);
            let in_step = if step == 0 {
                "between steps".to_string()
            } else {
                let since = Duration::from_micros(step - 1);
                format!(
                    "in a step for {:.2} s with {} slow faults",
                    now.saturating_sub(since).as_secs_f64(),
                    STEP_SLOW.load(Ordering::Relaxed)
                )
            };
            trace.line(format_args!(
                "backstop at={:.2} {in_step}",
                now.as_secs_f64()
            ));
            // SAFETY: _exit is exit_group(2): it ends every thread at once
            // and runs nothing of this process on the way out, so it is
            // safe wherever the other threads are.
            unsafe { libc::_exit(0) }
        });
    if let Err(e) = spawned {
        eprintln!("hog: cannot start the --until watchdog: {e}");
        std::process::exit(1);
    }
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| usage(&format!("not a number: {s}")))
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "hog: {msg}\nusage: hog --mb N [--step-mb N] [--hold SECS] [--churn-kb N] [--threads N] [--until SECS] [--ready FILE]"
    );
    std::process::exit(2);
}

/// An anonymous mapping with every page written once.
struct Region {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Region {
    /// Maps `len` bytes and writes every page, stopping early at `stop`.
    fn touch(len: usize, page: usize, trace: Trace, what: &str, stop: Option<Instant>) -> Self {
        // SAFETY: a fresh private anonymous mapping; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            eprintln!(
                "hog: mmap of {len} bytes failed: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(1);
        }
        let bytes = ptr.cast::<u8>();
        let start = Instant::now();
        let (mut worst, mut slow) = (Duration::ZERO, 0);
        if trace.on {
            let us = start.duration_since(trace.born).as_micros() as u64;
            STEP_SLOW.store(0, Ordering::Relaxed);
            STEP_START_US.store(us + 1, Ordering::Relaxed);
        }
        for off in (0..len).step_by(page) {
            if stop.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            let t = trace.on.then(Instant::now);
            // SAFETY: off < len, inside the mapping.
            unsafe { bytes.add(off).write_volatile(1) };
            if let Some(t) = t {
                let d = t.elapsed();
                worst = worst.max(d);
                if d > Duration::from_millis(200) {
                    slow += 1;
                    STEP_SLOW.store(slow, Ordering::Relaxed);
                }
            }
        }
        STEP_START_US.store(0, Ordering::Relaxed);
        trace.line(format_args!(
            "{what} kib={} at={:.2} took={:.2} worst_fault={:.3} slow_faults={slow}",
            len >> 10,
            start.duration_since(trace.born).as_secs_f64(),
            start.elapsed().as_secs_f64(),
            worst.as_secs_f64()
        ));
        Self { ptr, len }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
