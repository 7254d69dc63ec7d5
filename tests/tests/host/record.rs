//! Recordings on this machine's real kernel: a squeezed v1 memory cgroup
//! recorded, reported and exported; the recorder SIGKILLed at random
//! moments; a real recording corrupted at random offsets. Root only.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memtrace::reader;
use memtrace_tests::cgroup::TestCgroup;
use memtrace_tests::run::{in_cgroup, workspace_bin};

use super::squeeze;
use serde_json::Value;

/// Starts `memtrace -vv record`; returns it and a channel of its stderr.
fn recorder(
    file: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(workspace_bin("memtrace"))
        .arg("-vv")
        .args(["record", "--force", "-o", file.to_str().unwrap()])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let l = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("recorder did not start");
        if l.contains("recording to") {
            break;
        }
    }
    (child, rx)
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("memtrace-{name}-{}.mtr", std::process::id()))
}

#[test]
fn a_recorded_squeeze_reports_and_exports_the_oom_kill_and_reclaim() {
    let _serial = super::serial();
    let cg = TestCgroup::create(&format!("memtrace-rec-{}", std::process::id())).unwrap();
    cg.set_max(64 << 20).unwrap();
    let file = tmp("squeeze");
    let (mut rec, _rx) = recorder(&file, &["--cgroup", &cg.path]);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = squeeze(&cg);
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    assert!(rec.wait().unwrap().success());

    let memtrace = workspace_bin("memtrace");
    let out = Command::new(&memtrace)
        .args(["report", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let oom = &r["oom_kills"][0];
    assert_eq!(oom["pid"], pid, "{r:#}");
    assert_eq!(oom["cgroup"], cg.path.as_str());
    assert!(oom["rss_bytes"].as_u64().unwrap() > 32 << 20);
    let reclaim = r["reclaim"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["cgroup"] == cg.path.as_str())
        .cloned();
    let reclaim = reclaim.unwrap_or_else(|| panic!("no reclaim for {}: {r:#}", cg.path));
    assert!(reclaim["passes"].as_u64().unwrap() > 0);
    assert!(reclaim["p99_us"].as_u64().unwrap() >= reclaim["p50_us"].as_u64().unwrap());
    // The kernel's own counter, from the recorded samples, agrees.
    let ev = r["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["cgroup"] == cg.path.as_str())
        .cloned()
        .unwrap();
    assert_eq!(ev["oom_kills"], 1, "{ev}");
    assert_eq!(r["integrity"]["damaged"].as_array().unwrap().len(), 0);
    let md = Command::new(&memtrace)
        .args(["report", file.to_str().unwrap()])
        .output()
        .unwrap();
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(
        md.contains(&format!("OOM kill: hog[{pid}] in {}", cg.path)),
        "{md}"
    );

    perfetto_trace_is_valid_against_perfetto_s_schema(&memtrace, &file, pid, &cg.path);
    let out = Command::new(&memtrace)
        .args(["export", file.to_str().unwrap(), "--format", "chrome-json"])
        .output()
        .unwrap();
    let trace: Value = serde_json::from_slice(&out.stdout).unwrap();
    let evs = trace["traceEvents"].as_array().unwrap();
    assert!(
        evs.iter()
            .any(|e| e["ph"] == "i" && e["name"] == format!("OOM kill hog[{pid}]")),
        "no OOM instant"
    );
    assert!(
        evs.iter()
            .any(|e| e["ph"] == "X" && e["name"] == "memcg reclaim" && e["tid"] == pid),
        "no reclaim slice"
    );
    assert!(
        evs.iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"] == format!("cgroup {}", cg.path))
    );
    let out = Command::new(&memtrace)
        .args(["export", file.to_str().unwrap(), "--format", "jsonl"])
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "oom_kill" && l["pid"] == pid)
    );
    assert!(lines.iter().any(|l| l["type"] == "sample"));
    let out = Command::new(&memtrace)
        .args(["export", file.to_str().unwrap(), "--format", "csv"])
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("oom_kill,"));
    let _ = std::fs::remove_file(&file);
}

