//! Throttle budgets: when the throttling a cgroup causes crosses its
//! budget, decide, the instant it happens.
//!
//! Budgets decide on the cause. The kernel throttles a task because one
//! memory cgroup, the task's own or an ancestor, is over its memory.high
//! (the throttle probe names it: the over-high cgroup). Throttling is
//! charged to that cause, and a budget judges each cause on its own: two
//! sibling cgroups over their own memory.high, throttled in turn, are two
//! incidents, each within budget, never one incident of their parent.
//!
//! A budget watches the cgroups it selects (by path glob, by name, or
//! both: [`BudgetConfig::selects`]) and everything below them. Selection
//! by a name only enrichment knows (a container's or pod's name, a
//! namespace) is made again when enrichment learns something
//! ([`Policy::set_known`]). For a cause `C` it judges one [`Line`]: the cgroup where a victim
//! would be chosen, which is inside both `C`'s subtree (only memory there
//! counts toward `C`'s memory.high) and the budget's scope:
//! - `C` itself, when `C` is in the budget's scope (the whole over-high
//!   subtree is then open to the victim choice, so `kill-largest` finds
//!   the real hog);
//! - otherwise each highest cgroup the budget selects inside `C` (a budget
//!   on one service under an over-high slice acts inside that service).
//!
//! People still see the union of all throttling per cgroup; this module
//! decides on the cause alone.
//!
//! While an episode runs in a line the policy knows the earliest moment its
//! budget can be crossed ([`Policy::next_deadline`]) and the agent arms a
//! timer for it, so a breach is acted on when it happens, not when the
//! episode ends or at the next poll.
//!
//! When the kernel has no throttle probe, the estimator
//! ([`super::estimate`]) derives the throttled share from memory.pressure
//! `full` and memory.events `high`, once per sample, and decisions say they
//! are estimates.

use std::collections::HashMap;

use crate::config::BudgetConfig;
use crate::model::Model;
use crate::names::Known;
use crate::sys::cgroupfs::CgroupMemory;
use crate::sys::registry::ancestors;

/// Below this share of the budget a breached budget is re-armed.
const REARM_SHARE: f64 = 0.5;

/// What the policy found.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// `warn_at` of the budget is used.
    Warn(Finding),
    /// The budget is exceeded.
    Breach(Finding),
}

/// Where a budget judges throttling: the cgroup in which a victim would be
/// chosen, and the over-high cgroup that causes the throttling. `cgroup` is
/// `cause` or inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Line {
    pub cgroup: u64,
    pub cause: u64,
}

impl Line {
    /// A cgroup that is its own cause.
    pub fn own(id: u64) -> Self {
        Self {
            cgroup: id,
            cause: id,
        }
    }
}

/// The numbers behind a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub budget: usize,
    /// The line's cgroup: where the victim is chosen.
    pub cgroup: u64,
    pub path: String,
    /// The over-high cgroup the throttling is charged to.
    pub cause: u64,
    pub cause_path: String,
    /// Throttled time in the window when decided.
    pub used_ns: u64,
    pub budget_ns: u64,
    pub window_ns: u64,
    /// Monotonic time of the decision.
    pub at_ns: u64,
    /// When the budget was crossed: throttled time grows at most 1 ns per
    /// ns, so the crossing is no earlier than `at - (used - budget)`.
    pub crossed_ns: u64,
    /// From memory.pressure, not the throttle probe.
    pub estimate: bool,
    /// A breach reported again because an earlier one could not act (a
    /// cool-down, nothing killable): the agent tries to act, quietly.
    pub retry: bool,
}

impl Finding {
    pub fn line(&self) -> Line {
        Line {
            cgroup: self.cgroup,
            cause: self.cause,
        }
    }
}

/// Per budget and line.
#[derive(Clone, Debug, Default)]
struct BudgetState {
    warned: bool,
    breached: bool,
    /// The breach was told to people (logged, alerted): once per breach,
    /// when the kernel first confirmed it.
    reported: bool,
    /// Throttling before this does not count (set by a kill).
    floor_ns: u64,
    /// No kills until this time, or until memory drops below memory.high.
    cooldown_until: Option<u64>,
    /// A breach that could not act is reported again at this time.
    retry_at: Option<u64>,
    /// ... but not before this: one full window after the kill, the time
    /// the budget needs to judge again.
    cooldown_min: u64,
}

