//! The host's memory stall as a kernel PSI trigger on
//! `/proc/pressure/memory` sees it: `some` read every 100 ms on a thread,
//! and the most it grew within any window. A negative case ("this stall
//! pages no host alert") proves something only if the stall was enough to
//! set off the trigger the agent watches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(100);

pub struct HostPsiWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, u64)>>,
}

/// The host's `some` memory stall so far, µs.
pub fn some_us() -> u64 {
    std::fs::read_to_string("/proc/pressure/memory")
        .ok()
        .and_then(|t| crate::cgroup::psi_total(&t, "some"))
        .unwrap_or(0)
}

impl HostPsiWatch {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                v.push((Instant::now(), some_us()));
                std::thread::sleep(EVERY);
            }
            v.push((Instant::now(), some_us()));
            v
        });
        Self { stop, thread }
    }

    /// Stops and returns the whole stall and the most it grew within any
    /// `window` (both ms).
    pub fn finish(self, window: Duration) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let v = self.thread.join().unwrap_or_default();
        let total = match (v.first(), v.last()) {
            (Some(a), Some(b)) => b.1.saturating_sub(a.1),
            _ => 0,
        };
        (total as f64 / 1e3, worst_within(&v, window) as f64 / 1e3)
    }
}

/// The most the counter grew between two readings at most `window` apart.
fn worst_within(v: &[(Instant, u64)], window: Duration) -> u64 {
    let mut worst = 0;
    for (i, a) in v.iter().enumerate() {
        for b in &v[i + 1..] {
            if b.0.duration_since(a.0) > window {
                break;
            }
            worst = worst.max(b.1.saturating_sub(a.1));
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_window_is_the_steepest_growth_within_it() {
        let t = Instant::now();
        let at = |ms: u64, us: u64| (t + Duration::from_millis(ms), us);
        let v = [
            at(0, 0),
            at(1000, 100),
            at(2000, 900),
            at(3000, 1000),
            at(5000, 1100),
        ];
        assert_eq!(worst_within(&v, Duration::from_secs(2)), 900);
        assert_eq!(worst_within(&v, Duration::from_secs(1)), 800);
        assert_eq!(worst_within(&v[..1], Duration::from_secs(2)), 0);
    }
}
