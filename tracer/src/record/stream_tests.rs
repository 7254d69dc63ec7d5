//! The streaming reader against the whole-file reading it replaced, old
//! files, large chunks, reordering and the bounds on damage.

use std::sync::Arc;

use super::chunk::ChunkBuilder;
use super::reader::tests::{file, file_version};
use super::reader::{Input, Sorted, parse};
use super::stream::{MAX_DAMAGE_LISTED, REORDER_NS};
use super::writer::header_bytes;
use super::{CHUNK_HEADER, CHUNK_MAGIC, Header, Record};

#[test]
fn real_version_1_recordings_still_read() {
    // Written by memtrace 0.1 (format 1, uncompressed chunks): a VM
    // livelock and a host squeeze.
    for (name, bytes) in [
        (
            "livelock",
            &include_bytes!("../../../tests/fuzz/seeds/read_recording/livelock.mtr")[..],
        ),
        (
            "squeeze",
            &include_bytes!("../../../tests/fuzz/seeds/read_recording/squeeze.mtr")[..],
        ),
    ] {
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1, "{name}");
        let r = parse(bytes).unwrap();
        assert!(r.damaged.is_empty() && r.torn_tail.is_none(), "{name}");
        assert!(r.chunks >= 1 && !r.records.is_empty(), "{name}");
        assert!(
            r.records
                .iter()
                .any(|x| matches!(x, Record::Event(_)) || matches!(x, Record::Sample(_))),
            "{name}"
        );
        // Written again by this build, the same records read back.
        let mut out = header_bytes(&r.header);
        let mut b = ChunkBuilder::new();
        let mut paths = |id: u64| r.cgroups.get(&id).map(|p| Arc::from(p.as_str()));
        for x in &r.records {
            match x {
                Record::Event(e) => b.event(e, &mut paths),
                Record::Sample(s) => b.sample(s, &mut paths),
                Record::Action(a) => b.action(a, &mut paths),
                Record::Note { ts_ns, text } => b.note(*ts_ns, text),
            }
        }
        out.extend(b.finish().unwrap());
        let again = parse(&out).unwrap();
        assert_eq!(again.records, r.records, "{name}");
        assert!(
            out.len() < bytes.len(),
            "{name}: {} vs {}",
            out.len(),
            bytes.len()
        );
    }
}

#[test]
fn streaming_reads_what_whole_file_reading_reads() {
    for version in [1, 2, 3] {
        let (bytes, chunks) = file_version(4, version);
        let input = Input::Bytes(bytes.clone().into());
        let streamed: Vec<Record> = input.open().unwrap().collect();
        let want: Vec<Record> = chunks.into_iter().flatten().collect();
        assert_eq!(streamed, want);
        let scan = super::reader::scan(&input).unwrap();
        assert!(scan.records.is_empty());
        assert_eq!(scan.chunks, 4);
        let first = want.iter().map(Record::ts_ns).min();
        let last = want.iter().map(Record::ts_ns).max();
        assert_eq!(scan.span, first.zip(last));
        assert_eq!(scan.began_ns, want.iter().map(Record::began_ns).min());
        assert_eq!(scan.cgroups.get(&10).map(String::as_str), Some("/work/job"));
    }
}

#[test]
fn a_chunk_larger_than_the_eager_limit_is_checked_then_streamed() {
    // 2 MiB of notes in one chunk: decoded a record at a time.
    let mut b = ChunkBuilder::new();
    let text = "n".repeat(100);
    for i in 0..20_000u64 {
        b.note(i, &text);
    }
    let mut bytes = header_bytes(&Header::default());
    let chunk = b.finish().unwrap();
    bytes.extend_from_slice(&chunk);
    let r = parse(&bytes).unwrap();
    assert_eq!(r.records.len(), 20_000);
    assert_eq!(r.chunk_spans[0].2, 20_000);
    // The same chunk with a record count one too high is damage, and no
    // record of it is handed out.
    let mut forged = bytes.clone();
    let at = forged.len() - chunk.len();
    let count = u32::from_le_bytes(forged[at + 16..at + 20].try_into().unwrap()) + 1;
    forged[at + 16..at + 20].copy_from_slice(&count.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&forged[at + 8..at + 20]);
    h.update(&forged[at + CHUNK_HEADER..]);
    forged[at + 20..at + 24].copy_from_slice(&h.finalize().to_le_bytes());
    let r = parse(&forged).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.damaged.len(), 1, "{:?}", r.damaged);
    assert!(
        r.damaged[0].reason.contains("record count"),
        "{:?}",
        r.damaged
    );
}