#[derive(Debug)]
pub struct Policy {
    pub budgets: Vec<BudgetConfig>,
    /// Budgets each cgroup id is selected by.
    selected: HashMap<u64, Vec<usize>>,
    /// Budgets judging each line, once its paths are known.
    judged: HashMap<Line, Vec<usize>>,
    state: HashMap<(usize, Line), BudgetState>,
    /// What enrichment learned, for budgets that select by those names.
    known: Known,
}

impl Policy {
    pub fn new(budgets: Vec<BudgetConfig>) -> Self {
        Self {
            budgets,
            selected: HashMap::new(),
            judged: HashMap::new(),
            state: HashMap::new(),
            known: Known::default(),
        }
    }

    /// Enrichment learned names: budgets that select by them select
    /// again (their breaches and cool-downs stay).
    pub fn set_known(&mut self, known: &Known) {
        if *known == self.known {
            return;
        }
        self.known.clone_from(known);
        if self.budgets.iter().any(BudgetConfig::needs_known) {
            self.selected.clear();
            self.judged.clear();
        }
    }

    fn selects(&self, b: usize, path: &str) -> bool {
        self.budgets[b].selects(path, &self.known)
    }

    /// The budgets that select a cgroup.
    pub fn budgets_of(&mut self, id: u64, path: &str) -> Vec<usize> {
        if let Some(v) = self.selected.get(&id) {
            return v.clone();
        }
        let v: Vec<usize> = (0..self.budgets.len())
            .filter(|&b| self.selects(b, path))
            .collect();
        self.selected.insert(id, v.clone());
        v
    }

    /// The budgets that judge `line`, whose cgroup and cause have these
    /// paths (see the module doc).
    fn budgets_judging(&mut self, line: Line, path: &str, cause_path: &str) -> Vec<usize> {
        if let Some(v) = self.judged.get(&line) {
            return v.clone();
        }
        let budgets: Vec<usize> = (0..self.budgets.len())
            .filter(|&b| {
                let sel = |p: &str| self.selects(b, p);
                let cause_in_scope = ancestors(cause_path).any(sel);
                if line.cgroup == line.cause {
                    return cause_in_scope;
                }
                // Inside the cause: the highest selected cgroup there, when
                // the cause itself is not in scope.
                !cause_in_scope
                    && sel(path)
                    && ancestors(path)
                        .skip(1)
                        .take_while(|a| *a != cause_path)
                        .all(|a| !sel(a))
            })
            .collect();
        self.judged.insert(line, budgets.clone());
        budgets
    }

