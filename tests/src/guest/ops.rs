//! What an operator depends on around the agent, in a VM with cgroup v2:
//! the programs of `exec` alerts run as ordinary processes, outside the
//! agent's protected cgroup.

use std::time::Duration;

use anyhow::{Context, Result};

use super::Checks;
use super::scenarios::{Ctx, MIB, v2_cgroup};
use super::workload::Hog;
use crate::run::{AgentRun, workspace_bin};

/// **agent-exec**: the agent runs in `/agent-protected` (memory.min 64M,
/// nice -10, oom_score_adj -1000); an OOM kill elsewhere fires an exec
/// alert, whose program must run in `/memtrace-alerts` (the agent
/// cgroup's sibling) at nice 0 and oom_score_adj 0.
pub fn agent_exec(_ctx: &Ctx, c: &mut Checks) -> Result<()> {
    let protected = v2_cgroup("/agent-protected")?;
    protected.write("memory.min", &(64 * MIB).to_string())?;
    let victim = v2_cgroup("/exec-oom")?;
    victim.write("memory.max", &(32 * MIB).to_string())?;
    let _ = victim.write("memory.swap.max", "0");
    let dump = "/tmp/agent-exec.env";
    let _ = std::fs::remove_file(dump);
    let config = "/tmp/agent-exec.toml";
    std::fs::write(
        config,
        format!(
            "[agent]\nmetrics_listen = \"off\"\n[[alert]]\nkind = \"exec\"\ncommand = [\"{}\", \"{dump}\"]\non = [\"oom-kill\"]\n",
            workspace_bin("env-dump").display()
        ),
    )?;
    // The runner joins the protected cgroup so the agent starts there (as
    // a service starts in its unit's cgroup), and leaves it afterwards.
    protected.write("cgroup.procs", "0")?;
    let agent = AgentRun::start(
        &workspace_bin("memtrace"),
        &[
            "--config",
            config,
            "--status-file",
            "/tmp/agent-exec-status.json",
        ],
        &[],
    );
    std::fs::write("/sys/fs/cgroup/cgroup.procs", "0")?;
    let agent = agent?;
    // OOM-killed at its memory.max long before its deadline.
    let mut hog = Hog::spawn(&victim, &["--mb", "64", "--step-mb", "4"], 60, None)?;
    let (status, _) = hog.wait()?;
    c.check(
        !status.success(),
        format!("the hog should have been OOM-killed: {status}"),
    );
    let mut env = String::new();
    for _ in 0..200 {
        if let Ok(e) = std::fs::read_to_string(dump) {
            env = e;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let agent_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", agent.child.id()))
        .context("the agent's cgroup")?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.child.id()))?;
    let agent_nice = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(16))
        .unwrap_or("?")
        .to_string();
    let agent_adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", agent.child.id()))?;
    let log = agent.stop();
    c.check(
        agent_nice == "-10" && agent_adj.trim() == "-1000",
        format!(
            "the agent itself runs at nice {agent_nice}, oom_score_adj {}",
            agent_adj.trim()
        ),
    );
    c.check(
        agent_cgroup.trim() == "0::/agent-protected",
        format!("the agent should run in /agent-protected: {agent_cgroup}"),
    );
    c.check(
        env.contains("MEMTRACE_EVENT=oom-kill"),
        format!("no exec alert for the OOM kill: {env:?}\nagent log:\n{log}"),
    );
    c.check(
        env.contains("PROC_CGROUP=/memtrace-alerts\n"),
        format!("the alert program must run in /memtrace-alerts, beside the agent: {env}"),
    );
    c.check(
        env.contains("PROC_NICE=0\n"),
        format!("alert program's nice: {env}"),
    );
    c.check(
        env.contains("PROC_OOM_SCORE_ADJ=0\n"),
        format!("alert program's oom_score_adj: {env}"),
    );
    c.check(
        log.contains("exec alerts run in cgroup /memtrace-alerts"),
        format!("the agent should say where exec alerts run:\n{log}"),
    );
    c.check(
        !std::path::Path::new("/sys/fs/cgroup/memtrace-alerts").exists(),
        "the agent removes its empty alerts cgroup when it stops",
    );
    Ok(())
}
