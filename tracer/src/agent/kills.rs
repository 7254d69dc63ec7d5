//! Delivering a kill and accounting for it: the victim prepared ahead
//! (pidfd, start time) is checked to still be in its line and signalled;
//! only then is the kill logged, alerted and recorded, and its kill-log
//! line waits for the victim's exit time, which a task watches on the
//! pidfd off the loop.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::Agent;
use super::prepare::{self, Job, Ranking};
use crate::act::alert::{BudgetDetails, Details};
use crate::act::kill::{Prepared, kill_cgroup};
use crate::clock::{fmt_bytes, fmt_ns, mono_now_ns};
use crate::config::{Action, AlertEvent};
use crate::kernel::CgroupVersion;
use crate::model::Hierarchy;
use crate::names::Identity;
use crate::policy::budget::{Finding, Line};
use crate::policy::victim::{self, Rules};
use crate::sys::procs::{ProcessInfo, subtree_processes};

/// How long to wait for a killed process to exit before giving up timing it.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// One line of the kill log (JSON lines), and the details of a `kill` or
/// `would-kill` action in the flight recorder.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KillRecord {
    /// RFC 3339 time of the breach.
    pub time: String,
    pub budget: String,
    pub cgroup: String,
    /// The cgroup's name for people ([`Identity::name`]).
    pub cgroup_name: String,
    /// Who the cgroup is: unit, user, container, pod, as far as known.
    pub who: Identity,
    pub action: &'static str,
    pub dry_run: bool,
    /// The victim (one process killed).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub victim: Option<VictimRecord>,
    /// Every process signalled (`kill-cgroup`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<u32>>,
    pub throttled_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breach_to_signal_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_released: Option<bool>,
    /// From the signal to the exit; null when it had not exited after
    /// [`EXIT_WAIT`]. Absent for dry runs and `kill-cgroup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_to_exit_ns: Option<Option<u64>>,
}

/// The victim's fields of a [`KillRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VictimRecord {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    pub victim_cgroup: String,
    pub victim_cgroup_name: String,
    pub rss_bytes: u64,
}

/// A killed process's exit, reported by its waiter task.
pub(super) struct ExitReport {
    id: u64,
    exit_ns: Option<u64>,
}

/// A kill whose victim has not been seen to exit yet.
struct PendingKill {
    record: KillRecord,
    signal_ns: u64,
}

/// Kills waiting for their victims' exit.
pub(super) struct Pending {
    waiting: HashMap<u64, PendingKill>,
    next_id: u64,
    exits_tx: mpsc::UnboundedSender<ExitReport>,
    pub(super) exits: mpsc::UnboundedReceiver<ExitReport>,
}

impl Pending {
    pub(super) fn new() -> Self {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Self {
            waiting: HashMap::new(),
            next_id: 0,
            exits_tx,
            exits,
        }
    }
}

/// A kill that was delivered (or, dry run, would have been).
pub(super) struct Delivered {
    victim: Prepared,
    released: bool,
    signal_ns: u64,
}

impl Agent {
    /// What the victim thread needs to choose a line's victim now.
    pub(super) fn job(&self, b: usize, line: Line, now: u64) -> Option<Job> {
        let budget = &self.policy.budgets[b];
        let path = self.registry.path(line.cgroup)?;
        let dir = self.registry.dir(&path)?;
        let cause_dir = (self.version == Some(CgroupVersion::V2))
            .then(|| {
                self.registry
                    .path(line.cause)
                    .and_then(|p| self.registry.dir(&p))
            })
            .flatten();
        let ranking = match budget.action {
            Action::KillMostThrottled => Ranking::MostThrottled(
                self.model
                    .most_throttled(line.cgroup, now, budget.window_ns())
                    .into_iter()
                    .collect(),
            ),
            _ => Ranking::Largest,
        };
        Some(Job {
            key: (b, line),
            dir,
            path: path.to_string(),
            cause_dir,
            ranking,
            protect: self.cfg.agent.protect.clone(),
            avoid: budget.avoid.clone(),
            prefer: budget.prefer.clone(),
            with_cmdline: self.wants_cmdline(budget),
        })
    }

