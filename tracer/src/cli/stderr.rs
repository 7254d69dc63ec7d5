//! Where the daemon's log lines go: to stderr, from a thread of their own.
//!
//! Under systemd stderr is a pipe to journald, and journald can stall under
//! the very memory pressure the agent is there to end. A write to a full
//! pipe blocks the writer; the writer must not be the loop that delivers
//! kills. Lines are formatted where they are logged and queued (never
//! blocking); a line that finds the queue full is counted and dropped, and
//! the count is logged once the queue drains.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Lines waiting for stderr.
const QUEUE: usize = 4096;

/// A writer for env_logger that hands each formatted record to the
/// stderr thread.
pub struct Queued {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    buf: Vec<u8>,
}

impl Queued {
    /// Starts the stderr thread; `None` if it cannot start (then log
    /// directly).
    pub fn start() -> Option<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen = dropped.clone();
        std::thread::Builder::new()
            .name("log".into())
            .spawn(move || {
                let mut told = 0;
                while let Ok(line) = rx.recv() {
                    let mut err = std::io::stderr().lock();
                    let lost = seen.load(Ordering::Relaxed);
                    if lost > told {
                        let _ = writeln!(
                            err,
                            "memtrace: {} log lines dropped: stderr was not read fast enough",
                            lost - told
                        );
                        told = lost;
                    }
                    let _ = err.write_all(&line);
                }
            })
            .ok()?;
        Some(Self {
            tx,
            dropped,
            buf: Vec::new(),
        })
    }
}

impl Write for Queued {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    /// env_logger flushes after each record: one record, one queue slot.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.buf);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
