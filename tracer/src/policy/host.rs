//! The host's leading edge: swap draining, MemAvailable collapsing, memory
//! PSI rising. The second incident's metrics went dark for the whole
//! livelock; only an alert sent while the box could still speak helped.
//!
//! This is the decision half, pure: it judges samples of the host
//! ([`HostMemory`], taken by the agent's tick) and fired PSI triggers
//! ([`crate::sys::psi`], which owns the trigger files) and returns
//! findings; the agent turns them into alerts.

use std::time::Duration;

use serde::Serialize;

use crate::config::HostConfig;
use crate::sys::cgroupfs::HostMemory;
use crate::sys::psi::PsiLine;

/// A leading-edge finding, for an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// `host:swap`, `host:mem_available`, `host:psi_some`, `host:psi_full`.
    pub topic: &'static str,
    pub summary: String,
    pub details: HostDetails,
}

/// The numbers behind a host finding, one shape per signal; each names its
/// topic last.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum HostDetails {
    Swap {
        swap_free_bytes: u64,
        swap_total_bytes: u64,
        swap_free_pct: f64,
        for_seconds: u64,
        topic: &'static str,
    },
    MemAvailable {
        mem_available_bytes: u64,
        mem_total_bytes: u64,
        mem_available_pct: f64,
        for_seconds: u64,
        topic: &'static str,
    },
    Psi {
        line: &'static str,
        stall_ms: u64,
        window_ms: u64,
        avg10_pct: f32,
        mem_available_bytes: u64,
        swap_free_bytes: u64,
        topic: &'static str,
    },
}

/// Tracks how long the host has been low on swap and MemAvailable.
#[derive(Debug, Default)]
pub struct HostWatch {
    swap_low_since: Option<u64>,
    swap_alerted: bool,
    avail_low_since: Option<u64>,
    avail_alerted: bool,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn mib(b: u64) -> u64 {
    b >> 20
}

impl HostWatch {
    /// Checks one sample taken at `now_ns`; returns the findings to alert.
    pub fn tick(&mut self, cfg: &HostConfig, now_ns: u64, m: &HostMemory) -> Vec<Finding> {
        let mut out = Vec::new();
        if !cfg.enabled {
            return out;
        }
        if m.swap_total > 0 {
            let free = pct(m.swap_free, m.swap_total);
            if let Some(f) = sustained(
                free < cfg.swap_free_below.0,
                // Hysteresis: recovered when 2 points above the threshold.
                free >= cfg.swap_free_below.0 + 2.0,
                &mut self.swap_low_since,
                &mut self.swap_alerted,
                now_ns,
                cfg.swap_for.0,
            ) {
                let d = HostDetails::Swap {
                    swap_free_bytes: m.swap_free,
                    swap_total_bytes: m.swap_total,
                    swap_free_pct: (free * 10.0).round() / 10.0,
                    for_seconds: f.as_secs(),
                    topic: "host:swap",
                };
                out.push(Finding {
                    topic: "host:swap",
                    summary: format!(
                        "swap free {free:.0}% ({} of {} MiB) for {}s: memory exhaustion ahead",
                        mib(m.swap_free),
                        mib(m.swap_total),
                        f.as_secs()
                    ),
                    details: d,
                });
            }
        }
        if m.mem_total > 0 {
            let avail = pct(m.mem_available, m.mem_total);
            if let Some(f) = sustained(
                avail < cfg.mem_available_below.0,
                avail >= cfg.mem_available_below.0 + 2.0,
                &mut self.avail_low_since,
                &mut self.avail_alerted,
                now_ns,
                cfg.mem_available_for.0,
            ) {
                let d = HostDetails::MemAvailable {
                    mem_available_bytes: m.mem_available,
                    mem_total_bytes: m.mem_total,
                    mem_available_pct: (avail * 10.0).round() / 10.0,
                    for_seconds: f.as_secs(),
                    topic: "host:mem_available",
                };
                out.push(Finding {
                    topic: "host:mem_available",
                    summary: format!(
                        "MemAvailable {avail:.0}% ({} of {} MiB) for {}s",
                        mib(m.mem_available),
                        mib(m.mem_total),
                        f.as_secs()
                    ),
                    details: d,
                });
            }
        }
        out
    }

