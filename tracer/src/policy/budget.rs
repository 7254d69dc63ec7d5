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
mod tests;
