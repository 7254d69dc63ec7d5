//! The Kubernetes example (docs/examples/memtrace-daemonset.yaml): valid
//! against the Kubernetes API's own types (Debian's python3-kubernetes,
//! offline), its agent.toml accepted by the agent, and what it grants and
//! mounts exactly what the agent uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use memtrace_tests::run::workspace_bin;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the validator on `file`: Ok(documents) or Err(its problems).
fn validate(file: &Path) -> Result<Vec<Value>, String> {
    // Debian's python3, where python3-kubernetes is (`cargo xtask setup`).
    let out = Command::new("/usr/bin/python3")
        .arg(root().join("tests/tools/k8s-validate.py"))
        .arg(file)
        .output()
        .expect("running /usr/bin/python3 (cargo xtask setup installs python3-kubernetes)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(serde_json::from_str(&stdout).expect("the validator prints JSON"))
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

#[test]
fn the_daemonset_example_is_valid_and_grants_what_the_agent_uses() {
    let file = root().join("docs/examples/memtrace-daemonset.yaml");
    let docs = validate(&file).unwrap_or_else(|e| panic!("{}:\n{e}", file.display()));
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} in the example"))
    };

    // The validator is no rubber stamp: a misspelt field fails it.
    let text = std::fs::read_to_string(&file).unwrap();
    let bad = std::env::temp_dir().join(format!("memtrace-ds-{}.yaml", std::process::id()));
    std::fs::write(&bad, text.replace("hostPID:", "hostPid:")).unwrap();
    let refused = validate(&bad);
    let _ = std::fs::remove_file(&bad);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("hostPid: not a field of V1PodSpec")),
        "{refused:?}"
    );

    // Its configuration is one the agent accepts.
    let toml = kind("ConfigMap")["data"]["agent.toml"]
        .as_str()
        .expect("agent.toml in the ConfigMap")
        .to_string();
    let cfg_file = std::env::temp_dir().join(format!("memtrace-ds-{}.toml", std::process::id()));
    std::fs::write(&cfg_file, &toml).unwrap();
    let out = Command::new(workspace_bin("memtrace"))
        .args(["agent", "--check-config", "--config"])
        .arg(&cfg_file)
        .env_clear()
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&cfg_file);
    assert!(
        out.status.success(),
        "the example's agent.toml: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = memtrace::AgentConfig::parse(&toml, "agent.toml").unwrap();

    let pod = &kind("DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "kills and /proc need the host's pids");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        ["ALL".to_string()].into()
    );
    // Exactly these: the unit's bounding set, and what systemd does for it
    // there (LimitMEMLOCK, OOMScoreAdjust, Nice) before exec.
    let caps = strings(&sc["capabilities"]["add"]);
    let unit =
        std::fs::read_to_string(root().join("docs/examples/memtrace-agent.service")).unwrap();
    let bounding: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    let from_systemd: BTreeSet<String> = ["IPC_LOCK", "SYS_RESOURCE", "SYS_NICE"]
        .map(String::from)
        .into();
    assert_eq!(
        caps,
        bounding.union(&from_systemd).cloned().collect(),
        "capabilities"
    );
    assert!(c["resources"]["limits"].is_null(), "no limit on the agent");

    // Every mount is the host's path at the same place, and the paths the
    // agent writes and reads are mounted.
    let volumes: Vec<&Value> = pod["volumes"].as_array().unwrap().iter().collect();
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let path = m["mountPath"].as_str().unwrap();
            let v = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("no volume {}", m["name"]));
            if !v["hostPath"].is_null() {
                assert_eq!(v["hostPath"]["path"], path, "{m}");
            }
            path
        })
        .collect();
    let under = |p: &Path| mounts.iter().any(|m| p.starts_with(m));
    let wanted = [
        "/sys/fs/cgroup",
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        // The agent lock (agent/service.rs LOCK_FILE).
        "/run/memtrace/agent.lock",
        // Enrichment's sources (sys/enrich.rs Sources::default).
        "/etc/passwd",
        "/run/containerd/io.containerd.runtime.v2.task",
        "/run/containers/storage/overlay-containers",
        "/var/lib/kubelet/pods",
        "/etc/memtrace/agent.toml",
    ];
    for p in wanted
        .iter()
        .map(PathBuf::from)
        .chain(cfg.agent.kill_log.clone())
        .chain(cfg.agent.record_dir.clone())
    {
        assert!(under(&p), "{} is not mounted: {mounts:?}", p.display());
    }
}
