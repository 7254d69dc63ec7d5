//! Host integration tests: memtrace on the real kernel of this machine,
//! against a real memory cgroup squeezed until the OOM killer fires.
//! Root only (`--features root-tests`, as `cargo xtask test` runs them).

use std::process::{Command, Stdio};
use std::time::Duration;

use memtrace_tests::cgroup::TestCgroup;
use memtrace_tests::run::{EventsRun, in_cgroup, workspace_bin};
use serde_json::Value;

/// A child allocating 200 MiB in a 64 MiB cgroup: memtrace must report
/// reclaim under that cgroup's path and the OOM kill with the child's pid,
/// and the kernel's own counter must agree that one OOM kill happened.
#[test]
fn squeezed_cgroup_reports_reclaim_and_the_oom_kill() {
    let _serial = super::serial();
    let memtrace = workspace_bin("memtrace");
    let hog = workspace_bin("hog");
    let cg = TestCgroup::create(&format!("memtrace-test-{}", std::process::id())).unwrap();
    cg.set_max(64 << 20).unwrap();

    let mut events = EventsRun::start(&memtrace, &["--cgroup", &cg.path]).unwrap();
    let status = in_cgroup(&hog, &cg.procs_file())
        .args(["--mb", "200", "--step-mb", "8"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = status.id();
    let out = status.wait_with_output().unwrap();
    assert!(!out.status.success(), "the hog should have been OOM-killed");

    let oom = events.wait_for(Duration::from_secs(20), |v| v["type"] == "oom_kill");
    let all = events.stop().unwrap();
    let oom = oom.unwrap_or_else(|| panic!("no oom_kill event; got {all:#?}"));
    assert_eq!(oom["pid"], pid, "{oom}");
    assert_eq!(oom["cgroup"], cg.path.as_str(), "{oom}");
    assert_eq!(oom["comm"], "hog", "{oom}");
    let rss = oom["rss_bytes"]["total"].as_u64().unwrap_or(0);
    assert!(
        rss > 32 << 20,
        "victim RSS {rss} should be near the 64 MiB limit: {oom}"
    );

    let reclaims: Vec<&Value> = all
        .iter()
        .filter(|v| v["type"] == "reclaim" && v["pid"] == pid)
        .collect();
    assert!(
        !reclaims.is_empty(),
        "no reclaim events for pid {pid}: {all:#?}"
    );
    for r in &reclaims {
        assert_eq!(r["cgroup"], cg.path.as_str(), "{r}");
        assert!(r["duration_ns"].as_u64().is_some(), "{r}");
    }
    // Everything printed belongs to the filtered cgroup.
    for v in all.iter().filter(|v| v["type"] != "lost") {
        assert_eq!(v["cgroup"], cg.path.as_str(), "{v}");
    }
    assert_eq!(
        cg.oom_kills().unwrap(),
        1,
        "the kernel counted a different number of OOM kills"
    );
}

/// `memtrace check --json` tells the truth about this kernel: every probe
/// either attached or names why each mechanism failed, the exit status says
/// whether anything is missing, and the cgroup layout matches mountinfo.
#[test]
fn check_reports_this_kernel() {
    let _serial = super::serial();
    let memtrace = workspace_bin("memtrace");
    let out = Command::new(&memtrace)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let probes = report["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 6, "{report:#}");
    let mut all_ok = true;
    for p in probes {
        let attempts = p["attempts"].as_array().unwrap();
        assert!(!attempts.is_empty(), "{p}");
        if p["attached"].is_null() {
            all_ok = false;
            assert!(
                attempts
                    .iter()
                    .all(|a| a["error"].as_str().is_some_and(|e| !e.is_empty())),
                "an unavailable probe must say why every mechanism failed: {p}"
            );
        }
    }
    assert_eq!(report["ok"], all_ok);
    assert_eq!(out.status.code(), Some(if all_ok { 0 } else { 3 }));
    // The reclaim and OOM probes use tracepoints, which every kernel
    // memtrace supports allows.
    for name in ["memcg_reclaim", "oom_kill"] {
        let p = probes.iter().find(|p| p["probe"] == name).unwrap();
        assert!(!p["attached"].is_null(), "{p}");
    }
    // Where there are no kprobes the report must say so, not guess.
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        let throttle = probes.iter().find(|p| p["probe"] == "throttle").unwrap();
        let kprobe = throttle["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["mechanism"] == "kprobe")
            .unwrap();
        assert!(
            kprobe["error"]
                .as_str()
                .unwrap()
                .contains("no kprobe support"),
            "{kprobe}"
        );
    }
    // The memory hierarchy matches an independent read of mountinfo.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v1_memory = mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup ") && l.ends_with(",memory") || l.contains(",memory,"));
    let mem = &report["kernel"]["cgroups"]["memory"];
    if let Some(line) = v1_memory {
        assert_eq!(mem["version"], "v1", "{line}");
        assert!(line.contains(mem["mount"].as_str().unwrap()), "{line}");
        let degraded = report["degraded"].to_string();
        assert!(degraded.contains("cgroup v1"), "{degraded}");
    } else if !mem.is_null() {
        assert_eq!(mem["version"], "v2");
    }
}

/// Without privileges memtrace exits 3 and says what to do.
#[test]
fn unprivileged_run_exits_3_with_advice() {
    let _serial = super::serial();
    let memtrace = workspace_bin("memtrace");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&memtrace)
        .args(["events", "--duration", "1"])
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root") && err.contains("sudo"), "{err}");
}

/// Bad usage exits 2 with a message naming the problem.
#[test]
fn bad_usage_exits_2() {
    let _serial = super::serial();
    let memtrace = workspace_bin("memtrace");
    for (args, needle) in [
        (
            vec!["events", "--cgroup", "no-slash"],
            "must start with `/`",
        ),
        (vec!["events", "--duration", "soon"], "not a duration"),
        (vec!["events", "--bogus"], "--bogus"),
        (vec!["frobnicate"], "frobnicate"),
    ] {
        let out = Command::new(&memtrace).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// A cgroup nested as systemd names it, squeezed until the OOM killer
/// fires on this kernel; returns every event `events --json` printed.
fn squeeze_named(rel: &str) -> (Vec<Value>, Value, String) {
    let memtrace = workspace_bin("memtrace");
    let (_parents, cg) =
        super::nested_cgroup(&format!("memtrace-test-{}.slice", std::process::id()), rel);
    cg.set_max(64 << 20).unwrap();
    let mut events = EventsRun::start(&memtrace, &["--cgroup", &cg.path]).unwrap();
    let child = in_cgroup(&workspace_bin("hog"), &cg.procs_file())
        .args(["--mb", "200", "--step-mb", "8"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the hog should have been OOM-killed");
    let oom = events.wait_for(Duration::from_secs(20), |v| v["type"] == "oom_kill");
    let all = events.stop().unwrap();
    let oom = oom.unwrap_or_else(|| panic!("no oom_kill event; got {all:#?}"));
    (all, oom, cg.path.clone())
}

/// The first incident's unit, nested as systemd spells it
/// (`system-t3\x2dserve.slice/t3-serve@wizard.service`), under a v1 memory
/// cgroup of this host: every event names the unit, readable.
#[test]
fn events_name_the_unit_of_a_cgroup() {
    let _serial = super::serial();
    let (all, oom, path) = squeeze_named(r"system-t3\x2dserve.slice/t3-serve@wizard.service");
    assert_eq!(oom["cgroup"], path.as_str(), "{oom}");
    assert_eq!(oom["cgroup_name"], "t3-serve@wizard.service", "{oom}");
    let who = &oom["who"];
    assert_eq!(who["kind"], "service", "{oom}");
    assert_eq!(who["template"], "t3-serve@.service", "{oom}");
    assert_eq!(who["instance"], "wizard", "{oom}");
    assert_eq!(who["slice"], "system-t3-serve.slice", "{oom}");
    assert_eq!(who["slice_escaped"], r"system-t3\x2dserve.slice", "{oom}");
    for v in all.iter().filter(|v| v["type"] != "lost") {
        assert_eq!(v["cgroup_name"], "t3-serve@wizard.service", "{v}");
    }
}

/// A Docker container's scope under a user's slice: named by its short id,
/// with its runtime, and the uid's user name looked up (uid 0: root) on the
/// enrichment thread while events flow.
#[test]
fn events_name_a_container_and_its_user() {
    let _serial = super::serial();
    let id = "ae836c95b4c3c9e9179e0e91015512da89fdec91612f63cebae57df9a5444c79";
    let (all, oom, _) = squeeze_named(&format!("user-0.slice/docker-{id}.scope"));
    assert_eq!(oom["cgroup_name"], "ae836c95b4c3", "{oom}");
    assert_eq!(oom["who"]["kind"], "container", "{oom}");
    assert_eq!(oom["who"]["runtime"], "docker", "{oom}");
    assert_eq!(oom["who"]["container_id"], id, "{oom}");
    assert_eq!(oom["who"]["uid"], 0, "{oom}");
    // Asked when events started; answered within the squeeze.
    assert!(
        all.iter().any(|v| v["who"]["user"] == "root"),
        "no event named the user: {all:#?}"
    );
}

/// In a cgroup namespace of its own (a container's, as the DaemonSet of
/// docs/examples runs it), memtrace finds where that namespace is rooted in
/// the hierarchy it walks, and reads processes' cgroups relative to it.
#[test]
fn check_finds_its_cgroup_namespace_root() {
    let _serial = super::serial();
    let cg = TestCgroup::create(&format!("memtrace-ns-{}", std::process::id())).unwrap();
    // Into the cgroup, then a namespace rooted there (unshare -C).
    let script = format!(
        "echo $$ > {} && exec unshare --cgroup {} check --json",
        cg.procs_file().display(),
        workspace_bin("memtrace").display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        report["cgroup_namespace_root"],
        cg.path.as_str(),
        "{report:#}"
    );
    // Outside a namespace: the hierarchy's root.
    let out = Command::new(workspace_bin("memtrace"))
        .args(["check", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cgroup_namespace_root"], "/", "{report:#}");
}