    /// A PSI trigger fired.
    pub fn psi(cfg: &HostConfig, line: PsiLine, m: &HostMemory) -> Finding {
        let stall = match line {
            PsiLine::Some => cfg.psi_some_stall.0,
            PsiLine::Full => cfg.psi_full_stall.0,
        };
        let p = m.pressure.unwrap_or_default();
        let avg10 = match line {
            PsiLine::Some => p.some_avg10,
            PsiLine::Full => p.full_avg10,
        };
        let topic = match line {
            PsiLine::Some => "host:psi_some",
            PsiLine::Full => "host:psi_full",
        };
        let d = HostDetails::Psi {
            line: line.as_str(),
            stall_ms: stall.as_millis() as u64,
            window_ms: cfg.psi_window.0.as_millis() as u64,
            avg10_pct: avg10,
            mem_available_bytes: m.mem_available,
            swap_free_bytes: m.swap_free,
            topic,
        };
        Finding {
            topic,
            summary: format!(
                "memory pressure rising: tasks stalled ({}) {} ms within {} ms (avg10 {avg10:.1}%)",
                line.as_str(),
                stall.as_millis(),
                cfg.psi_window.0.as_millis()
            ),
            details: d,
        }
    }
}

/// A condition that must hold for `need` before it is reported once, and
/// be cleared (with hysteresis) before it can be reported again.
fn sustained(
    low: bool,
    recovered: bool,
    since: &mut Option<u64>,
    alerted: &mut bool,
    now: u64,
    need: Duration,
) -> Option<Duration> {
    if recovered {
        *since = None;
        *alerted = false;
        return None;
    }
    if !low {
        return None;
    }
    let start = *since.get_or_insert(now);
    let held = Duration::from_nanos(now.saturating_sub(start));
    if held >= need && !*alerted {
        *alerted = true;
        return Some(held);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn mem(avail_pct: u64, swap_free_pct: u64) -> HostMemory {
        HostMemory {
            mem_total: 100 << 30,
            mem_available: avail_pct << 30,
            swap_total: 100 << 20,
            swap_free: swap_free_pct << 20,
            pressure: None,
        }
    }

    #[test]
    fn swap_must_stay_low_for_the_duration_and_alerts_once() {
        let cfg = HostConfig::default(); // swap < 15% for 60 s
        let mut w = HostWatch::default();
        assert!(w.tick(&cfg, 0, &mem(50, 10)).is_empty());
        assert!(w.tick(&cfg, 59 * S, &mem(50, 10)).is_empty());
        let f = w.tick(&cfg, 60 * S, &mem(50, 10));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].topic, "host:swap");
        assert!(f[0].summary.contains("swap free 10%"), "{}", f[0].summary);
        assert!(w.tick(&cfg, 61 * S, &mem(50, 9)).is_empty());
        // Within the hysteresis band: still the same episode.
        assert!(w.tick(&cfg, 62 * S, &mem(50, 16)).is_empty());
        assert!(w.tick(&cfg, 63 * S, &mem(50, 12)).is_empty());
        // Recovered, then low again: a new alert after the duration.
        assert!(w.tick(&cfg, 64 * S, &mem(50, 30)).is_empty());
        assert!(w.tick(&cfg, 65 * S, &mem(50, 5)).is_empty());
        assert_eq!(w.tick(&cfg, 125 * S, &mem(50, 5)).len(), 1);
    }

    #[test]
    fn mem_available_and_a_blip_does_not_alert() {
        let cfg = HostConfig::default(); // < 10% for 30 s
        let mut w = HostWatch::default();
        assert!(w.tick(&cfg, 0, &mem(5, 100)).is_empty());
        assert!(w.tick(&cfg, 10 * S, &mem(50, 100)).is_empty());
        assert!(w.tick(&cfg, 20 * S, &mem(5, 100)).is_empty());
        let f = w.tick(&cfg, 50 * S, &mem(5, 100));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].topic, "host:mem_available");
        // No swap at all: no swap alert.
        let mut none = mem(50, 0);
        none.swap_total = 0;
        assert!(HostWatch::default().tick(&cfg, 1000 * S, &none).is_empty());
    }

    #[test]
    fn psi_finding_names_the_trigger() {
        let f = HostWatch::psi(&HostConfig::default(), PsiLine::Full, &mem(50, 50));
        assert_eq!(f.topic, "host:psi_full");
        assert!(
            f.summary.contains("(full) 200 ms within 2000 ms"),
            "{}",
            f.summary
        );
    }
}
