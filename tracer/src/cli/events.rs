//! `memtrace events`: live events, one per line.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use memtrace::clock::Clock;
use memtrace::event::Event;
use memtrace::filter::CgroupFilter;
use memtrace::output::Presenter;
use memtrace::probes::{LoadOptions, Tracer};
use memtrace::registry::CgroupRegistry;
use memtrace::stream::EventSource;

use super::{UsageError, duration_arg, runtime};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum EventType {
    Throttle,
    ThrottleStart,
    Reclaim,
    DirectReclaim,
    OomKill,
    Brake,
    Lost,
}

impl EventType {
    fn of(e: &Event) -> Self {
        match e {
            Event::Throttle(_) => Self::Throttle,
            Event::ThrottleStart(_) => Self::ThrottleStart,
            Event::Reclaim(_) => Self::Reclaim,
            Event::DirectReclaim(_) => Self::DirectReclaim,
            Event::OomKill(_) => Self::OomKill,
            Event::Brake(_) => Self::Brake,
            Event::Lost(_) => Self::Lost,
        }
    }
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only events of memory cgroups matching GLOB, or below them
    /// (`*` stays in a path segment, `**` crosses). Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub cgroup: Vec<String>,
    /// One JSON object per line (type, ts, cgroup, pid, comm, ...).
    #[arg(long)]
    pub json: bool,
    /// Stop after this long (`30s`, `5m`, or seconds).
    #[arg(long, value_name = "SECS", value_parser = duration_arg)]
    pub duration: Option<Duration>,
    /// Event types to print [default: all but throttle-start].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "TYPES")]
    pub types: Vec<EventType>,
}

pub fn run(args: EventsArgs) -> anyhow::Result<u8> {
    let filter = CgroupFilter::new(&args.cgroup).map_err(UsageError)?;
    let types = if args.types.is_empty() {
        vec![
            EventType::Throttle,
            EventType::Reclaim,
            EventType::DirectReclaim,
            EventType::OomKill,
            EventType::Brake,
            EventType::Lost,
        ]
    } else {
        args.types.clone()
    };
    let opts = LoadOptions::from_env()?;
    let mut tracer = Tracer::load(&opts)?;
    for d in &tracer.caps.degraded {
        eprintln!("memtrace: degraded: {d}");
    }
    let mut registry = CgroupRegistry::new(tracer.caps.kernel.cgroups.memory.as_ref());
    let attached = tracer.caps.probes.iter().filter(|p| p.ok()).count();
    eprintln!(
        "memtrace: tracing ({attached} of {} probes attached); Ctrl-C to stop",
        tracer.caps.probes.len()
    );
    let page_size = tracer.caps.kernel.page_size;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut source = EventSource::new(&mut tracer)?;
        let mut presenter = Presenter {
            registry: &mut registry,
            clock: Clock::now(),
            page_size,
        };
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stdout = std::io::stdout();
        loop {
            let event = tokio::select! {
                e = source.next() => e,
                _ = sleep_until(deadline) => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            if !print(&mut presenter, &filter, &types, args.json, &event, &stdout)? {
                return Ok(0);
            }
        }
        // What arrived before the stop, and the last lost counts.
        source.drain();
        source.poll_lost();
        while let Some(event) = next_now(&mut source).await {
            if !print(&mut presenter, &filter, &types, args.json, &event, &stdout)? {
                break;
            }
        }
        Ok(0)
    })
}

async fn next_now(source: &mut EventSource) -> Option<Event> {
    tokio::time::timeout(Duration::from_millis(1), source.next())
        .await
        .ok()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Prints one event if it passes the filters. Returns false when stdout is
/// closed (a pipe reader went away), which ends the command quietly.
fn print(
    p: &mut Presenter<'_>,
    filter: &CgroupFilter,
    types: &[EventType],
    json: bool,
    event: &Event,
    stdout: &std::io::Stdout,
) -> anyhow::Result<bool> {
    let mut event = *event;
    if let Event::OomKill(o) = &mut event
        && o.victim_memcg_id == 0
        && let Some((id, _)) = p.registry.cgroup_of_pid(o.victim.tgid.max(o.victim.pid))
    {
        o.victim_memcg_id = id;
    }
    if !types.contains(&EventType::of(&event)) {
        return Ok(true);
    }
    if !filter.is_empty() && !matches_filter(p, filter, &event) {
        return Ok(true);
    }
    let line = if json {
        p.json(&event).to_string()
    } else {
        p.text(&event)
    };
    let mut out = stdout.lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

fn matches_filter(p: &mut Presenter<'_>, filter: &CgroupFilter, event: &Event) -> bool {
    let mut ids = vec![event.memcg_id()];
    if let Event::OomKill(o) = event {
        ids.push(o.oom_memcg_id);
    }
    // Lost records belong to no cgroup: always shown.
    if let Event::Lost(_) = event {
        return true;
    }
    ids.into_iter()
        .filter_map(|id| p.registry.path(id))
        .any(|path| filter.matches(&path))
}
