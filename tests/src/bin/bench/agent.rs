//! The agent at 1,000 watched cgroups: a real `memtrace agent` with a
//! budget over 1,000 real memory cgroups (on this host's v1 hierarchy,
//! each with a memory limit, so each is sampled), a kill-log, the
//! metrics endpoint and the flight recorder on; its resident and locked
//! memory once settled, and its CPU over 20 s at rest.

use std::time::Duration;

use memtrace_tests::cgroup::TestCgroup;

use crate::Rows;

const CGROUPS: usize = 1000;

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let v = s.lines().find_map(|l| l.strip_prefix(key))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

pub fn thousand_cgroups(rows: &mut Rows, memtrace: &str) {
    let Some(layout) = memtrace::CgroupLayout::detect().ok().and_then(|l| l.memory) else {
        rows.row(
            "agent at 1,000 cgroups",
            "not measured: no memory controller".into(),
            "",
        );
        return;
    };
    let name = format!("memtrace-bench-agent-{}", std::process::id());
    let Ok(parent) = TestCgroup::create_in(&layout, &name) else {
        rows.row(
            "agent at 1,000 cgroups",
            "not measured: cannot create cgroups".into(),
            "",
        );
        return;
    };
    let mut children = Vec::with_capacity(CGROUPS);
    for i in 0..CGROUPS {
        match TestCgroup::create_in(&layout, &format!("{name}/w{i:04}")) {
            Ok(c) => {
                let _ = c.set_max(256 << 20);
                children.push(c);
            }
            Err(e) => {
                rows.row("agent at 1,000 cgroups", format!("not measured: {e}"), "");
                return;
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("{name}-state"));
    let _ = std::fs::create_dir_all(&dir);
    let config = dir.join("agent.toml");
    let _ = std::fs::write(
        &config,
        format!(
            "[agent]\nmetrics_listen = \"127.0.0.1:0\"\nkill_log = \"{}/kills.jsonl\"\n\
             record_dir = \"{}/flight\"\n\n\
             [[budget]]\nname = \"bench\"\ncgroup = \"{}/*\"\nwindow = \"10s\"\n\
             max_throttled = \"30%\"\naction = \"kill-largest\"\n",
            dir.display(),
            dir.display(),
            parent.path
        ),
    );
    let mut agent = std::process::Command::new(memtrace)
        .args(["agent", "--config"])
        .arg(&config)
        .arg("--status-file")
        .arg(dir.join("status.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = agent.id();
    // Settle: probes loaded, the cgroups scanned and sampled a few times.
    std::thread::sleep(Duration::from_secs(15));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let t0 = cpu_ticks(pid).unwrap_or(0);
    let secs = 30.0;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let t1 = cpu_ticks(pid).unwrap_or(0);
    let (rss, vmlck, hwm) = (
        status_kb(pid, "VmRSS:"),
        status_kb(pid, "VmLck:"),
        status_kb(pid, "VmHWM:"),
    );
    // Pages locked in memory (smaps `Locked`): VmLck is the address space
    // marked locked, which with MCL_ONFAULT includes what was never used.
    let lck = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            let v = s.lines().find_map(|l| l.strip_prefix("Locked:"))?;
            v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        });
    let n_threads = threads(pid);
    let running = agent.try_wait().ok().flatten().is_none();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = agent.wait();
    drop(children);
    drop(parent);
    let _ = std::fs::remove_dir_all(&dir);
    if !running {
        rows.row(
            "agent at 1,000 cgroups",
            "not measured: the agent exited".into(),
            "",
        );
        return;
    }
    let mib = |kb: Option<u64>| kb.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    rows.row(
        "agent at 1,000 watched cgroups: resident / locked",
        format!("{} / {}", mib(rss), mib(lck)),
        &format!(
            "goal ≤ 16 MiB each; peak resident {} (loading), VmLck {}; {n_threads} threads",
            mib(hwm),
            mib(vmlck)
        ),
    );
    rows.row(
        "agent at 1,000 watched cgroups: CPU at rest",
        format!("{:.2}% of one core", (t1 - t0) as f64 / hz / secs * 100.0),
        &format!("goal ≤ 0.2%; over {secs:.0} s, after 15 s to settle"),
    );
}
