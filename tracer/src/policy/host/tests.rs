//! The verdict on series of readings shaped like the incidents: a livelock
//! contained in one cgroup, a thrash draining swap, a box without swap
//! collapsing, and the boxes that only look alarming.

use super::*;
use crate::config::Percent;
use crate::sys::cgroupfs::Psi;

const S: u64 = 1_000_000_000;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// One second of a series: host levels, PSI growth and the part of it a
/// cgroup's own limit explains.
#[derive(Clone, Copy)]
struct Sec {
    avail: u64,
    swap_free: u64,
    /// Share of this second with some task stalled (0..=1).
    some: f64,
    full: f64,
    /// Share of this second explained by a cgroup held by its limit.
    explained: f64,
}

struct Series {
    mem_total: u64,
    swap_total: u64,
    secs: Vec<Sec>,
}

/// Runs a series through a judge with `cfg`; the findings by second.
fn run(cfg: &HostConfig, s: &Series) -> Vec<(usize, Finding)> {
    let mut j = HostJudge::default();
    let (mut some, mut full, mut ex_some, mut ex_full) = (0u64, 0u64, 0u64, 0u64);
    let mut out = Vec::new();
    for (i, sec) in s.secs.iter().enumerate() {
        some += (sec.some * 1e6) as u64;
        full += (sec.full * 1e6) as u64;
        ex_some += (sec.explained * 1e6) as u64;
        ex_full += (sec.explained.min(sec.full) * 1e6) as u64;
        let point = HostPoint {
            ts_ns: i as u64 * S,
            mem: HostMemory {
                mem_total: s.mem_total,
                mem_available: sec.avail,
                swap_total: s.swap_total,
                swap_free: sec.swap_free,
                pressure: Some(Psi {
                    some_total_us: some,
                    full_total_us: full,
                    ..Psi::default()
                }),
            },
            explained_some_us: ex_some,
            explained_full_us: ex_full,
        };
        if let Some(f) = j.observe(cfg, point, &ExplainedStall::default()) {
            out.push((i, f));
        }
    }
    out
}

fn steady(n: usize, avail: u64, swap_free: u64) -> Vec<Sec> {
    vec![
        Sec {
            avail,
            swap_free,
            some: 0.0,
            full: 0.0,
            explained: 0.0,
        };
        n
    ]
}

/// The case: a 64 MiB cgroup livelocked (half of every second
/// stalled, all of it its own memory.high) on a 1 GiB guest with 77 %
/// available and no swap.
fn contained_livelock(explained: bool) -> Series {
    let mut secs = steady(120, GIB * 77 / 100, 0);
    for s in &mut secs[10..] {
        s.some = 0.5;
        s.full = 0.45;
        s.explained = if explained { 0.5 } else { 0.0 };
    }
    Series {
        mem_total: GIB,
        swap_total: 0,
        secs,
    }
}

/// The seed's thrash scaled down: 1 GiB of RAM, 512 MiB of swap. RAM runs
/// out, then swap drains at 2 MiB/s while tasks stall more and more.
fn thrash() -> Series {
    let mut secs = steady(30, 400 * MIB, 512 * MIB);
    // RAM falls to 40 MiB in 90 s.
    for i in 0..90u64 {
        secs.push(Sec {
            avail: 400 * MIB - 4 * MIB * i,
            ..secs[0]
        });
    }
    // Swap drains 2 MiB/s, MemAvailable hovers at the watermark (noise),
    // stalls grow by a point a second.
    for i in 0..240u64 {
        let free = (512 * MIB).saturating_sub(2 * MIB * i);
        secs.push(Sec {
            avail: 40 * MIB + (i % 3) * MIB,
            swap_free: free,
            some: (0.02 + 0.01 * i as f64).min(0.9),
            full: (0.005 * i as f64).min(0.6),
            explained: 0.0,
        });
    }
    Series {
        mem_total: GIB,
        swap_total: 512 * MIB,
        secs,
    }
}