    /// Every (budget, line) of a cgroup: one per cause of its throttling
    /// and budget judging that line.
    fn lines_of(&mut self, model: &Model, id: u64) -> Vec<(usize, Line)> {
        let Some(st) = model.cgroups.get(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut causes: Vec<u64> = st.caused.keys().copied().collect();
        causes.sort_unstable();
        for cause in causes {
            let Some(cause_st) = model.cgroups.get(&cause) else {
                continue;
            };
            // A cause below this cgroup is judged at the cause's own line.
            let inside = cause == id || ancestors(&st.path).any(|a| a == &*cause_st.path);
            if !inside {
                continue;
            }
            let line = Line { cgroup: id, cause };
            for b in self.budgets_judging(line, &st.path.clone(), &cause_st.path.clone()) {
                out.push((b, line));
            }
        }
        out
    }

    /// Throttled time a budget counts on a line now.
    pub fn used(&self, b: usize, line: Line, model: &Model, now: u64) -> Option<u64> {
        let tracker = model.cgroups.get(&line.cgroup)?.caused.get(&line.cause)?;
        let budget = &self.budgets[b];
        let floor = self.state.get(&(b, line)).map_or(0, |s| s.floor_ns);
        let window = budget.window_ns().min(now.saturating_sub(floor));
        Some(tracker.throttled_in(now, window))
    }

    fn finding(&self, b: usize, line: Line, model: &Model, used: u64, now: u64) -> Finding {
        let budget = &self.budgets[b];
        let path = |id| {
            model
                .cgroups
                .get(&id)
                .map_or_else(String::new, |s| s.path.to_string())
        };
        Finding {
            budget: b,
            cgroup: line.cgroup,
            path: path(line.cgroup),
            cause: line.cause,
            cause_path: path(line.cause),
            used_ns: used,
            budget_ns: budget.budget_ns(),
            window_ns: budget.window_ns(),
            at_ns: now,
            crossed_ns: now.saturating_sub(used.saturating_sub(budget.budget_ns())),
            estimate: false,
            retry: false,
        }
    }

    /// Checks the budgets of the lines of `cgroups` (typically those an
    /// event touched) at `now`.
    pub fn evaluate(&mut self, model: &Model, cgroups: &[u64], now: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        for &id in cgroups {
            for (b, line) in self.lines_of(model, id) {
                let Some(used) = self.used(b, line, model, now) else {
                    continue;
                };
                let f = self.finding(b, line, model, used, now);
                if let Some(d) = self.step(f) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// Updates one budget's state with a measurement; returns a decision
    /// when it crosses the warning or the budget.
    fn step(&mut self, f: Finding) -> Option<Decision> {
        let budget = &self.budgets[f.budget];
        let warn_ns = (f.budget_ns as f64 * budget.warn_at.fraction()) as u64;
        let st = self.state.entry((f.budget, f.line())).or_default();
        if (f.used_ns as f64) < f.budget_ns as f64 * REARM_SHARE && f.used_ns < warn_ns {
            st.warned = false;
            st.breached = false;
            st.reported = false;
            return None;
        }
        if st.breached && st.retry_at.is_some_and(|t| f.at_ns >= t) {
            st.retry_at = None;
            if f.used_ns < f.budget_ns {
                // Back within budget before it could act: this breach is
                // over, a new crossing is a new one.
                st.breached = false;
                st.reported = false;
                return None;
            }
            return Some(Decision::Breach(Finding { retry: true, ..f }));
        }
        if f.used_ns >= f.budget_ns && f.budget_ns > 0 {
            if st.breached {
                return None;
            }
            st.breached = true;
            st.warned = true;
            return Some(Decision::Breach(f));
        }
        if f.used_ns >= warn_ns && !st.warned && !st.breached {
            st.warned = true;
            return Some(Decision::Warn(f));
        }
        None
    }

    /// Whether this breach is yet to be told to people; marks it told.
    pub fn first_report(&mut self, budget: usize, line: Line) -> bool {
        let st = self.state.entry((budget, line)).or_default();
        !std::mem::replace(&mut st.reported, true)
    }

    /// The earliest time any budget can be crossed by an episode in
    /// progress: the agent's timer.
    pub fn next_deadline(&mut self, model: &Model, now: u64) -> Option<u64> {
        let mut best: Option<u64> = None;
        // Breaches waiting to act again.
        for st in self.state.values() {
            if st.breached
                && let Some(t) = st.retry_at
            {
                best = Some(best.map_or(t, |x| x.min(t)));
            }
        }
        let busy: Vec<u64> = model
            .cgroups
            .values()
            .filter(|s| s.caused.values().any(|c| c.in_progress() > 0))
            .map(|s| s.id)
            .collect();
        for id in busy {
            for (b, line) in self.lines_of(model, id) {
                let state = self.state.get(&(b, line));
                if state.is_some_and(|s| s.breached) {
                    continue;
                }
                let Some(tracker) = model
                    .cgroups
                    .get(&line.cgroup)
                    .and_then(|s| s.caused.get(&line.cause))
                else {
                    continue;
                };
                let budget = &self.budgets[b];
                let floor = state.map_or(0, |s| s.floor_ns);
                let window = budget.window_ns().min(now.saturating_sub(floor));
                let warn_ns = (budget.budget_ns() as f64 * budget.warn_at.fraction()) as u64;
                let target = if state.is_some_and(|s| s.warned) {
                    budget.budget_ns()
                } else {
                    warn_ns.min(budget.budget_ns())
                };
                if let Some(d) = tracker.deadline(now, window, target) {
                    best = Some(best.map_or(d, |x| x.min(d)));
                }
            }
        }
        best
    }

    /// Until when a kill in this line's cgroup is held back: a cool-down on
    /// it, on an ancestor or on a descendant (one incident, one kill).
    /// None: it may kill now.
    pub fn kill_blocked_until(&self, path: &str, model: &Model, now: u64) -> Option<u64> {
        self.state
            .iter()
            .filter_map(|((_, line), s)| {
                let until = s.cooldown_until.filter(|t| now < *t)?;
                let other = model.cgroups.get(&line.cgroup)?.path.to_string();
                let related = other == path
                    || ancestors(path).any(|a| a == other)
                    || ancestors(&other).any(|a| a == path);
                related.then_some(until)
            })
            .max()
    }

    /// A breach that could not act: report it again at `at` (the agent
    /// then tries once more), instead of never.
    pub fn retry(&mut self, budget: usize, line: Line, at: u64) {
        if let Some(st) = self.state.get_mut(&(budget, line)) {
            st.retry_at = Some(at);
        }
    }

    /// Cgroups with a breach due to be reported again by `now`.
    pub fn due_retries(&self, now: u64) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .state
            .iter()
            .filter(|(_, s)| s.breached && s.retry_at.is_some_and(|t| t <= now))
            .map(|((_, line), _)| line.cgroup)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Drops retries still due after an evaluation: their cgroup left the
    /// model or no longer matches the budget. Without this a due retry no
    /// one evaluates would keep the agent's timer firing at once.
    pub fn expire_retries(&mut self, now: u64) {
        for st in self.state.values_mut() {
            if st.retry_at.is_some_and(|t| t <= now) {
                st.retry_at = None;
            }
        }
    }

    /// Forgets a cgroup: it is gone, or its path became known.
    pub fn forget(&mut self, id: u64) {
        self.selected.remove(&id);
        self.judged
            .retain(|line, _| line.cgroup != id && line.cause != id);
        self.state
            .retain(|(_, line), _| line.cgroup != id && line.cause != id);
    }

    /// Keeps the state (cool-downs, breaches) of budgets a reload did not
    /// change, so a SIGHUP mid-incident does not allow a second kill.
    pub fn inherit(&mut self, old: &Policy) {
        for (i, b) in self.budgets.iter().enumerate() {
            let Some(j) = old.budgets.iter().position(|o| {
                o.label() == b.label()
                    && o.selector() == b.selector()
                    && o.window == b.window
                    && o.max_throttled == b.max_throttled
            }) else {
                continue;
            };
            for ((ob, line), st) in &old.state {
                if *ob == j {
                    self.state.insert((i, *line), st.clone());
                }
            }
        }
    }

    /// The incident behind a breach is over (the cause is back under
    /// memory.high): forget it, so the throttling it counted can never
    /// justify a later kill.
    pub fn settled(&mut self, budget: usize, line: Line, now: u64) {
        if let Some(st) = self.state.get_mut(&(budget, line)) {
            st.breached = false;
            st.reported = false;
            st.warned = false;
            st.retry_at = None;
            st.floor_ns = now;
        }
    }

    /// After a kill: cool down, and forget the throttling that caused it.
    pub fn killed(&mut self, budget: usize, line: Line, now: u64) {
        let cooldown = self.budgets[budget].cooldown.0.as_nanos() as u64;
        let window = self.budgets[budget].window_ns();
        let st = self.state.entry((budget, line)).or_default();
        st.cooldown_until = Some(now + cooldown.max(window));
        st.cooldown_min = now + window;
        st.floor_ns = now;
        st.breached = false;
        st.reported = false;
        st.warned = false;
    }

    /// Ends cool-downs whose cause is back under memory.high: "until
    /// memory drops". Called with fresh samples of `cgroup`.
    pub fn memory_dropped(&mut self, cgroup: u64, mem: &CgroupMemory, now: u64) {
        if mem.over_high() {
            return;
        }
        for ((_, line), st) in &mut self.state {
            if line.cause == cgroup && st.cooldown_until.is_some_and(|t| now < t) {
                st.cooldown_until = Some(now.max(st.cooldown_min));
            }
        }
    }

    /// Budget state of a cgroup for status displays: "ok", "warning",
    /// "breach", "cooldown".
    pub fn status(&self, cgroup: u64, now: u64) -> Option<&'static str> {
        let mut out = None;
        for ((_, line), st) in &self.state {
            if line.cgroup != cgroup {
                continue;
            }
            let s = if st.cooldown_until.is_some_and(|t| now < t) {
                "cooldown"
            } else if st.breached {
                "breach"
            } else if st.warned {
                "warning"
            } else {
                "ok"
            };
            let rank = |x: &str| {
                ["ok", "warning", "breach", "cooldown"]
                    .iter()
                    .position(|y| *y == x)
            };
            if out.is_none_or(|o| rank(s) > rank(o)) {
                out = Some(s);
            }
        }
        out
    }

    /// Feeds an estimate (no throttle probe) for one budget and cgroup,
    /// which is its own cause: without the probe nothing names another.
    pub fn estimate(
        &mut self,
        budget: usize,
        cgroup: u64,
        path: &str,
        used_ns: u64,
        now: u64,
    ) -> Option<Decision> {
        let b = &self.budgets[budget];
        let f = Finding {
            budget,
            cgroup,
            path: path.to_string(),
            cause: cgroup,
            cause_path: path.to_string(),
            used_ns,
            budget_ns: b.budget_ns(),
            window_ns: b.window_ns(),
            at_ns: now,
            crossed_ns: now,
            estimate: true,
            retry: false,
        };
        self.step(f)
    }

    /// Every (budget, line) with a state, for the enforcement rules.
    pub(super) fn lines(&mut self, model: &Model, ids: &[u64]) -> Vec<(usize, Line)> {
        let mut v = Vec::new();
        for &id in ids {
            v.extend(self.lines_of(model, id));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{S, WORK, fixture, policy};

    #[test]
    fn a_running_episode_arms_the_deadline_at_the_crossing() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let touched = f.start(100 * S, f.b);
        assert!(p.evaluate(&f.model, &touched, 100 * S).is_empty());
        // Budget 3 s of 10 s, warning at 50%: first the warning at +1.5 s.
        let d = p.next_deadline(&f.model, 100 * S).unwrap();
        assert_eq!(d, 100 * S + 3 * S / 2);
        let ds = p.evaluate(&f.model, &[f.a], d);
        assert!(
            matches!(&ds[..], [Decision::Warn(x)] if x.path == "/work"),
            "{ds:?}"
        );
        let d = p.next_deadline(&f.model, d).unwrap();
        assert_eq!(d, 103 * S);
        let ds = p.evaluate(&f.model, &[f.a], d);
        match &ds[..] {
            [Decision::Breach(x)] => {
                assert_eq!(
                    (x.used_ns, x.budget_ns, x.crossed_ns),
                    (3 * S, 3 * S, 103 * S)
                );
                assert!(!x.estimate);
            }
            other => panic!("{other:?}"),
        }
        // Breached: no new deadline, no second breach.
        assert_eq!(p.next_deadline(&f.model, 104 * S), None);
        assert!(p.evaluate(&f.model, &[f.a], 105 * S).is_empty());
    }

    #[test]
    fn a_settled_breach_never_counts_its_old_throttling_again() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let touched = f.end(0, 4 * S, f.b);
        let ds = p.evaluate(&f.model, &touched, 4 * S);
        let [Decision::Breach(x)] = &ds[..] else {
            panic!("{ds:?}");
        };
        p.retry(x.budget, x.line(), 5 * S);
        assert_eq!(p.due_retries(5 * S), vec![f.a]);
        // The line went back under memory.high: over.
        p.settled(x.budget, x.line(), 5 * S);
        assert!(p.due_retries(6 * S).is_empty());
        assert!(p.evaluate(&f.model, &[f.a], 6 * S).is_empty());
        assert_eq!(p.next_deadline(&f.model, 6 * S), None);
    }

    #[test]
    fn completed_episodes_breach_when_they_end() {
        let mut f = fixture();
        let mut p = policy(WORK);
        f.end(0, S, f.b);
        f.end(2 * S, 3 * S, f.b);
        let touched = f.end(4 * S, 5 * S + 1, f.b);
        let ds = p.evaluate(&f.model, &touched, 5 * S + 1);
        assert!(
            ds.iter()
                .any(|d| matches!(d, Decision::Breach(x) if x.cgroup == f.a)),
            "{ds:?}"
        );
    }

    #[test]
    fn a_breach_is_judged_at_the_over_high_cgroup() {
        let mut f = fixture();
        let mut p =
            policy("[[budget]]\ncgroup = \"/**\"\nmax_throttled = \"10%\"\nwarn_at = \"100%\"\n");
        let touched = f.end(0, 2 * S, f.b);
        let ds = p.evaluate(&f.model, &touched, 2 * S);
        // /work is over its memory.high: the one line is /work, caused by
        // /work, where the whole over-high subtree is open to the victim.
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert!(
            matches!(&ds[0], Decision::Breach(x) if x.path == "/work" && x.cause_path == "/work"),
            "{ds:?}"
        );
    }

    /// Builds `/w` with children `a`, `b` (each over its own memory.high in
    /// turn) and `c` (no limit), like the bystander report.
    fn siblings() -> (crate::sys::registry::CgroupRegistry, Model) {
        let reg = crate::sys::registry::CgroupRegistry::from_paths([
            (1, "/"),
            (20, "/w"),
            (21, "/w/a"),
            (22, "/w/b"),
            (23, "/w/c"),
        ]);
        (reg, Model::new(0, 600 * S))
    }

    fn episode(
        m: &mut Model,
        reg: &crate::sys::registry::CgroupRegistry,
        tgid: u32,
        memcg: u64,
        cause: u64,
        from: u64,
        to: u64,
    ) -> Vec<u64> {
        m.apply(
            &crate::event::Event::Throttle(crate::event::Throttle {
                ts_ns: to,
                start_ns: from,
                task: crate::event::Task {
                    pid: tgid,
                    tgid,
                    comm: crate::event::Comm::new("w"),
                },
                memcg_id: memcg,
                over_high_id: cause,
                reclaim_ns: 0,
                reclaimed_pages: 0,
                nr_pages: 1,
            }),
            reg,
        )
    }

    #[test]
    fn siblings_throttled_in_turn_are_two_incidents_each_within_budget() {
        let (reg, mut m) = siblings();
        let mut p = policy(
            "[[budget]]\ncgroup = \"/**\"\nwindow = \"10s\"\nmax_throttled = \"70%\"\naction = \"kill-largest\"\n",
        );
        let mut ds = Vec::new();
        // /w/a then /w/b, 2 s each in turn: /w is throttled 100 % of the
        // window, but neither cause comes near 7 s.
        for i in 0..5u64 {
            let (memcg, t0) = if i % 2 == 0 {
                (21, i * 2 * S)
            } else {
                (22, i * 2 * S)
            };
            let touched = episode(
                &mut m,
                &reg,
                100 + memcg as u32,
                memcg,
                memcg,
                t0,
                t0 + 2 * S,
            );
            ds.extend(p.evaluate(&m, &touched, t0 + 2 * S));
        }
        assert!(
            ds.iter().all(|d| !matches!(d, Decision::Breach(_))),
            "no breach: {ds:?}"
        );
        // The union at /w is there for people.
        assert_eq!(m.cgroups[&20].throttle.throttled_in(10 * S, 10 * S), 10 * S);
        // An ancestor not over high judges nothing of its own.
        assert!(p.lines_of(&m, 20).is_empty());
    }

    #[test]
    fn a_budget_below_the_cause_acts_in_its_own_cgroup() {
        // The slice /w is over its memory.high; the budget selects only the
        // service /w/a: its line is /w/a (inside the cause), caused by /w.
        let (reg, mut m) = siblings();
        let mut p = policy(
            "[[budget]]\ncgroup = \"/w/a\"\nwindow = \"10s\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\n",
        );
        let touched = episode(&mut m, &reg, 7, 21, 20, 0, 4 * S);
        let ds = p.evaluate(&m, &touched, 4 * S);
        match &ds[..] {
            [Decision::Breach(x)] => {
                assert_eq!((x.path.as_str(), x.cause_path.as_str()), ("/w/a", "/w"));
            }
            other => panic!("{other:?}"),
        }
        // Throttling of /w/b by the same cause is not this budget's.
        let touched = episode(&mut m, &reg, 8, 22, 20, 5 * S, 9 * S);
        assert!(p.evaluate(&m, &touched, 9 * S).is_empty());
    }

    #[test]
    fn cooldown_blocks_kills_in_the_line_and_ends_when_memory_drops() {
        let mut f = fixture();
        let mut p = policy(WORK);
        f.end(0, S, f.b);
        assert_eq!(p.kill_blocked_until("/work", &f.model, 2 * S), None);
        p.killed(0, Line::own(f.a), 2 * S);
        assert_eq!(p.kill_blocked_until("/work", &f.model, 3 * S), Some(32 * S));
        assert!(
            p.kill_blocked_until("/work/job", &f.model, 3 * S).is_some(),
            "a descendant of a cooling cgroup"
        );
        assert_eq!(p.status(f.a, 3 * S), Some("cooldown"));
        let over = CgroupMemory {
            current: Some(100),
            high: Some(50),
            ..Default::default()
        };
        p.memory_dropped(f.a, &over, 4 * S);
        assert!(p.kill_blocked_until("/work", &f.model, 5 * S).is_some());
        let under = CgroupMemory {
            current: Some(10),
            high: Some(50),
            ..Default::default()
        };
        // Memory dropped, but one window (10 s) after the kill has not
        // passed: still cooling down.
        p.memory_dropped(f.a, &under, 6 * S);
        assert_eq!(p.kill_blocked_until("/work", &f.model, 6 * S), Some(12 * S));
        assert_eq!(p.kill_blocked_until("/work", &f.model, 12 * S), None);
        // Throttling before the kill no longer counts.
        assert_eq!(p.used(0, Line::own(f.a), &f.model, 12 * S), Some(0));
    }

    #[test]
    fn a_breach_that_could_not_act_is_reported_again() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let t = f.start(100 * S, f.b);
        let _ = p.evaluate(&f.model, &t, 100 * S);
        let d = p.next_deadline(&f.model, 100 * S).unwrap();
        let _ = p.evaluate(&f.model, &[f.a], d);
        let d = p.next_deadline(&f.model, d).unwrap();
        assert!(matches!(&p.evaluate(&f.model, &[f.a], d)[..], [Decision::Breach(x)] if !x.retry));
        // The agent could not kill (cool-down): try again in a second.
        p.retry(0, Line::own(f.a), d + S);
        assert_eq!(p.next_deadline(&f.model, d), Some(d + S));
        assert!(p.evaluate(&f.model, &[f.a], d + S / 2).is_empty());
        assert_eq!(p.due_retries(d + S), vec![f.a]);
        match &p.evaluate(&f.model, &[f.a], d + S)[..] {
            [Decision::Breach(x)] => assert!(x.retry),
            other => panic!("{other:?}"),
        }
        // Reported once per retry, not on every evaluation.
        assert!(p.evaluate(&f.model, &[f.a], d + 2 * S).is_empty());
    }

    #[test]
    fn a_due_retry_never_keeps_the_timer_firing() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let b = f.b;
        let t = f.start(100 * S, b);
        let _ = p.evaluate(&f.model, &t, 100 * S);
        let _ = p.evaluate(&f.model, &[f.a], 102 * S);
        assert!(matches!(
            &p.evaluate(&f.model, &[f.a], 103 * S)[..],
            [Decision::Breach(_)]
        ));
        f.end(100 * S, 103 * S, b);
        // Blocked; by the retry the window (101..111 s) holds 2 s: under
        // the 3 s budget, over the re-arm point.
        p.retry(0, Line::own(f.a), 111 * S);
        assert_eq!(p.used(0, Line::own(f.a), &f.model, 111 * S), Some(2 * S));
        let due = p.due_retries(111 * S);
        assert_eq!(due, vec![f.a]);
        assert!(p.evaluate(&f.model, &due, 111 * S).is_empty());
        assert_eq!(p.status(f.a, 111 * S), Some("warning"));
        assert_eq!(p.next_deadline(&f.model, 111 * S), None);
        // A retry for a cgroup nobody evaluates is dropped, not spun on.
        p.state.get_mut(&(0, Line::own(f.a))).unwrap().breached = true;
        p.retry(0, Line::own(f.a), 112 * S);
        p.expire_retries(112 * S);
        assert!(p.due_retries(112 * S).is_empty());
        assert_eq!(p.next_deadline(&f.model, 112 * S), None);
    }

    #[test]
    fn a_reload_keeps_the_cooldown_of_unchanged_budgets() {
        let mut f = fixture();
        let mut old = policy(WORK);
        f.end(0, S, f.b);
        let _ = old.budgets_of(f.a, "/work");
        old.killed(0, Line::own(f.a), 2 * S);
        let mut new = policy(&format!(
            "{WORK}[[budget]]\ncgroup = \"/other\"\nmax_throttled = \"10%\"\n"
        ));
        new.inherit(&old);
        assert!(new.kill_blocked_until("/work", &f.model, 3 * S).is_some());
        new.forget(f.a);
        assert!(new.kill_blocked_until("/work", &f.model, 3 * S).is_none());
    }

    #[test]
    fn rearm_after_recovery() {
        let mut f = fixture();
        let mut p = policy(WORK);
        let t = f.end(0, 4 * S, f.b);
        assert_eq!(p.evaluate(&f.model, &t, 4 * S).len(), 1);
        // Long after, the window is empty: re-armed; a new breach reports.
        assert!(p.evaluate(&f.model, &[f.a], 30 * S).is_empty());
        let t = f.end(40 * S, 44 * S, f.b);
        assert_eq!(p.evaluate(&f.model, &t, 44 * S).len(), 1);
    }
}
