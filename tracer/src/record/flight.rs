//! The agent's flight recorder: a rolling set of recordings in a directory,
//! capped by total size and age, so the minutes before an incident are
//! always on disk. It uses the same writer as `memtrace record`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::Header;
use super::writer::{Fsync, Writer};

/// A file is closed and a new one started after this long ...
pub const SEGMENT_AGE: Duration = Duration::from_secs(600);
/// ... or when it reaches this share of the size cap.
pub const SEGMENTS: u64 = 8;

pub struct FlightRecorder {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    header: Header,
    current: Option<Writer>,
    started: Instant,
    seq: u64,
}

impl FlightRecorder {
    pub fn new(dir: &Path, max_bytes: u64, max_age: Duration, header: Header) -> io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("flight recorder directory {}: {e}", dir.display()),
            )
        })?;
        let mut f = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            max_age,
            header,
            current: None,
            started: Instant::now(),
            seq: 0,
        };
        f.rotate()?;
        Ok(f)
    }

    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / SEGMENTS).max(1 << 20)
    }

    /// The writer to add records to.
    pub fn writer(&mut self) -> Option<&mut Writer> {
        self.current.as_mut()
    }

    /// Writes the pending chunk if due, rotating and pruning as needed.
    pub fn tick(&mut self) -> io::Result<()> {
        if let Some(w) = &mut self.current {
            w.tick()?;
            if w.bytes >= self.segment_bytes() || self.started.elapsed() >= SEGMENT_AGE {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(w) = self.current.take() {
            w.close()?;
        }
        self.seq += 1;
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace([':', '-'], "");
        let path = self.dir.join(format!(
            "memtrace-{stamp}-{}-{:04}.mtr",
            std::process::id(),
            self.seq
        ));
        let mut header = self.header.clone();
        header.start_mono_ns = crate::clock::mono_now_ns();
        header.start = header.clock().rfc3339(header.start_mono_ns);
        self.current = Some(Writer::create(&path, &header, Fsync::Interval, false)?);
        self.started = Instant::now();
        self.prune();
        Ok(())
    }

    /// Deletes the oldest recordings beyond the size and age caps (never
    /// the one being written).
    pub fn prune(&self) {
        let current = self.current.as_ref().map(|w| w.path.clone());
        let mut files: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let name = p.file_name()?.to_str()?;
                if !(name.starts_with("memtrace-") && name.ends_with(".mtr")) {
                    return None;
                }
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), p))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (modified, len, path) in files {
            if Some(&path) == current.as_ref() {
                continue;
            }
            let old = modified.elapsed().is_ok_and(|a| a > self.max_age);
            if (total > self.max_bytes || old) && std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    pub fn close(mut self) -> io::Result<()> {
        if let Some(w) = self.current.take() {
            w.close()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_prunes_to_the_size_cap() {
        let dir = std::env::temp_dir().join(format!("memtrace-flight-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // 8 MiB cap: 1 MiB segments.
        let mut f =
            FlightRecorder::new(&dir, 8 << 20, Duration::from_secs(3600), Header::default())
                .unwrap();
        // Text that does not compress, so the files grow as written.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let text: String = (0..64 << 10)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'!' + (state % 90) as u8)
            })
            .collect();
        for i in 0..200u64 {
            let w = f.writer().unwrap();
            w.note(i, &text).unwrap();
            w.flush().unwrap();
            f.tick().unwrap();
        }
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        let total: u64 = files.iter().map(|e| e.metadata().unwrap().len()).sum();
        assert!(files.len() > 2, "{} files", files.len());
        assert!(total <= (8 << 20) + (2 << 20), "{total} bytes kept");
        // Every kept file is a readable recording.
        for e in &files {
            let r = crate::record::reader::read(&e.path()).unwrap();
            assert!(r.damaged.is_empty());
        }
        f.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
