//! Throttled time of one cgroup (or task, or cause): completed episodes as
//! a union of intervals, plus the episodes still in progress, which count
//! as they run, for as long as they last.
//!
//! An episode whose end record never arrives must not count forever: the
//! live sources [`reconcile`](ThrottleTracker::reconcile) every episode in
//! progress against the kernel's own map of tasks inside the throttle
//! function, and one the kernel no longer has ends where it was last seen.
//! A recording has no kernel to ask: there, an episode without an end is
//! dropped after [`MAX_UNCONFIRMED_NS`].

use std::collections::HashMap;

use super::IntervalUnion;

/// Without a kernel to confirm it, an episode with no end is dropped after
/// this long: the kernel sleeps at most 2 s per call
/// (MEMCG_MAX_HIGH_DELAY_JIFFIES) after a bounded reclaim, so 10 s is far
/// past any real episode of a recording.
pub const MAX_UNCONFIRMED_NS: u64 = 10_000_000_000;

/// An episode in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ongoing {
    start: u64,
    /// The last time the kernel said the task was still inside (its start
    /// until the first reconciliation).
    confirmed: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ThrottleTracker {
    done: IntervalUnion,
    /// Each task's episode in progress, by thread id.
    ongoing: HashMap<u32, Ongoing>,
    /// Union of all completed episodes since the start, ns.
    pub total_ns: u64,
    pub episodes: u64,
}

impl ThrottleTracker {
    pub fn begin(&mut self, tid: u32, start: u64) {
        self.ongoing.insert(
            tid,
            Ongoing {
                start,
                confirmed: start,
            },
        );
    }

    /// A completed episode (its begin may or may not have been seen).
    pub fn end(&mut self, tid: u32, start: u64, end: u64) {
        self.ongoing.remove(&tid);
        self.add_done(start, end);
    }

    fn add_done(&mut self, start: u64, end: u64) {
        let before = self.done.total();
        self.done.add(start, end);
        self.total_ns += self.done.total().saturating_sub(before);
        self.episodes += 1;
    }

    /// Time in `[now - window, now]` during which at least one task was
    /// throttled, counting episodes in progress up to `now`.
    pub fn throttled_in(&self, now: u64, window: u64) -> u64 {
        let from = now.saturating_sub(window);
        let done = self.done.covered(from, now);
        match self.ongoing_since() {
            Some(s) if s < now => {
                let s = s.max(from);
                // Every ongoing episode runs to `now`: their union is
                // [earliest start, now]; add what the completed ones do not
                // already cover.
                done + (now - s) - self.done.covered(s, now)
            }
            _ => done,
        }
    }

    /// Earliest start among episodes in progress.
    pub fn ongoing_since(&self) -> Option<u64> {
        self.ongoing.values().map(|o| o.start).min()
    }

