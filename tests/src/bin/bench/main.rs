//! memtrace's benchmarks, run by `cargo xtask bench` (release build, as
//! root). Prints a Markdown table; docs/benchmarks.md holds the last
//! results and how to reproduce them.
//!
//! - recording ([`recording`]): bytes per event, write and read speed, and
//!   report, export and replay of a one-hour recording (time and peak
//!   memory of each, as its own process);
//! - the event path ([`pipeline`]): decode → model on one core, and the
//!   real programs driven through BPF_PROG_TEST_RUN into the ring buffer;
//! - the agent at 1,000 watched cgroups ([`agent`]): resident, locked,
//!   idle CPU;
//! - screens: building a frame from a model of 1,000 cgroups, and drawing
//!   it at 80×24 and 200×60;
//! - `memtrace top` CPU use on an idle machine, at the default refresh;
//! - probe cost ([`probes`]): the kernel's own run time per program
//!   invocation, beside an empty program on the same hook, on the host
//!   and (the throttle programs) in a VM.

mod agent;
mod pipeline;
mod probes;
mod recording;

use std::io::Write;
use std::time::{Duration, Instant};

use memtrace::CgroupRegistry;
use memtrace::Clock;
use memtrace::Model;
use memtrace::{Comm, Event, Reclaim, Task, Throttle};
use memtrace::{Identity, View};
use memtrace_ui::canvas::{Theme, draw};
use memtrace_ui::{App, Mode, Source};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

pub const SEC: u64 = 1_000_000_000;

/// The results table.
pub struct Rows(Vec<String>);

impl Rows {
    pub fn row(&mut self, what: &str, result: String, notes: &str) {
        println!("| {what} | {result} | {notes} |");
        self.0.push(format!("| {what} | {result} | {notes} |"));
    }

    fn push(&mut self, line: String) {
        println!("{line}");
        self.0.push(line);
    }
}

/// Runs `f` `n` times; returns the median and p90 of one run.
pub fn measure(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
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

fn screens(out: &mut Rows) {
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

fn top_cpu(out: &mut Rows, memtrace: &str) {
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--replay") {
        recording::replay_to_end(&args[2]);
        return;
    }
    let memtrace = memtrace_tests::run::workspace_bin("memtrace");
    let mut rows = Rows(Vec::new());
    rows.push("| what | result | notes |".to_string());
    rows.push("|---|---|---|".to_string());
    // MEMTRACE_BENCH=recording,screens runs only those sections.
    let only = std::env::var("MEMTRACE_BENCH").unwrap_or_default();
    let want = |s: &str| only.is_empty() || only.split(',').any(|o| o == s);
    if want("recording") {
        recording::size_and_speed(&mut rows);
        recording::one_hour(&mut rows, &memtrace);
    }
    if want("pipeline") {
        pipeline::decode_and_model(&mut rows);
    }
    if want("screens") {
        screens(&mut rows);
    }
    let memtrace = memtrace.display().to_string();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        rows.push("| top CPU, probe cost, agent | not measured: needs root | |".into());
    }
    if root && want("top") {
        top_cpu(&mut rows, &memtrace);
    }
    if root && want("pipeline") {
        pipeline::real_programs(&mut rows);
    }
    if root && want("agent") {
        agent::thousand_cgroups(&mut rows, &memtrace);
    }
    if root && want("probes") {
        probes::host(&mut rows);
    }
    if want("probes") {
        probes::vm(&mut rows, &std::env::current_dir().unwrap_or_default());
    }
    let text = rows.0.join("\n");
    if let Some(path) = args.get(1) {
        let mut f = std::fs::File::create(path).unwrap();
        writeln!(f, "{text}").unwrap();
    }
}