/// The protobuf export, decoded by protoc against Perfetto's own merged
/// schema (tests/data/perfetto_trace.proto): every field number and type
/// memtrace writes is Perfetto's, and the trace holds the squeeze.
fn perfetto_trace_is_valid_against_perfetto_s_schema(
    memtrace: &std::path::Path,
    file: &std::path::Path,
    pid: u32,
    cgroup: &str,
) {
    let trace = file.with_extension("perfetto-trace");
    let out = Command::new(memtrace)
        .args([
            "export",
            file.to_str().unwrap(),
            "--format",
            "perfetto",
            "-o",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let decoded = Command::new("protoc")
        .arg(format!("--proto_path={}", data.display()))
        .args(["--decode=perfetto.protos.Trace", "perfetto_trace.proto"])
        .stdin(std::fs::File::open(&trace).unwrap())
        .output()
        .expect("protoc (cargo xtask setup installs protobuf-compiler)");
    let _ = std::fs::remove_file(&trace);
    assert!(decoded.status.success(), "{decoded:?}");
    let text = String::from_utf8(decoded.stdout).unwrap();
    // protoc prints unknown fields by number: there must be none.
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())),
        "fields outside Perfetto's schema:\n{}",
        &text[..text.len().min(4000)]
    );
    for want in [
        format!("name: \"cgroup {cgroup}\""),
        "type: TYPE_SLICE_BEGIN".to_string(),
        "type: TYPE_COUNTER".to_string(),
        format!("name: \"OOM kill hog[{pid}]"),
        "name: \"memcg reclaim\"".to_string(),
    ] {
        assert!(text.contains(&want), "no `{want}` in the decoded trace");
    }
}

#[test]
fn sigkill_at_random_moments_keeps_every_flushed_chunk() {
    let _serial = super::serial();
    let cg = TestCgroup::create(&format!("memtrace-kill-{}", std::process::id())).unwrap();
    cg.set_max(64 << 20).unwrap();
    let file = tmp("sigkill");
    let mut seed = std::process::id() as u64 * 2654435761;
    for round in 0..4 {
        let (mut rec, rx) = recorder(&file, &[]);
        // Events while it records.
        let squeezer = {
            let cg_procs = cg.procs_file();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let _ = in_cgroup(&workspace_bin("hog"), &cg_procs)
                        .args(["--mb", "120", "--step-mb", "8"])
                        .stdout(Stdio::null())
                        .status();
                }
            })
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait_ms = 1200 + seed % 2500;
        std::thread::sleep(Duration::from_millis(wait_ms));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(rec.id() as i32, libc::SIGKILL) };
        let _ = rec.wait();
        let _ = squeezer.join();
        // The last "chunk N flushed" line logged before the kill.
        let flushed = rx
            .try_iter()
            .filter_map(|l| {
                l.split("chunk ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        let r = reader::read(&file).unwrap();
        assert!(
            r.chunks >= flushed,
            "round {round}: killed after {wait_ms} ms, {flushed} chunks flushed but {} read",
            r.chunks
        );
        assert!(r.damaged.is_empty(), "round {round}: {:?}", r.damaged);
        assert!(
            flushed >= 1,
            "round {round}: nothing flushed in {wait_ms} ms"
        );
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn random_corruption_of_a_real_recording_loses_only_damaged_chunks() {
    let _serial = super::serial();
    let cg = TestCgroup::create(&format!("memtrace-corrupt-{}", std::process::id())).unwrap();
    cg.set_max(64 << 20).unwrap();
    let file = tmp("corrupt");
    let (mut rec, _rx) = recorder(&file, &[]);
    for _ in 0..2 {
        squeeze(&cg);
        std::thread::sleep(Duration::from_millis(1100));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    rec.wait().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let whole = reader::parse(&bytes).unwrap();
    assert!(whole.chunks >= 3, "{} chunks", whole.chunks);
    let mut seed = 0x243f_6a88_85a3_08d3u64;
    let mut rnd = |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    let first_chunk = whole.chunk_spans[0].0;
    for _ in 0..500 {
        let mut b = bytes.clone();
        let mut touched = Vec::new();
        for _ in 0..1 + rnd(3) {
            let at = first_chunk + rnd(b.len() as u64 - first_chunk);
            b[at as usize] ^= 1 + rnd(255) as u8;
            touched.push(at);
        }
        if rnd(4) == 0 {
            b.truncate((first_chunk + rnd(b.len() as u64 - first_chunk)) as usize);
        }
        let r = reader::parse(&b).unwrap();
        let intact: usize = whole
            .chunk_spans
            .iter()
            .filter(|(off, len, _)| {
                off + len <= b.len() as u64
                    && !touched.iter().any(|t| (*off..off + len).contains(t))
            })
            .map(|(_, _, n)| n)
            .sum();
        assert!(
            r.records.len() >= intact,
            "{} read, {intact} in intact chunks",
            r.records.len()
        );
    }
    let _ = std::fs::remove_file(&file);
}
