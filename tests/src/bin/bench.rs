//! memtrace's benchmarks, run by `cargo xtask bench` (release build, as
//! root). Prints a Markdown table; docs/benchmarks.md holds the last
//! results and how to reproduce them.
//!
//! - recording: bytes per event and encode+write throughput;
//! - reading: recordings parsed per second;
//! - screens: building a frame from a model of 1,000 cgroups, and drawing
//!   it at 80×24 and 200×60;
//! - `memtrace top` CPU use on an idle machine, at the default refresh;
//! - probe cost: the kernel's own run time per program invocation
//!   (`kernel.bpf_stats_enabled`) during a real memcg squeeze.

use std::io::Write;
use std::time::{Duration, Instant};

use memtrace::CgroupRegistry;
use memtrace::Clock;
use memtrace::Header;
use memtrace::Model;
use memtrace::reader;
use memtrace::writer::{Fsync, Writer};
use memtrace::{Comm, Event, Reclaim, Task, Throttle};
use memtrace::{Identity, View};
use memtrace_ui::canvas::{Theme, draw};
use memtrace_ui::{App, Mode, Source};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const SEC: u64 = 1_000_000_000;

/// Runs `f` `n` times; returns the median and p90 of one run.
fn measure(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    (v[n / 2], v[(n * 9 / 10).min(n - 1)])
}

fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let ts = SEC + i * 50_000;
            let task = Task {
                pid: 1000 + (i % 40) as u32,
                tgid: 1000 + (i % 40) as u32,
                comm: Comm::new(["ugrep", "node", "postgres", "t3"][(i % 4) as usize]),
            };
            if i % 3 == 0 {
                Event::Throttle(Throttle {
                    ts_ns: ts + 2_000_000,
                    start_ns: ts,
                    task,
                    memcg_id: 5000 + i % 8,
                    over_high_id: 5000 + i % 8,
                    reclaim_ns: 40_000 + i % 1000,
                    reclaimed_pages: i % 5,
                    nr_pages: 64,
                })
            } else {
                Event::Reclaim(Reclaim {
                    ts_ns: ts + 80_000,
                    start_ns: ts,
                    task,
                    memcg_id: 5000 + i % 8,
                    memcg_exact: false,
                    in_throttle: i % 2 == 0,
                    nr_reclaimed: i % 64,
                })
            }
        })
        .collect()
}

fn recording(out: &mut Vec<String>) {
    let n = 200_000u64;
    let evs = events(n);
    let dir = std::env::temp_dir();
    let path = dir.join(format!("memtrace-bench-{}.mtr", std::process::id()));
    let paths = |id: u64| {
        Some(std::sync::Arc::<str>::from(
            format!("/kubepods.slice/pod-{id}").as_str(),
        ))
    };
    let (median, p90) = measure(5, || {
        let mut w = Writer::create(&path, &Header::default(), Fsync::Never, true).unwrap();
        for (i, e) in evs.iter().enumerate() {
            w.event(e, &mut |id| paths(id)).unwrap();
            if i % 20_000 == 0 {
                w.flush().unwrap();
            }
        }
        w.close().unwrap();
    });
    let size = std::fs::metadata(&path).unwrap().len();
    out.push(format!(
        "| record: bytes per event (2/3 reclaim, 1/3 throttle) | {:.1} B | |",
        size as f64 / n as f64
    ));
    out.push(format!(
        "| record: encode and write {n} events (page cache) | {:.0} ms, {:.2} M events/s | p90 {:.0} ms |",
        median.as_secs_f64() * 1e3,
        n as f64 / median.as_secs_f64() / 1e6,
        p90.as_secs_f64() * 1e3
    ));
    let bytes = std::fs::read(&path).unwrap();
    let (median, _) = measure(5, || {
        let r = reader::parse(&bytes).unwrap();
        assert_eq!(r.records.len() as u64, n);
    });
    out.push(format!(
        "| read: parse {:.1} MiB ({n} events) | {:.0} ms, {:.2} M events/s | |",
        bytes.len() as f64 / (1 << 20) as f64,
        median.as_secs_f64() * 1e3,
        n as f64 / median.as_secs_f64() / 1e6
    ));
    let _ = std::fs::remove_file(&path);
}

