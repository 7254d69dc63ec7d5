//! `memtrace record`: every event and a sample a second, to a file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::clock::{Clock, fmt_bytes, mono_now_ns};
use crate::config::filter::CgroupFilter;
use crate::config::parse_size;
use crate::event::Event;
use crate::model::Model;
use crate::probe::{LoadOptions, Tracer};
use crate::record::Header;
use crate::record::writer::{Fsync, TimeResolution, Writer};
use crate::ring::stream::EventSource;
use crate::sys::registry::CgroupRegistry;
use crate::sys::sampler::Sampler;

use super::{UsageError, duration_arg, runtime};

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The recording to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this long (`30s`, `10m`); default: until Ctrl-C.
    #[arg(long, value_name = "D", value_parser = duration_arg)]
    pub duration: Option<Duration>,
    /// Only cgroups matching GLOB and below (repeatable); default: all.
    #[arg(long, value_name = "GLOB")]
    pub cgroup: Vec<String>,
    /// Stop when the file reaches this size (`1GiB`, `200MB`).
    #[arg(long, value_name = "S")]
    pub max_size: Option<String>,
    /// When chunks reach the disk: after every chunk, once a second, or
    /// when the kernel decides.
    #[arg(long, value_enum, default_value = "interval")]
    pub fsync: Fsync,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Time resolution of the recording: `ns` as measured, or `us`
    /// rounded to the microsecond (about 30 % smaller).
    #[arg(long, value_enum, default_value = "ns")]
    pub time_resolution: TimeResolution,
}

pub fn run(args: RecordArgs) -> anyhow::Result<u8> {
    let filter = CgroupFilter::new(&args.cgroup).map_err(UsageError)?;
    let max_size = match &args.max_size {
        Some(s) => Some(
            parse_size(s)
                .ok_or_else(|| UsageError(format!("--max-size `{s}` is not a size (try 1GiB)")))?,
        ),
        None => None,
    };
    let mut tracer = Tracer::load(&LoadOptions::from_env()?)?;
    for d in &tracer.caps.degraded {
        say!("memtrace: degraded: {d}");
    }
    let clock = Clock::now();
    let header = Header::for_this_host(&tracer.caps, &args.cgroup, &clock);
    let mut writer = Writer::create(&args.output, &header, args.fsync, args.force)?;
    writer.set_time_resolution(args.time_resolution);
    let hierarchy = tracer.caps.kernel.cgroups.memory.clone();
    let mut registry = CgroupRegistry::new(hierarchy.as_ref());
    let mut sampler = Sampler::new(
        filter.clone(),
        hierarchy.map(|h| h.version),
        tracer.caps.kernel.page_size,
    );
    let mut model = Model::new(std::process::id(), 60_000_000_000);
    say!(
        "memtrace: recording to {} ({}); Ctrl-C to stop",
        args.output.display(),
        if args.cgroup.is_empty() {
            "all cgroups".to_string()
        } else {
            args.cgroup.join(", ")
        }
    );
    let (mut events, mut samples) = (0u64, 0u64);
    let mut stopped_for_size = false;
    let rt = runtime()?;
    rt.block_on(async {
        let mut source = EventSource::new(&mut tracer)?;
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut flush = tokio::time::interval(Duration::from_millis(250));
        // A new cgroup is sampled the moment inotify reports it, so one that
        // fills and runs out within a second still has its first sample.
        let mut watch = tokio::time::interval(Duration::from_millis(100));
        registry.watch();
        let mut keep =
            |e: Event, writer: &mut Writer, registry: &mut CgroupRegistry, model: &mut Model| {
                let mut e = e;
                registry.complete(&mut e);
                if filter.matches_event(registry, &e) {
                    model.apply(&e, registry);
                    writer.event(&e, &mut |id| registry.resolve(id))?;
                    events += 1;
                }
                std::io::Result::Ok(())
            };
        let out = args.output.display().to_string();
        let write_err = |e: std::io::Error| anyhow::Error::new(e).context(format!("writing {out}"));
        loop {
            tokio::select! {
                e = source.next() => keep(e, &mut writer, &mut registry, &mut model).map_err(write_err)?,
                _ = watch.tick() => {
                    if registry.poll_new() > 0 {
                        let now = mono_now_ns();
                        let s = sampler.sample(now, &mut registry, &active_cgroups(&model, now));
                        writer.sample(&s, &mut |id| registry.resolve(id)).map_err(write_err)?;
                        samples += 1;
                    }
                }
                _ = tick.tick() => {
                    let now = mono_now_ns();
                    let s = sampler.sample(now, &mut registry, &active_cgroups(&model, now));
                    writer.sample(&s, &mut |id| registry.resolve(id)).map_err(write_err)?;
                    samples += 1;
                    model.gc(now);
                }
                _ = flush.tick() => {
                    writer.tick().map_err(write_err)?;
                    if max_size.is_some_and(|m| writer.bytes >= m) {
                        stopped_for_size = true;
                        break;
                    }
                }
                _ = sleep_until(deadline) => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        source.drain();
        source.poll_lost();
        while let Ok(e) = tokio::time::timeout(Duration::from_millis(1), source.next()).await {
            keep(e, &mut writer, &mut registry, &mut model).map_err(write_err)?;
        }
        anyhow::Ok(())
    })?;
    writer
        .note(
            mono_now_ns(),
            if stopped_for_size {
                "stopped: --max-size reached"
            } else {
                "stopped"
            },
        )
        .with_context(|| format!("writing {}", args.output.display()))?;
    let (chunks, records) = (writer.chunks, writer.records);
    let bytes = writer
        .close()
        .with_context(|| format!("closing {}", args.output.display()))?;
    say!(
        "memtrace: {} records ({events} events, {samples} samples) in {} chunks, {} to {}{}",
        records,
        chunks + 1,
        fmt_bytes(bytes),
        args.output.display(),
        if stopped_for_size {
            " (stopped at --max-size)"
        } else {
            ""
        }
    );
    Ok(0)
}

/// Cgroups with events in the last 10 s.
fn active_cgroups(model: &Model, now: u64) -> Vec<u64> {
    model
        .cgroups
        .values()
        .filter(|s| now.saturating_sub(s.last_activity_ns) < 10_000_000_000)
        .map(|s| s.id)
        .collect()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
