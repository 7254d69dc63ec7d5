//! `memtrace report` and `memtrace export`: reading recordings.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::record::reader;

use super::UsageError;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A recording (from `memtrace record` or the agent's flight recorder).
    pub file: PathBuf,
    /// JSON, for scripts.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Markdown (the default text is Markdown too; this only makes it
    /// explicit for scripts that expect it).
    #[arg(long)]
    pub markdown: bool,
}

/// Reads a recording through once (tables, span, integrity) and says what
/// was damaged; the records are streamed afterwards from `input`.
fn open(file: &std::path::Path) -> anyhow::Result<(reader::Input, reader::Recording)> {
    let input = reader::Input::File(file.to_path_buf());
    let rec = reader::scan(&input).with_context(|| format!("reading {}", file.display()))?;
    if !rec.damaged.is_empty() || rec.torn_tail.is_some() {
        eprintln!(
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
    Ok((input, rec))
}

/// The records, a second time, streamed.
fn records(input: &reader::Input, file: &std::path::Path) -> anyhow::Result<reader::Stream> {
    input
        .open()
        .with_context(|| format!("reading {}", file.display()))
}

pub fn report(args: ReportArgs) -> anyhow::Result<u8> {
    let (input, rec) = open(&args.file)?;
    let sorted = reader::Sorted::new(records(&input, &args.file)?);
    let r = crate::report::build_from(&rec, sorted);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &r)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
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
    pub file: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    /// Write here instead of stdout.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// CSV of the per-second samples instead of the events.
    #[arg(long)]
    pub samples: bool,
}

const OUT_BUFFER: usize = 1 << 20;

pub fn export(args: ExportArgs) -> anyhow::Result<u8> {
    let (input, rec) = open(&args.file)?;
    if let Some(p) = &args.output
        && same_file(p, &args.file)
    {
        return Err(UsageError(format!(
            "--output {} is the recording itself; writing there would destroy it",
            p.display()
        ))
        .into());
    }
    let mut out: Box<dyn Write> = match &args.output {
        // Exports run to gigabytes: large buffers, few writes.
        Some(p) => Box::new(std::io::BufWriter::with_capacity(
            OUT_BUFFER,
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::with_capacity(
            OUT_BUFFER,
            std::io::stdout().lock(),
        )),
    };
    let r = records(&input, &args.file)?;
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

/// Whether two paths name one file (hard links and `./` spellings too).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
