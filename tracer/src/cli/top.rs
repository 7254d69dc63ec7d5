//! `memtrace top` and `memtrace replay`: the incident screens.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::agent::STATUS_FILE;
use crate::screen::live::LiveSource;
use crate::screen::replay::ReplaySource;
use crate::sys::escape;
use memtrace_ui::Mode;

use super::{UsageError, duration_arg};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Time between frames (`1s`, `500ms`).
    #[arg(long, short = 'd', value_name = "D", default_value = "1s", value_parser = duration_arg)]
    pub interval: Duration,
    /// The agent's status file, for its budget states and actions.
    #[arg(long, value_name = "PATH", default_value = STATUS_FILE, hide = true)]
    pub agent_status: PathBuf,
    /// Stay in a memory-limited cgroup instead of moving out of it (for
    /// tests that show why top moves).
    #[arg(long, hide = true)]
    pub stay_in_cgroup: bool,
}

fn need_terminal() -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        return Err(UsageError(
            "needs a terminal; for scripts use `memtrace events --json` or `memtrace record`"
                .into(),
        )
        .into());
    }
    Ok(())
}

fn check_interval(d: Duration) -> anyhow::Result<()> {
    if d < Duration::from_millis(100) {
        return Err(UsageError(format!("--interval {d:?} is too short: at least 100ms")).into());
    }
    Ok(())
}

pub fn top(args: TopArgs) -> anyhow::Result<u8> {
    check_interval(args.interval)?;
    need_terminal()?;
    // An operator's shell may be in the livelocked cgroup itself: leave it
    // and lock what we have, so the screen keeps drawing and taking keys.
    let mut notes = Vec::new();
    if !args.stay_in_cgroup
        && let Some(h) = crate::kernel::CgroupLayout::detect()
            .ok()
            .and_then(|l| l.memory)
    {
        notes.extend(escape::describe(&escape::leave_limited_cgroup(&h)));
    }
    if let Err(e) = escape::lock_memory() {
        notes.push(format!("memtrace top could not lock its memory: {e}"));
    }
    let mut source = LiveSource::new(args.agent_status)?;
    for n in notes {
        source.note_info(n);
    }
    memtrace_ui::run(&mut source, Mode::Live, args.interval).context("terminal")?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A recording (memtrace record), or the agent's flight recorder
    /// directory.
    pub file: PathBuf,
    /// Playback speed: 2 plays twice as fast as recorded.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Time between frames.
    #[arg(long, short = 'd', value_name = "D", default_value = "1s", value_parser = duration_arg)]
    pub interval: Duration,
    #[command(flatten)]
    pub window: super::report::WindowArgs,
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<u8> {
    if !(args.speed.is_finite() && (0.125..=64.0).contains(&args.speed)) {
        return Err(UsageError(format!(
            "--speed {} must be between 0.125 and 64",
            args.speed
        ))
        .into());
    }
    check_interval(args.interval)?;
    let name = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (timeline, rec) = super::report::open(&args.file, &args.window)?;
    need_terminal()?;
    let mut source = ReplaySource::new(timeline, rec, name, args.speed);
    memtrace_ui::run(&mut source, Mode::Replay, args.interval).context("terminal")?;
    Ok(0)
}
