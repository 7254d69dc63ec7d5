//! `memtrace agent`: throttle budgets, the kill policy, alerts, metrics.

use std::path::PathBuf;

use clap::Args;

use crate::agent::{Agent, AgentOptions, LOCK_FILE, STATUS_FILE, load_config};
use crate::config::AgentConfig;

use super::{UsageError, runtime};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Configuration file [default: /etc/memtrace/agent.toml if it exists,
    /// else the embedded default: alert on any cgroup throttled more than
    /// half of a 10 s window, kill nothing].
    #[arg(long, short, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log and alert "would kill" with the same detail, kill nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Validate the configuration, print what it does, and exit (0 valid,
    /// 2 invalid).
    #[arg(long)]
    pub check_config: bool,
    /// Where the agent publishes its state for `memtrace top`.
    #[arg(long, value_name = "PATH", default_value = STATUS_FILE, hide = true)]
    pub status_file: PathBuf,
    /// The one-agent-per-host lock (tests run agents side by side).
    #[arg(long, value_name = "PATH", default_value = LOCK_FILE, hide = true)]
    pub lock_file: PathBuf,
}

pub fn run(args: AgentArgs) -> anyhow::Result<u8> {
    // Validate before touching anything: a bad file changes nothing.
    let cfg = load_config(args.config.as_ref())
        .map_err(|e| UsageError(format!("invalid configuration: {e}")))?;
    if args.check_config {
        print_summary(&cfg, args.dry_run);
        print_warnings(&cfg);
        return Ok(0);
    }
    let opts = AgentOptions {
        config_path: args.config,
        dry_run: args.dry_run,
        status_file: args.status_file,
        lock_file: args.lock_file,
    };
    let agent = Agent::new(opts, cfg)?;
    runtime()?.block_on(agent.run())?;
    Ok(0)
}

fn print_summary(cfg: &AgentConfig, dry_run: bool) {
    out!("configuration {} is valid", cfg.source);
    if dry_run || cfg.agent.dry_run {
        out!("dry run: nothing will be killed");
    }
    for b in &cfg.budgets {
        out!(
            "budget `{}`: cgroups {} throttled more than {}% of {:?} -> {}{}{}",
            b.label(),
            b.scope(),
            b.max_throttled.0,
            b.window.0,
            b.action.as_str(),
            if b.dry_run { " (dry run)" } else { "" },
            b.brake
                .as_ref()
                .map(|k| format!(
                    ", kernel brake after {:?} throttled per {:?} while the agent is silent {:?}",
                    k.limit.0, k.window.0, k.stale.0
                ))
                .unwrap_or_default()
        );
    }
    for a in &cfg.alerts {
        let on: Vec<&str> = crate::config::AlertEvent::ALL
            .iter()
            .filter(|e| a.wants(**e))
            .map(|e| e.as_str())
            .collect();
        out!("alert `{}`: {:?} on {}", a.label(), a.kind, on.join(", "));
    }
    let h = &cfg.host;
    if h.enabled {
        out!(
            "host: alert when swap is under {}% free or MemAvailable under {}%, and together \
             they are gone within {:?} at the pace of the last {:?}, or tasks stall on memory \
             (some {}%, full {}% of 10 s, less what cgroups' own limits explain); or when \
             MemAvailable under {}% falls steadily enough to be gone within {:?} alone",
            h.swap_free_below.0,
            h.mem_available_below.0,
            h.exhaustion_within.0,
            h.trend_window.0,
            h.psi_some_above.0,
            h.psi_full_above.0,
            h.collapse_below.0,
            h.exhaustion_within.0
        );
    } else {
        out!("host: off");
    }
    out!("metrics: {}", cfg.agent.metrics_listen);
}

/// What will not work on this machine as it is now: warnings, on stderr,
/// the file stays valid (exit 0).
fn print_warnings(cfg: &AgentConfig) {
    let hierarchy = crate::kernel::CgroupLayout::detect()
        .ok()
        .and_then(|l| l.memory);
    let registry = crate::sys::registry::CgroupRegistry::new(hierarchy.as_ref());
    let mut cgroups: Vec<String> = registry.entries().map(|(_, p)| p.to_string()).collect();
    cgroups.sort();
    for w in crate::config::checks::warnings(cfg, &cgroups) {
        say!(
            "memtrace: warning: {}: {} {}: {}",
            cfg.source,
            w.table,
            w.key,
            w.message
        );
    }
}
