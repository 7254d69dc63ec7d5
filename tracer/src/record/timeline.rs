//! One timeline from a recording or a flight recorder's directory: the
//! files read in order, their records in one time order, cut to a time
//! window and a set of cgroups. `report`, `export` and `replay` scan it
//! once ([`scan`]: tables, span, integrity), then stream its records
//! ([`Timeline::records`]), one chunk in memory at a time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::reader::{self, Damage, ReadError, Recording};
use super::stream::Input;
use super::{Header, Record};
use crate::config::filter::CgroupFilter;

/// One end of the time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Wall-clock nanoseconds since the epoch.
    Wall(i128),
    /// This long before the timeline's last record.
    BeforeEnd(Duration),
}

impl Bound {
    /// `2026-12-01T12:00:00Z`, `2026-12-01 12:00:00` (UTC), or a duration
    /// before the end of the recording (`10m`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(ts) = humantime::parse_rfc3339_weak(t.trim_end_matches('Z')) {
            let ns = ts
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| format!("`{s}` is before 1970"))?
                .as_nanos();
            return Ok(Self::Wall(
                i128::try_from(ns).map_err(|_| format!("`{s}` is too late"))?,
            ));
        }
        crate::clock::parse_duration(t)
            .map(Self::BeforeEnd)
            .map_err(|_| {
                format!(
                    "`{s}` is neither a UTC time (2026-12-01T12:00:00Z, 2026-12-01 12:00:00) \
                 nor a duration before the end of the recording (10m)"
                )
            })
    }
}

/// What of the timeline to keep.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub since: Option<Bound>,
    pub until: Option<Bound>,
    /// Cgroups (and their subtrees) to keep; empty keeps all.
    pub cgroups: CgroupFilter,
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0} holds no recordings (*.mtr)")]
    EmptyDir(String),
    #[error("cannot list {path}: {source}")]
    List {
        path: String,
        source: std::io::Error,
    },
}

/// The recordings a path names: the file itself, or a directory's `*.mtr`
/// files in name order (the flight recorder names them by start time).
pub fn files(path: &Path) -> Result<Vec<PathBuf>, TimelineError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let list = |source| TimelineError::List {
        path: path.display().to_string(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(list)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mtr") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TimelineError::EmptyDir(path.display().to_string()));
    }
    Ok(files)
}

/// A timeline ready to be streamed, as often as a consumer needs passes:
/// its files, each with the shift of its clock onto the first file's, and
/// the window as monotonic bounds on that clock.
#[derive(Clone, Debug)]
pub struct Timeline {
    parts: Vec<(Input, i64)>,
    since: u64,
    until: u64,
    /// Cgroup ids kept when the window names cgroups.
    keep: Option<Arc<HashSet<u64>>>,
}

/// Scans a recording or a directory of them as one timeline within
/// `window`: the merged tables, span and integrity (no records), and the
/// [`Timeline`] that streams the records. Times are put on the first
/// file's monotonic clock, so files from different boots line up by wall
/// time. In a directory, a file that is not a readable recording is
/// reported as damage; a single file that is not one is an error. The
/// span is the recording's, cut to the window.
pub fn scan(path: &Path, window: &Window) -> Result<(Timeline, Recording), TimelineError> {
    let files = files(path)?;
    let single = !path.is_dir();
    let inputs = files
        .into_iter()
        .map(|f| (name(&f), Input::File(f)))
        .collect();
    scan_inputs(inputs, single, window)
}