/// A box without swap whose MemAvailable falls 1 % a second from 60 %.
fn swapless_collapse() -> Series {
    let mut secs = steady(20, 600 * MIB, 0);
    for i in 0..60u64 {
        secs.push(Sec {
            avail: (600 * MIB).saturating_sub(10 * MIB * i).max(5 * MIB),
            ..secs[0]
        });
    }
    Series {
        mem_total: 1000 * MIB,
        swap_total: 0,
        secs,
    }
}

#[test]
fn a_contained_livelock_is_never_the_hosts_alert() {
    let cfg = HostConfig::default();
    assert!(run(&cfg, &contained_livelock(true)).is_empty());
    // Even were the cgroup's stall not recognised as its own (a v1 host,
    // a cgroup the samples missed): plenty of memory is not exhaustion.
    assert!(run(&cfg, &contained_livelock(false)).is_empty());
    // Nor on a box that lives low on memory: its pressure is the cgroup's.
    let mut low = contained_livelock(true);
    for s in &mut low.secs {
        s.avail = GIB * 8 / 100;
    }
    assert!(run(&cfg, &low).is_empty());
    // Without the discount that same box would page: the discount is
    // what keeps the verdict quiet there.
    let mut low = contained_livelock(false);
    for s in &mut low.secs {
        s.avail = GIB * 8 / 100;
    }
    let f = run(&cfg, &low);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].1.details.signals, ["mem_available", "pressure"]);
}

#[test]
fn a_thrash_alerts_once_with_the_time_to_exhaustion() {
    let s = thrash();
    let f = run(&HostConfig::default(), &s);
    assert_eq!(f.len(), 1, "one alert per slide: {f:?}");
    let (at, f) = &f[0];
    let d = &f.details;
    assert_eq!(f.topic, "host:exhaustion");
    // RAM under 40 % and falling 4 MiB/s in every third of the last
    // minute: a collapse, long before MemAvailable is under 10 %
    // (102 MiB, at 104 s), with 512 MiB of swap left: about 3 minutes to
    // go, within the 5 minutes.
    assert_eq!(d.signals, ["collapse", "exhaustion"], "{d:?}");
    assert!((70..85).contains(at), "alerted at {at} s");
    let truth = (s.secs[*at].avail + s.secs[*at].swap_free) as f64 / (4 * MIB) as f64;
    let eta = d.eta_s.unwrap();
    assert!((eta - truth).abs() < 0.25 * truth, "eta {eta} vs {truth}");
    // The fit still holds the flat seconds before the fall: its pace is
    // a little slower than the fall's own.
    assert!(
        d.mem_available_bytes_per_s
            .is_some_and(|r| (-4.0 * MIB as f64..-3.0 * MIB as f64).contains(&r)),
        "{d:?}"
    );
    assert!(f.summary.starts_with("host sliding into memory exhaustion"));
    assert!(
        f.summary.contains("memory and swap gone in ~"),
        "{}",
        f.summary
    );
}

#[test]
fn swap_draining_with_stalls_alerts_when_ram_ran_out_before_the_agent_started() {
    // The judge sees only the swap phase (an agent started late, or a
    // slow leak that ran RAM out over hours).
    let mut s = thrash();
    s.secs.drain(..120);
    let f = run(&HostConfig::default(), &s);
    assert_eq!(f.len(), 1, "{f:?}");
    let (at, f) = &f[0];
    let d = &f.details;
    assert!(d.signals.contains(&"swap"), "{d:?}");
    // Swap drains 2 MiB/s from 512 MiB: gone in 256 s, within 5 minutes,
    // as soon as the fit has its readings.
    assert!(*at < 15, "alerted {at} s into the drain");
    let truth = s.secs[*at].swap_free as f64 / (2 * MIB) as f64;
    let eta = d.swap_eta_s.unwrap();
    assert!(
        (eta - truth).abs() < 0.1 * truth,
        "swap eta {eta} vs {truth}"
    );
    assert!(f.summary.contains("empty in ~"), "{}", f.summary);
}

