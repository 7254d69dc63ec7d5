//! The `file` alert sink: one JSON line per alert (the webhook body),
//! appended to a path opened when the agent starts. The path can be a
//! regular file, or a device whose far end is off the box, such as a
//! virtio-serial port (`/dev/virtio-ports/NAME`) or a serial line: a way
//! out that needs neither the network nor DNS while the box goes down.
//!
//! Prepared ahead: the descriptor is opened at start (and reload), and the
//! line is encoded into a buffer kept from the start, so writing an alert
//! is one `write(2)` and, for a regular file, one `fdatasync` so the line
//! survives a power cycle. A device is not synced (it has nothing to
//! sync).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Room kept for one alert's line; a longer one grows the buffer once.
const LINE_BYTES: usize = 64 << 10;

pub struct FileSink {
    path: PathBuf,
    file: File,
    regular: bool,
    buf: Vec<u8>,
}

impl FileSink {
    /// Opens `path` for appending, creating a regular file (and its
    /// directory) if it does not exist; a device must exist.
    pub fn open(path: &Path) -> Result<Self, String> {
        let existing = std::fs::metadata(path).ok();
        let kind = existing.as_ref().map(std::fs::Metadata::file_type);
        if kind.is_some_and(|t| t.is_socket()) {
            return Err(format!(
                "{} is a socket, which cannot be opened as a file: use a webhook or an exec alert",
                path.display()
            ));
        }
        let fifo = kind.is_some_and(|t| t.is_fifo());
        let device = fifo || kind.is_some_and(|t| t.is_char_device());
        if existing.is_none()
            && let Some(dir) = path.parent()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        // A FIFO without a reader would block this open, on the agent's
        // loop: non-blocking, it fails at once (ENXIO) instead.
        let nonblock = if fifo { libc::O_NONBLOCK } else { 0 };
        opts.append(true).custom_flags(libc::O_CLOEXEC | nonblock);
        if !device {
            opts.create(true);
        }
        let file = opts.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                format!("cannot open {}: no process reads this FIFO", path.display())
            } else {
                format!("cannot open {}: {e}", path.display())
            }
        })?;
        if fifo {
            // Writes happen on the sink's own thread: blocking there is fine.
            use std::os::fd::AsRawFd;
            // SAFETY: F_GETFL/F_SETFL on a descriptor this function owns.
            unsafe {
                let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                if flags >= 0 {
                    libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
                }
            }
        }
        let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
        Ok(Self {
            path: path.to_path_buf(),
            file,
            regular,
            buf: Vec::with_capacity(LINE_BYTES),
        })
    }

    /// Writes one alert as a line.
    pub fn write(&mut self, body: &impl serde::Serialize) -> Result<(), String> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, body)
            .map_err(|e| format!("cannot encode the alert: {e}"))?;
        self.buf.push(b'\n');
        // One write: readers of a port or a file never see half a line
        // from another writer.
        self.file
            .write_all(&self.buf)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        if self.regular {
            self.file
                .sync_data()
                .map_err(|e| format!("syncing {}: {e}", self.path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO nobody reads is an error at once, not a hang of the loop.
    #[test]
    fn a_fifo_without_a_reader_fails_at_once() {
        let path =
            std::env::temp_dir().join(format!("memtrace-filesink-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = FileSink::open(&path).err().unwrap();
        assert!(e.contains("no process reads this FIFO"), "{e}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn appends_json_lines_and_creates_the_file() {
        let dir = std::env::temp_dir().join(format!("memtrace-filesink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/alerts.jsonl");
        let mut s = FileSink::open(&path).unwrap();
        s.write(&serde_json::json!({"event": "host", "n": 1}))
            .unwrap();
        s.write(&serde_json::json!({"event": "kill", "n": 2}))
            .unwrap();
        drop(s);
        // Reopened: appends, never truncates.
        FileSink::open(&path)
            .unwrap()
            .write(&serde_json::json!({"n": 3}))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["event"], "host");
        assert_eq!(lines[2]["n"], 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_device_is_written_not_created() {
        // /dev/null stands for a port: it exists, is a character device,
        // and is not synced.
        let mut s = FileSink::open(Path::new("/dev/null")).unwrap();
        assert!(!s.regular);
        s.write(&serde_json::json!({"x": 1})).unwrap();
        let e = FileSink::open(Path::new("/proc/nonexistent-dir/x"))
            .err()
            .unwrap();
        assert!(e.contains("/proc/nonexistent-dir"), "{e}");
    }
}