/// [`scan`] over inputs already chosen (files, or bytes in tests).
pub fn scan_inputs(
    inputs: Vec<(String, Input)>,
    single: bool,
    window: &Window,
) -> Result<(Timeline, Recording), TimelineError> {
    let mut out: Option<Recording> = None;
    let mut parts = Vec::new();
    let mut damaged_files = Vec::new();
    let n = inputs.len();
    for (i, (label, input)) in inputs.into_iter().enumerate() {
        let rec = match reader::scan(&input) {
            Ok(r) => r,
            Err(e) if !single => {
                let len = match &input {
                    Input::File(f) => std::fs::metadata(f).map_or(0, |m| m.len()),
                    Input::Bytes(b) => b.len() as u64,
                };
                damaged_files.push(Damage {
                    offset: 0,
                    len,
                    reason: format!("{label}: {e}"),
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let delta = out.as_ref().map_or(0, |acc| {
            rec.header
                .wall_offset_ns
                .saturating_sub(acc.header.wall_offset_ns)
        });
        parts.push((input, delta));
        out = Some(match out {
            None => rec,
            Some(acc) => merge(acc, rec, delta, &label, i + 1 == n),
        });
    }
    let Some(mut rec) = out else {
        // Every file of the directory was unreadable: say so, as damage.
        let rec = Recording {
            damaged: damaged_files,
            ..Default::default()
        };
        return Ok((
            Timeline {
                parts,
                since: 0,
                until: u64::MAX,
                keep: None,
            },
            rec,
        ));
    };
    rec.damaged.extend(damaged_files);
    let (since, until) = bounds(&rec, window);
    let keep = (!window.cgroups.is_empty()).then(|| {
        Arc::new(
            rec.cgroups
                .iter()
                .filter(|(_, p)| !p.is_empty() && window.cgroups.matches(p))
                .map(|(id, _)| *id)
                .collect::<HashSet<u64>>(),
        )
    });
    if let Some(keep) = &keep {
        rec.cgroups.retain(|id, _| keep.contains(id));
    }
    rec.span = rec
        .span
        .map(|(a, b)| (a.max(since), b.min(until)))
        .filter(|(a, b)| a <= b);
    rec.began_ns = rec.began_ns.map(|b| b.max(since));
    Ok((
        Timeline {
            parts,
            since,
            until,
            keep,
        },
        rec,
    ))
}

/// Reads a recording or a directory of them into memory as one recording
/// whose records are in time order, within `window`. For recordings of
/// any size, stream them instead ([`scan`], [`Timeline::records`]).
#[cfg(test)]
pub fn open(path: &Path, window: &Window) -> Result<Recording, TimelineError> {
    let (timeline, mut rec) = scan(path, window)?;
    rec.records = timeline.records().collect();
    rec.records.sort_by_key(Record::ts_ns);
    Ok(rec)
}

impl Timeline {
    /// The records in file order (each file's in its own order, the files
    /// in time order: wrap in [`super::stream::Sorted`] for time order),
    /// on the first file's clock, inside the window. A file that cannot
    /// be opened again (gone since the scan) yields nothing.
    pub fn records(&self) -> Box<dyn Iterator<Item = Record> + Send> {
        let (since, until, keep) = (self.since, self.until, self.keep.clone());
        let parts = self.parts.clone();
        Box::new(
            parts
                .into_iter()
                .flat_map(|(input, delta)| {
                    let stream = input.open().ok();
                    stream.into_iter().flatten().map(move |r| shift(r, delta))
                })
                .filter_map(move |r| inside(r, since, until, keep.as_deref())),
        )
    }
}

/// The window as monotonic bounds on the timeline's clock.
fn bounds(rec: &Recording, w: &Window) -> (u64, u64) {
    let clock = rec.header.clock();
    let last = rec.span.map_or(0, |(_, b)| b);
    let mono = |b: Bound| -> u64 {
        match b {
            Bound::Wall(ns) => u64::try_from((ns - clock.offset_ns).max(0)).unwrap_or(u64::MAX),
            Bound::BeforeEnd(d) => {
                last.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            }
        }
    };
    (w.since.map_or(0, mono), w.until.map_or(u64::MAX, mono))
}

/// A record inside the window, with a sample cut to the kept cgroups.
fn inside(mut r: Record, since: u64, until: u64, keep: Option<&HashSet<u64>>) -> Option<Record> {
    let t = r.ts_ns();
    if t < since || t > until {
        return None;
    }
    let Some(keep) = keep else {
        return Some(r);
    };
    let kept = |id: u64| keep.contains(&id);
    let stays = match &mut r {
        Record::Event(crate::event::Event::Lost(_)) | Record::Note { .. } => true,
        Record::Event(e) => e.cgroup_ids().any(kept),
        Record::Action(a) => kept(a.cgroup_id),
        Record::Sample(s) => {
            s.cgroups.retain(|c| kept(c.id));
            true
        }
    };
    stays.then_some(r)
}

fn name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

/// Adds `next` (tables and integrity; records too, if it holds any) to
/// `acc`, on `acc`'s clock: `next`'s times move by `delta`.
fn merge(mut acc: Recording, next: Recording, delta: i64, file: &str, last: bool) -> Recording {
    acc.records
        .extend(next.records.into_iter().map(|r| shift(r, delta)));
    for (id, path) in next.cgroups {
        if !path.is_empty() || !acc.cgroups.contains_key(&id) {
            acc.cgroups.insert(id, path);
        }
    }
    let moved = |t: u64| t.saturating_add_signed(delta);
    acc.span = match (acc.span, next.span.map(|(a, b)| (moved(a), moved(b)))) {
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        (x, y) => x.or(y),
    };
    acc.began_ns = match (acc.began_ns, next.began_ns.map(moved)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (x, y) => x.or(y),
    };
    acc.chunks += next.chunks;
    acc.unknown_records += next.unknown_records;
    acc.bytes += next.bytes;
    acc.damaged_more += next.damaged_more;
    acc.damaged.extend(next.damaged.into_iter().map(|d| Damage {
        reason: format!("{file}: {}", d.reason),
        ..d
    }));
    // Only the newest file may be still being written; a torn earlier one
    // is damage.
    if let Some(t) = acc.torn_tail.take() {
        acc.damaged.push(Damage {
            offset: t,
            len: 0,
            reason: "an earlier file ends mid-chunk".into(),
        });
    }
    if last {
        acc.torn_tail = next.torn_tail;
    } else if let Some(t) = next.torn_tail {
        acc.damaged.push(Damage {
            offset: t,
            len: 0,
            reason: format!("{file}: ends mid-chunk"),
        });
    }
    merge_header(&mut acc.header, &next.header);
    acc
}

fn merge_header(acc: &mut Header, next: &Header) {
    for d in &next.degraded {
        if !acc.degraded.contains(d) {
            acc.degraded.push(d.clone());
        }
    }
    if next.kernel != acc.kernel && !acc.kernel.contains(&next.kernel) {
        acc.kernel = format!("{}, {}", acc.kernel, next.kernel);
    }
}

/// Moves a record's times by `delta` ns (another file's clock onto ours).
fn shift(r: Record, delta: i64) -> Record {
    if delta == 0 {
        return r;
    }
    let f = |t: u64| t.saturating_add_signed(delta);
    use crate::event::Event;
    match r {
        Record::Event(mut e) => {
            match &mut e {
                Event::ThrottleStart(x) => x.ts_ns = f(x.ts_ns),
                Event::Throttle(x) => (x.ts_ns, x.start_ns) = (f(x.ts_ns), f(x.start_ns)),
                Event::Reclaim(x) | Event::DirectReclaim(x) => {
                    (x.ts_ns, x.start_ns) = (f(x.ts_ns), f(x.start_ns));
                }
                Event::OomKill(x) => x.ts_ns = f(x.ts_ns),
                Event::Brake(x) => x.ts_ns = f(x.ts_ns),
                Event::Lost(x) => x.ts_ns = f(x.ts_ns),
            }
            Record::Event(e)
        }
        Record::Sample(mut s) => {
            s.ts_ns = f(s.ts_ns);
            Record::Sample(s)
        }
        Record::Action(mut a) => {
            a.ts_ns = f(a.ts_ns);
            Record::Action(a)
        }
        Record::Note { ts_ns, text } => Record::Note {
            ts_ns: f(ts_ns),
            text,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Comm, Event, OomKill, Task};
    use crate::record::writer::{Fsync, Writer};
    use crate::record::{CgroupSample, Sample};

    const SEC: u64 = 1_000_000_000;

    fn oom(ts: u64, cg: u64) -> Event {
        let task = Task {
            pid: 7,
            tgid: 7,
            comm: Comm::new("hog"),
        };
        Event::OomKill(OomKill {
            ts_ns: ts,
            victim: task,
            invoker: task,
            victim_memcg_id: cg,
            oom_memcg_id: cg,
            rss_pages: None,
        })
    }

    fn write(path: &Path, offset_s: i64, events: &[(u64, u64)]) {
        let header = Header {
            format: crate::record::FORMAT_VERSION,
            wall_offset_ns: offset_s * SEC as i64,
            ..Default::default()
        };
        let mut w = Writer::create(path, &header, Fsync::Never, true).unwrap();
        let paths = |id: u64| Some(std::sync::Arc::<str>::from(format!("/cg{id}")));
        for &(ts, cg) in events {
            w.event(&oom(ts, cg), &mut |id| paths(id)).unwrap();
            w.sample(
                &Sample {
                    ts_ns: ts + 1,
                    host: Default::default(),
                    cgroups: vec![CgroupSample {
                        id: cg,
                        mem: Default::default(),
                        top: Vec::new(),
                    }],
                },
                &mut |id| paths(id),
            )
            .unwrap();
        }
        w.close().unwrap();
    }

    #[test]
    fn a_directory_is_one_timeline_cut_by_time_and_cgroup() {
        let dir = std::env::temp_dir().join(format!("memtrace-timeline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The second file was written after a reboot: its monotonic clock
        // starts again, its wall offset is 1000 s later.
        write(&dir.join("a-0001.mtr"), 0, &[(10 * SEC, 1), (20 * SEC, 2)]);
        write(&dir.join("a-0002.mtr"), 1000, &[(5 * SEC, 1)]);
        std::fs::write(dir.join("garbage.mtr"), b"not a recording").unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();

        let all = open(&dir, &Window::default()).unwrap();
        let times: Vec<u64> = all.records.iter().map(Record::ts_ns).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(
            *times.last().unwrap(),
            1005 * SEC + 1,
            "second file shifted"
        );
        assert_eq!(all.damaged.len(), 1, "{:?}", all.damaged);
        assert!(all.damaged[0].reason.contains("garbage.mtr"));

        let w = Window {
            since: Some(Bound::Wall(15 * i128::from(SEC))),
            until: Some(Bound::Wall(1000 * i128::from(SEC))),
            ..Default::default()
        };
        let cut = open(&dir, &w).unwrap();
        assert_eq!(cut.records.len(), 2, "{:?}", cut.records);
        assert_eq!(cut.records[0].ts_ns(), 20 * SEC);

        let w = Window {
            cgroups: CgroupFilter::new(&["/cg1"]).unwrap(),
            since: Some(Bound::BeforeEnd(Duration::from_secs(999))),
            ..Default::default()
        };
        let one = open(&dir, &w).unwrap();
        assert!(one.records.iter().all(|r| match r {
            Record::Event(e) => e.memcg_id() == 1,
            Record::Sample(s) => s.cgroups.iter().all(|c| c.id == 1),
            _ => true,
        }));
        // 1005 s − 999 s = 6 s: the record at 10 s stays, the one at 20 s
        // (cgroup 2) goes by cgroup.
        assert_eq!(
            one.records
                .iter()
                .filter(|r| matches!(r, Record::Event(_)))
                .count(),
            2
        );
        assert!(!one.cgroups.contains_key(&2));

        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(matches!(
            open(&empty, &Window::default()),
            Err(TimelineError::EmptyDir(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bounds_parse() {
        assert_eq!(
            Bound::parse("1970-01-01T00:00:10Z").unwrap(),
            Bound::Wall(10 * i128::from(SEC))
        );
        assert_eq!(
            Bound::parse("1970-01-01 00:00:10").unwrap(),
            Bound::Wall(10 * i128::from(SEC))
        );
        assert_eq!(
            Bound::parse("10m").unwrap(),
            Bound::BeforeEnd(Duration::from_secs(600))
        );
        assert!(Bound::parse("yesterday").unwrap_err().contains("neither"));
    }
}
