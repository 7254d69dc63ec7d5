//! Bytes straight into the chunk decoder (and the version-2 and -3
//! decompressor and column layout), past the checksum that keeps
//! random files from reaching it, then through every consumer of decoded
//! records: report, Perfetto, JSON lines and CSV exports. None may panic,
//! overflow or hang, whatever the numbers in the records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::chunk;
use memtrace::reader::Recording;

fuzz_target!(|data: &[u8]| {
    // Input: base timestamp (8 bytes), record count (4), then the payload.
    let (Some(base), Some(count)) = (data.get(..8), data.get(8..12)) else {
        return;
    };
    let base = u64::from_le_bytes(base.try_into().unwrap_or_default());
    let count = u32::from_le_bytes(count.try_into().unwrap_or_default());
    // The bytes as a version-1 payload, else as a version-2 or -3 one (a
    // codec byte, then rows or columns, stored or zstd: the
    // decompressor's bounds and the column layout's).
    let Ok(decoded) = chunk::decode(&data[12..], base, count)
        .or_else(|_| chunk::decode_v2(&data[12..], base, count))
    else {
        return;
    };
    let rec = Recording {
        records: decoded.records,
        cgroups: decoded.cgroups.into_iter().collect(),
        ..Default::default()
    };
    let report = memtrace::build_report(&rec);
    let _ = report.markdown();
    let _ = report.html();
    let sink = &mut std::io::sink();
    let r = &rec.records;
    let _ = memtrace::perfetto(&rec, r, sink);
    let _ = memtrace::export::chrome_json(&rec, r, sink);
    let _ = memtrace::export::csv_events(&rec, r, sink);
    let _ = memtrace::export::csv_samples(&rec, r, sink);
    let _ = memtrace::export::jsonl(&rec, r, sink);
});