    /// Who the cgroup of a path is: the registry's name, or one made from
    /// the path with what enrichment knows.
    fn identity_of(&self, path: &str) -> Identity {
        match self.registry.id(path).and_then(|id| self.registry.name(id)) {
            Some(n) => Identity::clone(&n),
            None => {
                let mut id = crate::names::identify(path);
                self.registry.known().apply(&mut id);
                id
            }
        }
    }

    fn kill_record(&self, f: &Finding, v: &ProcessInfo, dry: bool) -> KillRecord {
        let budget = &self.policy.budgets[f.budget];
        let who = self.identity_of(&f.path);
        KillRecord {
            time: self.clock.rfc3339(f.at_ns),
            budget: budget.label(),
            cgroup: f.path.clone(),
            cgroup_name: who.name().to_string(),
            who,
            action: budget.action.as_str(),
            dry_run: dry,
            victim: Some(VictimRecord {
                pid: v.pid,
                comm: v.comm.clone(),
                cmdline: v.cmdline.clone(),
                victim_cgroup: v.cgroup.clone(),
                victim_cgroup_name: self.identity_of(&v.cgroup).name().to_string(),
                rss_bytes: v.rss_bytes,
            }),
            pids: None,
            throttled_ns: f.used_ns,
            budget_ns: Some(f.budget_ns),
            window_ns: Some(f.window_ns),
            estimate: Some(f.estimate),
            breach_to_signal_ns: None,
            memory_released: None,
            signal_to_exit_ns: None,
        }
    }

    /// The kill path: signals the victim prepared for this breach's line
    /// (or, in the rare breach before any was prepared, one chosen now),
    /// after checking it is still inside the line; chooses again once if
    /// it left or is gone. Nothing is logged or allocated before the
    /// signal but on that rare first-second path.
    pub(super) fn deliver(&mut self, f: &Finding, dry: bool) -> Option<Delivered> {
        let mut victim = self.prepared.remove(&(f.budget, f.line()));
        for _ in 0..2 {
            let v = match victim.take() {
                Some(v) => v,
                None => {
                    let job = self.job(f.budget, f.line(), f.at_ns)?;
                    prepare::choose(&job, self.self_pid, &self.own_exe, self.page_size)?
                }
            };
            if dry {
                return Some(Delivered {
                    victim: v,
                    released: false,
                    signal_ns: mono_now_ns(),
                });
            }
            // Prepared up to a second ago: it must still be in the line's
            // subtree (a process can be moved).
            if !self.version.is_some_and(|ver| v.still_in(&f.path, ver)) {
                log::warn!(
                    "{}: victim {}[{}] left the cgroup or is exiting; choosing again",
                    f.path,
                    v.info.comm,
                    v.info.pid
                );
                continue;
            }
            let signal_ns = mono_now_ns();
            match v.signal(libc::SIGKILL) {
                Ok(released) => {
                    return Some(Delivered {
                        victim: v,
                        released,
                        signal_ns,
                    });
                }
                // Gone since it was prepared: choose again, once.
                Err(e) => log::warn!(
                    "{}: victim {}[{}] could not be signalled ({e}); choosing again",
                    f.path,
                    v.info.comm,
                    v.info.pid
                ),
            }
        }
        None
    }

    /// Kills (or, dry run, would kill) one process for a breach; false when
    /// there was nothing to kill. The signal goes first, the telling after.
    pub(super) fn kill_one(&mut self, f: &Finding) -> bool {
        let dry = self.dry(&self.policy.budgets[f.budget]);
        let Some(d) = self.deliver(f, dry) else {
            if !f.retry {
                let budget = &self.policy.budgets[f.budget];
                self.counters
                    .budget(budget.label(), budget.action.as_str())
                    .nothing_to_kill += 1;
                log::error!(
                    "{}: budget `{}` exceeded but no process may be killed (all protected, avoided or gone); trying again while it lasts",
                    f.path,
                    self.policy.budgets[f.budget].label()
                );
            }
            return false;
        };
        self.policy.killed(f.budget, f.line(), d.signal_ns);
        self.tell_kill(f, d, dry);
        true
    }

