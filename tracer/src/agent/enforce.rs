//! Warnings and breaches, carried out by the rules of
//! [`crate::policy::enforce`]: the agent reads what the rules need from
//! the kernel, asks them, and acts. Kernel truth comes before every kill:
//! the episodes in progress are checked against the kernel's map of
//! throttled tasks (an end record may have been lost), the line is
//! measured again, and the cause must be over its memory.high right now.
//! The kill itself is in `kills`; telling people comes after the signal.

use super::{Agent, share};
use crate::act::alert::{BudgetDetails, Details, Throttled};
use crate::clock::{fmt_ns, mono_now_ns};
use crate::config::{Action, AlertEvent};
use crate::kernel::CgroupVersion;
use crate::model::Hierarchy;
use crate::policy::budget::{Decision, Finding};
use crate::policy::enforce::{Recheck, verdict};
use crate::probe::inflight::is_inside;

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
        let victim = self.prepared.get(&(f.budget, f.line())).map(|v| &v.info);
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
            self.describe(&f.path),
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
        let now = mono_now_ns();
        self.steps.found_ns = now;
        let used = self.confirm(f, now);
        self.steps.confirmed_ns = mono_now_ns();
        let over = self.cause_over_high(f);
        self.steps.cause_read_ns = mono_now_ns();
        let state = verdict(used, f, over, &self.model, now);
        match self.policy.recheck(f, state, now) {
            Recheck::Act => {}
            Recheck::LookAgain => {
                log::debug!(
                    "{}: budget `{}` crossed, but the kernel does not confirm it now; looking again",
                    f.path,
                    self.policy.budgets[f.budget].label()
                );
                return;
            }
            Recheck::Over => {
                log::info!(
                    "{}: {} is back under memory.high; budget `{}` breach is over",
                    f.path,
                    f.cause_path,
                    self.policy.budgets[f.budget].label()
                );
                return;
            }
        }
        // What the kernel confirmed is what is told.
        let f = &Finding {
            used_ns: used,
            ..f.clone()
        };
        let kills = self.policy.budgets[f.budget].action.kills();
        // The signal first: reporting the breach allocates, logs and
        // queues, all of which can wait a millisecond.
        let killed = kills && self.act(f);
        if self.policy.first_report(f.budget, f.line()) {
            self.tell_breach(f);
        }
        if kills && !killed && !f.retry {
            log::debug!("{}: no kill yet for this breach", f.path);
        }
    }

    /// The line's throttled time now, after its episodes in progress were
    /// checked against the kernel's map of tasks inside the throttle
    /// function (one the kernel no longer has lost its end record).
    pub(super) fn confirm(&mut self, f: &Finding, now: u64) -> u64 {
        if f.estimate {
            return f.used_ns;
        }
        self.reconcile(now);
        self.policy
            .used(f.budget, f.line(), &self.model, now)
            .unwrap_or(0)
    }

    /// Checks every episode in progress against the kernel now.
    pub(super) fn reconcile(&mut self, now: u64) -> Vec<u64> {
        let Some(inflight) = &self.inflight else {
            return Vec::new();
        };
        inflight.read(&mut self.inside);
        let inside = &self.inside;
        self.model
            .reconcile(now, &|tid, start| is_inside(inside, tid, start))
    }

    /// Whether the breach's cause is over its memory.high right now: read
    /// through the prepared victim's open files when there is one, else
    /// from the cause's directory. `None` without cgroup v2.
    fn cause_over_high(&self, f: &Finding) -> Option<bool> {
        if self.version != Some(CgroupVersion::V2) {
            return None;
        }
        if let Some(over) = self
            .prepared
            .get(&(f.budget, f.line()))
            .and_then(|v| v.cause.as_ref())
            .and_then(crate::act::kill::CauseMemory::over_high)
        {
            return Some(over);
        }
        let dir = self
            .registry
            .path(f.cause)
            .and_then(|p| self.registry.dir(&p))?;
        Some(crate::sys::cgroupfs::over_high_now(&dir))
    }

    /// Logs, alerts and records a breach the kernel confirmed.
    fn tell_breach(&mut self, f: &Finding) {
        let budget = &self.policy.budgets[f.budget];
        self.counters
            .budget(budget.label(), budget.action.as_str())
            .breaches += 1;
        // The cause a second time by its name only, when it is the line.
        let cause = if f.cause == f.cgroup {
            self.short(&f.cause_path)
        } else {
            self.describe(&f.cause_path)
        };
        let summary = format!(
            "{} throttled {} of the last {} ({:.0}% > {:.0}%) by {cause} over memory.high: budget `{}` exceeded",
            self.describe(&f.path),
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
    }

    /// Kills for a breach, unless a cool-down holds it back; when nothing
    /// could be killed the policy tries again while the breach lasts: a
    /// livelock the first kill did not end still gets a second. Returns
    /// whether it killed.
    fn act(&mut self, f: &Finding) -> bool {
        let now = mono_now_ns();
        if let Some(until) = self.policy.hold_kill(f, &self.model, now) {
            if !f.retry {
                log::warn!(
                    "{}: cooling down after a kill in this cgroup line (until memory is back under memory.high, at most {}); not killing yet",
                    f.path,
                    fmt_ns(until.saturating_sub(f.at_ns))
                );
            }
            return false;
        }
        let killed = match self.policy.budgets[f.budget].action {
            Action::KillCgroup => self.kill_cgroup(f),
            _ => self.kill_one(f),
        };
        if !killed {
            self.policy.nothing_killed(f, now);
        }
        killed
    }
}
