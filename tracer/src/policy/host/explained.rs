//! Memory stall that a cgroup's own limit explains: the part of the host's
//! PSI that is one cgroup's alert, not the host's.
//!
//! System-wide PSI counts every task's stall, including the tasks of a
//! cgroup throttled over its own memory.high or reclaiming at its own
//! memory.max while the host has plenty. A cgroup counts as held by its own
//! limit in a sample when it is over memory.high, or its memory.events
//! `high` or `max` grew since its last sample. Its `memory.pressure` growth
//! since then is added to the explained totals, once per subtree: a held
//! cgroup whose ancestor is held too is already inside the ancestor's
//! figure. Overlapping stalls of two held siblings are counted twice, so
//! the discount errs on the side of explaining too much; the verdict never
//! rests on pressure alone (see [`super`]).

use std::collections::HashMap;

use crate::sys::cgroupfs::CgroupMemory;

/// A cgroup not sampled for this long is forgotten.
const FORGET_NS: u64 = 120_000_000_000;
/// Cgroups named in an alert as holding their own pressure.
const NAMED: usize = 3;

#[derive(Clone, Copy, Debug)]
struct Last {
    some_us: Option<u64>,
    full_us: Option<u64>,
    high: Option<u64>,
    max: Option<u64>,
    seen_ns: u64,
}

/// Cumulative stall (µs) that cgroups' own limits explain, fed by the
/// once-a-second cgroup samples.
#[derive(Debug, Default)]
pub struct ExplainedStall {
    last: HashMap<u64, Last>,
    /// Stall so far that held cgroups account for, `some` and `full`.
    pub some_us: u64,
    pub full_us: u64,
    /// The held cgroups of the latest sample, most stalled first, with
    /// their `some` growth since their previous sample.
    pub held: Vec<(String, u64)>,
}

impl ExplainedStall {
    /// One cgroup sample: `(id, path, memory)` of each cgroup in it.
    pub fn sample(&mut self, ts_ns: u64, cgroups: &[(u64, &str, &CgroupMemory)]) {
        let mut held: Vec<(u64, &str, u64, u64)> = Vec::new();
        for &(id, path, m) in cgroups {
            let (some, full) = match m.pressure {
                Some(p) => (Some(p.some_total_us), Some(p.full_total_us)),
                None => (None, None),
            };
            let now = Last {
                some_us: some,
                full_us: full,
                high: m.events.high,
                max: m.events.max,
                seen_ns: ts_ns,
            };
            let before = self.last.insert(id, now);
            let Some(before) = before else { continue };
            let grew =
                |a: Option<u64>, b: Option<u64>| matches!((a, b), (Some(a), Some(b)) if a > b);
            let limited = m.over_high() || grew(now.high, before.high) || grew(now.max, before.max);
            if !limited {
                continue;
            }
            let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => a.saturating_sub(b),
                _ => 0,
            };
            held.push((
                id,
                path,
                delta(now.some_us, before.some_us),
                delta(now.full_us, before.full_us),
            ));
        }
        // Once per subtree: the topmost held cgroup's figure has its
        // children's stalls in it.
        let paths: Vec<&str> = held.iter().map(|h| h.1).collect();
        let top: Vec<&(u64, &str, u64, u64)> = held
            .iter()
            .filter(|h| {
                !crate::sys::registry::ancestors(h.1)
                    .skip(1)
                    .any(|a| paths.contains(&a))
            })
            .collect();
        self.held.clear();
        for h in &top {
            self.some_us += h.2;
            self.full_us += h.3;
            self.held.push((h.1.to_string(), h.2));
        }
        self.held
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.last
            .retain(|_, l| ts_ns.saturating_sub(l.seen_ns) < FORGET_NS);
    }

    /// The cgroups to name in an alert, most stalled first.
    pub fn named(&self) -> Vec<String> {
        self.held
            .iter()
            .filter(|(_, us)| *us > 0)
            .take(NAMED)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::cgroupfs::{MemEvents, Psi};

    const S: u64 = 1_000_000_000;

    fn mem(current: u64, high: Option<u64>, events_high: u64, some_us: u64) -> CgroupMemory {
        CgroupMemory {
            current: Some(current),
            high,
            max: None,
            events: MemEvents {
                high: Some(events_high),
                max: Some(0),
                ..MemEvents::default()
            },
            pressure: Some(Psi {
                some_total_us: some_us,
                full_total_us: some_us / 2,
                ..Psi::default()
            }),
        }
    }

    #[test]
    fn a_cgroup_over_its_high_explains_its_own_stall_once_per_subtree() {
        let mut e = ExplainedStall::default();
        let (a, b, c) = (
            mem(100, Some(64), 10, 1_000_000),
            mem(90, Some(80), 5, 900_000),
            mem(10, None, 0, 50_000),
        );
        e.sample(0, &[(1, "/a", &a), (2, "/a/b", &b), (3, "/c", &c)]);
        // The first sight of a cgroup has nothing to compare with.
        assert_eq!((e.some_us, e.full_us), (0, 0));
        let (a, b, c) = (
            mem(100, Some(64), 30, 1_600_000),
            mem(90, Some(80), 9, 1_400_000),
            mem(10, None, 0, 250_000),
        );
        e.sample(S, &[(1, "/a", &a), (2, "/a/b", &b), (3, "/c", &c)]);
        // /a/b's stall is inside /a's; /c has no limit of its own.
        assert_eq!(e.some_us, 600_000);
        assert_eq!(e.full_us, 300_000);
        assert_eq!(e.named(), ["/a"]);
    }

    #[test]
    fn growth_of_memory_events_counts_even_back_under_the_limit() {
        let mut e = ExplainedStall::default();
        e.sample(0, &[(1, "/w", &mem(50, Some(64), 10, 0))]);
        e.sample(S, &[(1, "/w", &mem(50, Some(64), 12, 400_000))]);
        assert_eq!(e.some_us, 400_000);
        // Quiet: under high, no new events: its stall is the host's.
        e.sample(2 * S, &[(1, "/w", &mem(50, Some(64), 12, 700_000))]);
        assert_eq!(e.some_us, 400_000);
        assert!(e.named().is_empty());
    }

    #[test]
    fn forgets_cgroups_gone_from_the_samples() {
        let mut e = ExplainedStall::default();
        e.sample(0, &[(1, "/w", &mem(100, Some(64), 1, 0))]);
        e.sample(FORGET_NS + S, &[]);
        assert!(e.last.is_empty());
        // Seen again: a first sight, no delta from a stale reading.
        e.sample(
            FORGET_NS + 2 * S,
            &[(1, "/w", &mem(100, Some(64), 9, 5_000_000))],
        );
        assert_eq!(e.some_us, 0);
    }
}
