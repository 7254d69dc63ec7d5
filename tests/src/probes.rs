//! What each eBPF program costs: memtrace's programs and the empty
//! baselines beside them, under a workload, by the kernel's accounting.
//! Used by the benchmark on the host and by the VM's `probe-cost`
//! scenario.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use memtrace::ProgramStats;

/// Loads the programs and baselines, runs `workload` while draining the
/// ring, and returns every program's accounting.
pub fn measure(workload: impl FnOnce() + Send + 'static) -> Result<Vec<ProgramStats>, String> {
    measure_with(&memtrace::LoadOptions::default(), workload)
}

/// [`measure`] with the programs loaded with `opts` (e.g. without per-pass
/// reclaim records, as the agent loads them).
pub fn measure_with(
    opts: &memtrace::LoadOptions,
    workload: impl FnOnce() + Send + 'static,
) -> Result<Vec<ProgramStats>, String> {
    let stats_file = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats_file).unwrap_or_default();
    std::fs::write(stats_file, "1").map_err(|e| format!("kernel.bpf_stats_enabled: {e}"))?;
    let result = (|| {
        let mut tracer = memtrace::Tracer::load(opts).map_err(|e| e.to_string())?;
        let missing = memtrace::attach_baselines(&mut tracer);
        for m in &missing {
            eprintln!("bench: baseline not attached: {m}");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let _guard = rt.enter();
        let mut source = memtrace::EventSource::new(&mut tracer).map_err(|e| e.to_string())?;
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let worker = std::thread::spawn(move || {
            workload();
            flag.store(true, Ordering::SeqCst);
        });
        rt.block_on(async {
            while !done.load(Ordering::SeqCst) {
                let _ = tokio::time::timeout(Duration::from_millis(200), source.next()).await;
                while source.try_next().is_some() {}
            }
        });
        let _ = worker.join();
        Ok(memtrace::program_stats(&tracer))
    })();
    let _ = std::fs::write(stats_file, before.trim());
    result
}
