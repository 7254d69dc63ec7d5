//! Throttled time of one cgroup: completed episodes as a union of
//! intervals, plus the episodes still in progress, which count as they run.

use std::collections::HashMap;

use super::IntervalUnion;

/// An episode with no end after this long is dropped: its end record was
/// lost, the task cannot still be in the function. The kernel sleeps at
/// most 2 s per call (MEMCG_MAX_HIGH_DELAY_JIFFIES) after a bounded
/// reclaim, so 10 s is far past any real episode, yet short enough that a
/// missed return (the kretprobe fallback drops returns beyond its
/// `maxactive` instances) does not count as throttling for long.
pub const MAX_EPISODE_NS: u64 = 10_000_000_000;

#[derive(Clone, Debug, Default)]
pub struct ThrottleTracker {
    done: IntervalUnion,
    /// Start of each task's episode in progress, by thread id.
    ongoing: HashMap<u32, u64>,
    /// Union of all completed episodes since the start, ns.
    pub total_ns: u64,
    pub episodes: u64,
}

impl ThrottleTracker {
    pub fn begin(&mut self, tid: u32, start: u64) {
        self.ongoing.insert(tid, start);
    }

    /// A completed episode (its begin may or may not have been seen).
    pub fn end(&mut self, tid: u32, start: u64, end: u64) {
        self.ongoing.remove(&tid);
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
        self.ongoing.values().copied().min()
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

    /// When the window's throttled time can first reach `budget`, if it can
    /// (an episode is in progress), assuming it keeps running. Throttled
    /// time grows by at most 1 ns per ns, so this is never late; checking
    /// at that instant and re-arming converges on the crossing.
    pub fn deadline(&self, now: u64, window: u64, budget: u64) -> Option<u64> {
        self.ongoing_since()?;
        let used = self.throttled_in(now, window);
        Some(now + budget.saturating_sub(used))
    }

    /// Forgets history before `t` and episodes stuck since long before.
    pub fn forget_before(&mut self, t: u64, now: u64) {
        self.done.forget_before(t);
        self.ongoing
            .retain(|_, start| now.saturating_sub(*start) < MAX_EPISODE_NS);
    }

    /// Forgets everything before `t` for budget purposes (after a kill, the
    /// throttling that caused it must not cause another).
    pub fn reset_window(&mut self, t: u64) {
        self.done.forget_before(t);
        for start in self.ongoing.values_mut() {
            *start = (*start).max(t);
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
    fn resets_and_stuck_episodes() {
        let mut t = ThrottleTracker::default();
        t.end(1, 0, 4 * S);
        t.begin(2, 3 * S);
        t.reset_window(5 * S);
        assert_eq!(t.throttled_in(6 * S, 10 * S), S);
        t.forget_before(0, 5 * S + MAX_EPISODE_NS);
        assert_eq!(t.in_progress(), 0);
    }
}
