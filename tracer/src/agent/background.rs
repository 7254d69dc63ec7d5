//! What the loop hands to other threads so that it never waits on a disk:
//! the flight recorder (which fsyncs), and the kill log and status file.
//!
//! Each thread takes its work from a bounded queue. The loop only queues
//! (never blocks): when a stalled disk fills a queue, what no longer fits
//! is counted and dropped, and the kill path goes on. The kill log line
//! of a kill already made is worth more than a second of samples, so the
//! two go to different threads.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError, channel, sync_channel,
};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::fmt_bytes;
use crate::event::Event;
use crate::record::flight::FlightRecorder;
use crate::record::{Action, Header, Sample};

/// Records waiting for the recorder thread; at 1,000 events/s, a minute.
/// Counted, not preallocated: a bounded `sync_channel` of this size is
/// 19 MiB of slots written at creation, all of it resident and locked.
const RECORDER_QUEUE: usize = 65_536;
/// Kill-log lines and status files waiting.
const FILES_QUEUE: usize = 1_024;
/// The flight recorder writes its chunk when due; it is asked this often.
const RECORDER_TICK: Duration = Duration::from_millis(250);

/// Cgroup ids and their paths, sent along with a record so the recorder
/// thread can write its path tables without the registry.
pub(super) type Paths = Vec<(u64, Arc<str>)>;

/// Where and how the flight recorder writes.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RecorderSetup {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub header: Header,
}

enum RecItem {
    Event(Event, [(u64, Option<Arc<str>>); 3]),
    Sample(Sample, Paths),
    Action(Action, Paths),
    Restart(Option<RecorderSetup>),
    Close,
}

/// The flight recorder's thread.
pub(super) struct Recorder {
    tx: Sender<RecItem>,
    /// Items sent and not yet taken by the thread, at most
    /// [`RECORDER_QUEUE`].
    queued: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
    /// Records dropped because the queue was full (a stalled disk).
    pub(super) dropped: Arc<AtomicU64>,
}