    /// The start of the earliest throttling still held.
    pub fn first_start(&self) -> Option<u64> {
        let done = self.done.spans().first().map(|s| s.0);
        match (done, self.ongoing_since()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn in_progress(&self) -> usize {
        self.ongoing.len()
    }

    /// Whether nothing is in progress and nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.ongoing.is_empty() && self.done.is_empty()
    }

    /// When the window's throttled time can first reach `budget`, if it can
    /// (an episode is in progress), assuming it keeps running. Throttled
    /// time grows by at most 1 ns per ns, so this is never late; checking
    /// at that instant and re-arming converges on the crossing.
    pub fn deadline(&self, now: u64, window: u64, budget: u64) -> Option<u64> {
        self.ongoing_since()?;
        let used = self.throttled_in(now, window);
        Some(now + budget.saturating_sub(used))
    }

    /// Checks every episode in progress against the kernel: `inside(tid,
    /// start)` says whether that thread is still inside the throttle
    /// function in the episode that began at `start`. An episode the kernel
    /// no longer has lost its end record: it ends where it was last seen,
    /// so it never counts time nobody saw. Returns how many ended so.
    pub fn reconcile(&mut self, now: u64, inside: &impl Fn(u32, u64) -> bool) -> usize {
        let mut lost = Vec::new();
        for (tid, o) in &mut self.ongoing {
            if inside(*tid, o.start) {
                o.confirmed = o.confirmed.max(now);
            } else {
                lost.push((*tid, *o));
            }
        }
        for (tid, o) in &lost {
            self.ongoing.remove(tid);
            self.add_done(o.start, o.confirmed);
        }
        lost.len()
    }

    /// Forgets history before `t`. Without reconciliation (`confirmed`
    /// false: a recording), episodes stuck for [`MAX_UNCONFIRMED_NS`] go
    /// too.
    pub fn forget_before(&mut self, t: u64, now: u64, reconciled: bool) {
        self.done.forget_before(t);
        if !reconciled {
            self.ongoing
                .retain(|_, o| now.saturating_sub(o.start) < MAX_UNCONFIRMED_NS);
        }
    }

    /// Forgets everything before `t` for budget purposes (after a kill, the
    /// throttling that caused it must not cause another).
    pub fn reset_window(&mut self, t: u64) {
        self.done.forget_before(t);
        for o in self.ongoing.values_mut() {
            o.start = o.start.max(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn ongoing_episodes_count_as_they_run() {
        let mut t = ThrottleTracker::default();
        t.end(1, 0, 2 * S);
        t.begin(1, 5 * S);
        assert_eq!(t.throttled_in(6 * S, 10 * S), 3 * S);
        // A second task overlapping counts once.
        t.begin(2, 5 * S + S / 2);
        assert_eq!(t.throttled_in(7 * S, 10 * S), 4 * S);
        t.end(1, 5 * S, 8 * S);
        t.end(2, 5 * S + S / 2, 8 * S);
        assert_eq!(t.throttled_in(8 * S, 10 * S), 5 * S);
        assert_eq!(t.total_ns, 5 * S);
        assert_eq!(t.episodes, 3);
        // The window slides.
        assert_eq!(t.throttled_in(11 * S, 5 * S), 2 * S);
    }

    #[test]
    fn ongoing_overlapping_completed_is_not_double_counted() {
        let mut t = ThrottleTracker::default();
        t.begin(1, 0);
        t.end(2, S, 2 * S);
        assert_eq!(t.throttled_in(3 * S, 10 * S), 3 * S);
    }

    #[test]
    fn the_deadline_is_never_late_and_converges() {
        // 2 s of old throttling sliding out of a 3 s window while a new
        // episode runs from t=3 s: budget 2.5 s. The window holds 2 s
        // until t=5 s (old time leaves as fast as new time comes), then
        // grows: the crossing is at 5.5 s.
        let mut t = ThrottleTracker::default();
        t.end(1, 0, 2 * S);
        t.begin(1, 3 * S);
        let (window, budget) = (3 * S, 5 * S / 2);
        let mut now = 3 * S;
        let mut steps = 0;
        loop {
            let d = t.deadline(now, window, budget).unwrap();
            if d <= now {
                break;
            }
            // Never past the true crossing: at the deadline, at most the
            // budget is used.
            assert!(t.throttled_in(d, window) <= budget, "late at {d}");
            now = d;
            steps += 1;
            assert!(steps < 64, "does not converge");
        }
        assert_eq!(now, 11 * S / 2);
        assert_eq!(t.throttled_in(now, window), budget);
        assert!(t.deadline(now, window, budget).unwrap() <= now);
    }

    #[test]
    fn no_deadline_without_an_episode_in_progress() {
        let mut t = ThrottleTracker::default();
        t.end(1, 0, S);
        assert_eq!(t.deadline(S, 10 * S, S / 2), None);
    }

    #[test]
    fn a_long_episode_counts_for_as_long_as_the_kernel_confirms_it() {
        let mut t = ThrottleTracker::default();
        t.begin(7, S);
        for now in (2..=40).map(|s| s * S) {
            assert_eq!(t.reconcile(now, &|tid, start| tid == 7 && start == S), 0);
            t.forget_before(now.saturating_sub(600 * S), now, true);
        }
        // 39 s inside the function, all of it counted: in a 10 s window
        // the whole window.
        assert_eq!(t.throttled_in(40 * S, 10 * S), 10 * S);
        assert_eq!(t.in_progress(), 1);
    }

    #[test]
    fn an_episode_the_kernel_no_longer_has_ends_where_it_was_last_seen() {
        let mut t = ThrottleTracker::default();
        t.begin(7, S);
        assert_eq!(t.reconcile(2 * S, &|_, _| true), 0);
        // Its end record was lost: at 3 s the kernel has no such task.
        assert_eq!(t.reconcile(3 * S, &|_, _| false), 1);
        assert_eq!(t.in_progress(), 0);
        assert_eq!(t.throttled_in(20 * S, 30 * S), S, "1 s to 2 s only");
        // A thread in a new episode (another start) is not the old one.
        t.begin(8, 4 * S);
        assert_eq!(t.reconcile(5 * S, &|_, start| start == 99), 1);
        assert_eq!(t.throttled_in(20 * S, 30 * S), S);
    }

    #[test]
    fn resets_and_unconfirmed_stuck_episodes() {
        let mut t = ThrottleTracker::default();
        t.end(1, 0, 4 * S);
        t.begin(2, 3 * S);
        t.reset_window(5 * S);
        assert_eq!(t.throttled_in(6 * S, 10 * S), S);
        // Reconciled sources keep it; a recording drops it after the cap.
        t.forget_before(0, 5 * S + MAX_UNCONFIRMED_NS, true);
        assert_eq!(t.in_progress(), 1);
        t.forget_before(0, 5 * S + MAX_UNCONFIRMED_NS, false);
        assert_eq!(t.in_progress(), 0);
    }
}
