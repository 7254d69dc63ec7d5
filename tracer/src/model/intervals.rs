//! Unions of time intervals: "at least one task of the cgroup was inside
//! the throttle function". Overlapping episodes of several tasks count
//! once, as PSI's `some` does.

/// A set of disjoint, sorted half-open intervals `[start, end)` in ns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalUnion {
    spans: Vec<(u64, u64)>,
    /// Covered time, kept as spans change: `total` is asked for on every
    /// episode, and summing the spans then would cost time linear in the
    /// history (quadratic over a long report).
    total: u64,
}

impl IntervalUnion {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `[start, end)`, merging with what it overlaps or touches.
    pub fn add(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        // First span that ends at or after `start`.
        let i = self.spans.partition_point(|&(_, e)| e < start);
        let mut j = i;
        let (mut s, mut e) = (start, end);
        let mut merged = 0;
        while j < self.spans.len() && self.spans[j].0 <= e {
            s = s.min(self.spans[j].0);
            e = e.max(self.spans[j].1);
            merged += self.spans[j].1 - self.spans[j].0;
            j += 1;
        }
        self.total = self.total - merged + (e - s);
        // Episodes arrive nearly in order: most are appended or extend
        // one span; only a merge of several moves the tail.
        match j - i {
            0 => self.spans.insert(i, (s, e)),
            1 => self.spans[i] = (s, e),
            _ => {
                self.spans[i] = (s, e);
                self.spans.drain(i + 1..j);
            }
        }
    }

    /// Total covered time.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Covered time inside `[from, to)`.
    pub fn covered(&self, from: u64, to: u64) -> u64 {
        if to <= from {
            return 0;
        }
        let i = self.spans.partition_point(|&(_, e)| e <= from);
        self.spans[i..]
            .iter()
            .take_while(|&&(s, _)| s < to)
            .map(|&(s, e)| e.min(to) - s.max(from))
            .sum()
    }

    /// Drops everything that ends before `t`, trimming a span across it.
    pub fn forget_before(&mut self, t: u64) {
        let i = self.spans.partition_point(|&(_, e)| e <= t);
        let gone: u64 = self.spans[..i].iter().map(|&(s, e)| e - s).sum();
        self.spans.drain(..i);
        self.total -= gone;
        if let Some(first) = self.spans.first_mut() {
            let cut = t.saturating_sub(first.0);
            if cut > 0 {
                first.0 = t;
                self.total -= cut;
            }
        }
    }

    pub fn spans(&self) -> &[(u64, u64)] {
        &self.spans
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_touching_spans_merge() {
        let mut u = IntervalUnion::new();
        u.add(10, 20);
        u.add(30, 40);
        u.add(15, 32);
        assert_eq!(u.spans(), &[(10, 40)]);
        u.add(40, 45);
        assert_eq!(u.spans(), &[(10, 45)]);
        u.add(0, 5);
        u.add(50, 60);
        assert_eq!(u.spans(), &[(0, 5), (10, 45), (50, 60)]);
        assert_eq!(u.total(), 5 + 35 + 10);
        u.add(7, 7);
        assert_eq!(u.total(), 50);
    }

    #[test]
    fn covered_clips_to_the_window() {
        let mut u = IntervalUnion::new();
        u.add(0, 10);
        u.add(20, 30);
        assert_eq!(u.covered(5, 25), 5 + 5);
        assert_eq!(u.covered(10, 20), 0);
        assert_eq!(u.covered(0, 100), 20);
        assert_eq!(u.covered(30, 10), 0);
    }

    #[test]
    fn forgetting_trims() {
        let mut u = IntervalUnion::new();
        u.add(0, 10);
        u.add(20, 30);
        u.forget_before(25);
        assert_eq!(u.spans(), &[(25, 30)]);
        assert_eq!(u.total(), 5);
    }

    #[test]
    fn matches_a_brute_force_union() {
        let mut state = 88172645463325252u64;
        let mut rnd = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        for _ in 0..200 {
            let mut u = IntervalUnion::new();
            let mut cells = [false; 200];
            for _ in 0..rnd(12) {
                let s = rnd(190);
                let e = (s + rnd(20)).min(200);
                u.add(s, e);
                for c in &mut cells[s as usize..e as usize] {
                    *c = true;
                }
            }
            let brute = cells.iter().filter(|&&c| c).count() as u64;
            assert_eq!(u.total(), brute);
            let (a, b) = (rnd(100), 100 + rnd(100));
            let brute_w = cells[a as usize..b as usize].iter().filter(|&&c| c).count() as u64;
            assert_eq!(u.covered(a, b), brute_w);
            // The kept total follows forgetting too.
            let t = rnd(200);
            u.forget_before(t);
            let after = cells[t as usize..].iter().filter(|&&c| c).count() as u64;
            assert_eq!(u.total(), after);
            assert_eq!(
                u.total(),
                u.spans().iter().map(|&(s, e)| e - s).sum::<u64>()
            );
        }
    }
}