    /// Where breach to signal went, step by step, in µs (debug: one line
    /// per kill; the kill-path benchmark reads it).
    fn log_steps(&self, crossed_ns: u64, signal_ns: u64) {
        let s = self.steps;
        let us = |from: u64, to: u64| to.saturating_sub(from) / 1_000;
        let (by, due) = if s.timer {
            ("timer", us(crossed_ns, s.deadline_ns))
        } else {
            ("event", 0)
        };
        log::debug!(
            "kill path steps (µs): wake {}, ring and budgets {}, kernel map {}, memory.high {}, victim check {}, total {}; woken by {by}, due {due} after the crossing",
            us(crossed_ns, s.woke_ns),
            us(s.woke_ns, s.found_ns),
            us(s.found_ns, s.confirmed_ns),
            us(s.confirmed_ns, s.cause_read_ns),
            us(s.cause_read_ns, signal_ns),
            us(crossed_ns, signal_ns),
        );
    }

    /// Logs, counts, alerts and records a delivered kill, and starts
    /// watching for the victim's exit.
    fn tell_kill(&mut self, f: &Finding, d: Delivered, dry: bool) {
        let Delivered {
            victim: v,
            released,
            signal_ns,
        } = d;
        let label = self.policy.budgets[f.budget].label();
        let action = self.policy.budgets[f.budget].action.as_str();
        let mut record = self.kill_record(f, &v.info, dry);
        let breach_to_signal = signal_ns.saturating_sub(f.crossed_ns);
        let verb = if dry { "WOULD KILL" } else { "KILL" };
        let line = self.describe(&f.path);
        log::warn!(
            "{verb} {}[{}] rss {} in {line} (budget `{label}`: throttled {} of {}, over memory.high: {}){}",
            v.info.comm,
            v.info.pid,
            fmt_bytes(v.info.rss_bytes),
            fmt_ns(f.used_ns),
            fmt_ns(f.window_ns),
            self.short(&f.cause_path),
            if dry {
                String::new()
            } else {
                format!(", breach to signal {}", fmt_ns(breach_to_signal))
            }
        );
        if !dry {
            self.log_steps(f.crossed_ns, signal_ns);
        }
        let mut details = self.finding_details(f);
        details.pid = Some(v.info.pid);
        details.comm = Some(v.info.comm.clone());
        details.rss_bytes = Some(v.info.rss_bytes);
        details.dry_run = Some(dry);
        if dry {
            self.counters.budget(label.clone(), action).would_kill += 1;
            self.write_kill_log(&record);
            let summary = format!(
                "would kill {}[{}] in {line} (dry run)",
                v.info.comm, v.info.pid
            );
            self.record_action("would-kill", f.cgroup, f.at_ns, &record, &summary);
            self.kill_alert(f, summary, details);
            return;
        }
        self.counters.budget(label, action).kills += 1;
        self.counters.breach_to_signal.record(breach_to_signal, 0);
        record.breach_to_signal_ns = Some(breach_to_signal);
        record.memory_released = Some(released);
        let text = format!(
            "killed {}[{}] (rss {}) in {line}",
            v.info.comm,
            v.info.pid,
            fmt_bytes(v.info.rss_bytes),
        );
        self.record_action("kill", f.cgroup, signal_ns, &record, &text);
        details.breach_to_signal_ms = Some(breach_to_signal as f64 / 1e6);
        let summary = format!(
            "killed {}[{}] (rss {}) in {line}: throttled {} of {}",
            v.info.comm,
            v.info.pid,
            fmt_bytes(v.info.rss_bytes),
            fmt_ns(f.used_ns),
            fmt_ns(f.window_ns)
        );
        self.kill_alert(f, summary, details);
        self.wait_exit(v.into_fd(), record, signal_ns);
    }

    fn kill_alert(&self, f: &Finding, summary: String, d: BudgetDetails) {
        self.alert(
            AlertEvent::Kill,
            Some(f.path.clone()),
            &f.path,
            summary,
            Details::Budget(d),
            f.estimate,
            f.at_ns,
        );
    }

