//! What a breach leads to, decided: act now, look again soon, or let it
//! be. These are the rules the agent follows between a [`Decision`] and a
//! signal; the agent gathers what they need from the kernel (is the line
//! over memory.high right now?) and carries out what they return.
//!
//! - A first breach of a killing budget kills at once, unless a kill in
//!   the same cgroup line is cooling down ([`Policy::hold_kill`]).
//! - A breach that could not act is retried ([`Policy::retry`]): a
//!   cool-down is looked at again within [`LOOK_AGAIN_NS`], a breach with
//!   nothing killable after [`NOTHING_TO_KILL_RETRY_NS`].
//! - A retried breach acts only while the livelock goes on
//!   ([`livelock`], [`Policy::recheck`]): the time in the window may
//!   belong to an incident that ended, and killing for it would hit a
//!   bystander.
//!
//! [`Decision`]: super::budget::Decision

use super::budget::{Finding, Line, Policy};
use crate::model::Model;

/// How soon an unsure breach, or a cool-down that may end early, is
/// looked at again.
pub const LOOK_AGAIN_NS: u64 = 1_000_000_000;

/// How soon a breach with nothing killable is tried again.
pub const NOTHING_TO_KILL_RETRY_NS: u64 = 5_000_000_000;

/// How long after its last throttling a cgroup keeps a victim prepared
/// (and its kernel brake rule).
pub const VICTIM_HORIZON_NS: u64 = 60_000_000_000;

/// Throttling this recent means the line is still being penalised.
const RECENT_NS: u64 = 1_000_000_000;

/// What the kernel says about a breach's cgroup line now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Livelock {
    /// The line is over memory.high: the kernel goes on throttling it.
    GoesOn,
    /// Under memory.high this instant but throttled a moment ago: reclaim
    /// may have dipped usage for a moment, or the hog just exited.
    Unsure,
    /// Under memory.high and quiet for a second: the incident is over.
    Over,
}

/// Whether the livelock behind a breach on `line` goes on.
/// `over_high_now` is whether the line's cause is over its memory.high
/// right now, read from the kernel just before; `None` when the kernel has
/// no memory.high (cgroup v1), where it is assumed to go on.
pub fn livelock(over_high_now: Option<bool>, model: &Model, line: Line, now: u64) -> Livelock {
    match over_high_now {
        None | Some(true) => Livelock::GoesOn,
        Some(false) => {
            let recent = model
                .cgroups
                .get(&line.cgroup)
                .and_then(|s| s.caused.get(&line.cause))
                .is_some_and(|c| c.in_progress() > 0 || c.throttled_in(now, RECENT_NS) > 0);
            if recent {
                Livelock::Unsure
            } else {
                Livelock::Over
            }
        }
    }
}

/// The kernel's verdict on a breach, right before acting on it:
/// `used_now` is the line's throttled time after its episodes in progress
/// were checked against the kernel's map of throttled tasks, and
/// `over_high_now` whether the cause is over its memory.high now. Time the
/// kernel does not confirm is no breach; a confirmed one acts only while
/// the cause is over memory.high.
pub fn verdict(
    used_now: u64,
    f: &Finding,
    over_high_now: Option<bool>,
    model: &Model,
    now: u64,
) -> Livelock {
    if used_now < f.budget_ns && !f.estimate {
        return match livelock(Some(false), model, f.line(), now) {
            Livelock::Over => Livelock::Over,
            _ => Livelock::Unsure,
        };
    }
    livelock(over_high_now, model, f.line(), now)
}

/// What to do with a breach, once the kernel has been asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recheck {
    /// The livelock goes on: act again.
    Act,
    /// Not sure yet: the breach is retried in [`LOOK_AGAIN_NS`].
    LookAgain,
    /// The incident is over: its throttling never counts again.
    Over,
}

impl Policy {
    /// Decides a breach from what the kernel says now, and keeps the
    /// budget's state in step (a retry armed, or the breach settled).
    pub fn recheck(&mut self, f: &Finding, state: Livelock, now: u64) -> Recheck {
        match state {
            Livelock::GoesOn => Recheck::Act,
            Livelock::Unsure => {
                self.retry(f.budget, f.line(), now + LOOK_AGAIN_NS);
                Recheck::LookAgain
            }
            Livelock::Over => {
                self.settled(f.budget, f.line(), now);
                Recheck::Over
            }
        }
    }

