//! A small request/response server for the VM scenarios: it stands for the
//! service that shares a cgroup with a hog. Each request allocates and
//! touches a little memory (as any real request handler does), so when the
//! cgroup is over memory.high the server is throttled too and its response
//! latency shows the stall.
//!
//! latency-server SOCKET_PATH [--alloc-kb 256]
//!
//! The memory is a fresh anonymous mapping per request, unmapped after:
//! heap memory would be reused without new page faults, and so without new
//! charges to the cgroup.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: latency-server SOCKET_PATH [--alloc-kb N]");
        std::process::exit(2);
    };
    let mut alloc_kb = 256usize;
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--alloc-kb", Some(v)) => alloc_kb = v,
            _ => {
                eprintln!("latency-server: bad argument {a}");
                std::process::exit(2);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap_or_else(|e| {
        eprintln!("latency-server: cannot bind {path}: {e}");
        std::process::exit(1);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        touch_fresh(alloc_kb << 10);
        let mut w = &stream;
        let _ = w.write_all(b"ok\n");
    }
}

/// Maps, writes and unmaps `len` bytes: every page is a new charge.
fn touch_fresh(len: usize) {
    // SAFETY: a private anonymous mapping, checked, written within bounds,
    // then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return;
        }
        for off in (0..len).step_by(4096) {
            p.cast::<u8>().add(off).write_volatile(1);
        }
        libc::munmap(p, len);
    }
}
