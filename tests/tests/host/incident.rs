//! The post-mortem and bad input on this machine's real kernel: a cgroup
//! made after the recorder started, recorded before its OOM; values this
//! kernel cannot measure reported as unmeasured; the HTML report rendered
//! by a real browser; closed pipes, huge values and config warnings that
//! must never panic. Root only.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memtrace_tests::cgroup::TestCgroup;
use memtrace_tests::run::workspace_bin;
use serde_json::Value;

use super::squeeze;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("memtrace-{name}-{}", std::process::id()))
}

fn memtrace(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("memtrace"))
        .args(args)
        .output()
        .unwrap()
}

fn livelock_seed() -> PathBuf {
    std::env::var_os("MEMTRACE_VM_RECORDING")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fuzz/seeds/read_recording/livelock.mtr"
            ))
        })
}

/// Whether the recording being written holds a sample of `cgroup` (its
/// complete chunks: the recorder writes one a second).
fn sampled(file: &Path, cgroup: &str) -> bool {
    let out = memtrace(&["export", file.to_str().unwrap(), "--format", "jsonl"]);
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["type"] == "sample"
                && v["cgroups"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["cgroup"] == cgroup))
        })
    })
}

#[test]
fn a_cgroup_made_after_the_recorder_started_is_sampled_before_its_oom() {
    let _serial = super::serial();
    let name = format!("memtrace-late-{}", std::process::id());
    let file = tmp("late.mtr");
    let mut rec = Command::new(workspace_bin("memtrace"))
        .args(["record", "--force", "-o", file.to_str().unwrap()])
        .args(["--cgroup", &format!("/{name}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(rec.stderr.take().unwrap());
    let mut line = String::new();
    let end = Instant::now() + Duration::from_secs(60);
    while !line.contains("recording to") && Instant::now() < end {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
    }
    assert!(line.contains("recording to"), "the recorder did not start");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    // Made and limited, then filled once the recording holds a sample of
    // it: the squeeze can OOM within a tick, so filling at once raced the
    // recorder's next tick (it failed so under load). Sampled within 8 s
    // is the new-cgroup watch, not the rescan of the hierarchy (every
    // 10 s, the first at the recorder's start).
    let cg = TestCgroup::create(&name).unwrap();
    cg.set_max(64 << 20).unwrap();
    let made = Instant::now();
    while !sampled(&file, &cg.path) {
        assert!(
            made.elapsed() < Duration::from_secs(8),
            "{} not sampled within 8 s of its mkdir",
            cg.path
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = squeeze(&cg);
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    assert!(rec.wait().unwrap().success());

    let out = memtrace(&["report", file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["oom_kills"][0]["pid"], pid, "{r:#}");
    let ev = r["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cgroup"] == cg.path.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{} missing from the kernel's counters: {r:#}", cg.path));
    // Sampled before and after: the kernel's own OOM count grew by one.
    assert_eq!(ev["oom_kills"], 1, "{ev}");
    // Seen at its mkdir, not when its first event named it.
    let out = memtrace(&["export", file.to_str().unwrap(), "--format", "jsonl"]);
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mono = |v: &Value| v["mono_ns"].as_u64().unwrap_or(u64::MAX);
    let first_sample = lines
        .iter()
        .filter(|v| {
            v["type"] == "sample"
                && v["cgroups"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["cgroup"] == cg.path.as_str()))
        })
        .map(mono)
        .min();
    let first_event = lines
        .iter()
        .filter(|v| v["type"] != "sample" && v["cgroup"] == cg.path.as_str())
        .map(mono)
        .min();
    assert!(
        first_sample.is_some() && first_sample < first_event,
        "first sample {first_sample:?} not before the first event {first_event:?}"
    );
    // What this kernel cannot measure is null, never 0.
    if cg.version() == memtrace::CgroupVersion::V1 {
        assert!(ev["memory_events_high"].is_null(), "{ev}");
        assert!(ev["psi_some_ms"].is_null(), "{ev}");
    }
    if r["throttle_probe"] == false {
        assert!(ev["memtrace_ms"].is_null(), "{ev}");
        let md = String::from_utf8(memtrace(&["report", file.to_str().unwrap()]).stdout).unwrap();
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", cg.path)) && l.contains("n/a"))
            .unwrap_or_else(|| panic!("no n/a row for {}:\n{md}", cg.path));
        assert!(!row.contains("| 0ns |"), "{row}");
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn recordings_list_the_processes_of_a_quiet_cgroup_near_its_limit() {
    let _serial = super::serial();
    let name = format!("memtrace-nearrec-{}", std::process::id());
    let cg = TestCgroup::create(&name).unwrap();
    cg.set_max(64 << 20).unwrap();
    // 52 of 64 MiB and then still: no event names the cgroup.
    let mut hog = memtrace_tests::run::in_cgroup(&workspace_bin("hog"), &cg.procs_file())
        .args(["--mb", "52", "--step-mb", "4", "--until", "120"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = hog.id();
    std::thread::sleep(Duration::from_secs(3));
    let file = tmp("nearrec.mtr");
    let out = memtrace(&[
        "record",
        "--force",
        "-o",
        file.to_str().unwrap(),
        "--cgroup",
        &cg.path,
        "--duration",
        "3s",
    ]);
    let _ = hog.kill();
    let _ = hog.wait();
    assert!(out.status.success(), "{out:?}");
    let out = memtrace(&["export", file.to_str().unwrap(), "--format", "jsonl"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let listed = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "sample")
        .any(|v| {
            v["cgroups"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["top"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|p| p["pid"] == pid))
                })
            })
        });
    assert!(listed, "no sample lists hog[{pid}]:\n{text}");
    let _ = std::fs::remove_file(&file);
}

/// Counts pixels within a small distance of `rgb`.
fn pixels_near(png: &Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| {
            p.len() >= 3
                && p.iter()
                    .zip(rgb)
                    .all(|(a, b)| (i16::from(*a) - i16::from(b)).abs() <= 24)
        })
        .count()
}

#[test]
fn the_html_report_renders_in_a_real_browser() {
    let _serial = super::serial();
    if Command::new("chromium").arg("--version").output().is_err() {
        panic!("chromium is not installed: `cargo xtask setup` installs it");
    }
    let dir = tmp("html");
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("report.html");
    let seed = livelock_seed();
    let out = memtrace(&[
        "report",
        seed.to_str().unwrap(),
        "--html",
        "-o",
        html.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("/recorded"),
        "{page}"
    );
    assert!(!page.contains("<script"), "self-contained, no scripts");

    let shot = dir.join("shot.png");
    let profile = dir.join("profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,1400")
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The throttled share (red area) and memory.current (blue line) are
    // drawn, not just the page's text.
    let red = pixels_near(&shot, [0xd6, 0x27, 0x28]);
    let blue = pixels_near(&shot, [0x1f, 0x77, 0xb4]);
    assert!(red > 2_000, "throttled share not drawn: {red} red pixels");
    assert!(blue > 300, "memory.current not drawn: {blue} blue pixels");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_flight_recorder_directory_is_one_timeline() {
    let _serial = super::serial();
    let dir = tmp("flight");
    std::fs::create_dir_all(&dir).unwrap();
    let seed = livelock_seed();
    std::fs::copy(&seed, dir.join("memtrace-a-0001.mtr")).unwrap();
    std::fs::copy(&seed, dir.join("memtrace-a-0002.mtr")).unwrap();
    let one: Value =
        serde_json::from_slice(&memtrace(&["report", seed.to_str().unwrap(), "--json"]).stdout)
            .unwrap();
    let out = memtrace(&["report", dir.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let both: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        both["integrity"]["chunks"].as_u64().unwrap(),
        2 * one["integrity"]["chunks"].as_u64().unwrap()
    );
    // A window before the end that holds nothing of /recorded.
    let out = memtrace(&[
        "report",
        dir.to_str().unwrap(),
        "--json",
        "--cgroup",
        "/nothing-here",
    ]);
    let none: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(none["cgroups"].as_array().unwrap().is_empty(), "{none:#}");
    let out = memtrace(&["report", dir.to_str().unwrap(), "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = memtrace(&["report", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no recordings"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a shell pipeline and returns memtrace's own exit status.
fn first_of_pipe(script: &str) -> Option<i32> {
    let out = Command::new("bash")
        .args(["-c", &format!("{script}; exit ${{PIPESTATUS[0]}}")])
        .output()
        .unwrap();
    out.status.code()
}

#[test]
fn closed_pipes_and_huge_values_are_never_a_panic() {
    let _serial = super::serial();
    let bin = workspace_bin("memtrace");
    let bin = bin.display();
    // stderr and stdout both into a reader that leaves after one line.
    assert_eq!(
        first_of_pipe(&format!("{bin} events --duration 3s 2>&1 | head -1")),
        Some(0)
    );
    let damaged = tmp("damaged.mtr");
    let mut bytes = std::fs::read(livelock_seed()).unwrap();
    let n = bytes.len();
    bytes[n / 2..n / 2 + 64].fill(0xAA);
    std::fs::write(&damaged, &bytes).unwrap();
    for cmd in ["report", "export --format jsonl"] {
        assert_eq!(
            first_of_pipe(&format!("{bin} {cmd} {} 2>&1 | head -1", damaged.display())),
            Some(0),
            "{cmd}"
        );
    }
    let _ = std::fs::remove_file(&damaged);
    for args in [
        &["events", "--duration", "300000000000years"][..],
        &[
            "record",
            "-o",
            "/tmp/never.mtr",
            "--duration",
            "300000000000years",
        ],
        &["top", "--interval", "1e30"],
    ] {
        let out = memtrace(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("too long"),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn check_config_refuses_at_the_key_and_warns_about_what_will_not_work() {
    // Refused: a bad value (at its line), and a secret the environment
    // does not hold (a sink that would fail at 3 a.m. fails now).
    let _serial = super::serial();
    let dir = tmp("config");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[alert]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\ntimeout = \"300000000000years\"\n",
    )
    .unwrap();
    let out = memtrace(&["agent", "--check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:"), "{err}");
    let unset = dir.join("unset.toml");
    std::fs::write(
        &unset,
        "[[alert]]\nkind = \"webhook\"\nurl_env = \"MEMTRACE_TEST_UNSET_URL\"\n",
    )
    .unwrap();
    let out = Command::new(workspace_bin("memtrace"))
        .args(["agent", "--check-config", "--config"])
        .arg(&unset)
        .env_remove("MEMTRACE_TEST_UNSET_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unset.toml:1:") && err.contains("MEMTRACE_TEST_UNSET_URL, which is not set"),
        "{err}"
    );

    // Valid but will not work here as it is: warnings, exit 0.
    let warn = dir.join("warn.toml");
    std::fs::write(
        &warn,
        "[[budget]]\nname = \"ghost\"\ncgroup = \"/no-such-service-anywhere\"\nmax_throttled = \"30%\"\n\
         [[alert]]\nname = \"pager\"\nkind = \"exec\"\ncommand = [\"/nonexistent/pager\"]\n",
    )
    .unwrap();
    let out = Command::new(workspace_bin("memtrace"))
        .args([
            "agent",
            "--check-config",
            "--config",
            warn.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "valid, with warnings: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["budget `ghost` cgroup", "/nonexistent/pager"] {
        assert!(err.contains(want), "no warning {want:?} in:\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