impl Recorder {
    pub(super) fn start(setup: Option<RecorderSetup>) -> Self {
        let (tx, rx) = channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || record(&rx, &taken, setup))
            .map_err(|e| log::error!("flight recorder not started: {e}"))
            .ok();
        Self {
            tx,
            queued,
            thread,
            dropped,
        }
    }

    /// Queues an item, or drops it (and counts it) when the queue is full:
    /// never waits.
    fn send(&self, item: RecItem) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= RECORDER_QUEUE {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.send(item).is_err() {
            // The thread is gone; nothing will take it.
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(super) fn event(&self, e: &Event, paths: [(u64, Option<Arc<str>>); 3]) {
        self.send(RecItem::Event(*e, paths));
    }

    pub(super) fn sample(&self, s: Sample, paths: Paths) {
        self.send(RecItem::Sample(s, paths));
    }

    pub(super) fn action(&self, a: Action, paths: Paths) {
        self.send(RecItem::Action(a, paths));
    }

    /// Closes the current recording and starts another with `setup` (or
    /// none).
    pub(super) fn restart(&self, setup: Option<RecorderSetup>) {
        self.send(RecItem::Restart(setup));
    }

    /// Writes what is queued and closes the recording; waits for it.
    pub(super) fn close(mut self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(RecItem::Close);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(setup: Option<RecorderSetup>) -> Option<FlightRecorder> {
    let s = setup?;
    match FlightRecorder::new(&s.dir, s.max_bytes, s.max_age, s.header) {
        Ok(r) => {
            log::info!(
                "flight recorder: {} (at most {}, {:?})",
                s.dir.display(),
                fmt_bytes(s.max_bytes),
                s.max_age
            );
            Some(r)
        }
        Err(e) => {
            log::error!("flight recorder not started: {e}");
            None
        }
    }
}

fn record(rx: &Receiver<RecItem>, queued: &AtomicUsize, setup: Option<RecorderSetup>) {
    let mut rec = open(setup);
    let mut paths: HashMap<u64, Arc<str>> = HashMap::new();
    loop {
        let item = match rx.recv_timeout(RECORDER_TICK) {
            Ok(item) => {
                queued.fetch_sub(1, Ordering::Relaxed);
                Some(item)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let result = match item {
            None => rec.as_mut().map_or(Ok(()), FlightRecorder::tick),
            Some(RecItem::Close) => break,
            Some(RecItem::Restart(setup)) => {
                if let Some(old) = rec.take()
                    && let Err(e) = old.close()
                {
                    log::error!("flight recorder: {e}");
                }
                rec = open(setup);
                Ok(())
            }
            Some(item) => {
                let Some(w) = rec.as_mut().and_then(FlightRecorder::writer) else {
                    continue;
                };
                let mut learn = |p: &[(u64, Option<Arc<str>>)]| {
                    for (id, path) in p {
                        if let Some(path) = path {
                            paths.insert(*id, path.clone());
                        }
                    }
                };
                match item {
                    RecItem::Event(e, p) => {
                        learn(&p);
                        w.event(&e, &mut |id| paths.get(&id).cloned())
                    }
                    RecItem::Sample(s, p) => {
                        paths.extend(p);
                        w.sample(&s, &mut |id| paths.get(&id).cloned())
                    }
                    RecItem::Action(a, p) => {
                        paths.extend(p);
                        w.action(&a, &mut |id| paths.get(&id).cloned())
                    }
                    RecItem::Restart(_) | RecItem::Close => Ok(()),
                }
                .and_then(|()| rec.as_mut().map_or(Ok(()), FlightRecorder::tick))
            }
        };
        if let Err(e) = result {
            log::error!("flight recorder stopped: {e}");
            rec = None;
        }
    }
    if let Some(r) = rec
        && let Err(e) = r.close()
    {
        log::error!("flight recorder: {e}");
    }
}

enum FileItem {
    KillLine(String),
    Status(PathBuf, String),
    KillLog(Option<std::fs::File>),
    Close,
}

/// The kill log and status file's thread.
pub(super) struct Files {
    tx: SyncSender<FileItem>,
    thread: Option<JoinHandle<()>>,
}

impl Files {
    pub(super) fn start(kill_log: Option<std::fs::File>) -> Self {
        let (tx, rx) = sync_channel(FILES_QUEUE);
        let thread = std::thread::Builder::new()
            .name("files".into())
            .spawn(move || files(&rx, kill_log))
            .map_err(|e| log::error!("kill log and status file not written: {e}"))
            .ok();
        Self { tx, thread }
    }

    fn send(&self, item: FileItem) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(item) {
            log::warn!("kill log and status file queue full (a stalled disk): one dropped");
        }
    }

    pub(super) fn kill_line(&self, line: String) {
        self.send(FileItem::KillLine(line));
    }

    pub(super) fn status(&self, path: PathBuf, text: String) {
        self.send(FileItem::Status(path, text));
    }

    pub(super) fn kill_log(&self, file: Option<std::fs::File>) {
        self.send(FileItem::KillLog(file));
    }

    /// Writes what is queued; waits for it.
    pub(super) fn close(mut self) {
        let _ = self.tx.send(FileItem::Close);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn files(rx: &Receiver<FileItem>, mut kill_log: Option<std::fs::File>) {
    while let Ok(item) = rx.recv() {
        match item {
            FileItem::KillLine(line) => {
                if let Some(f) = &mut kill_log
                    && let Err(e) = writeln!(f, "{line}")
                {
                    log::error!("kill log: {e}");
                }
            }
            FileItem::Status(path, text) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                // Atomically: a reader never sees half a file.
                let tmp = path.with_extension("json.tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
            FileItem::KillLog(f) => kill_log = f,
            FileItem::Close => break,
        }
    }
}

/// A sample and the paths of the cgroups it names.
pub(super) struct Sampled {
    pub sample: Sample,
    pub paths: Paths,
}

/// The once-a-second sample, taken on its own thread: it reads the memory
/// files of every limited cgroup and the largest processes of the active
/// ones, which on a big host is milliseconds of /proc and cgroupfs that
/// must not sit between an event and a kill. The thread keeps its own
/// registry of the same hierarchy (ids are the kernel's, so they agree).
pub(super) struct SamplerThread {
    tx: SyncSender<(u64, Vec<u64>)>,
    pub(super) samples: tokio::sync::mpsc::UnboundedReceiver<Sampled>,
}

impl SamplerThread {
    /// `spread`: a quiet cgroup is sampled one request in this many.
    pub(super) fn start(
        hierarchy: Option<crate::kernel::MemoryHierarchy>,
        page_size: u64,
        spread: u32,
    ) -> Self {
        let (tx, rx) = sync_channel::<(u64, Vec<u64>)>(1);
        let (out, samples) = tokio::sync::mpsc::unbounded_channel();
        let spawned = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                let version = hierarchy.as_ref().map(|h| h.version);
                let mut reg = crate::sys::registry::CgroupRegistry::new(hierarchy.as_ref());
                let mut sampler = crate::sys::sampler::Sampler::new(
                    crate::config::filter::CgroupFilter::default(),
                    version,
                    page_size,
                )
                .spread(spread);
                while let Ok((now, active)) = rx.recv() {
                    for &id in &active {
                        reg.resolve(id);
                    }
                    let sample = sampler.sample(now, &mut reg, &active);
                    let paths = sample
                        .cgroups
                        .iter()
                        .filter_map(|c| Some((c.id, reg.lookup(c.id)?)))
                        .collect();
                    if out.send(Sampled { sample, paths }).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the sampler thread ({e}): no cgroup samples");
        }
        Self { tx, samples }
    }

    /// Asks for a sample at `now` of the limited cgroups and `active`;
    /// skipped while the last one is still being taken.
    pub(super) fn request(&self, now: u64, active: Vec<u64>) {
        let _ = self.tx.try_send((now, active));
    }
}
