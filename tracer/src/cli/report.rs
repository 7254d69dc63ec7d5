//! `memtrace report` and `memtrace export`: reading recordings.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::config::filter::CgroupFilter;
use crate::record::reader;
use crate::record::timeline::{self, Bound, Window};

use super::UsageError;

/// Which part of a recording to read: shared by report, export and replay.
#[derive(Args, Debug, Default)]
pub struct WindowArgs {
    /// Only records from this time on: UTC (`2026-12-01T12:00:00Z`,
    /// `"2026-12-01 12:00:00"`) or a duration before the end (`10m`).
    #[arg(long, value_name = "TIME", value_parser = Bound::parse)]
    pub since: Option<Bound>,
    /// Only records up to this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = Bound::parse)]
    pub until: Option<Bound>,
    /// Only cgroups matching GLOB and below (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub cgroup: Vec<String>,
}

impl WindowArgs {
    fn window(&self) -> anyhow::Result<Window> {
        Ok(Window {
            since: self.since,
            until: self.until,
            cgroups: CgroupFilter::new(&self.cgroup).map_err(UsageError)?,
        })
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A recording (from `memtrace record`), or the agent's flight recorder
    /// directory, read as one timeline.
    pub file: PathBuf,
    /// JSON, for scripts.
    #[arg(long, conflicts_with_all = ["markdown", "html"])]
    pub json: bool,
    /// Markdown (the default text is Markdown too; this only makes it
    /// explicit for scripts that expect it).
    #[arg(long, conflicts_with = "html")]
    pub markdown: bool,
    /// One self-contained HTML page with the pictures: throttled share,
    /// memory.current against memory.high and memory.max, PSI, swap, and
    /// kills and OOMs marked, per cgroup over time. Open it in a browser.
    #[arg(long)]
    pub html: bool,
    /// Write here instead of stdout.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// Scans a recording (or a flight recorder's directory) once: tables,
/// span, integrity, cut to the window; says what was damaged. The records
/// are streamed afterwards from the returned timeline.
pub(super) fn open(
    file: &std::path::Path,
    window: &WindowArgs,
) -> anyhow::Result<(timeline::Timeline, reader::Recording)> {
    let (timeline, rec) = timeline::scan(file, &window.window()?)
        .with_context(|| format!("reading {}", file.display()))?;
    if !rec.damaged.is_empty() || rec.torn_tail.is_some() {
        say!(
            "memtrace: {}: {} damaged chunk(s) skipped{}; everything else was read",
            file.display(),
            rec.damaged.len(),
            if rec.torn_tail.is_some() {
                ", and the file ends mid-chunk"
            } else {
                ""
            }
        );
    }
    Ok((timeline, rec))
}

pub fn report(args: ReportArgs) -> anyhow::Result<u8> {
    let (timeline, rec) = open(&args.file, &args.window)?;
    let mut out = output(args.output.as_deref(), &args.file)?;
    let r = crate::report::build_from(&rec, reader::Sorted::new(timeline.records()));
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &r)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else if args.html {
        out.write_all(r.html().as_bytes())
    } else {
        out.write_all(r.markdown().as_bytes())
    };
    finish(written.and_then(|()| out.flush()), "writing the report")
}

/// A reader that stops early (`| head`) is not an error.
fn finish(written: std::io::Result<()>, what: &'static str) -> anyhow::Result<u8> {
    match written {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).context(what),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// Perfetto's protobuf trace: open it in ui.perfetto.dev (any size).
    Perfetto,
    /// Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing), for
    /// small recordings.
    ChromeJson,
    /// One JSON object per record.
    Jsonl,
    /// A table for spreadsheets (events; with --samples, the samples).
    Csv,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A recording, or a flight recorder directory.
    pub file: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    /// Write here instead of stdout.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// CSV of the per-second samples instead of the events.
    #[arg(long)]
    pub samples: bool,
    #[command(flatten)]
    pub window: WindowArgs,
}

const OUT_BUFFER: usize = 1 << 20;

pub fn export(args: ExportArgs) -> anyhow::Result<u8> {
    let (timeline, rec) = open(&args.file, &args.window)?;
    let mut out = output(args.output.as_deref(), &args.file)?;
    let r = timeline.records();
    use crate::report::{export, perfetto};
    let result = match args.format {
        Format::Perfetto => perfetto::perfetto(&rec, r, &mut out),
        Format::ChromeJson => export::chrome_json(&rec, r, &mut out),
        Format::Jsonl => export::jsonl(&rec, r, &mut out),
        Format::Csv if args.samples => export::csv_samples(&rec, r, &mut out),
        Format::Csv => export::csv_events(&rec, r, &mut out),
    };
    finish(result.and_then(|()| out.flush()), "writing the export")
}

/// Where the output goes: a new file (never the recording itself), or
/// stdout. Exports run to gigabytes: large buffers, few writes.
fn output(to: Option<&std::path::Path>, input: &std::path::Path) -> anyhow::Result<Box<dyn Write>> {
    let Some(p) = to else {
        return Ok(Box::new(std::io::BufWriter::with_capacity(
            OUT_BUFFER,
            std::io::stdout().lock(),
        )));
    };
    let inside = input.is_dir() && p.parent().is_some_and(|d| same_file(d, input));
    if same_file(p, input) || (inside && p.extension().is_some_and(|x| x == "mtr")) {
        return Err(UsageError(format!(
            "--output {} is the recording itself; writing there would destroy it",
            p.display()
        ))
        .into());
    }
    Ok(Box::new(std::io::BufWriter::with_capacity(
        OUT_BUFFER,
        std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
    )))
}

/// Whether two paths name one file (hard links and `./` spellings too).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
