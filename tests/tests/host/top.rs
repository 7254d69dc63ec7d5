//! `memtrace top` and `memtrace replay` in a real terminal (tmux): what an
//! operator sees, and the keys. Root only.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memtrace_tests::cgroup::TestCgroup;
use memtrace_tests::run::{in_cgroup, workspace_bin};

/// A tmux server of our own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, width: u16, height: u16, command: &str) -> Self {
        let socket = format!("memtrace-{name}-{}", std::process::id());
        let t = Self { socket };
        // The shell line ends with a marker so the test sees the program exit.
        let status = t
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(format!("{command}; echo MEMTRACE-EXITED $?; sleep 600"))
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed");
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "main"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", "main"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the screen satisfies `pred`; panics with the screen.
    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > end {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

/// The table row of a cgroup: its name in the first column (the log below
/// the table names cgroups too, and must not stand in for the row). A
/// cgroup the naming stage does not recognise (`/memtrace-top-1`) is named
/// after its last segment.
fn row<'a>(screen: &'a str, path: &str) -> Option<&'a str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    screen.lines().find(|l| {
        l.trim_start_matches(['│', ' '])
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(' '))
    })
}

/// The first share on a row: THR10s, the first numbers column.
fn thr10s(row: &str) -> Option<u32> {
    row.split_whitespace()
        .find(|c| c.ends_with('%'))
        .and_then(|p| p.trim_end_matches('%').parse().ok())
}

#[test]
fn top_shows_a_squeezed_cgroup_with_reclaim_and_the_oom_kill_and_keys_work() {
    let _serial = super::serial();
    let name = format!("memtrace-top-{}", std::process::id());
    let cg = TestCgroup::create(&name).unwrap();
    cg.set_max(64 << 20).unwrap();
    let top = format!(
        "{} top --interval 500ms",
        workspace_bin("memtrace").display()
    );
    let t = Tmux::start("top", 100, 30, &top);
    t.wait("the header", Duration::from_secs(60), |s| {
        s.contains(" LIVE ") && s.contains("cgroups")
    });
    // Only this test's cgroup: on a shared machine other cgroups (another
    // run's thousand benchmark cgroups) can fill the table.
    t.keys(&["/"]);
    t.keys(&["-l", &name]);
    t.keys(&["Enter"]);
    t.wait("the filter", Duration::from_secs(5), |s| {
        s.contains(&format!("filter: {name}"))
    });

    let out = in_cgroup(&workspace_bin("hog"), &cg.procs_file())
        .args(["--mb", "200", "--step-mb", "8"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = out.id();
    assert!(!out.wait_with_output().unwrap().status.success());

    let screen = t.wait(
        "the cgroup's row and the OOM kill",
        Duration::from_secs(20),
        |s| row(s, &cg.path).is_some() && s.contains(&format!("OOM-killed hog[{pid}]")),
    );
    let r = row(&screen, &cg.path).unwrap();
    // Reclaim latency columns carry numbers, the OOM count is 1, memory
    // shows the 64 MiB limit.
    assert!(
        r.contains("µs") || r.contains("ms"),
        "no reclaim latency in {r}"
    );
    assert!(r.contains("/64M"), "no limit in {r}");
    let cols: Vec<&str> = r.split_whitespace().collect();
    assert!(cols.contains(&"1"), "no OOM count in {r}");
    if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert!(
            screen.contains("DEGRADED"),
            "a degraded kernel gets the banner:\n{screen}"
        );
    }

    t.keys(&["s"]);
    t.wait("the sort to change", Duration::from_secs(5), |s| {
        s.contains("sort: throttled 1s")
    });
    t.keys(&["Escape", "/"]);
    t.keys(&["-l", &name]);
    t.keys(&["Enter"]);
    let s = t.wait("the filter", Duration::from_secs(5), |s| {
        s.contains(&format!("filter: {name}"))
    });
    assert!(row(&s, &cg.path).is_some(), "{s}");
    assert!(s.contains("cgroups 1/"), "only the matching row: {s}");
    t.keys(&["Escape", "/"]);
    t.keys(&["-l", "no-such-cgroup"]);
    t.keys(&["Enter"]);
    t.wait("an empty filter result", Duration::from_secs(5), |s| {
        s.contains("no cgroup matches the filter")
    });
    t.keys(&["?"]);
    t.wait("the help", Duration::from_secs(5), |s| {
        s.contains(" help ") && s.contains("tree view")
    });
    t.keys(&["x", "q"]);
    t.wait("top to quit", Duration::from_secs(10), |s| {
        s.contains("MEMTRACE-EXITED 0")
    });
}

/// The first incident's unit, nested as systemd spells it, squeezed on
/// this kernel: `top` names it in the NAME column and finds it by its
/// instance's name.
#[test]
fn top_names_the_unit_and_finds_it_by_name() {
    let _serial = super::serial();
    let (_parents, cg) = super::nested_cgroup(
        &format!("memtrace-top-{}.slice", std::process::id()),
        r"system-t3\x2dserve.slice/t3-serve@wizard.service",
    );
    cg.set_max(64 << 20).unwrap();
    let top = format!(
        "{} top --interval 500ms",
        workspace_bin("memtrace").display()
    );
    let t = Tmux::start("named", 160, 30, &top);
    t.wait("the header", Duration::from_secs(60), |s| {
        s.contains(" LIVE ") && s.contains("NAME")
    });
    // By the unit's instance, which the path spells nowhere as a word.
    t.keys(&["/"]);
    t.keys(&["-l", "wizard"]);
    t.keys(&["Enter"]);
    t.wait("the filter", Duration::from_secs(5), |s| {
        s.contains("filter: wizard")
    });
    super::squeeze(&cg);
    let s = t.wait("the unit's row", Duration::from_secs(20), |s| {
        row(s, "/t3-serve@wizard.service").is_some()
    });
    let r = row(&s, "/t3-serve@wizard.service").unwrap();
    assert!(
        r.contains(r"system-t3\x2dserve.slice"),
        "the path beside it: {r}"
    );
    t.keys(&["q"]);
    t.wait("top to quit", Duration::from_secs(10), |s| {
        s.contains("MEMTRACE-EXITED 0")
    });
}

fn vm_recording() -> PathBuf {
    // The VM matrix leaves a fresh one; a plain run uses the committed
    // recording of the same scenario.
    std::env::var_os("MEMTRACE_VM_RECORDING")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fuzz/seeds/read_recording/livelock.mtr"
            ))
        })
}

