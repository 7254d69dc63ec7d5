//! Warnings and breaches, carried out by the rules of
//! [`crate::policy::enforce`]: the agent reads what the rules need from
//! the kernel, asks them, and acts. The kill itself is in `kills`.

use super::{Agent, share};
use crate::act::alert::{BudgetDetails, Details, Throttled};
use crate::clock::fmt_ns;
use crate::config::{Action, AlertEvent};
use crate::kernel::CgroupVersion;
use crate::policy::budget::{Decision, Finding};
use crate::policy::enforce::{Recheck, livelock};
use crate::sys::registry::ancestors;

impl Agent {
    pub(super) fn decide(&mut self, decisions: Vec<Decision>) {
        for d in decisions {
            match d {
                Decision::Warn(f) => self.on_warning(&f),
                Decision::Breach(f) => self.on_breach(&f),
            }
        }
    }

    /// The numbers behind a finding, for alerts and the recorder.
    pub(super) fn finding_details(&self, f: &Finding) -> BudgetDetails {
        let b = &self.policy.budgets[f.budget];
        let most_throttled: Vec<Throttled> = self
            .model
            .most_throttled(f.cgroup, f.at_ns, f.window_ns)
            .into_iter()
            .take(3)
            .map(|(tgid, ns)| Throttled {
                pid: tgid,
                comm: self
                    .model
                    .cgroups
                    .get(&f.cgroup)
                    .and_then(|s| s.tasks.get(&tgid))
                    .map(|t| t.comm.to_string())
                    .unwrap_or_default(),
                throttled_ms: ns / 1_000_000,
            })
            .collect();
        let victim = self.prepared.get(&(f.budget, f.cgroup)).map(|v| &v.info);
        BudgetDetails {
            budget: b.label(),
            throttled_ms: f.used_ns / 1_000_000,
            budget_ms: f.budget_ns / 1_000_000,
            window_ms: f.window_ns / 1_000_000,
            throttled_pct: share(f.used_ns, f.window_ns),
            action: b.action.as_str(),
            pid: most_throttled.first().map(|t| t.pid),
            comm: most_throttled.first().map(|t| t.comm.clone()),
            most_throttled,
            victim_pid: victim.map(|v| v.pid),
            victim_comm: victim.map(|v| v.comm.clone()),
            victim_rss_bytes: victim.map(|v| v.rss_bytes),
            ..BudgetDetails::default()
        }
    }

    fn on_warning(&mut self, f: &Finding) {
        let b = &self.policy.budgets[f.budget];
        let label = b.label();
        self.counters
            .budget(label.clone(), b.action.as_str())
            .warnings += 1;
        let summary = format!(
            "{} throttled {} of the last {} ({:.0}%), {:.0}% of budget `{label}`",
            f.path,
            fmt_ns(f.used_ns),
            fmt_ns(f.window_ns),
            share(f.used_ns, f.window_ns),
            f.used_ns as f64 * 100.0 / f.budget_ns.max(1) as f64
        );
        log::warn!("warning: {summary}");
        let d = self.finding_details(f);
        self.record_action("warning", f.cgroup, f.at_ns, &d, &summary);
        self.alert(
            AlertEvent::Warning,
            Some(f.path.clone()),
            &f.path,
            summary,
            Details::Budget(d),
            f.estimate,
            f.at_ns,
        );
    }

    fn on_breach(&mut self, f: &Finding) {
        let budget = self.policy.budgets[f.budget].clone();
        if f.retry {
            // Reported already: act again only while the livelock lasts.
            let now = crate::clock::mono_now_ns();
            let state = livelock(self.over_high_now(&f.path), &self.model, f.cgroup, now);
            match self.policy.recheck(f, state, now) {
                Recheck::Act if budget.action.kills() => self.act(f),
                Recheck::Act | Recheck::LookAgain => {}
                Recheck::Over => log::info!(
                    "{}: back under memory.high; budget `{}` breach is over",
                    f.path,
                    budget.label()
                ),
            }
            return;
        }
        self.counters
            .budget(budget.label(), budget.action.as_str())
            .breaches += 1;
        let summary = format!(
            "{} throttled {} of the last {} ({:.0}% > {:.0}%): budget `{}` exceeded",
            f.path,
            fmt_ns(f.used_ns),
            fmt_ns(f.window_ns),
            share(f.used_ns, f.window_ns),
            budget.max_throttled.0,
            budget.label()
        );
        log::warn!(
            "BREACH: {summary}{}",
            if f.estimate { " (estimate)" } else { "" }
        );
        let d = self.finding_details(f);
        self.record_action("breach", f.cgroup, f.at_ns, &d, &summary);
        self.alert(
            AlertEvent::Breach,
            Some(f.path.clone()),
            &f.path,
            summary,
            Details::Budget(d),
            f.estimate,
            f.at_ns,
        );
        if budget.action.kills() {
            self.act(f);
        }
    }

    /// Whether the cgroup line of `path` is over memory.high right now:
    /// two small reads per ancestor, so a decision does not trust a sample
    /// a second old. `None` without cgroup v2 (no memory.high to read).
    fn over_high_now(&self, path: &str) -> Option<bool> {
        if self.version != Some(CgroupVersion::V2) {
            return None;
        }
        Some(
            ancestors(path)
                .filter_map(|a| self.registry.dir(a))
                .any(|dir| crate::sys::cgroupfs::over_high_now(&dir)),
        )
    }

    /// Kills for a breach, unless a cool-down holds it back; when nothing
    /// could be killed the policy tries again while the breach lasts: a
    /// livelock the first kill did not end still gets a second.
    fn act(&mut self, f: &Finding) {
        let now = crate::clock::mono_now_ns();
        if let Some(until) = self.policy.hold_kill(f, &self.model, now) {
            if !f.retry {
                log::warn!(
                    "{}: cooling down after a kill in this cgroup line (until memory is back under memory.high, at most {}); not killing yet",
                    f.path,
                    fmt_ns(until.saturating_sub(f.at_ns))
                );
            }
            return;
        }
        let budget = self.policy.budgets[f.budget].clone();
        let killed = match budget.action {
            Action::KillCgroup => self.kill_cgroup(f, &budget),
            _ => self.kill_one(f, &budget),
        };
        if !killed {
            self.policy.nothing_killed(f, now);
        }
    }
}
