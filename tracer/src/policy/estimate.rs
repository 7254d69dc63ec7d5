//! Throttled time without the throttle probe: an estimate from a cgroup's
//! own counters (memory.pressure `full` and memory.events `high`), once per
//! sample. Decisions made from it say they are estimates.

use std::collections::{HashMap, VecDeque};

use crate::sys::cgroupfs::CgroupMemory;

/// (time ns, memory.pressure full total µs, memory.events high).
type CounterSample = (u64, u64, u64);

/// Throttled time estimated from a cgroup's own counters: memory.pressure
/// `full` growth over the window, counted only while memory.events `high`
/// grows too (throttling, not some other stall).
#[derive(Debug, Default)]
pub struct Estimator {
    /// By cgroup and window: budgets with different windows keep their
    /// own history.
    samples: HashMap<(u64, u64), VecDeque<CounterSample>>,
}

impl Estimator {
    /// Records a sample; returns the estimated throttled ns in the last
    /// `window` ns, once the window is covered by samples.
    pub fn sample(
        &mut self,
        cgroup: u64,
        now: u64,
        mem: &CgroupMemory,
        window: u64,
    ) -> Option<u64> {
        let psi = mem.pressure?;
        // Without memory.events there is no sign of memory.high at work.
        let high = mem.events.high?;
        let q = self.samples.entry((cgroup, window)).or_default();
        q.push_back((now, psi.full_total_us, high));
        while q.len() > 2 && q[1].0 + window <= now {
            q.pop_front();
        }
        let &(t0, full0, high0) = q.front()?;
        if now.saturating_sub(t0) == 0 {
            return None;
        }
        let full = psi.full_total_us;
        if high <= high0 {
            return Some(0);
        }
        let stalled = u128::from(full.saturating_sub(full0)) * 1_000;
        // Scale to the window when the samples span more than it; u128
        // because a week of stall times a long window overflows u64.
        let span = u128::from(now - t0);
        let scaled = if span > u128::from(window) {
            stalled * u128::from(window) / span
        } else {
            stalled
        };
        Some(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// Drops the history of a cgroup that is gone.
    pub fn forget(&mut self, cgroup: u64) {
        self.samples.retain(|&(id, _), _| id != cgroup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::cgroupfs::{MemEvents, Psi};

    const S: u64 = 1_000_000_000;

    #[test]
    fn estimates_from_pressure_and_high_events() {
        let mut e = Estimator::default();
        let mem = |full_ms: u64, high: u64| CgroupMemory {
            events: MemEvents {
                high: Some(high),
                ..Default::default()
            },
            pressure: Some(Psi {
                full_total_us: full_ms * 1000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let w = 10 * S;
        assert_eq!(e.sample(1, 0, &mem(0, 0), w), None);
        assert_eq!(e.sample(1, S, &mem(600, 5), w), Some(600_000_000));
        // A long window over a long span: no overflow.
        assert_eq!(e.sample(4, 0, &mem(0, 0), 3600 * S), None);
        assert_eq!(
            e.sample(4, 7200 * S, &mem(3_000_000, 5), 3600 * S),
            Some(1_500 * S)
        );
        // Stall without memory.high events is not throttling.
        assert_eq!(e.sample(2, 0, &mem(0, 9), w), None);
        assert_eq!(e.sample(2, S, &mem(900, 9), w), Some(0));
        // No PSI file (cgroup v1): nothing to estimate.
        assert_eq!(e.sample(3, S, &CgroupMemory::default(), w), None);
    }
}