#[test]
fn damage_beyond_the_listed_entries_is_summed_in_one() {
    let (mut bytes, chunks) = file(1);
    let real = chunks[0].len();
    // Thousands of bare chunk magics: each is damage of its own.
    for _ in 0..3 * MAX_DAMAGE_LISTED {
        bytes.extend_from_slice(CHUNK_MAGIC);
        bytes.extend_from_slice(&[0xff; 60]);
    }
    let end = bytes.len() as u64;
    let r = parse(&bytes).unwrap();
    assert_eq!(r.records.len(), real);
    assert_eq!(r.damaged.len(), MAX_DAMAGE_LISTED + 1);
    let last = r.damaged.last().unwrap();
    assert_eq!(
        r.damaged_more as usize,
        3 * MAX_DAMAGE_LISTED - MAX_DAMAGE_LISTED
    );
    assert!(last.reason.contains("more damaged chunks"), "{last:?}");
    assert_eq!(last.offset + last.len, end);
}

#[test]
fn sorted_is_a_stable_sort_for_records_within_the_window() {
    let (bytes, _) = file(5);
    let mut records: Vec<Record> = parse(&bytes).unwrap().records;
    // Swap neighbours: disorder of a few ms, far inside the window.
    for i in (0..records.len() - 1).step_by(3) {
        records.swap(i, i + 1);
    }
    let mut want = records.clone();
    want.sort_by_key(Record::ts_ns);
    let mut sorted = Sorted::new(records.clone().into_iter());
    let got: Vec<Record> = sorted.by_ref().collect();
    assert_eq!(got, want);
    assert_eq!(sorted.late, 0);
    // A record older than the window comes out late, and is counted.
    let (bytes, _) = file(12);
    let mut late = parse(&bytes).unwrap().records;
    let t_end = late.iter().map(Record::ts_ns).max().unwrap();
    assert!(t_end > 2 * REORDER_NS);
    late.push(Record::Note {
        ts_ns: 0,
        text: "late".into(),
    });
    let n = late.len();
    let mut sorted = Sorted::new(late.into_iter());
    assert_eq!(sorted.by_ref().count(), n);
    assert_eq!(sorted.late, 1);
}

#[test]
fn a_streamed_report_is_the_in_memory_report() {
    let (bytes, _) = file(6);
    let input = Input::Bytes(bytes.clone().into());
    let whole = crate::report::build(&parse(&bytes).unwrap());
    let scan = super::reader::scan(&input).unwrap();
    let streamed = crate::report::build_from(&scan, Sorted::new(input.open().unwrap()));
    assert_eq!(canonical_json(&whole), canonical_json(&streamed));
    assert!(!whole.cgroups.is_empty());
}

/// A report as JSON with rows that tie sorted (hash maps order them
/// either way).
fn report_json(r: &super::reader::Recording) -> serde_json::Value {
    canonical_json(&crate::report::build(r))
}

/// `v` as JSON with every array sorted, so rows that tie compare equal
/// whichever order they came in.
fn canonical_json(v: &impl serde::Serialize) -> serde_json::Value {
    fn canonical(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Array(a) => {
                let mut a: Vec<Value> = a.into_iter().map(canonical).collect();
                a.sort_by_key(Value::to_string);
                Value::Array(a)
            }
            Value::Object(m) => {
                Value::Object(m.into_iter().map(|(k, v)| (k, canonical(v))).collect())
            }
            v => v,
        }
    }
    canonical(serde_json::to_value(v).unwrap())
}