    /// Kills every process of the line's cgroup but the protected and
    /// avoided; false when there was none to kill. This action scans the
    /// subtree when it acts: it kills many, and `cgroup.kill` is one write.
    pub(super) fn kill_cgroup(&mut self, f: &Finding) -> bool {
        let budget = &self.policy.budgets[f.budget];
        let dry = self.dry(budget);
        let label = budget.label();
        let Some(dir) = self.registry.dir(&f.path) else {
            return false;
        };
        let procs = subtree_processes(&dir, &f.path, self.page_size, self.wants_cmdline(budget));
        if procs.is_empty() {
            return false;
        }
        let rules = Rules {
            self_pid: self.self_pid,
            own_exe: &self.own_exe,
            protect: &self.cfg.agent.protect,
            avoid: &budget.avoid,
            prefer: &[],
        };
        let protected: Vec<String> = procs
            .iter()
            .filter_map(|p| {
                victim::spared(p, &rules).map(|why| format!("{}[{}] ({why})", p.comm, p.pid))
            })
            .collect();
        if protected.len() == procs.len() {
            return false;
        }
        let signal_ns = mono_now_ns();
        if dry {
            log::warn!(
                "WOULD KILL every process of {} ({} processes)",
                f.path,
                procs.len()
            );
        } else if protected.is_empty() && kill_cgroup(&dir).unwrap_or(false) {
            log::warn!(
                "KILL cgroup {} ({} processes) via cgroup.kill",
                f.path,
                procs.len()
            );
        } else {
            // Protected or avoided processes inside, or no cgroup.kill:
            // one by one, sparing them.
            if !protected.is_empty() {
                log::warn!(
                    "{}: not using cgroup.kill, it would kill {}",
                    f.path,
                    protected.join(", ")
                );
            }
            for p in procs.iter().filter(|p| victim::spared(p, &rules).is_none()) {
                if let Ok(v) = Prepared::new(p.clone()) {
                    let _ = v.signal(libc::SIGKILL);
                }
            }
            log::warn!("KILL processes of {} one by one", f.path);
        }
        let who = self.identity_of(&f.path);
        let record = KillRecord {
            time: self.clock.rfc3339(f.at_ns),
            budget: label.clone(),
            cgroup: f.path.clone(),
            cgroup_name: who.name().to_string(),
            who,
            action: "kill-cgroup",
            dry_run: dry,
            victim: None,
            pids: Some(procs.iter().map(|p| p.pid).collect()),
            throttled_ns: f.used_ns,
            budget_ns: None,
            window_ns: None,
            estimate: None,
            breach_to_signal_ns: Some(signal_ns.saturating_sub(f.crossed_ns)),
            memory_released: None,
            signal_to_exit_ns: None,
        };
        let counts = self.counters.budget(label, "kill-cgroup");
        if dry {
            counts.would_kill += 1;
        } else {
            counts.kills += 1;
            self.counters
                .breach_to_signal
                .record(signal_ns.saturating_sub(f.crossed_ns), 0);
        }
        self.policy.killed(f.budget, f.line(), signal_ns);
        self.write_kill_log(&record);
        let mut d = self.finding_details(f);
        d.dry_run = Some(dry);
        let summary = format!(
            "{} every process of {}",
            if dry { "would kill" } else { "killed" },
            self.describe(&f.path)
        );
        self.record_action(
            if dry { "would-kill" } else { "kill" },
            f.cgroup,
            signal_ns,
            &record,
            &summary,
        );
        self.kill_alert(f, summary, d);
        true
    }

    /// Queues a kill-log line for the files thread.
    fn write_kill_log(&self, record: &KillRecord) {
        match serde_json::to_string(record) {
            Ok(line) => self.files.kill_line(line),
            Err(e) => log::error!("kill log: cannot encode the record: {e}"),
        }
    }