#[test]
fn a_swapless_box_collapsing_alerts_before_it_is_empty() {
    let s = swapless_collapse();
    let f = run(&HostConfig::default(), &s);
    assert_eq!(f.len(), 1, "{f:?}");
    let (at, f) = &f[0];
    let d = &f.details;
    assert_eq!(d.signals, ["collapse", "exhaustion"], "{at}: {d:?}");
    assert_eq!(d.swap_free_pct, None);
    assert!(f.summary.contains("no swap"), "{}", f.summary);
    // Falling 10 MiB/s since 20 s, a collapse once the whole minute's
    // thirds are on course (16 % left), before it is under 10 %
    // (100 MiB, at 70 s): seconds left, and said so. The fit still holds
    // flat seconds, so its prediction errs long.
    assert!(
        s.secs[*at].avail < 400 * MIB && *at < 70,
        "{at}: {}",
        f.summary
    );
    let truth = (s.secs[*at].avail - 5 * MIB) as f64 / (10 * MIB) as f64;
    let eta = d.eta_s.unwrap();
    assert!((truth..2.0 * truth).contains(&eta), "eta {eta} vs {truth}");
}

#[test]
fn levels_alone_and_passing_drops_do_not_alert() {
    let cfg = HostConfig::default();
    // A box that lives at 8 % MemAvailable and 5 % swap, quietly.
    let quiet = Series {
        mem_total: 100 * GIB,
        swap_total: 2 * GIB,
        secs: steady(600, 8 * GIB, 100 * MIB),
    };
    assert!(run(&cfg, &quiet).is_empty());
    // A slow leak at 9 %: 1 MiB a minute is hours from the end.
    let mut leak = quiet.secs.clone();
    for (i, s) in leak.iter_mut().enumerate() {
        s.avail = 9 * GIB - (i as u64 * MIB) / 60;
    }
    let leak = Series {
        secs: leak,
        ..quiet
    };
    assert!(run(&cfg, &leak).is_empty());
    // A big start (a JVM): 80 % to 40 % in 20 s, then flat.
    let mut jvm = steady(30, 80 * GIB, 0);
    for i in 0..20 {
        jvm.push(Sec {
            avail: 80 * GIB - 2 * GIB * i,
            ..jvm[0]
        });
    }
    jvm.extend(steady(200, 40 * GIB, 0));
    let jvm = Series {
        mem_total: 100 * GIB,
        swap_total: 0,
        secs: jvm,
    };
    assert!(run(&cfg, &jvm).is_empty());
}

#[test]
fn full_swap_and_stalls_alert_without_a_trend() {
    // Swap already gone and MemAvailable flat at 3 %: nothing falls any
    // more, but every task stalls: it is going down now.
    let mut secs = steady(60, 30 * MIB, 0);
    for s in &mut secs[20..] {
        s.some = 0.6;
        s.full = 0.3;
    }
    let s = Series {
        mem_total: GIB,
        swap_total: 256 * MIB,
        secs,
    };
    let f = run(&HostConfig::default(), &s);
    assert_eq!(f.len(), 1, "{f:?}");
    let d = &f[0].1.details;
    assert_eq!(d.signals, ["swap", "mem_available", "pressure"]);
    assert_eq!(d.eta_s, None);
    assert!(
        d.psi_some_unexplained_pct.is_some_and(|p| p >= 10.0),
        "{d:?}"
    );
    assert!(f[0].1.summary.contains("not draining, but stalling"));
}

