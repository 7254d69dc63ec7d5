//! The example alert rules and the Grafana dashboard, checked by
//! Prometheus's own tool: `promtool check rules`, the rule unit tests
//! (`promtool test rules`: the first kill, the first OOM kill, one agent
//! of several down), and every dashboard query parsed as PromQL.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cmd;

pub fn check() -> Result<()> {
    let examples = cmd::workspace_root().join("docs/examples");
    cmd::run(
        Command::new("promtool")
            .args(["check", "rules", "prometheus-rules.yml"])
            .current_dir(&examples),
    )
    .context("promtool (Debian's prometheus package; cargo xtask setup installs it)")?;
    cmd::run(
        Command::new("promtool")
            .args(["test", "rules", "prometheus-rules.test.yml"])
            .current_dir(&examples),
    )?;
    // Each dashboard query becomes a recording rule, so promtool parses
    // it; Grafana's variables get plain values first.
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(
        examples.join("grafana-dashboard.json"),
    )?)
    .context("grafana-dashboard.json is not JSON")?;
    let mut rules = String::from("groups:\n  - name: grafana-dashboard\n    rules:\n");
    let mut n = 0;
    for panel in dash["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
                .replace("$cgroup", ".*");
            n += 1;
            let _ = writeln!(
                rules,
                "      - record: dashboard:query{n}\n        expr: {}",
                serde_json::to_string(&expr)?
            );
        }
    }
    let file = cmd::workspace_root().join("target/grafana-dashboard-rules.yml");
    std::fs::write(&file, rules)?;
    cmd::run(Command::new("promtool").args(["check", "rules"]).arg(&file))
        .context("a Grafana dashboard query is not valid PromQL")?;
    eprintln!("rules: the dashboard's {n} queries parse");
    Ok(())
}