/// `r` written again, chunk for chunk as it was read, in `version`.
fn rewrite(r: &super::reader::Recording, version: u16) -> Vec<u8> {
    let mut out = super::writer::header_bytes_version(&r.header, version);
    let mut paths = |id: u64| r.cgroups.get(&id).map(|p| Arc::from(p.as_str()));
    // The original's chunks, by their record counts.
    let mut records = r.records.iter();
    for &(_, _, n) in &r.chunk_spans {
        let mut b = ChunkBuilder::new();
        for x in records.by_ref().take(n) {
            match x {
                Record::Event(e) => b.event(e, &mut paths),
                Record::Sample(s) => b.sample(s, &mut paths),
                Record::Action(a) => b.action(a, &mut paths),
                Record::Note { ts_ns, text } => b.note(*ts_ns, text),
            }
        }
        out.extend(
            if version == 2 {
                b.finish_v2()
            } else {
                b.finish()
            }
            .unwrap(),
        );
    }
    assert!(records.next().is_none());
    out
}

#[test]
fn a_version_2_file_and_its_version_3_rewrite_give_the_same_report() {
    // host-v2.mtr was written by memtrace with format 2; the version-1
    // recordings are written as version 2 first, by the version-2 layout
    // this build still writes for tests.
    let seeds: [(&str, &[u8]); 3] = [
        (
            "host-v2",
            include_bytes!("../../../tests/fuzz/seeds/read_recording/host-v2.mtr"),
        ),
        (
            "livelock",
            include_bytes!("../../../tests/fuzz/seeds/read_recording/livelock.mtr"),
        ),
        (
            "squeeze",
            include_bytes!("../../../tests/fuzz/seeds/read_recording/squeeze.mtr"),
        ),
    ];
    for (name, bytes) in seeds {
        let first = parse(bytes).unwrap();
        let v2 = if bytes[8] == 2 {
            bytes.to_vec()
        } else {
            rewrite(&first, 2)
        };
        assert_eq!(u16::from_le_bytes([v2[8], v2[9]]), 2, "{name}");
        let old = parse(&v2).unwrap();
        assert!(old.damaged.is_empty() && old.torn_tail.is_none(), "{name}");
        let v3 = rewrite(&old, 3);
        assert_eq!(u16::from_le_bytes([v3[8], v3[9]]), 3, "{name}");
        let new = parse(&v3).unwrap();
        assert!(new.damaged.is_empty() && new.torn_tail.is_none(), "{name}");
        assert_eq!(new.chunks, old.chunks, "{name}");
        assert_eq!(new.records, old.records, "{name}");
        assert_eq!(report_json(&new), report_json(&old), "{name}");
        // Never larger than this build's version 2 of the same chunks.
        let again = rewrite(&old, 2).len();
        assert!(v3.len() <= again, "{name}: {} vs {again}", v3.len());
        eprintln!(
            "{name}: {} B as version 2, {} B as version 3",
            v2.len(),
            v3.len()
        );
    }
}