#[test]
fn a_second_slide_alerts_again_only_after_the_verdict_was_false_for_a_while() {
    let cfg = HostConfig::default();
    let slide = swapless_collapse().secs;
    let recover = |n| steady(n, 500 * MIB, 0);
    let mut secs = slide.clone();
    // A brief recovery: the same slide, no second alert.
    secs.extend(recover(60));
    secs.extend(slide.iter().copied());
    // A long one: a new slide, a new alert.
    secs.extend(recover((REARM_NS / S) as usize + 10));
    secs.extend(slide.iter().copied());
    let f = run(
        &cfg,
        &Series {
            mem_total: 1000 * MIB,
            swap_total: 0,
            secs,
        },
    );
    assert_eq!(
        f.len(),
        2,
        "{:?}",
        f.iter().map(|f| f.0).collect::<Vec<_>>()
    );
}

#[test]
fn disabled_or_without_enough_readings_says_nothing() {
    let cfg = HostConfig {
        enabled: false,
        ..HostConfig::default()
    };
    assert!(run(&cfg, &swapless_collapse()).is_empty());
    // Three readings are no slope: a low level without pressure waits.
    let mut j = HostJudge::default();
    for i in 0..3 {
        let p = HostPoint {
            ts_ns: i * S,
            mem: HostMemory {
                mem_total: GIB,
                mem_available: 50 * MIB - i * 10 * MIB,
                ..HostMemory::default()
            },
            ..HostPoint::default()
        };
        assert!(
            j.observe(&HostConfig::default(), p, &ExplainedStall::default())
                .is_none()
        );
    }
    assert!(!j.latest.sliding);
}

#[test]
fn the_summary_reads_like_a_page() {
    let d = HostDetails {
        topic: TOPIC,
        signals: vec!["swap", "exhaustion", "pressure"],
        eta_s: Some(250.0),
        mem_available_bytes: 40 * MIB,
        mem_total_bytes: GIB,
        mem_available_pct: 3.9,
        mem_available_bytes_per_s: Some(-0.3 * MIB as f64),
        mem_available_eta_s: Some(133.0),
        swap_free_bytes: 61 * MIB,
        swap_total_bytes: 512 * MIB,
        swap_free_pct: Some(11.9),
        swap_free_bytes_per_s: Some(-3.0 * MIB as f64),
        swap_eta_s: Some(20.0),
        psi_some_pct: Some(34.0),
        psi_some_unexplained_pct: Some(30.0),
        psi_trend: Some("rising"),
        ..HostDetails::default()
    };
    insta::assert_snapshot!(summary(&d), @"host sliding into memory exhaustion (swap, exhaustion, pressure): swap 12% free (61 of 512 MiB), -3.0 MiB/s, empty in ~20s; MemAvailable 4% (40 of 1024 MiB), -0.3 MiB/s, gone in ~2m13s; memory pressure 34% (rising), 4% of it cgroups' own limits; memory and swap gone in ~4m10s");
}

/// The thrash benchmark's shape: a 1 GiB box whose swap sits on a slow
/// disk (untouched until RAM is gone), a swarm of workers, one more every
/// 10 s, each growing 0.5 MiB/s. MemAvailable falls faster and faster
/// from 80 %; the box stops answering when it reaches zero.
fn swarm() -> (Series, usize) {
    let mut secs = steady(120, 820 * MIB, 256 * MIB);
    let mut empty = None;
    for t in 0..300u64 {
        let workers = (t / 10 + 1).min(10);
        let used: u64 = (0..workers).map(|k| (t - 10 * k) * MIB / 2).sum();
        let avail = (820 * MIB).saturating_sub(used).max(20 * MIB);
        if avail <= 20 * MIB && empty.is_none() {
            empty = Some(secs.len());
        }
        secs.push(Sec { avail, ..secs[0] });
    }
    let s = Series {
        mem_total: GIB,
        swap_total: 256 * MIB,
        secs,
    };
    (s, empty.expect("the swarm empties RAM"))
}

