//! Time: the monotonic clock the kernel stamps events with, and its
//! conversion to wall-clock time for people and files.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn mono_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Maps monotonic timestamps to wall-clock time, from one reading of both
/// clocks taken at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Wall-clock nanoseconds since the epoch minus monotonic nanoseconds.
    pub offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        let mono = mono_now_ns() as i128;
        Self {
            offset_ns: real - mono,
        }
    }

    /// Wall-clock nanoseconds since the epoch of a monotonic timestamp.
    pub fn wall_ns(&self, mono_ns: u64) -> i128 {
        mono_ns as i128 + self.offset_ns
    }

    pub fn system_time(&self, mono_ns: u64) -> SystemTime {
        let wall = self.wall_ns(mono_ns);
        if wall <= 0 {
            return UNIX_EPOCH;
        }
        UNIX_EPOCH + Duration::from_nanos(wall.min(u64::MAX as i128) as u64)
    }

    /// RFC 3339 UTC with nanoseconds, e.g. `2026-11-22T19:20:01.123456789Z`.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.system_time(mono_ns)).to_string()
    }

    /// `HH:MM:SS.mmm` UTC, for dense text output.
    pub fn hms(&self, mono_ns: u64) -> String {
        let s = self.rfc3339(mono_ns);
        // 2026-11-22T19:20:01.123456789Z → 19:20:01.123
        s.get(11..23).unwrap_or(&s).to_string()
    }
}

/// Parses a duration: `10s`, `1m30s`, `250ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("`{s}` is not a duration (negative or not finite)"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration: {e} (try 10s, 1m, 250ms)"))
}

/// `1.234s`, `12.3ms`, `456µs`: short and readable.
pub fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.0}µs", ns as f64 / 1e3)
    } else {
        format!("{ns}ns")
    }
}

/// `12.0MiB`, `1.5GiB`.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_conversion() {
        let c = Clock {
            offset_ns: 1_700_000_000_000_000_000,
        };
        assert_eq!(c.rfc3339(123_456_789), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(c.hms(123_456_789), "22:13:20.123");
        let now = Clock::now();
        let drift = now.wall_ns(mono_now_ns())
            - SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i128;
        assert!(drift.abs() < 1_000_000_000, "{drift}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-1").is_err());
        assert!(
            parse_duration("ten")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn human_formats() {
        assert_eq!(fmt_ns(1_500_000_000), "1.500s");
        assert_eq!(fmt_ns(2_500_000), "2.5ms");
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_bytes(512), "512B");
        assert_eq!(fmt_bytes(64 << 20), "64.0MiB");
    }
}