    /// Before a kill: while a kill in the cgroup line cools down, returns
    /// when the cool-down ends and arms a retry (at most
    /// [`LOOK_AGAIN_NS`] away: a cool-down ends early when memory drops).
    /// `None`: kill now.
    pub fn hold_kill(&mut self, f: &Finding, model: &Model, now: u64) -> Option<u64> {
        let until = self.kill_blocked_until(&f.path, model, now)?;
        self.retry(f.budget, f.line(), until.min(now + LOOK_AGAIN_NS));
        Some(until)
    }

    /// A kill found no process it may kill: try again while it lasts.
    pub fn nothing_killed(&mut self, f: &Finding, now: u64) {
        self.retry(f.budget, f.line(), now + NOTHING_TO_KILL_RETRY_NS);
    }

    /// The cgroups to evaluate when the deadline timer fires: those with
    /// an episode in progress, and those with a retry due.
    pub fn due(&self, model: &Model, now: u64) -> Vec<u64> {
        let mut ids: Vec<u64> = model
            .cgroups
            .values()
            .filter(|s| s.caused.values().any(|c| c.in_progress() > 0))
            .map(|s| s.id)
            .collect();
        ids.extend(self.due_retries(now));
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Every (budget, line) that wants a victim prepared ahead of a
    /// breach: killing budgets over the lines throttled within
    /// [`VICTIM_HORIZON_NS`], sorted.
    pub fn victims_wanted(&mut self, model: &Model, now: u64) -> Vec<(usize, Line)> {
        let mut active: Vec<u64> = model
            .cgroups
            .values()
            .filter(|s| {
                s.caused
                    .values()
                    .any(|c| c.in_progress() > 0 || c.throttled_in(now, VICTIM_HORIZON_NS) > 0)
            })
            .map(|s| s.id)
            .collect();
        active.sort_unstable();
        let mut wanted: Vec<(usize, Line)> = self
            .lines(model, &active)
            .into_iter()
            .filter(|&(b, line)| {
                self.budgets[b].action.kills()
                    && model
                        .cgroups
                        .get(&line.cgroup)
                        .and_then(|s| s.caused.get(&line.cause))
                        .is_some_and(|c| {
                            c.in_progress() > 0 || c.throttled_in(now, VICTIM_HORIZON_NS) > 0
                        })
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::budget::Decision;
    use crate::policy::testing::{S, WORK, fixture, policy};

    /// Runs the fixture's hog over /work/job for 3 s from t=100 s: the
    /// 30 % budget of /work breaches at 103 s.
    fn breach(f: &mut crate::policy::testing::Fixture, p: &mut Policy) -> Finding {
        let t = f.start(100 * S, f.b);
        assert!(p.evaluate(&f.model, &t, 100 * S).is_empty());
        let d = p.next_deadline(&f.model, 100 * S).unwrap();
        let _ = p.evaluate(&f.model, &[f.a], d);
        let d = p.next_deadline(&f.model, d).unwrap();
        match p.evaluate(&f.model, &[f.a], d).as_slice() {
            [Decision::Breach(x)] => x.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn over_memory_high_or_unknown_means_the_livelock_goes_on() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let x = breach(&mut f, &mut p);
        assert_eq!(
            livelock(Some(true), &f.model, Line::own(f.a), x.at_ns),
            Livelock::GoesOn
        );
        assert_eq!(
            livelock(None, &f.model, Line::own(f.a), x.at_ns),
            Livelock::GoesOn
        );
        assert_eq!(p.recheck(&x, Livelock::GoesOn, x.at_ns), Recheck::Act);
    }

    #[test]
    fn under_memory_high_but_throttled_a_moment_ago_looks_again_in_a_second() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let x = breach(&mut f, &mut p);
        // The episode still runs: unsure.
        let now = x.at_ns;
        assert_eq!(
            livelock(Some(false), &f.model, Line::own(f.a), now),
            Livelock::Unsure
        );
        assert_eq!(p.recheck(&x, Livelock::Unsure, now), Recheck::LookAgain);
        assert_eq!(p.due_retries(now + LOOK_AGAIN_NS), vec![f.a]);
        // Ended half a second ago: still unsure.
        f.end(100 * S, now, f.b);
        assert_eq!(
            livelock(Some(false), &f.model, Line::own(f.a), now + S / 2),
            Livelock::Unsure
        );
    }

    #[test]
    fn under_memory_high_and_quiet_settles_the_breach_for_good() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let x = breach(&mut f, &mut p);
        f.end(100 * S, x.at_ns, f.b);
        let later = x.at_ns + 2 * S;
        assert_eq!(
            livelock(Some(false), &f.model, Line::own(f.a), later),
            Livelock::Over
        );
        assert_eq!(p.recheck(&x, Livelock::Over, later), Recheck::Over);
        // The throttling of the ended incident never counts again.
        assert!(p.evaluate(&f.model, &[f.a], later + S).is_empty());
        assert!(p.due_retries(later + 10 * S).is_empty());
    }

    #[test]
    fn a_cooling_line_holds_the_kill_and_looks_again_within_a_second() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let x = breach(&mut f, &mut p);
        assert_eq!(p.hold_kill(&x, &f.model, x.at_ns), None, "no kill yet");
        p.killed(x.budget, x.line(), x.at_ns);
        // The hog goes on: 3 s after the kill the budget breaches again.
        let again = x.at_ns + 3 * S;
        let y = match p.evaluate(&f.model, &[f.a], again).as_slice() {
            [Decision::Breach(y)] => y.clone(),
            other => panic!("{other:?}"),
        };
        let until = p.hold_kill(&y, &f.model, again).unwrap();
        // Cool-down: the budget's 30 s (longer than its 10 s window).
        assert_eq!(until, x.at_ns + 30 * S);
        assert!(p.due_retries(again + LOOK_AGAIN_NS - 1).is_empty());
        assert_eq!(p.due_retries(again + LOOK_AGAIN_NS), vec![f.a]);
        // A descendant's breach is held too: one incident, one kill.
        let job = Finding {
            cgroup: f.b,
            path: "/work/job".into(),
            ..y
        };
        assert!(p.hold_kill(&job, &f.model, again).is_some());
    }

    #[test]
    fn nothing_to_kill_is_tried_again_after_five_seconds() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let x = breach(&mut f, &mut p);
        p.nothing_killed(&x, x.at_ns);
        assert!(
            p.due_retries(x.at_ns + NOTHING_TO_KILL_RETRY_NS - 1)
                .is_empty()
        );
        assert_eq!(p.due_retries(x.at_ns + NOTHING_TO_KILL_RETRY_NS), vec![f.a]);
        let due = p.due(&f.model, x.at_ns + NOTHING_TO_KILL_RETRY_NS);
        // The running episode's cgroups (the root's too) and the retry,
        // once each.
        assert_eq!(due, vec![1, f.a, f.b]);
    }

    #[test]
    fn victims_are_prepared_for_killing_budgets_over_recently_throttled_cgroups() {
        let mut f = fixture();
        let mut p = policy(&format!(
            "{WORK}[[budget]]\ncgroup = \"/work/*\"\nmax_throttled = \"90%\"\naction = \"alert\"\n"
        ));
        assert!(p.victims_wanted(&f.model, 0).is_empty());
        f.end(S, 2 * S, f.b);
        // /work (budget 0 kills); /work/job only by the alert budget.
        assert_eq!(p.victims_wanted(&f.model, 3 * S), vec![(0, Line::own(f.a))]);
        assert_eq!(
            p.victims_wanted(&f.model, 2 * S + VICTIM_HORIZON_NS - 1),
            vec![(0, Line::own(f.a))]
        );
        assert!(
            p.victims_wanted(&f.model, 2 * S + VICTIM_HORIZON_NS + 1)
                .is_empty()
        );
    }
}