/// The version-1 seeds written as version 3 (one with times rounded to
/// the microsecond), and their chunks as decode_chunk seeds: run with
/// `cargo test -p memtrace --lib write_version_3_fuzz_seeds -- --ignored`
/// after a layout change, and commit the files.
#[test]
#[ignore = "writes tests/fuzz/seeds"]
fn write_version_3_fuzz_seeds() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fuzz/seeds");
    let livelock = include_bytes!("../../../tests/fuzz/seeds/read_recording/livelock.mtr");
    let r = parse(livelock).unwrap();
    let v3 = rewrite(&r, 3);
    std::fs::write(format!("{root}/read_recording/livelock-v3.mtr"), &v3).unwrap();
    let squeeze = include_bytes!("../../../tests/fuzz/seeds/read_recording/squeeze.mtr");
    let mut b = ChunkBuilder::new();
    b.round_times_to(1_000);
    let s = parse(squeeze).unwrap();
    let mut out = header_bytes(&s.header);
    let mut paths = |id: u64| s.cgroups.get(&id).map(|p| Arc::from(p.as_str()));
    for x in &s.records {
        match x {
            Record::Event(e) => b.event(e, &mut paths),
            Record::Sample(x) => b.sample(x, &mut paths),
            Record::Action(a) => b.action(a, &mut paths),
            Record::Note { ts_ns, text } => b.note(*ts_ns, text),
        }
    }
    out.extend(b.finish().unwrap());
    std::fs::write(format!("{root}/read_recording/squeeze-v3-us.mtr"), &out).unwrap();
    // decode_chunk's input: base time, record count, payload; of the
    // chunks laid out by column (small ones stay rows).
    let seed = |c: &[u8], name: &str| {
        assert_eq!(c[CHUNK_HEADER], 2, "{name} is not laid out by column");
        let mut seed = c[8..16].to_vec();
        seed.extend_from_slice(&c[16..20]);
        seed.extend_from_slice(&c[CHUNK_HEADER..]);
        std::fs::write(format!("{root}/decode_chunk/{name}.bin"), seed).unwrap();
    };
    let again = parse(&v3).unwrap();
    let columnar = again
        .chunk_spans
        .iter()
        .map(|&(at, len, _)| &v3[at as usize..(at + len) as usize])
        .filter(|c| c[CHUNK_HEADER] == 2);
    for (i, c) in columnar.enumerate().take(2) {
        seed(c, &format!("livelock-v3-{i}"));
    }
    let h = super::reader::tests::find_magic(&out, 8).unwrap();
    seed(&out[h..], "squeeze-v3-us-0");
}

#[test]
fn the_version_3_seeds_read_as_what_they_were_written_from() {
    let livelock = parse(include_bytes!(
        "../../../tests/fuzz/seeds/read_recording/livelock.mtr"
    ))
    .unwrap();
    let v3 = include_bytes!("../../../tests/fuzz/seeds/read_recording/livelock-v3.mtr");
    assert_eq!(u16::from_le_bytes([v3[8], v3[9]]), 3);
    let r = parse(v3).unwrap();
    assert!(r.damaged.is_empty() && r.torn_tail.is_none());
    assert_eq!(r.records, livelock.records);
    assert_eq!(report_json(&r), report_json(&livelock));
    // Rounded to the µs: the same records but for times, each within
    // 500 ns (durations within 1 µs).
    let squeeze = parse(include_bytes!(
        "../../../tests/fuzz/seeds/read_recording/squeeze.mtr"
    ))
    .unwrap();
    let us = parse(include_bytes!(
        "../../../tests/fuzz/seeds/read_recording/squeeze-v3-us.mtr"
    ))
    .unwrap();
    assert!(us.damaged.is_empty() && us.torn_tail.is_none());
    assert_eq!(us.records.len(), squeeze.records.len());
    for (a, b) in squeeze.records.iter().zip(&us.records) {
        assert!(a.ts_ns().abs_diff(b.ts_ns()) <= 500, "{a:?} {b:?}");
        assert!(a.began_ns().abs_diff(b.began_ns()) <= 500, "{a:?} {b:?}");
        assert_eq!(b.ts_ns() % 1_000, 0);
    }
}

/// Writes the recording `$MEMTRACE_IN` again as version 2, chunk for
/// chunk, to `$MEMTRACE_OUT`: to time readers on the same records in both
/// layouts (docs/benchmarks.md).
#[test]
#[ignore = "a tool: needs MEMTRACE_IN and MEMTRACE_OUT"]
fn rewrite_as_version_2() {
    let (Some(src), Some(dst)) = (
        std::env::var_os("MEMTRACE_IN"),
        std::env::var_os("MEMTRACE_OUT"),
    ) else {
        return;
    };
    let r = parse(&std::fs::read(src).unwrap()).unwrap();
    std::fs::write(dst, rewrite(&r, 2)).unwrap();
}
