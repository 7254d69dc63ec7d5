//! One timeline from a recording or a flight recorder's directory: the
//! files read in order, their records in one time order, cut to a time
//! window and a set of cgroups. `report`, `export` and `replay` read
//! through [`open`]; how the files are read (all at once today, streamed
//! later) stays behind it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{self, Damage, ReadError, Recording};
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

/// Reads a recording or a directory of them as one recording whose records
/// are in time order, within `window`. Times are put on the first file's
/// monotonic clock, so files from different boots line up by wall time.
/// In a directory, a file that is not a readable recording is reported as
/// damage; a single file that is not one is an error.
pub fn open(path: &Path, window: &Window) -> Result<Recording, TimelineError> {
    let files = files(path)?;
    let single = !path.is_dir();
    let mut out: Option<Recording> = None;
    let mut damaged_files = Vec::new();
    let n = files.len();
    for (i, file) in files.iter().enumerate() {
        let rec = match reader::read(file) {
            Ok(r) => r,
            Err(e) if !single => {
                damaged_files.push(Damage {
                    offset: 0,
                    len: std::fs::metadata(file).map_or(0, |m| m.len()),
                    reason: format!("{}: {e}", name(file)),
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        out = Some(match out {
            None => rec,
            Some(acc) => merge(acc, rec, &name(file), i + 1 == n),
        });
    }
    let Some(mut rec) = out else {
        // Every file of the directory was unreadable: say so, as damage.
        return Ok(Recording {
            damaged: damaged_files,
            ..Default::default()
        });
    };
    rec.damaged.extend(damaged_files);
    rec.records.sort_by_key(Record::ts_ns);
    cut(&mut rec, window);
    Ok(rec)
}

fn name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

/// Adds `next` to `acc`, on `acc`'s clock.
fn merge(mut acc: Recording, next: Recording, file: &str, last: bool) -> Recording {
    let delta = next
        .header
        .wall_offset_ns
        .saturating_sub(acc.header.wall_offset_ns);
    acc.records
        .extend(next.records.into_iter().map(|r| shift(r, delta)));
    for (id, path) in next.cgroups {
        if !path.is_empty() || !acc.cgroups.contains_key(&id) {
            acc.cgroups.insert(id, path);
        }
    }
    acc.chunks += next.chunks;
    acc.unknown_records += next.unknown_records;
    acc.bytes += next.bytes;
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

/// Keeps the records inside the window.
fn cut(rec: &mut Recording, w: &Window) {
    let clock = rec.header.clock();
    let last = rec.records.last().map_or(0, Record::ts_ns);
    let mono = |b: Bound| -> u64 {
        match b {
            Bound::Wall(ns) => u64::try_from((ns - clock.offset_ns).max(0)).unwrap_or(u64::MAX),
            Bound::BeforeEnd(d) => {
                last.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            }
        }
    };
    let since = w.since.map_or(0, mono);
    let until = w.until.map_or(u64::MAX, mono);
    let cgroups = &w.cgroups;
    let paths = rec.cgroups.clone();
    let keep_id = |id: u64| {
        paths
            .get(&id)
            .is_some_and(|p| !p.is_empty() && cgroups.matches(p))
    };
    let filtered = !cgroups.is_empty();
    rec.records.retain_mut(|r| {
        let t = r.ts_ns();
        if t < since || t > until {
            return false;
        }
        if !filtered {
            return true;
        }
        match r {
            Record::Event(crate::event::Event::Lost(_)) | Record::Note { .. } => true,
            Record::Event(e) => e.cgroup_ids().any(keep_id),
            Record::Action(a) => keep_id(a.cgroup_id),
            Record::Sample(s) => {
                s.cgroups.retain(|c| keep_id(c.id));
                true
            }
        }
    });
    if filtered {
        rec.cgroups.retain(|id, _| keep_id(*id));
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
