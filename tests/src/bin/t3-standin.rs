//! The stand-in for the incident's server (`t3 serve`, a Node event loop
//! behind a websocket) and for the child it spawned (a 12.3 GiB `ugrep`
//! that plateaued between MemoryHigh and MemoryMax and kept reading).
//! Installed as `/usr/bin/t3` in the Debian guests (docs/testing.md).
//!
//! t3 serve --host 127.0.0.1 --port 8300 [--alloc-kb 64] [--scan-mb 120]
//!   A TCP server on one "event loop": requests are handled one at a
//!   time under one lock, each allocating a little fresh memory as a
//!   request handler does. Lines in, lines out:
//!     `ping N`  -> `pong N`
//!     `spawn`   -> `spawned PID` (starts the scanner child)
//!   The child's end is logged (`t3: child PID ended: ...`); the server
//!   carries on, as `OOMPolicy=continue` intends.
//!
//! t3 scan --mb 120 [--step-mb 8] [--churn-kb 256]
//!   The child (it renames itself `scanner`): grows to N MiB in populated
//!   steps, then scans all of it again and again, reading a fresh 256 KiB
//!   buffer per pass, as a grep through files does. It never frees what
//!   it holds.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

struct ServeArgs {
    host: String,
    port: u16,
    alloc_kb: usize,
    scan_mb: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(parse_serve(&args[1..])),
        Some("scan") => scan(&args[1..]),
        _ => usage("expected `serve` or `scan`"),
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "t3: {msg}\nusage: t3 serve --host ADDR --port N [--alloc-kb N] [--scan-mb N]\n       \
         t3 scan --mb N [--step-mb N] [--churn-kb N]"
    );
    std::process::exit(2);
}

fn value<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> T {
    let Some(v) = v else {
        usage(&format!("{flag} needs a value"))
    };
    v.parse()
        .unwrap_or_else(|_| usage(&format!("{flag}: not a valid value: {v}")))
}

fn parse_serve(args: &[String]) -> ServeArgs {
    let mut a = ServeArgs {
        host: "127.0.0.1".into(),
        port: 8300,
        alloc_kb: 64,
        scan_mb: 120,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--host" => a.host = value(flag, it.next()),
            "--port" => a.port = value(flag, it.next()),
            "--alloc-kb" => a.alloc_kb = value(flag, it.next()),
            "--scan-mb" => a.scan_mb = value(flag, it.next()),
            // The seed's unit passes a base directory; accepted, unused.
            "--base-dir" => drop(it.next()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn serve(a: ServeArgs) {
    let addr = format!("{}:{}", a.host, a.port);
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("t3: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    eprintln!("t3: serving on {addr}, pid {}", std::process::id());
    // One lock stands for Node's single event loop: a stalled request
    // stalls every client.
    let event_loop = Arc::new(Mutex::new(()));
    let a = Arc::new(a);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (lock, a) = (event_loop.clone(), a.clone());
        std::thread::spawn(move || connection(stream, &lock, &a));
    }
}

fn connection(stream: TcpStream, event_loop: &Mutex<()>, a: &ServeArgs) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut w = &stream;
    for line in BufReader::new(read_half).lines() {
        let Ok(line) = line else { return };
        let reply = {
            let _turn = event_loop
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            handle(line.trim(), a)
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn handle(line: &str, a: &ServeArgs) -> String {
    if let Some(n) = line.strip_prefix("ping") {
        touch_fresh(a.alloc_kb << 10);
        return format!("pong{n}\n");
    }
    if line == "spawn" {
        return match spawn_scanner(a.scan_mb) {
            Ok(pid) => format!("spawned {pid}\n"),
            Err(e) => format!("error {e}\n"),
        };
    }
    format!("error unknown request `{line}`\n")
}

fn spawn_scanner(mb: usize) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["scan", "--mb", &mb.to_string()])
        .stdin(Stdio::null())
        .spawn()?;
    let pid = child.id();
    eprintln!("t3: spawned the scanner child, pid {pid}, growing to {mb} MiB");
    std::thread::spawn(move || match child.wait() {
        Ok(status) => eprintln!("t3: child {pid} ended: {status}; the server carries on"),
        Err(e) => eprintln!("t3: child {pid}: wait failed: {e}"),
    });
    Ok(pid)
}

fn scan(args: &[String]) {
    let (mut mb, mut step_mb, mut churn_kb) = (120usize, 8usize, 256usize);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--mb" => mb = value(flag, it.next()),
            "--step-mb" => step_mb = value::<usize>(flag, it.next()).max(1),
            "--churn-kb" => churn_kb = value(flag, it.next()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"scanner".as_ptr()) };
    let mut held: Vec<Region> = Vec::new();
    let mut done = 0;
    while done < mb {
        let n = step_mb.min(mb - done);
        held.push(Region::populated(n << 20));
        done += n;
    }
    eprintln!("scanner: holding {done} MiB; scanning");
    let mut sum = 0u64;
    loop {
        for r in &held {
            sum = sum.wrapping_add(r.scan());
        }
        if churn_kb > 0 {
            drop(Region::populated(churn_kb << 10));
        }
        std::hint::black_box(sum);
    }
}

/// Maps, writes and unmaps `len` bytes: every page is a new charge.
fn touch_fresh(len: usize) {
    drop(Region::populated(len));
}

/// A private anonymous mapping, every page written (faulted in by the
/// kernel in one call, as a large read into a fresh buffer is).
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    fn populated(len: usize) -> Self {
        // SAFETY: a fresh private anonymous mapping; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            eprintln!(
                "t3: mmap of {len} bytes failed: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(1);
        }
        let ptr = ptr.cast::<u8>();
        for off in (0..len).step_by(4096) {
            // SAFETY: off < len, inside the mapping.
            unsafe { ptr.add(off).write_volatile(1) };
        }
        Self { ptr, len }
    }

    /// Reads one byte of every page.
    fn scan(&self) -> u64 {
        (0..self.len)
            .step_by(4096)
            // SAFETY: off < len, inside the mapping.
            .map(|off| u64::from(unsafe { self.ptr.add(off).read_volatile() }))
            .sum()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
