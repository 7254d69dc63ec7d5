//! Recordings: bytes per event, write and read speed, and `report`,
//! `export` (every format) and `replay` of a one-hour recording, each run
//! as its own process so its peak resident memory is its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memtrace::writer::{Fsync, TimeResolution, Writer};
use memtrace::{
    CgroupMemory, CgroupSample, Comm, Event, Header, HostMemory, MemEvents, ProcSample, Psi,
    Reclaim, Sample, Task, Throttle, reader,
};

use crate::{Rows, SEC, measure};

/// A deterministic xorshift generator: the same mix on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Log-uniform between `lo` and `hi`: latencies spread over decades.
    pub fn log_between(&mut self, lo: u64, hi: u64) -> u64 {
        let f = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        (a + f * (b - a)).exp() as u64
    }
}

/// The benchmark's cgroups: containers of a Kubernetes node, with the
/// paths the systemd cgroup driver gives them.
pub fn cgroup_path(i: u64) -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{i:08x}_4b1e_4f0c_9d2a_{i:012x}.slice/cri-containerd-{:064x}.scope",
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

const CGROUPS: u64 = 8;
const TASKS: u64 = 40;

/// The benchmark mix: 2/3 memcg reclaim passes, 1/3 throttle episodes, in
/// 8 containers with 40 tasks, at `rate` events a second with random
/// gaps; latencies log-uniform (reclaim 20 µs to 5 ms, throttle 1 ms to
/// 500 ms), pages and over-high cgroups varied as in a real incident.
pub fn events(n: u64, rate: u64, seed: u64) -> impl Iterator<Item = Event> {
    let mut rng = Rng::new(seed);
    let pids: Vec<(u32, u32, u64)> = (0..TASKS)
        .map(|i| {
            let tgid = 1000 + rng.below(60_000) as u32;
            // A third of the tasks are threads of another.
            let pid = if i % 3 == 2 {
                tgid + 1 + i as u32
            } else {
                tgid
            };
            (pid, tgid, i % CGROUPS)
        })
        .collect();
    let comms = ["postgres", "node", "java", "nginx", "python3", "envoy"];
    let mut ts = SEC;
    (0..n).map(move |_| {
        ts += rng.below(2 * SEC / rate) + 1;
        let (pid, tgid, cg) = pids[rng.below(TASKS) as usize];
        let task = Task {
            pid,
            tgid,
            comm: Comm::new(comms[(tgid as usize) % comms.len()]),
        };
        let memcg_id = 5000 + cg;
        if rng.below(3) == 0 {
            let d = rng.log_between(1_000_000, 500_000_000);
            Event::Throttle(Throttle {
                ts_ns: ts,
                start_ns: ts - d,
                task,
                memcg_id,
                over_high_id: if rng.below(4) == 0 { 4999 } else { memcg_id },
                reclaim_ns: rng.log_between(10_000, d.max(10_001)),
                reclaimed_pages: rng.below(64),
                nr_pages: 1 + rng.below(512) as u32,
            })
        } else {
            let d = rng.log_between(20_000, 5_000_000);
            Event::Reclaim(Reclaim {
                ts_ns: ts,
                start_ns: ts - d,
                task,
                memcg_id,
                memcg_exact: true,
                in_throttle: rng.below(2) == 0,
                nr_reclaimed: rng.below(65),
            })
        }
    })
}

