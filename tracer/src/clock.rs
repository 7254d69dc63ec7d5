//! Time: the monotonic clock the kernel stamps events with, and its
//! conversion to wall-clock time for people and files.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

// One set of human formats for logs, alerts and screens.
pub use memtrace_ui::fmt::{fmt_bytes, fmt_ns};

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

thread_local! {
    /// The last second [`Clock::rfc3339`] formatted, and its text.
    static RFC3339_SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((0, String::new())) };
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
        let t = self.system_time(mono_ns);
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        // Exports format millions of times a second, mostly the same
        // second: its date and time are formatted once per second.
        RFC3339_SECOND.with(|cache| {
            let mut c = cache.borrow_mut();
            if c.0 != since.as_secs() || c.1.is_empty() {
                let whole = UNIX_EPOCH + Duration::from_secs(since.as_secs());
                let text = humantime::format_rfc3339_seconds(whole).to_string();
                // `...T19:20:01Z`: keep all but the `Z`.
                *c = (since.as_secs(), text.trim_end_matches('Z').to_string());
            }
            format!("{}.{:09}Z", c.1, since.subsec_nanos())
        })
    }

    /// `HH:MM:SS.mmm` UTC, for dense text output.
    pub fn hms(&self, mono_ns: u64) -> String {
        let s = self.rfc3339(mono_ns);
        // 2026-11-22T19:20:01.123456789Z → 19:20:01.123
        s.get(11..23).unwrap_or(&s).to_string()
    }
}

/// No duration is longer: every deadline built from one (now + d) stays
/// far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration, the one syntax of every flag and config value:
/// `10s`, `1m30s`, `250ms`, `2h`, or a bare number of seconds (`1.5`).
/// At most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = if let Ok(secs) = t.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(format!("`{s}` is not a duration (negative or not finite)"));
        }
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    } else {
        humantime::parse_duration(t)
            .map_err(|e| format!("`{s}` is not a duration: {e} (try 10s, 1m, 250ms)"))?
    };
    if d > MAX_DURATION {
        return Err(format!("`{s}` is too long: at most 100 years"));
    }
    Ok(d)
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
        // Far beyond any deadline: an error, never an overflow later.
        for huge in ["300000000000years", "1e30", "18446744073709551615s"] {
            assert!(
                parse_duration(huge).unwrap_err().contains("too long"),
                "{huge}"
            );
        }
        assert!(
            parse_duration("ten")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
