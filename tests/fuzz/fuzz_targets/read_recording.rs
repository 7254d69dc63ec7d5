//! Any bytes given to the recording reader: it must return, never panic,
//! and a report built from what it read must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Half the inputs get a valid file magic so the fuzzer reaches the
    // chunk decoder quickly.
    let mut with_magic = b"MEMTRACE".to_vec();
    with_magic.extend_from_slice(data);
    for input in [data, &with_magic[..]] {
        if let Ok(rec) = memtrace::reader::parse(input) {
            let report = memtrace::build_report(&rec);
            let _ = report.markdown();
            let _ = report.html();
        }
        // The streaming path the commands take: scan, then the records
        // again in time order.
        let input = memtrace::reader::Input::Bytes(input.into());
        if let (Ok(scan), Ok(stream)) = (memtrace::reader::scan(&input), input.open()) {
            let sorted = memtrace::reader::Sorted::new(stream);
            let _ = memtrace::build_report_from(&scan, sorted).markdown();
        }
    }
});
