//! The report from known recordings: incidents, totals, evidence, ties,
//! damage and empty files.

use super::*;
use crate::event::{Comm, Task, Throttle};
use crate::record::{CgroupSample, Header};
use crate::sys::cgroupfs::{CgroupMemory, HostMemory, MemEvents, Psi};

fn throttle(start_s: f64, end_s: f64, pid: u32) -> Record {
    Record::Event(Event::Throttle(Throttle {
        ts_ns: (end_s * 1e9) as u64,
        start_ns: (start_s * 1e9) as u64,
        task: Task {
            pid,
            tgid: pid,
            comm: Comm::new("hog"),
        },
        memcg_id: 5,
        over_high_id: 5,
        reclaim_ns: 1_000_000,
        reclaimed_pages: 0,
        nr_pages: 64,
    }))
}

fn sample(t_s: u64, some_ms: u64, high: u64) -> Record {
    Record::Sample(Sample {
        ts_ns: t_s * SEC,
        host: HostMemory::default(),
        cgroups: vec![CgroupSample {
            id: 5,
            mem: CgroupMemory {
                events: MemEvents {
                    high: Some(high),
                    ..Default::default()
                },
                pressure: Some(Psi {
                    some_total_us: some_ms * 1000,
                    full_total_us: some_ms * 900,
                    ..Default::default()
                }),
                ..Default::default()
            },
            top: Vec::new(),
        }],
    })
}

#[test]
fn incidents_totals_and_evidence() {
    let mut rec = Recording {
        header: Header {
            host: "box".into(),
            probes: [("throttle".to_string(), Some("fentry".to_string()))].into(),
            ..Default::default()
        },
        ..Default::default()
    };
    rec.cgroups.insert(5, "/work".into());
    rec.records = vec![
        sample(10, 0, 0),
        throttle(11.0, 12.0, 7),
        throttle(11.5, 12.5, 8),
        throttle(13.0, 14.0, 7),
        // A separate incident, after a long gap.
        throttle(30.0, 31.0, 7),
        sample(40, 3_500, 9),
    ];
    let r = build(&rec);
    assert_eq!(r.incidents.len(), 2);
    let first = &r.incidents[0];
    assert_eq!(first.cgroup, "/work");
    assert_eq!(first.throttled_ms, 2_500);
    assert_eq!(first.duration_ms, 3_000);
    assert_eq!(first.episodes, 3);
    assert_eq!(first.peak_share_pct, 100.0);
    assert_eq!(r.cgroups[0].throttled_ms, 3_500);
    assert_eq!(r.cgroups[0].episodes, 4);
    assert_eq!(r.tasks[0].pid, 7);
    let e = &r.evidence[0];
    assert_eq!(
        (e.memtrace_ms, e.psi_some_ms, e.memory_events_high),
        (Some(3_500), Some(3_500), Some(9))
    );
    assert_eq!(e.diff_vs_some_pct, Some(0.0));
    let md = r.markdown();
    assert!(md.contains("| /work | 00:00:11 | 00:00:14 |"), "{md}");
    assert!(md.contains("Against the kernel's counters"), "{md}");
}

#[test]
fn peak_share_finds_the_densest_second() {
    let ms = 1_000_000;
    assert_eq!(peak_share(&[]), 0.0);
    assert_eq!(peak_share(&[(0, 500 * ms), (800 * ms, 1300 * ms)]), 0.7);
    // A span longer than a second saturates at 100%.
    assert_eq!(peak_share(&[(5 * SEC, 9 * SEC)]), 1.0);
    // Spans far apart never share a window; garbage-sized times do not
    // overflow.
    assert_eq!(
        peak_share(&[(0, 100 * ms), (u64::MAX - 300 * ms, u64::MAX)]),
        0.3
    );
}

