//! `memtrace events`: live events, one per line.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::clock::Clock;
use crate::config::filter::CgroupFilter;
use crate::event::Event;
use crate::probe::{LoadOptions, Tracer};
use crate::report::output::Presenter;
use crate::ring::stream::EventSource;
use crate::sys::enrich::{Enricher, Sources};
use crate::sys::registry::CgroupRegistry;

use super::{UsageError, duration_arg, runtime};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum EventType {
    Throttle,
    // The config's kebab-case spellings are accepted too.
    #[value(alias = "throttle-start")]
    ThrottleStart,
    Reclaim,
    #[value(alias = "direct-reclaim")]
    DirectReclaim,
    #[value(alias = "oom-kill")]
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
    /// One JSON object per line (type, ts, cgroup, cgroup_name, who, pid,
    /// comm, ...).
    #[arg(long)]
    pub json: bool,
    /// Stop after this long (`30s`, `5m`, or seconds).
    #[arg(long, value_name = "D", value_parser = duration_arg)]
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
        say!("memtrace: degraded: {d}");
    }
    let mut registry = CgroupRegistry::new(tracer.caps.kernel.cgroups.memory.as_ref());
    // Container, pod and user names, looked up off this thread; an event
    // printed before its answer names the cgroup from its path.
    let enricher = Enricher::start(Sources::default());
    if let Some(e) = &enricher {
        registry.want_names();
        let back = e.ask(registry.take_asks());
        registry.requeue(back);
    }
    let attached = tracer.caps.probes.iter().filter(|p| p.ok()).count();
    say!(
        "memtrace: tracing ({attached} of {} probes attached); Ctrl-C to stop",
        tracer.caps.probes.len()
    );
    let page_size = tracer.caps.kernel.page_size;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut source = EventSource::new(&mut tracer)?;
        let mut out = Printer {
            registry: &mut registry,
            enricher: enricher.as_ref(),
            clock: Clock::now(),
            page_size,
            filter: &filter,
            types: &types,
            json: args.json,
            stdout: std::io::stdout(),
        };
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let event = tokio::select! {
                e = source.next() => e,
                _ = sleep_until(deadline) => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            if !out.print(event)? {
                return Ok(0);
            }
        }
        // What arrived before the stop, and the last lost counts.
        source.drain();
        source.poll_lost();
        while let Some(event) = next_now(&mut source).await {
            if !out.print(event)? {
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

struct Printer<'a> {
    registry: &'a mut CgroupRegistry,
    enricher: Option<&'a Enricher>,
    clock: Clock,
    page_size: u64,
    filter: &'a CgroupFilter,
    types: &'a [EventType],
    json: bool,
    stdout: std::io::Stdout,
}

impl Printer<'_> {
    /// Prints one event if it passes the filters. Returns false when stdout
    /// is closed (a pipe reader went away), which ends the command quietly.
    fn print(&mut self, mut event: Event) -> anyhow::Result<bool> {
        self.registry.complete(&mut event);
        if let Some(e) = self.enricher {
            self.registry.learn(e.answers());
            let back = e.ask(self.registry.take_asks());
            self.registry.requeue(back);
        }
        if !self.types.contains(&EventType::of(&event)) {
            return Ok(true);
        }
        if !self.filter.matches_event(self.registry, &event) {
            return Ok(true);
        }
        let p = Presenter {
            paths: &*self.registry,
            clock: self.clock,
            page_size: self.page_size,
        };
        let line = if self.json {
            p.json(&event).to_string()
        } else {
            p.text(&event)
        };
        let mut out = self.stdout.lock();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e).context("writing to stdout"),
        }
    }
}
