//! The kernel's reclaim totals (`RECLAIM_TOTALS`) on this machine's real
//! kernel: a squeezed v1 memory cgroup reclaims many times before its OOM
//! kill. With per-pass records on, the totals must agree with the records
//! that crossed the ring; with them off (the agent's default), no reclaim
//! record crosses and the totals still count every pass.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use memtrace::{Event, EventSource, LoadOptions, ReclaimTotalsReader, Tracer};
use memtrace_tests::cgroup::TestCgroup;

use super::squeeze;

/// Per memory cgroup id: reclaim records seen and their pages; and how
/// many records of any kind were lost.
#[derive(Default)]
struct Seen {
    by_memcg: HashMap<u64, (u64, u64)>,
    records: u64,
    lost: u64,
}

/// Loads the programs with or without per-pass reclaim records, squeezes
/// a fresh 64 MiB cgroup while draining the rings, and returns what
/// crossed, the cgroup's id and the kernel's totals reader.
fn squeeze_with(records: bool, name: &str) -> (Seen, u64, ReclaimTotalsReader) {
    let mut tracer = Tracer::load(&LoadOptions {
        reclaim_records: records,
        ..LoadOptions::default()
    })
    .unwrap();
    let reader = ReclaimTotalsReader::new(&mut tracer).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut source = EventSource::new(&mut tracer).unwrap();
    let cg = TestCgroup::create(&format!("{name}-{}", std::process::id())).unwrap();
    cg.set_max(64 << 20).unwrap();
    let id = std::fs::metadata(&cg.dir).unwrap().ino();
    let done = Arc::new(AtomicBool::new(false));
    let worker = {
        let done = done.clone();
        std::thread::spawn(move || {
            squeeze(&cg);
            done.store(true, Ordering::SeqCst);
            cg
        })
    };
    let mut seen = Seen::default();
    let take = |e: Event, seen: &mut Seen| match e {
        Event::Reclaim(r) => {
            seen.records += 1;
            let s = seen.by_memcg.entry(r.memcg_id).or_default();
            s.0 += 1;
            s.1 += r.nr_reclaimed;
        }
        Event::Lost(l) => seen.lost += l.count,
        _ => {}
    };
    rt.block_on(async {
        while !done.load(Ordering::SeqCst) {
            if let Ok(e) = tokio::time::timeout(Duration::from_millis(100), source.next()).await {
                take(e, &mut seen);
            }
            while let Some(e) = source.try_next() {
                take(e, &mut seen);
            }
        }
    });
    // Every pass of the squeeze has ended: what is left in the rings, and
    // the lost counters, once more.
    source.drain();
    source.poll_lost();
    while let Some(e) = source.try_next() {
        take(e, &mut seen);
    }
    let cg = worker.join().unwrap();
    drop(cg);
    (seen, id, reader)
}

#[test]
fn with_records_the_kernel_totals_equal_the_records() {
    let _serial = super::serial();
    let (seen, id, reader) = squeeze_with(true, "memtrace-totals-on");
    assert_eq!(
        seen.lost, 0,
        "records were lost: the comparison would not hold"
    );
    let &(count, pages) = seen
        .by_memcg
        .get(&id)
        .unwrap_or_else(|| panic!("no reclaim record for cgroup {id}: {:?}", seen.by_memcg));
    assert!(count > 0);
    let totals = reader
        .totals_of(id)
        .expect("no kernel totals for the cgroup");
    assert_eq!((totals.count, totals.pages), (count, pages), "{totals:?}");
    assert_eq!(totals.le.iter().sum::<u64>(), totals.count, "{totals:?}");
    assert!(totals.total_ns > 0, "{totals:?}");
}

#[test]
fn without_records_no_reclaim_record_crosses_and_the_kernel_still_counts() {
    let _serial = super::serial();
    let (seen, id, mut reader) = squeeze_with(false, "memtrace-totals-off");
    assert_eq!(
        seen.records, 0,
        "reclaim records crossed: {:?}",
        seen.by_memcg
    );
    let totals = reader
        .totals_of(id)
        .expect("no kernel totals for the cgroup");
    // Pages may be 0: an anonymous hog without swap leaves little to take.
    assert!(totals.count > 0 && totals.total_ns > 0, "{totals:?}");
    assert_eq!(totals.le.iter().sum::<u64>(), totals.count, "{totals:?}");
    // The reader's first delta is all of it; the next, with no new pass
    // in that cgroup, is nothing for it.
    let first = reader.read();
    let mine = first.memcg.iter().find(|(m, _)| *m == id).map(|(_, d)| *d);
    assert_eq!(mine, Some(totals), "{first:?}");
    assert!(reader.passes() >= totals.count);
    let second = reader.read();
    assert!(second.memcg.iter().all(|(m, _)| *m != id), "{second:?}");
}
