//! The event path: ring-buffer records → decode → model.
//!
//! - On one core, records laid out as the kernel writes them (the ABI
//!   structs of tracer-ebpf, 8-byte aligned as in the ring) are decoded
//!   and applied to the model the agent keeps (one-hour horizon).
//! - Through the kernel: memtrace's own reclaim programs, loaded and
//!   attached as `memtrace events` does, run by BPF_PROG_TEST_RUN from a
//!   producer thread at a fixed rate, into the real ring buffer, drained
//!   by the agent's EventSource. Every record is counted, and the kernel's
//!   lost counters are read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aya::programs::{RawTracePoint, RawTracePointRunOptions, TestRun};
use memtrace::{CgroupRegistry, Event, Model};
use tracer_ebpf::{COMM_LEN, ReclaimEvent, TaskId, ThrottleEndEvent, kind};

use crate::recording::Rng;
use crate::{Rows, SEC};

fn bytes_of<T: Copy>(t: &T) -> &[u8] {
    // SAFETY: T is a #[repr(C)] plain-data ABI struct; reading its bytes
    // is what the kernel's ring buffer hands user space.
    unsafe { std::slice::from_raw_parts((t as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Records as the programs write them: 2/3 reclaim, 1/3 throttle ends,
/// 8 cgroups, 40 tasks, each padded to 8 bytes as in the ring.
fn ring_records(n: usize) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut rng = Rng::new(5);
    let mut buf = Vec::new();
    let mut spans = Vec::with_capacity(n);
    let mut ts = SEC;
    for _ in 0..n {
        ts += 1 + rng.below(200);
        let pid = 1000 + rng.below(40) as u32;
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"worker");
        let task = TaskId {
            pid,
            tgid: pid,
            comm,
        };
        let memcg_id = 5000 + rng.below(8);
        let at = buf.len();
        if rng.below(3) == 0 {
            let d = 1_000 + rng.below(2_000);
            let r = ThrottleEndEvent {
                kind: kind::THROTTLE_END,
                nr_pages: 64,
                ts_ns: ts,
                task,
                memcg_id,
                over_high_id: memcg_id,
                start_ns: ts - d,
                reclaim_ns: d / 4,
                reclaimed_pages: 3,
            };
            buf.extend_from_slice(bytes_of(&r));
        } else {
            let r = ReclaimEvent {
                kind: kind::RECLAIM,
                flags: 2,
                ts_ns: ts,
                task,
                memcg_id,
                start_ns: ts - 1 - rng.below(500),
                nr_reclaimed: rng.below(64),
            };
            buf.extend_from_slice(bytes_of(&r));
        }
        spans.push((at, buf.len() - at));
        buf.resize(buf.len().next_multiple_of(8), 0);
    }
    (buf, spans)
}

pub fn decode_and_model(rows: &mut Rows) {
    let n = 2_000_000;
    let (buf, spans) = ring_records(n);
    let paths: Vec<(u64, String)> = (0..8)
        .map(|i| (5000 + i, crate::recording::cgroup_path(i)))
        .collect();
    let reg = CgroupRegistry::from_paths(paths.iter().map(|(id, p)| (*id, p.as_str())));
    let mut best = Duration::MAX;
    for _ in 0..3 {
        // The agent's horizon: an hour.
        let mut model = Model::new(0, 3_600 * SEC);
        let t = Instant::now();
        for &(at, len) in &spans {
            let e = memtrace::decode_record(&buf[at..at + len]).unwrap();
            std::hint::black_box(model.apply(&e, &reg));
        }
        best = best.min(t.elapsed());
        assert_eq!(model.events, n as u64);
    }
    rows.row(
        "ring records → decode → model, one core (2/3 reclaim, 1/3 throttle, 8 cgroups)",
        format!("{:.1} M events/s", n as f64 / best.as_secs_f64() / 1e6),
        &format!(
            "goal ≥ 10 M/s; best of 3 runs of {}M records",
            n / 1_000_000
        ),
    );
}

/// memtrace's programs through BPF_PROG_TEST_RUN, at `rate` events a
/// second for `secs`: events produced, received, lost. `programs` run in
/// turn for each event (the last one writes the record).
fn through_the_kernel(
    programs: &'static [&'static str],
    rate: u64,
    secs: u64,
    ring_bytes: u32,
) -> Result<(u64, u64, u64, f64), String> {
    let opts = memtrace::LoadOptions {
        ring_bytes,
        ..Default::default()
    };
    let mut tracer = memtrace::Tracer::load(&opts).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _guard = rt.enter();
    let mut source = memtrace::EventSource::new(&mut tracer).map_err(|e| e.to_string())?;
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let producer = std::thread::spawn(move || -> Result<(u64, u32, f64), String> {
        let ebpf = tracer.ebpf_mut();
        let mut run = |name: &str| -> Result<(), String> {
            let p: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(format!("{name} missing"))?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            p.test_run(RawTracePointRunOptions::new())
                .map(|_| ())
                .map_err(|e| format!("{name}: BPF_PROG_TEST_RUN: {e}"))
        };
        let tid = std::process::id();
        // SAFETY: gettid has no preconditions.
        let tid = u32::try_from(unsafe { libc::gettid() }).unwrap_or(tid);
        let start = Instant::now();
        let total = rate * secs;
        let mut sent = 0u64;
        let end = Duration::from_secs(secs);
        while sent < total && start.elapsed() < end {
            // Paced in 1 ms steps.
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due.min(total) {
                for p in programs {
                    run(p)?;
                }
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let took = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        Ok((sent, tid, took))
    });
    let mut received = 0u64;
    let mut lost = 0u64;
    let mut producer_tid = None;
    // The agent's own priority (agent/setup.rs raises it the same way).
    // SAFETY: setpriority takes plain values.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(secs + 30);
        loop {
            // One timer per wait, not per event: then everything drained.
            let first = tokio::time::timeout(Duration::from_millis(1500), source.next()).await;
            let timed_out = first.is_err();
            let rest = std::iter::from_fn(|| source.try_next().map(Ok));
            for quiet in std::iter::once(first).chain(rest) {
                match quiet {
                    // Only the producer's: the programs are attached, and the
                    // host's own reclaim may fire too.
                    Ok(Event::Reclaim(r)) if producer_tid.is_none_or(|t| t == r.task.pid) => {
                        producer_tid = Some(r.task.pid);
                        received += 1;
                    }
                    Ok(Event::OomKill(o)) if producer_tid.is_none_or(|t| t == o.invoker.pid) => {
                        producer_tid = Some(o.invoker.pid);
                        received += 1;
                    }
                    Ok(Event::Lost(l)) => lost += l.count,
                    Ok(_) | Err(_) => {}
                }
            }
            if (timed_out && done.load(Ordering::SeqCst)) || Instant::now() > deadline {
                break;
            }
        }
        source.poll_lost();
        while let Some(e) = source.try_next() {
            if let Event::Lost(l) = e {
                lost += l.count;
            }
        }
    });
    let (sent, tid, took) = producer.join().map_err(|_| "producer panicked")??;
    if producer_tid.is_some_and(|t| t != tid) {
        return Err(format!(
            "records came from task {producer_tid:?}, not the producer {tid}"
        ));
    }
    Ok((sent, received, lost, sent as f64 / took))
}

const OOM: &[&str] = &["mark_victim_raw"];
const RECLAIM: &[&str] = &["memcg_reclaim_begin_raw", "memcg_reclaim_end_raw"];

pub fn real_programs(rows: &mut Rows) {
    const MIB: u32 = 1 << 20;
    let runs = [
        (
            "mark_victim (OOM record, 1 run each)",
            OOM,
            100_000u64,
            5u64,
            MIB,
        ),
        (
            "memcg reclaim begin+end (2 runs each)",
            RECLAIM,
            100_000,
            5,
            MIB,
        ),
        ("mark_victim, a 4 MiB ring", OOM, 100_000, 5, 4 * MIB),
        ("mark_victim, flat out", OOM, 10_000_000, 3, MIB),
    ];
    for (what, programs, rate, secs, ring) in runs {
        match through_the_kernel(programs, rate, secs, ring) {
            Ok((sent, received, lost, achieved)) => rows.row(
                &format!(
                    "real programs via BPF_PROG_TEST_RUN → ring → EventSource: {what}, paced at {} k/s",
                    rate / 1000
                ),
                format!("{received} of {sent} received, {lost} lost"),
                &format!(
                    "goal: 0 lost at 100 k/s; the producer reached {:.0} k records/s",
                    achieved / 1e3
                ),
            ),
            Err(e) => rows.row(
                "memcg reclaim programs via BPF_PROG_TEST_RUN",
                format!("not measured: {e}"),
                "",
            ),
        }
    }
}
