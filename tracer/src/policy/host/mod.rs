//! The host's leading edge: is this box sliding into exhaustion? The
//! second incident's metrics went dark for the whole livelock; only an
//! alert sent while the box could still speak would have helped. And a
//! host alert that also fires for every livelock contained in one cgroup
//! is muted within a week, so this verdict must mean the box itself.
//!
//! Judged together, host-wide, from a reading a second ([`HostPoint`]):
//!
//! - **swap**: free swap below `swap_free_below`, or draining so fast it
//!   is gone within `exhaustion_within`;
//! - **mem_available**: MemAvailable below `mem_available_below`;
//! - **collapse**: MemAvailable alone below `collapse_below` and, at the
//!   pace of the fit and at the pace of each third of `trend_window`,
//!   gone within `exhaustion_within` ([`collapsing`]);
//! - **exhaustion**: MemAvailable and free swap together, at the pace of a
//!   least-squares fit over `trend_window`, gone within
//!   `exhaustion_within`;
//! - **pressure**: memory PSI over the last 10 s that no cgroup's own limit
//!   explains ([`explained`]) above `psi_some_above` (`some`) or
//!   `psi_full_above` (`full`).
//!
//! The box is sliding when it is low (swap or mem_available) **and** the
//! low is getting worse fast (exhaustion) or tasks stall on it
//! (pressure), or when its RAM collapses (collapse). The last is the
//! leading edge on a box whose swap is no real headroom (a slow disk):
//! such a box stops answering when RAM runs out, long before swap does,
//! so waiting for MemAvailable to be low leaves seconds. A collapse is a
//! fall that kept its pace over the whole window, so a one-off drop (a
//! big start), a slow drift or a box that lives low is not one.
//! Pressure alone never makes the verdict: a cgroup over its
//! memory.high stalls on a host with plenty, and that is the cgroup's
//! alert. A level alone never does either: a box that lives at 5 %
//! MemAvailable is not going down. One alert per slide; another after the
//! verdict has been false for [`REARM_NS`].
//!
//! Pure: the agent's loop takes the readings (`/proc/meminfo`,
//! `/proc/pressure/memory`), the samples feed [`ExplainedStall`], and the
//! agent turns a [`Finding`] into an alert.

pub mod explained;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use serde::Serialize;

pub use explained::ExplainedStall;

use crate::config::HostConfig;
use crate::sys::cgroupfs::HostMemory;

/// The alert's topic (what alerts fold on).
pub const TOPIC: &str = "host:exhaustion";
/// PSI shares are taken over this much of the latest readings, as the
/// kernel's avg10.
const PSI_SPAN_NS: u64 = 10_000_000_000;
/// A slope needs this many readings ...
const MIN_POINTS: usize = 5;
/// ... spanning this long.
const MIN_SPAN_NS: u64 = 5_000_000_000;
/// A level counts as falling only when the fit moved it by this share of
/// its total over the readings: noise and a few pages are not a trend.
const MIN_FALL: f64 = 0.01;
/// After an alert, the verdict must be false this long before another.
pub const REARM_NS: u64 = 300_000_000_000;

/// One reading of the host.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostPoint {
    pub ts_ns: u64,
    pub mem: HostMemory,
    /// [`ExplainedStall`]'s totals when the reading was taken (µs).
    pub explained_some_us: u64,
    pub explained_full_us: u64,
}

/// The numbers behind a verdict, for the alert's `details`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostDetails {
    pub topic: &'static str,
    /// Which signals held: `swap`, `mem_available`, `collapse`,
    /// `exhaustion`, `pressure`.
    pub signals: Vec<&'static str>,
    /// Predicted seconds until MemAvailable and free swap together are
    /// gone at the recent pace; none while they are not falling.
    pub eta_s: Option<f64>,
    pub mem_available_bytes: u64,
    pub mem_total_bytes: u64,
    pub mem_available_pct: f64,
    /// The fitted slope (negative: falling).
    pub mem_available_bytes_per_s: Option<f64>,
    pub mem_available_eta_s: Option<f64>,
    pub swap_free_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_pct: Option<f64>,
    pub swap_free_bytes_per_s: Option<f64>,
    pub swap_eta_s: Option<f64>,
    /// Host memory PSI over the last 10 s, percent of the time.
    pub psi_some_pct: Option<f64>,
    pub psi_full_pct: Option<f64>,
    /// The same less what cgroups' own limits explain.
    pub psi_some_unexplained_pct: Option<f64>,
    pub psi_full_unexplained_pct: Option<f64>,
    /// `rising`, `steady` or `falling`: the unexplained `some` share
    /// against the 10 s before.
    pub psi_trend: Option<&'static str>,
    /// Cgroups whose own limits explained part of the pressure.
    pub explained_by: Vec<String>,
    /// What the slopes were fitted over.
    pub trend_s: f64,
    pub samples: usize,
}