#[test]
fn a_ram_collapse_pages_a_minute_before_ram_is_gone() {
    let (s, empty) = swarm();
    let f = run(&HostConfig::default(), &s);
    assert_eq!(f.len(), 1, "{f:?}");
    let (at, f) = &f[0];
    let d = &f.details;
    assert_eq!(d.signals, ["collapse", "exhaustion"], "{}", f.summary);
    // Under 40 %, and RAM gone more than a minute later.
    assert!(d.mem_available_pct < 40.0, "{d:?}");
    assert!(
        empty - at >= 60,
        "alerted {} s before RAM was gone",
        empty - at
    );
    // The fit's pace is the last minute's, slower than the swarm's now:
    // the prediction errs long, never short of the truth.
    let eta = d.mem_available_eta_s.unwrap();
    assert!(
        eta >= (empty - at) as f64 && eta < 2.0 * (empty - at) as f64,
        "MemAvailable eta {eta} vs {} s",
        empty - at
    );
    assert!(f.summary.contains(", gone in ~"), "{}", f.summary);

    // Without the collapse (the level of before, 10 %), the same slide
    // pages with seconds left: the lead this rule is for.
    let late = HostConfig {
        collapse_below: Percent(0.1),
        ..HostConfig::default()
    };
    let f = run(&late, &s);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(empty - f[0].0 < 30, "alerted {} s before", empty - f[0].0);
}

#[test]
fn a_box_living_low_or_drifting_slowly_is_no_collapse() {
    let cfg = HostConfig::default();
    // Three hours at 12 % MemAvailable, ±1 % of noise.
    let mut secs = steady(3 * 3600, 0, 0);
    for (i, s) in secs.iter_mut().enumerate() {
        s.avail = GIB * 12 / 100 + (i as u64 * 7919 % 21) * GIB / 1000 - 10 * GIB / 1000;
    }
    let low = Series {
        mem_total: GIB,
        swap_total: 0,
        secs,
    };
    assert!(run(&cfg, &low).is_empty());
    // A leak from 39 % to 12 % over three hours: 1.5 MiB a minute is
    // hours from empty, however long it keeps on.
    let mut drift = low.secs.clone();
    for (i, s) in drift.iter_mut().enumerate() {
        s.avail = GIB * 39 / 100 - (i as u64 * GIB * 27 / 100) / (3 * 3600);
    }
    let drift = Series { secs: drift, ..low };
    assert!(run(&cfg, &drift).is_empty());
}

#[test]
fn a_one_off_drop_that_recovers_is_no_collapse() {
    // A batch job loads 400 MiB in 10 s, to 20 %, works a minute, exits.
    let mut secs = steady(120, 600 * MIB, 256 * MIB);
    for i in 0..10 {
        secs.push(Sec {
            avail: 600 * MIB - 40 * MIB * i,
            ..secs[0]
        });
    }
    secs.extend(steady(60, 200 * MIB, 256 * MIB));
    secs.extend(steady(120, 600 * MIB, 256 * MIB));
    let s = Series {
        mem_total: 1000 * MIB,
        swap_total: 256 * MIB,
        secs,
    };
    assert!(run(&HostConfig::default(), &s).is_empty());
    // A fall that slows to a stop (a service warming up its heap): fast
    // at first, then its latest third is no longer on the way to empty.
    let mut secs = steady(120, 700 * MIB, 0);
    for i in 0..90u64 {
        let used = 400 * MIB - (400 * MIB * (90 - i) * (90 - i)) / (90 * 90);
        secs.push(Sec {
            avail: 700 * MIB - used,
            ..secs[0]
        });
    }
    secs.extend(steady(120, 300 * MIB, 0));
    let s = Series {
        mem_total: 1000 * MIB,
        swap_total: 0,
        secs,
    };
    assert!(run(&HostConfig::default(), &s).is_empty());
}

#[test]
fn a_contained_livelock_on_a_box_below_the_collapse_level_is_not_the_hosts() {
    // 30 % available (under `collapse_below`), flat, and a cgroup stalling
    // on its own memory.high: neither a collapse nor the host's pressure.
    let mut s = contained_livelock(true);
    for sec in &mut s.secs {
        sec.avail = GIB * 30 / 100;
    }
    assert!(run(&HostConfig::default(), &s).is_empty());
}