    /// Times the victim's exit on its pidfd, off the loop.
    fn wait_exit(&mut self, fd: OwnedFd, record: KillRecord, signal_ns: u64) {
        let id = self.kills.next_id;
        self.kills.next_id += 1;
        self.kills
            .waiting
            .insert(id, PendingKill { record, signal_ns });
        let tx = self.kills.exits_tx.clone();
        tokio::spawn(async move {
            // SAFETY: the OwnedFd stays open inside the AsyncFd until the
            // task ends.
            let exit_ns = match unsafe { AsyncFd::register(fd) } {
                Ok(afd) => tokio::time::timeout(EXIT_WAIT, afd.readable())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|_| mono_now_ns()),
                Err(_) => None,
            };
            let _ = tx.send(ExitReport { id, exit_ns });
        });
    }

    pub(super) fn on_exit(&mut self, r: ExitReport) {
        let Some(PendingKill {
            mut record,
            signal_ns,
        }) = self.kills.waiting.remove(&r.id)
        else {
            return;
        };
        let pid = record.victim.as_ref().map_or(0, |v| v.pid);
        match r.exit_ns {
            Some(t) => {
                let ns = t.saturating_sub(signal_ns);
                self.counters.signal_to_exit.record(ns, 0);
                record.signal_to_exit_ns = Some(Some(ns));
                log::info!("pid {pid} exited {} after the signal", fmt_ns(ns));
            }
            None => {
                record.signal_to_exit_ns = Some(None);
                log::error!("pid {pid} had not exited {EXIT_WAIT:?} after SIGKILL");
            }
        }
        self.write_kill_log(&record);
    }

    /// At shutdown: a kill just made still gets its kill-log line. Waits a
    /// little for exits in flight, then writes the rest without an exit
    /// time.
    pub(super) async fn finish_kill_log(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.kills.waiting.is_empty() {
            match tokio::time::timeout_at(deadline, self.kills.exits.recv()).await {
                Ok(Some(r)) => self.on_exit(r),
                _ => break,
            }
        }
        let mut left: Vec<PendingKill> = self.kills.waiting.drain().map(|(_, k)| k).collect();
        left.sort_by_key(|k| k.signal_ns);
        for mut k in left {
            k.record.signal_to_exit_ns = Some(None);
            self.write_kill_log(&k.record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first incident's unit and its hog in a subgroup the server made.
    const UNIT: &str = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";

    fn record() -> KillRecord {
        let who = crate::names::identify(UNIT);
        KillRecord {
            time: "2026-12-01T03:00:00.000000000Z".into(),
            budget: "work".into(),
            cgroup: UNIT.into(),
            cgroup_name: who.name().into(),
            who,
            action: "kill-largest",
            dry_run: false,
            victim: Some(VictimRecord {
                pid: 4242,
                comm: "ugrep".into(),
                cmdline: String::new(),
                victim_cgroup: format!("{UNIT}/agents"),
                victim_cgroup_name: crate::names::identify(&format!("{UNIT}/agents"))
                    .name()
                    .into(),
                rss_bytes: 100 << 20,
            }),
            pids: None,
            throttled_ns: 3_000_000_001,
            budget_ns: Some(3_000_000_000),
            window_ns: Some(10_000_000_000),
            estimate: Some(false),
            breach_to_signal_ns: Some(1_200_000),
            memory_released: Some(true),
            signal_to_exit_ns: Some(Some(40_000_000)),
        }
    }

    #[test]
    fn kill_log_lines_keep_their_documented_shape() {
        insta::assert_snapshot!(serde_json::to_string_pretty(&record()).unwrap());
        // A dry run has neither signal timings nor an exit.
        let dry = KillRecord {
            dry_run: true,
            breach_to_signal_ns: None,
            memory_released: None,
            signal_to_exit_ns: None,
            ..record()
        };
        insta::assert_snapshot!("dry_run", serde_json::to_string_pretty(&dry).unwrap());
        // An exit not seen in time is null, not absent.
        let slow = KillRecord {
            signal_to_exit_ns: Some(None),
            ..record()
        };
        let v: serde_json::Value = serde_json::to_value(&slow).unwrap();
        assert!(v["signal_to_exit_ns"].is_null());
        assert!(v.get("signal_to_exit_ns").is_some());
        // kill-cgroup: the pids, no victim.
        let cg = KillRecord {
            action: "kill-cgroup",
            victim: None,
            pids: Some(vec![10, 11]),
            budget_ns: None,
            window_ns: None,
            estimate: None,
            memory_released: None,
            signal_to_exit_ns: None,
            ..record()
        };
        insta::assert_snapshot!("kill_cgroup", serde_json::to_string_pretty(&cg).unwrap());
    }
}