#[test]
fn replay_of_the_vm_livelock_shows_the_throttled_cgroup_and_the_hog() {
    let _serial = super::serial();
    let file = vm_recording();
    let replay = format!(
        "{} replay {} --speed 4 --interval 300ms",
        workspace_bin("memtrace").display(),
        file.display()
    );
    let t = Tmux::start("replay", 100, 30, &replay);
    let s = t.wait("the throttled cgroup", Duration::from_secs(30), |s| {
        row(s, "/recorded").is_some_and(|r| thr10s(r).is_some_and(|p| p >= 30))
    });
    assert!(
        s.contains(" REPLAY ") && s.contains("recording livelock.mtr"),
        "{s}"
    );
    t.keys(&["p"]);
    t.wait("pause", Duration::from_secs(5), |s| s.contains("PAUSED"));
    t.keys(&["Enter"]);
    let s = t.wait("the task list", Duration::from_secs(5), |s| {
        s.contains("COMM") && s.contains("hog")
    });
    assert!(s.contains("throttled share per second"), "{s}");
    // Seek back and forth, then quit.
    t.keys(&["Left", "Right", "."]);
    t.keys(&["q"]);
    t.wait("replay to quit", Duration::from_secs(10), |s| {
        s.contains("MEMTRACE-EXITED 0")
    });
}