/// The once-a-second sample of the benchmark's cgroups.
fn sample(ts_ns: u64, rng: &mut Rng) -> Sample {
    let psi = |rng: &mut Rng| Psi {
        some_avg10: rng.below(10_000) as f32 / 100.0,
        full_avg10: rng.below(10_000) as f32 / 100.0,
        some_total_us: ts_ns / 2_000,
        full_total_us: ts_ns / 3_000,
    };
    Sample {
        ts_ns,
        host: HostMemory {
            mem_total: 24 << 30,
            mem_available: (8 << 30) + rng.below(1 << 30),
            swap_total: 0,
            swap_free: 0,
            pressure: Some(psi(rng)),
        },
        cgroups: (0..CGROUPS)
            .map(|i| CgroupSample {
                id: 5000 + i,
                mem: CgroupMemory {
                    current: Some((600 << 20) + rng.below(64 << 20)),
                    high: Some(640 << 20),
                    max: Some(1 << 30),
                    events: MemEvents {
                        high: Some(ts_ns / SEC * 40 + rng.below(40)),
                        ..Default::default()
                    },
                    pressure: Some(psi(rng)),
                },
                top: (0..5)
                    .map(|k| ProcSample {
                        pid: 1000 + (i * 5 + k) as u32,
                        comm: "postgres".into(),
                        rss_bytes: (100 << 20) + rng.below(100 << 20),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn paths(id: u64) -> Option<Arc<str>> {
    Some(Arc::from(if id == 4999 {
        "/kubepods.slice/kubepods-burstable.slice".to_string()
    } else {
        cgroup_path(id)
    }))
}

/// Writes `evs` as `memtrace record` does: a chunk each second of recorded
/// time, a sample each second if `samples`.
fn write<'a>(path: &Path, evs: impl IntoIterator<Item = &'a Event>, samples: bool) -> u64 {
    write_at(path, evs, samples, TimeResolution::Ns)
}

/// [`write`] at a time resolution (`memtrace record --time-resolution`).
fn write_at<'a>(
    path: &Path,
    evs: impl IntoIterator<Item = &'a Event>,
    samples: bool,
    resolution: TimeResolution,
) -> u64 {
    let mut w = Writer::create(path, &Header::default(), Fsync::Never, true).unwrap();
    w.set_time_resolution(resolution);
    let mut rng = Rng::new(7);
    let mut next_second = 2 * SEC;
    for e in evs {
        while e.ts_ns() >= next_second {
            if samples {
                w.sample(&sample(next_second, &mut rng), &mut paths)
                    .unwrap();
            }
            w.flush().unwrap();
            next_second += SEC;
        }
        w.event(e, &mut paths).unwrap();
    }
    w.close().unwrap()
}

fn write_owned(path: &Path, evs: impl Iterator<Item = Event>) -> u64 {
    let mut w = Writer::create(path, &Header::default(), Fsync::Never, true).unwrap();
    let mut rng = Rng::new(7);
    let mut next_second = 2 * SEC;
    for e in evs {
        while e.ts_ns() >= next_second {
            w.sample(&sample(next_second, &mut rng), &mut paths)
                .unwrap();
            w.flush().unwrap();
            next_second += SEC;
        }
        w.event(&e, &mut paths).unwrap();
    }
    w.close().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    // The target directory: /tmp may be a small tmpfs.
    let dir = memtrace_tests::run::workspace_bin("memtrace")
        .parent()
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("bench-data");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("{name}-{}.mtr", std::process::id()))
}

pub fn size_and_speed(rows: &mut Rows) {
    let n = 200_000u64;
    let evs: Vec<Event> = events(n, 1000, 42).collect();
    let path = tmp("mix");
    let raw = {
        // As this build writes it, times to the nanosecond.
        let bytes = write(&path, &evs, false);
        let rec = reader::read(&path).unwrap();
        assert_eq!(rec.records.len() as u64, n, "the mix reads back whole");
        bytes
    };
    rows.row(
        "record: bytes per event, benchmark mix (2/3 reclaim, 1/3 throttle, 1,000/s)",
        format!("{:.2} B", raw as f64 / n as f64),
        "goal ≤ 8 B; format 3 (by column, zstd per part), a chunk per second",
    );
    let with_samples = write(&path, &evs, true);
    rows.row(
        "record: bytes per event, the same with a sample a second (8 cgroups, 5 processes each)",
        format!("{:.2} B", with_samples as f64 / n as f64),
        "samples included in the file",
    );
    let us = write_at(&path, &evs, false, TimeResolution::Us);
    let rec = reader::read(&path).unwrap();
    assert_eq!(rec.records.len() as u64, n, "the mix reads back whole");
    rows.row(
        "record: bytes per event, benchmark mix, `--time-resolution us`",
        format!("{:.2} B", us as f64 / n as f64),
        "times rounded to the microsecond",
    );
    let us_samples = write_at(&path, &evs, true, TimeResolution::Us);
    rows.row(
        "record: bytes per event, `--time-resolution us` with a sample a second",
        format!("{:.2} B", us_samples as f64 / n as f64),
        "samples included in the file",
    );
    let (median, p90) = measure(5, || {
        write(&path, &evs, false);
    });
    rows.row(
        &format!("record: encode, compress and write {n} events (page cache)"),
        format!(
            "{:.0} ms, {:.2} M events/s",
            median.as_secs_f64() * 1e3,
            n as f64 / median.as_secs_f64() / 1e6
        ),
        &format!("p90 {:.0} ms", p90.as_secs_f64() * 1e3),
    );
    let bytes = std::fs::read(&path).unwrap();
    let (median, _) = measure(5, || {
        let r = reader::parse(&bytes).unwrap();
        assert_eq!(r.records.len() as u64, n);
    });
    rows.row(
        &format!(
            "read: decompress and decode {:.1} MiB ({n} events)",
            bytes.len() as f64 / (1 << 20) as f64
        ),
        format!(
            "{:.0} ms, {:.2} M events/s",
            median.as_secs_f64() * 1e3,
            n as f64 / median.as_secs_f64() / 1e6
        ),
        "",
    );
    let _ = std::fs::remove_file(&path);
}

/// A process's peak resident memory so far (`VmHWM`), bytes.
pub fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    Some(
        kb.trim()
            .trim_end_matches(" kB")
            .trim()
            .parse::<u64>()
            .ok()?
            * 1024,
    )
}

/// Wall time, CPU time and peak resident memory of a child process. The
/// peak is the child's own `VmHWM`, read every few milliseconds until it
/// exits (the rusage of wait4 would include the memory of this process,
/// which the child inherits the accounting of at exec).
/// Runs a child to its end: wall time, user and system CPU time, peak
/// resident bytes, and whether it exited 0.
fn run_child(cmd: &mut std::process::Command) -> (Duration, Duration, Duration, u64, bool) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let peak = std::thread::spawn(move || {
        let mut peak = 0;
        // Absent once the process has exited (a zombie has no memory).
        while let Some(hwm) = vm_hwm(pid) {
            peak = peak.max(hwm);
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let elapsed = start.elapsed();
    let _ = child.try_wait();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let (user, system) = (tv(ru.ru_utime), tv(ru.ru_stime));
    (elapsed, user, system, peak.join().unwrap_or(0), ok)
}

/// `report`, `export` in every format and `replay` of a one-hour
/// recording (3.6 M events at 1,000/s, a sample a second).
pub fn one_hour(rows: &mut Rows, memtrace: &Path) {
    let n = 3_600_000u64;
    let path = tmp("hour");
    // Generated as it is written: this process stays small, and so does
    // the peak memory its children inherit the accounting of.
    let bytes = write_owned(&path, events(n, 1000, 99));
    rows.row(
        "one-hour recording: 3.6 M events and 3,600 samples",
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64),
        &format!("{:.2} B per event", bytes as f64 / n as f64),
    );
    let file = path.to_str().unwrap();
    let out = path.with_extension("out");
    let out_s = out.to_str().unwrap();
    let bench = std::env::current_exe().unwrap();
    let runs: Vec<(&str, std::process::Command)> = vec![
        ("report --json", {
            let mut c = std::process::Command::new(memtrace);
            c.args(["report", file, "--json"]);
            c
        }),
        ("report (Markdown)", {
            let mut c = std::process::Command::new(memtrace);
            c.args(["report", file]);
            c
        }),
        (
            "export --format perfetto",
            export(memtrace, file, "perfetto", out_s),
        ),
        (
            "export --format chrome-json",
            export(memtrace, file, "chrome-json", out_s),
        ),
        (
            "export --format jsonl",
            export(memtrace, file, "jsonl", out_s),
        ),
        ("export --format csv", export(memtrace, file, "csv", out_s)),
        ("export --format csv --samples", {
            let mut c = export(memtrace, file, "csv", out_s);
            c.arg("--samples");
            c
        }),
        ("replay, played to the end", {
            let mut c = std::process::Command::new(&bench);
            c.args(["--replay", file]);
            c
        }),
    ];
    for (what, mut cmd) in runs {
        let (t, user, system, rss, ok) = run_child(&mut cmd);
        let cpu = user + system;
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&out);
        let rate = n as f64 / cpu.as_secs_f64() / 1e6;
        rows.row(
            &format!("one hour: {what}"),
            if ok {
                format!(
                    "{rate:.2} M events per CPU second ({:.1} s CPU: {:.1} user, {:.1} system; {:.1} s wall), {:.1} MiB peak resident",
                    cpu.as_secs_f64(),
                    user.as_secs_f64(),
                    system.as_secs_f64(),
                    t.as_secs_f64(),
                    rss as f64 / (1 << 20) as f64
                )
            } else {
                "FAILED".into()
            },
            &format!(
                "goal ≤ 64 MiB, ≥ 1 M events/s{}",
                if size > 0 {
                    format!("; output {:.0} MiB", size as f64 / (1 << 20) as f64)
                } else {
                    String::new()
                }
            ),
        );
    }
    if std::env::var_os("MEMTRACE_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_file(&path);
    }
}

fn export(memtrace: &Path, file: &str, format: &str, out: &str) -> std::process::Command {
    let mut c = std::process::Command::new(memtrace);
    c.args(["export", file, "--format", format, "-o", out]);
    c
}

/// `bench --replay FILE`: what `memtrace replay` does, without a terminal:
/// open the recording, play it to its end, build the frame there.
pub fn replay_to_end(file: &str) {
    use memtrace_ui::{Command, SnapshotSource};
    let window = memtrace::timeline::Window::default();
    let (timeline, rec) = memtrace::timeline::scan(Path::new(file), &window)
        .expect("the benchmark's own recording scans");
    let mut s = memtrace::ReplaySource::new(timeline, rec, "bench".into(), 1.0);
    s.command(&Command::Seek(10 * 24 * 3600)).unwrap();
    let snap = s.snapshot(None);
    assert!(
        !snap.cgroups.is_empty(),
        "the replay shows the recorded cgroups"
    );
}
