//! Writing a recording: a header, then a chunk at least once a second.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::chunk::{ChunkBuilder, Paths};
use super::{Action, FILE_MAGIC, FORMAT_VERSION, Header, Sample};
use crate::event::Event;

/// When chunks reach the disk itself, not only the page cache.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Fsync {
    /// After every chunk.
    Every,
    /// At most once a second (the default).
    Interval,
    /// Never: the kernel decides.
    Never,
}

/// How exact the recorded times are.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum TimeResolution {
    /// As the kernel measured them, to the nanosecond (the default).
    #[default]
    Ns,
    /// Rounded to the nearest microsecond: about 30 % smaller files;
    /// each duration moves by less than 1 µs (docs/record-format.md).
    Us,
}

impl TimeResolution {
    pub fn ns(self) -> u64 {
        match self {
            Self::Ns => 1,
            Self::Us => 1_000,
        }
    }
}

/// How often a chunk is written even if it is small.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// A chunk is written early when it grows past this.
pub const FLUSH_BYTES: usize = 256 << 10;
/// Ticks come a few times a second; one within this of the second counts.
const TICK_SLACK: Duration = Duration::from_millis(150);

pub struct Writer {
    file: File,
    pub path: PathBuf,
    builder: ChunkBuilder,
    fsync: Fsync,
    last_flush: Instant,
    last_sync: Instant,
    /// Chunks written since the last fsync.
    unsynced: bool,
    /// Bytes written so far, header included.
    pub bytes: u64,
    pub records: u64,
    pub chunks: u64,
}

/// The encoded file header.
pub fn header_bytes(h: &Header) -> Vec<u8> {
    header_bytes_version(h, FORMAT_VERSION)
}

/// The header of a file of format `version` (tests write old files).
pub(crate) fn header_bytes_version(h: &Header, version: u16) -> Vec<u8> {
    let json = serde_json::to_vec(h).unwrap_or_default();
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    let crc = crc32fast::hash(&body);
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

impl Writer {
    /// Creates a new file (refusing to overwrite one unless `overwrite`).
    pub fn create(path: &Path, header: &Header, fsync: Fsync, overwrite: bool) -> io::Result<Self> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        if overwrite {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut file = opts.open(path).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::AlreadyExists {
                " (it exists; use --force to overwrite)"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}{hint}", path.display()),
            )
        })?;
        let head = header_bytes(header);
        file.write_all(&head)?;
        if fsync != Fsync::Never {
            file.sync_data()?;
            // The new file's directory entry must survive a power cut too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
        }
        let now = Instant::now();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            builder: ChunkBuilder::new(),
            fsync,
            last_flush: now,
            last_sync: now,
            unsynced: false,
            bytes: head.len() as u64,
            records: 0,
            chunks: 0,
        })
    }

    /// Rounds the times of the records written from now on.
    pub fn set_time_resolution(&mut self, r: TimeResolution) {
        self.builder.round_times_to(r.ns());
    }

    /// Writes the pending chunk first if it is already large, so no chunk
    /// grows past the reader's limit however fast records come.
    fn room(&mut self) -> io::Result<()> {
        if self.builder.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    pub fn event(&mut self, e: &Event, paths: &mut Paths<'_>) -> io::Result<()> {
        self.room()?;
        self.builder.event(e, paths);
        self.records += 1;
        Ok(())
    }

    pub fn sample(&mut self, s: &Sample, paths: &mut Paths<'_>) -> io::Result<()> {
        self.room()?;
        self.builder.sample(s, paths);
        self.records += 1;
        Ok(())
    }

    pub fn action(&mut self, a: &Action, paths: &mut Paths<'_>) -> io::Result<()> {
        self.room()?;
        self.builder.action(a, paths);
        self.records += 1;
        Ok(())
    }

    pub fn note(&mut self, ts_ns: u64, text: &str) -> io::Result<()> {
        self.room()?;
        self.builder.note(ts_ns, text);
        self.records += 1;
        Ok(())
    }

    /// Writes the pending chunk when a second is (nearly) up, and syncs
    /// written chunks on the same schedule. Call it several times a second.
    /// Returns whether a chunk was written.
    pub fn tick(&mut self) -> io::Result<bool> {
        let due = |t: Instant| t.elapsed() + TICK_SLACK >= FLUSH_INTERVAL;
        let wrote = if due(self.last_flush) {
            self.flush()?
        } else {
            false
        };
        if self.unsynced && self.fsync == Fsync::Interval && due(self.last_sync) {
            self.sync()?;
        }
        Ok(wrote)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.last_sync = Instant::now();
        self.file.sync_data()?;
        self.unsynced = false;
        Ok(())
    }

    /// Writes the pending chunk now, in one write.
    pub fn flush(&mut self) -> io::Result<bool> {
        self.last_flush = Instant::now();
        let Some(chunk) = self.builder.finish() else {
            return Ok(false);
        };
        self.file.write_all(&chunk)?;
        self.bytes += chunk.len() as u64;
        self.chunks += 1;
        self.unsynced = true;
        match self.fsync {
            Fsync::Every => self.sync()?,
            Fsync::Interval if self.last_sync.elapsed() + TICK_SLACK >= FLUSH_INTERVAL => {
                self.sync()?;
            }
            _ => {}
        }
        log::debug!(
            "{}: chunk {} flushed, {} bytes in all",
            self.path.display(),
            self.chunks,
            self.bytes
        );
        Ok(true)
    }

    /// Flushes and syncs; the file is complete.
    pub fn close(mut self) -> io::Result<u64> {
        self.flush()?;
        self.file.sync_all()?;
        Ok(self.bytes)
    }
}