#[test]
fn replay_of_garbage_is_a_clear_error() {
    let _serial = super::serial();
    let bad = std::env::temp_dir().join(format!("memtrace-garbage-{}.mtr", std::process::id()));
    std::fs::write(&bad, b"not a recording at all").unwrap();
    let out = Command::new(workspace_bin("memtrace"))
        .args(["replay", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a memtrace recording"));
    let _ = std::fs::remove_file(&bad);
}

/// The pid of the program the tmux pane's shell runs.
fn pane_program(t: &Tmux) -> Option<u32> {
    let out = t
        .cmd()
        .args(["display", "-p", "-t", "main", "#{pane_pid}"])
        .output()
        .ok()?;
    let shell: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn alternate_on(t: &Tmux) -> bool {
    let out = t
        .cmd()
        .args(["display", "-p", "-t", "main", "#{alternate_on}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

#[test]
fn a_hog_near_its_limit_is_in_view_and_killable_and_sigterm_restores_the_terminal() {
    let _serial = super::serial();
    let name = format!("memtrace-near-{}", std::process::id());
    let cg = TestCgroup::create(&name).unwrap();
    cg.set_max(64 << 20).unwrap();
    // 48 MiB of 64: near the limit (80%), under it, quiet: no reclaim, no
    // OOM, nothing in the event stream names it.
    let mut hog = in_cgroup(&workspace_bin("hog"), &cg.procs_file())
        .args(["--mb", "52", "--step-mb", "4", "--until", "300"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = hog.id();
    let usage = |cg: &TestCgroup| {
        cg.read(match cg.version() {
            memtrace::CgroupVersion::V1 => "memory.usage_in_bytes",
            memtrace::CgroupVersion::V2 => "memory.current",
        })
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(30);
    while usage(&cg) < 52 << 20 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(usage(&cg) >= 52 << 20, "the hog did not reach 52 MiB");

    let top = format!(
        "{} top --interval 500ms",
        workspace_bin("memtrace").display()
    );
    let t = Tmux::start("near", 120, 35, &top);
    t.wait("the cgroup's row", Duration::from_secs(60), |s| {
        row(s, &cg.path).is_some()
    });
    t.keys(&["/"]);
    t.keys(&["-l", &name]);
    t.keys(&["Enter", "Enter"]);
    // The hog is listed at once: sampled because its cgroup is near its
    // limit, though it has no event.
    let s = t.wait("the hog in the task list", Duration::from_secs(10), |s| {
        s.contains("COMM")
            && s.lines()
                .any(|l| l.contains(&pid.to_string()) && l.contains("hog"))
    });
    assert!(!s.contains("no processes seen"), "{s}");
    t.keys(&["k"]);
    t.wait("the kill dialog", Duration::from_secs(5), |s| {
        s.contains(&format!("Kill hog[{pid}]"))
    });
    t.keys(&["y"]);
    let status = hog.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );
    // What top did is in its own log.
    t.wait("the kill in the log", Duration::from_secs(5), |s| {
        s.contains("KILL") && s.contains(&format!("killed hog[{pid}]"))
    });

    // A service manager's SIGTERM: the terminal comes back, not left on
    // the alternate screen in raw mode.
    assert!(alternate_on(&t), "top runs on the alternate screen");
    let top_pid = pane_program(&t).expect("top's pid");
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(top_pid as i32, libc::SIGTERM) };
    t.wait("top to end on SIGTERM", Duration::from_secs(10), |s| {
        s.contains("MEMTRACE-EXITED 0")
    });
    assert!(!alternate_on(&t), "the alternate screen was left");
}

#[test]
fn sigint_from_outside_restores_the_terminal_too() {
    let _serial = super::serial();
    let top = format!("{} top", workspace_bin("memtrace").display());
    let t = Tmux::start("sigint", 100, 30, &top);
    t.wait("the header", Duration::from_secs(60), |s| {
        s.contains(" LIVE ")
    });
    let top_pid = pane_program(&t).expect("top's pid");
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(top_pid as i32, libc::SIGINT) };
    t.wait("top to end on SIGINT", Duration::from_secs(10), |s| {
        s.contains("MEMTRACE-EXITED 0")
    });
    assert!(!alternate_on(&t), "the alternate screen was left");
}
