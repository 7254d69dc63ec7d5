//! A memory hog for memtrace's scenarios: allocates anonymous memory in
//! steps, touching every page so it is really charged, then holds it.
//! While holding it can keep charging a little memory (`--churn-kb`) the way
//! a real workload does, which is what keeps a task over memory.high
//! throttled on every return to user space.
//!
//! hog --mb 100 [--step-mb 4] [--hold 8] [--churn-kb 256] [--until SECS] [--ready FILE]
//!
//! Writes "allocated N MiB" to stdout when done allocating, and creates
//! `--ready FILE` at that moment if asked. `--until` bounds the hog's whole
//! life: throttling slows allocation differently on every kernel, and a
//! scenario needs a hog that plateaus for a known time, not one that takes
//! minutes to get there.

use std::time::{Duration, Instant};

fn main() {
    let mut mb = 64usize;
    let mut step_mb = 4usize;
    let mut hold = 0f64;
    let mut churn_kb = 0usize;
    let mut ready: Option<String> = None;
    let mut until_secs: Option<f64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--mb" => mb = num(&val()),
            "--step-mb" => step_mb = num::<usize>(&val()).max(1),
            "--hold" => hold = num(&val()),
            "--churn-kb" => churn_kb = num(&val()),
            "--ready" => ready = Some(val()),
            "--until" => until_secs = Some(num(&val())),
            // A marker for avoid/prefer rules, which match the cmdline.
            "--tag" => drop(val()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let page = 4096;
    let born = Instant::now();
    let end_of_life = until_secs.map(|s| born + Duration::from_secs_f64(s));
    let expired = || end_of_life.is_some_and(|t| Instant::now() >= t);
    let mut held: Vec<Region> = Vec::new();
    let mut done = 0;
    while done < mb && !expired() {
        let n = step_mb.min(mb - done);
        held.push(Region::touch(n << 20, page));
        done += n;
    }
    println!("allocated {done} MiB");
    if let Some(path) = ready {
        let _ = std::fs::write(path, format!("{}\n", std::process::id()));
    }
    let mut until = Instant::now() + Duration::from_secs_f64(hold);
    if let Some(t) = end_of_life {
        until = t;
    }
    while Instant::now() < until {
        if churn_kb > 0 {
            drop(Region::touch(churn_kb << 10, page));
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(held);
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| usage(&format!("not a number: {s}")))
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "hog: {msg}\nusage: hog --mb N [--step-mb N] [--hold SECS] [--churn-kb N] [--ready FILE]"
    );
    std::process::exit(2);
}

/// An anonymous mapping with every page written once.
struct Region {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Region {
    fn touch(len: usize, page: usize) -> Self {
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
        for off in (0..len).step_by(page) {
            // SAFETY: off < len, inside the mapping.
            unsafe { bytes.add(off).write_volatile(1) };
        }
        Self { ptr, len }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