fn screens(out: &mut Vec<String>) {
    let cgroups = 1000u64;
    let paths: Vec<(u64, String)> = (0..cgroups)
        .map(|i| (10 + i, format!("/kubepods.slice/pod-{i:04}")))
        .collect();
    let reg = CgroupRegistry::from_paths(paths.iter().map(|(id, p)| (*id, p.as_str())));
    let mut model = Model::new(0, 600 * SEC);
    for r in 0..20u64 {
        for i in 0..cgroups {
            let start = r * SEC / 2 + i * 1000;
            let task = Task {
                pid: i as u32 + 100,
                tgid: i as u32 + 100,
                comm: Comm::new("worker"),
            };
            model.apply(
                &Event::Throttle(Throttle {
                    ts_ns: start + 100_000_000,
                    start_ns: start,
                    task,
                    memcg_id: 10 + i,
                    over_high_id: 10 + i,
                    reclaim_ns: 1000,
                    reclaimed_pages: 0,
                    nr_pages: 64,
                }),
                &reg,
            );
            model.apply(
                &Event::Reclaim(Reclaim {
                    ts_ns: start + 200_000,
                    start_ns: start,
                    task,
                    memcg_id: 10 + i,
                    memcg_exact: true,
                    in_throttle: false,
                    nr_reclaimed: 32,
                }),
                &reg,
            );
        }
    }
    let mut view = View::default();
    let clock = Clock { offset_ns: 0 };
    let now = 11 * SEC;
    let id = Identity {
        host: "bench".into(),
        kernel: "6.12".into(),
        probe_mode: "fentry".into(),
        degraded: Vec::new(),
        throttle_unmeasured: false,
    };
    let (median, p90) = measure(50, || {
        let s = view.build(
            &model,
            None,
            &reg,
            &id,
            Source::Live,
            &clock,
            now,
            Some(500),
        );
        assert_eq!(s.cgroups.len() as u64, cgroups);
    });
    out.push(format!(
        "| top: build a frame, {cgroups} cgroups (with one detail) | {:.2} ms | p90 {:.2} ms |",
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    ));
    let snap = view.build(
        &model,
        None,
        &reg,
        &id,
        Source::Live,
        &clock,
        now,
        Some(500),
    );
    for (w, h) in [(80u16, 24u16), (200, 60)] {
        let mut app = App::new(Mode::Live);
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        let (median, p90) = measure(50, || {
            term.draw(|f| draw(f, &mut app, &snap, Theme { color: true }))
                .unwrap();
        });
        out.push(format!(
            "| top: draw {w}x{h}, {cgroups} cgroups (sort included) | {:.2} ms | p90 {:.2} ms |",
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3
        ));
    }
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

fn top_cpu(out: &mut Vec<String>, memtrace: &str) {
    let socket = format!("memtrace-bench-{}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
    };
    if tmux(&[
        "new-session",
        "-d",
        "-s",
        "b",
        "-x",
        "120",
        "-y",
        "40",
        &format!("{memtrace} top"),
    ])
    .is_err()
    {
        out.push("| top: CPU on an idle machine | not measured: tmux missing | |".into());
        return;
    }
    std::thread::sleep(Duration::from_secs(3));
    let pid = std::process::Command::new("pgrep")
        .args(["-n", "-f", &format!("{memtrace} top")])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        });
    let Some(pid) = pid else {
        out.push("| top: CPU on an idle machine | not measured: top did not start | |".into());
        let _ = tmux(&["kill-server"]);
        return;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let t0 = proc_cpu_ticks(pid).unwrap_or(0);
    let secs = 20.0;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let t1 = proc_cpu_ticks(pid).unwrap_or(0);
    let _ = tmux(&["kill-server"]);
    out.push(format!(
        "| top: CPU on an idle machine, default 1 s refresh, 120x40 | {:.2}% of one core | over {secs:.0} s |",
        (t1 - t0) as f64 / hz / secs * 100.0
    ));
}

/// Sums run_time_ns and run_cnt of a process's BPF programs from fdinfo.
fn prog_stats(pid: u32) -> Vec<(String, u64, u64)> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return v;
    };
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if !text.contains("prog_type:") {
            continue;
        }
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|s| s.trim().to_string())
        };
        let (Some(tag), Some(rt), Some(rc)) =
            (get("prog_tag:"), get("run_time_ns:"), get("run_cnt:"))
        else {
            continue;
        };
        v.push((tag, rt.parse().unwrap_or(0), rc.parse().unwrap_or(0)));
    }
    v
}

fn probe_cost(out: &mut Vec<String>, memtrace: &str) {
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats).unwrap_or_default();
    if std::fs::write(stats, "1").is_err() {
        out.push("| probes: kernel run time per invocation | not measured: kernel.bpf_stats_enabled unavailable | |".into());
        return;
    }
    let mut child = std::process::Command::new(memtrace)
        .args(["events", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let layout = memtrace::CgroupLayout::detect().ok().and_then(|l| l.memory);
    if let Some(h) = layout
        && let Ok(cg) = memtrace_tests::cgroup::TestCgroup::create_in(
            &h,
            &format!("memtrace-bench-{}", std::process::id()),
        )
    {
        let _ = cg.set_max(64 << 20);
        for _ in 0..3 {
            let _ = memtrace_tests::run::in_cgroup(
                &memtrace_tests::run::workspace_bin("hog"),
                &cg.procs_file(),
            )
            .args(["--mb", "160", "--step-mb", "8"])
            .stdout(std::process::Stdio::null())
            .status();
        }
    }
    let progs = prog_stats(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::write(stats, before.trim());
    let (rt, rc): (u64, u64) = progs
        .iter()
        .filter(|p| p.2 > 0)
        .fold((0, 0), |a, p| (a.0 + p.1, a.1 + p.2));
    if rc == 0 {
        out.push("| probes: kernel run time per invocation | no invocations seen | |".into());
        return;
    }
    out.push(format!(
        "| probes: kernel run time per invocation (reclaim and OOM programs, v1 squeeze) | {:.0} ns | {rc} invocations |",
        rt as f64 / rc as f64
    ));
}

fn main() {
    let memtrace = memtrace_tests::run::workspace_bin("memtrace")
        .display()
        .to_string();
    let mut rows = vec![
        "| what | result | notes |".to_string(),
        "|---|---|---|".to_string(),
    ];
    recording(&mut rows);
    screens(&mut rows);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        top_cpu(&mut rows, &memtrace);
        probe_cost(&mut rows, &memtrace);
    } else {
        rows.push("| top CPU, probe cost | not measured: needs root | |".into());
    }
    let text = rows.join("\n");
    println!("{text}");
    if let Some(path) = std::env::args().nth(1) {
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "{text}").unwrap();
    }
}