#[test]
fn a_header_only_recording_keeps_its_own_start_not_the_boot() {
    let rec = Recording {
        header: Header {
            start: "2026-12-01T12:00:00.000000000Z".into(),
            wall_offset_ns: 1_700_000_000_000_000_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let r = build(&rec);
    assert_eq!(r.start.as_deref(), Some("2026-12-01T12:00:00.000000000Z"));
    assert!(
        r.markdown()
            .contains("Recorded 2026-12-01 12:00:00 to 12:00:00 UTC")
    );
    let r = build(&Recording::default());
    assert_eq!(r.start, None);
    assert!(r.markdown().contains("Recording time unknown"));
}

#[test]
fn twenty_thousand_forged_chunks_make_a_short_report() {
    let mut data = crate::record::writer::header_bytes(&Header::default());
    for i in 0..20_000u32 {
        data.extend_from_slice(crate::record::CHUNK_MAGIC);
        data.extend_from_slice(&8u32.to_le_bytes());
        data.extend_from_slice(&u64::from(i).to_le_bytes());
        data.extend_from_slice(&[0u8; 12]);
    }
    let rec = crate::record::reader::parse(&data).unwrap();
    assert!(rec.damaged.len() > 1_000, "{}", rec.damaged.len());
    let r = build(&rec);
    // The reader keeps the first damaged chunks and counts the rest.
    assert_eq!(
        r.integrity.damaged_chunks as u64,
        rec.damaged.len() as u64 + rec.damaged_more
    );
    assert_eq!(r.integrity.damaged_chunks, 20_000);
    assert_eq!(r.integrity.damaged.len(), MAX_DAMAGE_ROWS);
    let md = r.markdown();
    assert!(md.lines().count() < 100, "{} lines", md.lines().count());
    assert!(
        md.contains("and 19980 more") || md.contains("more (see --json"),
        "{md}"
    );
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.len() < 20_000, "{} bytes of JSON", json.len());
    assert!(r.html().len() < 50_000);
}

#[test]
fn times_at_the_ends_of_the_clock_draw_without_panicking() {
    let mut rec = Recording::default();
    rec.header.probes = [("throttle".to_string(), Some("fentry".to_string()))].into();
    rec.header.wall_offset_ns = i64::MAX;
    rec.cgroups.insert(5, "/work".into());
    rec.records = vec![
        throttle(0.0, 0.5, 7),
        sample(0, 0, 0),
        Record::Event(Event::Throttle(Throttle {
            ts_ns: u64::MAX,
            start_ns: u64::MAX - SEC,
            task: Task {
                pid: 7,
                tgid: 7,
                comm: Comm::new("hog"),
            },
            memcg_id: 5,
            over_high_id: 5,
            reclaim_ns: 0,
            reclaimed_pages: 0,
            nr_pages: 1,
        })),
    ];
    let r = build(&rec);
    assert!(r.charts.times.len() <= series::MAX_POINTS as usize + 1);
    let h = r.html();
    assert!(h.contains("<svg"), "{h}");
    assert!(!r.markdown().is_empty());
}

#[test]
fn the_same_recording_gives_the_same_report_whatever_the_ties() {
    let mut rec = Recording::default();
    rec.header.probes = [("throttle".to_string(), Some("fentry".to_string()))].into();
    // Many cgroups and tasks with exactly the same throttle time.
    for id in 1..40u64 {
        rec.cgroups.insert(id, format!("/cg{id:02}"));
        for pid in [7u32, 3, 9] {
            if let Record::Event(Event::Throttle(mut t)) = throttle(1.0, 2.0, pid) {
                t.memcg_id = id;
                t.over_high_id = id;
                rec.records.push(Record::Event(Event::Throttle(t)));
            }
        }
    }
    let first = serde_json::to_string(&build(&rec)).unwrap();
    for _ in 0..5 {
        // A HashMap's order differs between instances: rebuild it.
        let mut again = Recording {
            header: rec.header.clone(),
            records: rec.records.clone(),
            ..Default::default()
        };
        again.cgroups = rec.cgroups.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(serde_json::to_string(&build(&again)).unwrap(), first);
    }
    let r = build(&rec);
    let names: Vec<&str> = r.cgroups.iter().map(|c| c.cgroup.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "ties by name");
    assert_eq!((r.tasks[0].cgroup.as_str(), r.tasks[0].pid), ("/cg01", 3));
}

#[test]
fn an_empty_recording_reports_nothing_happened() {
    let r = build(&Recording::default());
    assert!(r.incidents.is_empty());
    assert!(
        r.markdown()
            .contains("No memory.high throttling was recorded.")
    );
}