/// The verdict starting: what the agent alerts.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub topic: &'static str,
    pub summary: String,
    pub details: HostDetails,
}

/// The latest judgement, alert or not (for the metrics page).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Judgement {
    pub sliding: bool,
    pub eta_s: Option<f64>,
}

/// Readings over the trend window and the state of the current slide.
#[derive(Debug, Default)]
pub struct HostJudge {
    points: VecDeque<HostPoint>,
    /// An alert was sent for the current slide.
    alerted: bool,
    /// Since when the verdict has been false, after an alert.
    false_since: Option<u64>,
    pub latest: Judgement,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The least-squares slope of `y` over time, per second.
fn slope(points: &VecDeque<HostPoint>, y: impl Fn(&HostMemory) -> u64) -> Option<f64> {
    let last = points.back()?.ts_ns;
    let n = points.len() as f64;
    let xs = || points.iter().map(|p| -((last - p.ts_ns) as f64) / 1e9);
    let mx = xs().sum::<f64>() / n;
    let my = points.iter().map(|p| y(&p.mem) as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, p) in xs().zip(points) {
        sxy += (x - mx) * (y(&p.mem) as f64 - my);
        sxx += (x - mx) * (x - mx);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Seconds until `level` is gone at `slope`, when the fit says it is
/// really falling (by at least [`MIN_FALL`] of `total` over `span_s`).
fn eta(level: u64, slope: Option<f64>, total: u64, span_s: f64) -> Option<f64> {
    let s = slope?;
    (s < 0.0 && -s * span_s >= MIN_FALL * total as f64).then(|| level as f64 / -s)
}

/// MemAvailable collapsing: over a fit spanning at least half of
/// `window_ns`, at the fit's pace (`avail_eta`) and at the pace of each
/// third of it on its own, what is left now is gone within `within_s`.
/// Each third must fall by itself: a step (a big start, a one-off drop)
/// falls in one third or two, not in all three. A fall that slows (a
/// service done warming up) must still reach empty at its slowing pace.
fn collapsing(
    fit: &VecDeque<HostPoint>,
    window_ns: u64,
    avail_eta: Option<f64>,
    within_s: f64,
) -> bool {
    let (Some(first), Some(last)) = (fit.front(), fit.back()) else {
        return false;
    };
    let span_ns = last.ts_ns - first.ts_ns;
    if 2 * span_ns < window_ns || !avail_eta.is_some_and(|e| e <= within_s) {
        return false;
    }
    let level = last.mem.mem_available;
    let third_ns = span_ns / 3;
    // Each third's pace (bytes/s, positive: falling).
    let mut paces = [0.0; 3];
    for (k, pace) in paces.iter_mut().enumerate() {
        let k = k as u64;
        let (from, to) = (first.ts_ns + k * third_ns, first.ts_ns + (k + 1) * third_ns);
        let part: VecDeque<HostPoint> = fit
            .iter()
            .filter(|p| p.ts_ns >= from && (p.ts_ns < to || k == 2))
            .copied()
            .collect();
        let part_s = part
            .front()
            .zip(part.back())
            .map_or(0.0, |(a, b)| (b.ts_ns - a.ts_ns) as f64 / 1e9);
        let s = slope(&part, |h| h.mem_available);
        let on_course = part.len() >= 3
            && eta(level, s, last.mem.mem_total / 3, part_s).is_some_and(|e| e <= within_s);
        if !on_course {
            return false;
        }
        *pace = -s.unwrap_or(0.0);
    }
    // A fall that slows down (a heap done warming up) stops where its
    // pace, slowing as it did from the middle third to the latest, reaches
    // zero: a collapse only if that is at or past empty. (The first third
    // may hold the fall's onset, which would hide the slowing.)
    let [_, middle, latest] = paces;
    if middle > latest {
        let slowing = (middle - latest) / (third_ns as f64 / 1e9);
        return latest * latest / (2.0 * slowing) >= level as f64;
    }
    true
}

/// Shares (percent) of the window ending at the last reading and starting
/// at the first reading at most `span_ns` older: host `some`, `full`, and
/// both less what is explained.
fn shares(points: &VecDeque<HostPoint>, end: usize, span_ns: u64) -> Option<[f64; 4]> {
    let last = points.get(end)?;
    let first = points
        .iter()
        .take(end)
        .find(|p| last.ts_ns - p.ts_ns <= span_ns)?;
    let (a, b) = (first.mem.pressure?, last.mem.pressure?);
    let dt = (last.ts_ns - first.ts_ns) as f64 / 1e3;
    if dt <= 0.0 {
        return None;
    }
    let some = b.some_total_us.saturating_sub(a.some_total_us);
    let full = b.full_total_us.saturating_sub(a.full_total_us);
    let ex_some = last
        .explained_some_us
        .saturating_sub(first.explained_some_us);
    let ex_full = last
        .explained_full_us
        .saturating_sub(first.explained_full_us);
    let share = |us: u64| (us as f64 * 100.0 / dt).min(100.0);
    Some([
        share(some),
        share(full),
        share(some.saturating_sub(ex_some)),
        share(full.saturating_sub(ex_full)),
    ])
}

impl HostJudge {
    /// Adds a reading and judges; a [`Finding`] when a slide starts.
    pub fn observe(
        &mut self,
        cfg: &HostConfig,
        point: HostPoint,
        explained: &ExplainedStall,
    ) -> Option<Finding> {
        if !cfg.enabled {
            self.latest = Judgement::default();
            return None;
        }
        // A clock that went back (a reading out of order): start over.
        if self.points.back().is_some_and(|p| p.ts_ns > point.ts_ns) {
            self.points.clear();
        }
        self.points.push_back(point);
        let keep = (cfg.trend_window.0.as_nanos() as u64).max(2 * PSI_SPAN_NS);
        while self
            .points
            .front()
            .is_some_and(|p| point.ts_ns - p.ts_ns > keep)
        {
            self.points.pop_front();
        }
        let details = self.judge(cfg, explained);
        let sliding = !details.signals.is_empty();
        self.latest = Judgement {
            sliding,
            eta_s: details.eta_s,
        };
        if !sliding {
            if self.alerted {
                let since = *self.false_since.get_or_insert(point.ts_ns);
                if point.ts_ns - since >= REARM_NS {
                    self.alerted = false;
                    self.false_since = None;
                }
            }
            return None;
        }
        self.false_since = None;
        if self.alerted {
            return None;
        }
        self.alerted = true;
        Some(Finding {
            topic: TOPIC,
            summary: summary(&details),
            details,
        })
    }

    /// The signals of the latest reading; none unless the box is sliding.
    fn judge(&self, cfg: &HostConfig, explained: &ExplainedStall) -> HostDetails {
        let Some(last) = self.points.back() else {
            return HostDetails::default();
        };
        let m = last.mem;
        let window = cfg.trend_window.0.as_nanos() as u64;
        let fit: VecDeque<HostPoint> = self
            .points
            .iter()
            .filter(|p| last.ts_ns - p.ts_ns <= window)
            .copied()
            .collect();
        let span_ns = fit.front().map_or(0, |f| last.ts_ns - f.ts_ns);
        let span_s = span_ns as f64 / 1e9;
        let fitted = fit.len() >= MIN_POINTS && span_ns >= MIN_SPAN_NS;
        let fit_slope = |y: fn(&HostMemory) -> u64| {
            if fitted { slope(&fit, y) } else { None }
        };
        let avail_slope = fit_slope(|h| h.mem_available);
        let swap_slope = if m.swap_total > 0 {
            fit_slope(|h| h.swap_free)
        } else {
            None
        };
        let headroom_slope = fit_slope(|h| h.mem_available + h.swap_free);
        let avail_eta = eta(m.mem_available, avail_slope, m.mem_total, span_s);
        let swap_eta = eta(m.swap_free, swap_slope, m.swap_total, span_s);
        let headroom_eta = eta(
            m.mem_available + m.swap_free,
            headroom_slope,
            m.mem_total + m.swap_total,
            span_s,
        );

        let within = cfg.exhaustion_within.0.as_secs_f64();
        let avail_pct = pct(m.mem_available, m.mem_total);
        let swap_pct = (m.swap_total > 0).then(|| pct(m.swap_free, m.swap_total));
        let swap_low = swap_pct
            .is_some_and(|p| p < cfg.swap_free_below.0 || swap_eta.is_some_and(|e| e <= within));
        let avail_low = avail_pct < cfg.mem_available_below.0;
        let imminent = headroom_eta.is_some_and(|e| e <= within);
        let collapse = fitted
            && avail_pct < cfg.collapse_below.0
            && collapsing(&fit, window, avail_eta, within);
        let end = self.points.len() - 1;
        let now = shares(&self.points, end, PSI_SPAN_NS);
        let before = self
            .points
            .iter()
            .rposition(|p| last.ts_ns - p.ts_ns >= PSI_SPAN_NS)
            .and_then(|i| shares(&self.points, i, PSI_SPAN_NS));
        let pressure = now.is_some_and(|[_, _, some, full]| {
            some >= cfg.psi_some_above.0 || full >= cfg.psi_full_above.0
        });
        let trend = match (now, before) {
            (Some(n), Some(b)) if n[2] > b[2] + 1.0 => Some("rising"),
            (Some(n), Some(b)) if n[2] < b[2] - 1.0 => Some("falling"),
            (Some(_), Some(_)) => Some("steady"),
            _ => None,
        };
        let mut signals = Vec::new();
        if (swap_low || avail_low) && (imminent || pressure) || collapse {
            for (on, name) in [
                (swap_low, "swap"),
                (avail_low, "mem_available"),
                (collapse, "collapse"),
                (imminent, "exhaustion"),
                (pressure, "pressure"),
            ] {
                if on {
                    signals.push(name);
                }
            }
        }
        let r = |x: Option<f64>| x.map(round1);
        HostDetails {
            topic: TOPIC,
            signals,
            eta_s: r(headroom_eta),
            mem_available_bytes: m.mem_available,
            mem_total_bytes: m.mem_total,
            mem_available_pct: round1(avail_pct),
            mem_available_bytes_per_s: avail_slope.map(f64::round),
            mem_available_eta_s: r(avail_eta),
            swap_free_bytes: m.swap_free,
            swap_total_bytes: m.swap_total,
            swap_free_pct: r(swap_pct),
            swap_free_bytes_per_s: swap_slope.map(f64::round),
            swap_eta_s: r(swap_eta),
            psi_some_pct: r(now.map(|s| s[0])),
            psi_full_pct: r(now.map(|s| s[1])),
            psi_some_unexplained_pct: r(now.map(|s| s[2])),
            psi_full_unexplained_pct: r(now.map(|s| s[3])),
            psi_trend: trend,
            explained_by: if now.is_some_and(|s| s[0] > s[2]) {
                explained.named()
            } else {
                Vec::new()
            },
            trend_s: round1(span_s),
            samples: fit.len(),
        }
    }
}

fn mib(b: u64) -> u64 {
    b >> 20
}

/// `-3.1 MiB/s`.
fn rate(bytes_per_s: Option<f64>) -> String {
    bytes_per_s.map_or_else(String::new, |s| {
        format!(", {:+.1} MiB/s", s / f64::from(1u32 << 20))
    })
}

/// `20s`, `4m10s`.
fn secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// One line for people: each signal that held, its value and trend, and
/// when the memory runs out.
fn summary(d: &HostDetails) -> String {
    let mut parts = Vec::new();
    if let Some(p) = d.swap_free_pct {
        let mut s = format!(
            "swap {p:.0}% free ({} of {} MiB){}",
            mib(d.swap_free_bytes),
            mib(d.swap_total_bytes),
            rate(d.swap_free_bytes_per_s)
        );
        if let Some(e) = d.swap_eta_s {
            s.push_str(&format!(", empty in ~{}", secs(e)));
        }
        parts.push(s);
    } else {
        parts.push("no swap".into());
    }
    let mut s = format!(
        "MemAvailable {:.0}% ({} of {} MiB){}",
        d.mem_available_pct,
        mib(d.mem_available_bytes),
        mib(d.mem_total_bytes),
        rate(d.mem_available_bytes_per_s)
    );
    if let Some(e) = d.mem_available_eta_s {
        s.push_str(&format!(", gone in ~{}", secs(e)));
    }
    parts.push(s);
    if let (Some(some), Some(un)) = (d.psi_some_pct, d.psi_some_unexplained_pct) {
        let mut s = format!("memory pressure {some:.0}%");
        if let Some(t) = d.psi_trend {
            s.push_str(&format!(" ({t})"));
        }
        if some - un >= 0.5 {
            s.push_str(&format!(", {:.0}% of it cgroups' own limits", some - un));
        }
        parts.push(s);
    }
    let end = match d.eta_s {
        Some(e) => format!("memory and swap gone in ~{}", secs(e)),
        None => "not draining, but stalling".into(),
    };
    format!(
        "host sliding into memory exhaustion ({}): {}; {end}",
        d.signals.join(", "),
        parts.join("; ")
    )
}
