//! Reading a recording back. Whatever the bytes, this returns an answer:
//! every chunk that is intact is read, a torn tail (the writer was killed
//! mid-write) or a damaged chunk is skipped and counted, and only a file
//! that is not a recording at all is an error.
//!
//! The reading itself is [`super::stream`]'s: [`open`] streams a file's
//! records, [`scan`] reads one through for its tables and span, and
//! [`read`] and [`parse`] collect every record, for small files and tests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub use super::stream::{Input, Sorted, Stream};
use super::{FILE_MAGIC, FORMAT_VERSION, Header, Record};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a memtrace recording (no MEMTRACE magic at the start)")]
    NotARecording,
    #[error(
        "recording format version {0} is newer than this memtrace reads ({FORMAT_VERSION}); upgrade memtrace"
    )]
    Version(u16),
    #[error("the recording's header is damaged: {0}")]
    Header(String),
}

/// Bytes skipped because they did not form a valid chunk.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    pub offset: u64,
    pub len: u64,
    pub reason: String,
}

/// A recording as read.
#[derive(Debug, Default)]
pub struct Recording {
    pub header: Header,
    /// In file order (time order, per writer).
    pub records: Vec<Record>,
    /// Every cgroup id the chunks named, with its path.
    pub cgroups: HashMap<u64, String>,
    pub chunks: u64,
    /// Each chunk read: byte offset, length, records.
    pub chunk_spans: Vec<(u64, u64, usize)>,
    pub damaged: Vec<Damage>,
    /// Offset of an incomplete last chunk, if the file ends in one.
    pub torn_tail: Option<u64>,
    /// Records of kinds this build does not know (a newer writer).
    pub unknown_records: u64,
    pub bytes: u64,
    /// Damaged chunks past the ones listed in `damaged` (whose last entry
    /// then sums them).
    pub damaged_more: u64,
    /// Earliest and latest record time, once read through.
    pub span: Option<(u64, u64)>,
    /// Earliest start of anything recorded (a throttle episode or a
    /// reclaim pass begins before its record's time).
    pub began_ns: Option<u64>,
}

impl Recording {
    /// A cgroup's path, or `#id` if no chunk named it.
    pub fn path(&self, id: u64) -> String {
        if id == 0 {
            return "-".into();
        }
        self.cgroups
            .get(&id)
            .filter(|p| !p.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }

    /// The monotonic time span of the records.
    pub fn span(&self) -> Option<(u64, u64)> {
        if self.span.is_some() {
            return self.span;
        }
        let first = self.records.iter().map(Record::ts_ns).min()?;
        let last = self.records.iter().map(Record::ts_ns).max()?;
        Some((first, last))
    }
}

/// A recording's tables as a hierarchy: an id no chunk named is `#id`.
impl crate::model::Hierarchy for Recording {
    fn path(&self, id: u64) -> Option<std::sync::Arc<str>> {
        (id != 0).then(|| std::sync::Arc::from(Recording::path(self, id)))
    }

    fn id(&self, path: &str) -> Option<u64> {
        self.cgroups
            .iter()
            .find_map(|(id, p)| (p == path).then_some(*id))
    }
}

/// Reads a whole recording into memory. For files of any size, stream
/// them instead ([`open`], [`scan`]).
pub fn read(path: &Path) -> Result<Recording, ReadError> {
    collect(Input::File(path.to_path_buf()).open()?)
}

/// A stream over a file's records, in file order.
pub fn open(path: &Path) -> Result<Stream, ReadError> {
    Input::File(path.to_path_buf()).open()
}

/// Reads a recording through without keeping its records: its header,
/// every cgroup path, chunks, damage and time span.
pub fn scan(input: &Input) -> Result<Recording, ReadError> {
    Ok(input.open()?.scan())
}

fn collect(mut s: Stream) -> Result<Recording, ReadError> {
    let records: Vec<Record> = s.by_ref().collect();
    let mut rec = s.into_info();
    rec.records = records;
    Ok(rec)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the file header at the start of `data`: the format version, the
/// header and the offset of the first chunk.
pub(super) fn header_at(data: &[u8]) -> Result<(u16, Header, usize), ReadError> {
    if data.len() < 8 || &data[..8] != FILE_MAGIC {
        return Err(ReadError::NotARecording);
    }
    let header_err = |m: &str| ReadError::Header(m.to_string());
    let version = data
        .get(8..10)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| header_err("truncated"))?;
    if version > FORMAT_VERSION {
        return Err(ReadError::Version(version));
    }
    let len = le32(data, 12).ok_or_else(|| header_err("truncated"))? as usize;
    let end = 16usize
        .checked_add(len)
        .filter(|e| *e + 4 <= data.len())
        .ok_or_else(|| header_err("truncated"))?;
    let crc = le32(data, end).ok_or_else(|| header_err("truncated"))?;
    if crc32fast::hash(&data[8..end]) != crc {
        return Err(header_err("checksum mismatch"));
    }
    let header: Header =
        serde_json::from_slice(&data[16..end]).map_err(|e| ReadError::Header(e.to_string()))?;
    Ok((version, header, end + 4))
}

/// Parses a whole file's bytes.
pub fn parse(data: &[u8]) -> Result<Recording, ReadError> {
    collect(Input::Bytes(Arc::from(data)).open()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{CHUNK_HEADER, CHUNK_MAGIC};

    pub(crate) fn find_magic(data: &[u8], from: usize) -> Option<usize> {
        data.get(from..)?
            .windows(CHUNK_MAGIC.len())
            .position(|w| w == CHUNK_MAGIC)
            .map(|i| i + from)
    }
    use crate::event::{Comm, Event, Lost, LostKind, OomKill, Reclaim, RssPages, Task, Throttle};
    use crate::record::chunk::ChunkBuilder;
    use crate::record::{Action, CgroupSample, ProcSample, Sample};
    use crate::sys::cgroupfs::{CgroupMemory, HostMemory, MemEvents, Psi};
    use std::sync::Arc;

    fn task(pid: u32, comm: &str) -> Task {
        Task {
            pid,
            tgid: pid - 1,
            comm: Comm::new(comm),
        }
    }

    /// Records of every kind, times increasing from `t0`.
    pub(crate) fn records(t0: u64, n: u64) -> Vec<Record> {
        let mut v = Vec::new();
        for i in 0..n {
            let ts = t0 + i * 1_000_000;
            v.push(Record::Event(Event::Throttle(Throttle {
                ts_ns: ts + 500,
                start_ns: ts,
                task: task(100 + (i % 3) as u32, "hog"),
                memcg_id: 10,
                over_high_id: 9,
                reclaim_ns: 40,
                reclaimed_pages: 2,
                nr_pages: 64,
            })));
            v.push(Record::Event(Event::Reclaim(Reclaim {
                ts_ns: ts + 700,
                start_ns: ts + 600,
                task: task(200, "server"),
                memcg_id: 10,
                memcg_exact: i % 2 == 0,
                in_throttle: true,
                nr_reclaimed: 32,
            })));
        }
        v.push(Record::Event(Event::OomKill(OomKill {
            ts_ns: t0 + n * 1_000_000,
            victim: task(101, "hog"),
            invoker: task(200, "server"),
            victim_memcg_id: 10,
            oom_memcg_id: 9,
            rss_pages: Some(RssPages {
                anon: 1000,
                file: 5,
                shmem: 1,
            }),
        })));
        v.push(Record::Event(Event::Lost(Lost {
            ts_ns: t0 + n * 1_000_000 + 1,
            kind: LostKind::Reclaim,
            count: 3,
        })));
        v.push(Record::Sample(Sample {
            ts_ns: t0 + n * 1_000_000 + 2,
            host: HostMemory {
                mem_total: 1 << 30,
                mem_available: 1 << 29,
                swap_total: 0,
                swap_free: 0,
                pressure: Some(Psi {
                    some_avg10: 12.5,
                    full_avg10: 10.25,
                    some_total_us: 99,
                    full_total_us: 88,
                }),
            },
            cgroups: vec![CgroupSample {
                id: 10,
                mem: CgroupMemory {
                    current: Some(100 << 20),
                    high: Some(64 << 20),
                    max: None,
                    events: MemEvents {
                        low: None,
                        high: Some(480),
                        max: Some(0),
                        oom: None,
                        oom_kill: Some(0),
                    },
                    pressure: None,
                },
                top: vec![ProcSample {
                    pid: 101,
                    comm: "hog".into(),
                    rss_bytes: 99 << 20,
                }],
            }],
        }));
        v.push(Record::Action(Action {
            ts_ns: t0 + n * 1_000_000 + 3,
            cgroup_id: 10,
            kind: "kill".into(),
            details: "{\"pid\":101}".into(),
        }));
        v.push(Record::Note {
            ts_ns: t0 + n * 1_000_000 + 4,
            text: "stop".into(),
        });
        v
    }

    fn paths(id: u64) -> Option<Arc<str>> {
        match id {
            10 => Some(Arc::from("/work/job")),
            9 => Some(Arc::from("/work")),
            _ => None,
        }
    }

    /// A file of `chunks` chunks; returns the bytes and each chunk's records.
    pub(crate) fn file(chunks: usize) -> (Vec<u8>, Vec<Vec<Record>>) {
        file_version(chunks, crate::record::FORMAT_VERSION)
    }

    /// A file of `chunks` chunks in format `version` (1: uncompressed).
    pub(crate) fn file_version(chunks: usize, version: u16) -> (Vec<u8>, Vec<Vec<Record>>) {
        let mut out = crate::record::writer::header_bytes_version(
            &Header {
                format: version,
                host: "box".into(),
                ..Default::default()
            },
            version,
        );
        let mut all = Vec::new();
        for c in 0..chunks {
            let rs = records(1_000_000_000 * (c as u64 + 1), 5);
            let mut b = ChunkBuilder::new();
            let mut p = paths;
            for r in &rs {
                match r {
                    Record::Event(e) => b.event(e, &mut p),
                    Record::Sample(s) => b.sample(s, &mut p),
                    Record::Action(a) => b.action(a, &mut p),
                    Record::Note { ts_ns, text } => b.note(*ts_ns, text),
                }
            }
            // Version 3 by column: chunks this small would be rows.
            out.extend(match version {
                1 => b.finish_v1().unwrap(),
                2 => b.finish_v2().unwrap(),
                _ => b.finish_columns().unwrap(),
            });
            all.push(rs);
        }
        (out, all)
    }

    #[test]
    fn every_record_kind_round_trips() {
        let (bytes, chunks) = file(3);
        // The chunks of version-3 test files are laid out by column.
        let first = find_magic(&bytes, 8).unwrap();
        assert_eq!(bytes[first + crate::record::CHUNK_HEADER], 2);
        let r = parse(&bytes).unwrap();
        assert_eq!(r.header.host, "box");
        assert_eq!(r.chunks, 3);
        assert!(r.damaged.is_empty() && r.torn_tail.is_none());
        let want: Vec<Record> = chunks.into_iter().flatten().collect();
        assert_eq!(r.records, want);
        assert_eq!(r.path(10), "/work/job");
        assert_eq!(r.path(9), "/work");
        assert_eq!(r.path(77), "#77");
    }

    #[test]
    fn a_torn_tail_loses_only_the_last_chunk() {
        for version in [1, 2, 3] {
            let (bytes, chunks) = file_version(4, version);
            let whole = parse(&bytes).unwrap().records.len();
            let last = chunks.last().unwrap().len();
            let mut last_start = 0;
            while let Some(m) = find_magic(&bytes, last_start + 1) {
                last_start = m;
            }
            // Inside the magic, the header and the payload of the last chunk.
            for cut in [
                last_start + 2,
                last_start + 10,
                last_start + 30,
                bytes.len() - 1,
            ] {
                let r = parse(&bytes[..cut]).unwrap();
                assert_eq!(r.records.len(), whole - last, "cut at {cut}");
                assert!(r.torn_tail.is_some(), "cut at {cut}");
                assert!(r.damaged.is_empty());
            }
        }
    }

    #[test]
    fn a_corrupt_chunk_is_skipped_and_the_rest_read() {
        for version in [1, 2, 3] {
            let (mut bytes, chunks) = file_version(5, version);
            let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
            // Find the second chunk and flip a byte in its payload.
            let second = find_magic(&bytes, find_magic(&bytes, 0).unwrap() + 1).unwrap();
            bytes[second + CHUNK_HEADER + 5] ^= 0x55;
            let r = parse(&bytes).unwrap();
            assert_eq!(r.chunks, 4);
            assert_eq!(r.damaged.len(), 1);
            assert_eq!(r.damaged[0].offset, second as u64);
            assert_eq!(r.damaged[0].reason, "checksum mismatch");
            assert_eq!(r.records.len(), sizes.iter().sum::<usize>() - sizes[1]);
        }
    }

    #[test]
    fn a_file_of_fake_chunk_headers_is_given_up_on_not_checksummed_forever() {
        let (mut bytes, chunks) = file(1);
        let real = chunks[0].len();
        // Headers every 24 bytes, each claiming 1 MiB that fits in the file:
        // checksumming them all would read ~100 GiB.
        let fake_len: u32 = 1 << 20;
        for _ in 0..(4 << 20) / CHUNK_HEADER {
            bytes.extend_from_slice(CHUNK_MAGIC);
            bytes.extend_from_slice(&fake_len.to_le_bytes());
            bytes.extend_from_slice(&[0; CHUNK_HEADER - 8]);
        }
        let r = parse(&bytes).unwrap();
        assert_eq!(r.records.len(), real);
        let last = r.damaged.last().unwrap();
        assert!(last.reason.contains("stopped checking"), "{last:?}");
        assert_eq!(last.offset + last.len, bytes.len() as u64);
    }

    #[test]
    fn nested_chunks_with_good_checksums_but_no_records_are_given_up_on() {
        let (mut bytes, chunks) = file(1);
        let real = chunks[0].len();
        // Each forged chunk's payload is every chunk after it, with a
        // correct checksum and an impossible record count: reading them
        // all would checksum ~70 MiB of this 70 KiB tail.
        let mut tail: Vec<u8> = Vec::new();
        for _ in 0..3000 {
            let (base, count) = (0u64, u32::MAX);
            let mut h = crc32fast::Hasher::new();
            h.update(&base.to_le_bytes());
            h.update(&count.to_le_bytes());
            h.update(&tail);
            let mut head = Vec::with_capacity(CHUNK_HEADER);
            head.extend_from_slice(CHUNK_MAGIC);
            head.extend_from_slice(&(tail.len() as u32).to_le_bytes());
            head.extend_from_slice(&base.to_le_bytes());
            head.extend_from_slice(&count.to_le_bytes());
            head.extend_from_slice(&h.finalize().to_le_bytes());
            head.extend_from_slice(&tail);
            tail = head;
        }
        bytes.extend_from_slice(&tail);
        let r = parse(&bytes).unwrap();
        assert_eq!(r.records.len(), real);
        let last = r.damaged.last().unwrap();
        assert!(last.reason.contains("stopped checking"), "{last:?}");
    }

    #[test]
    fn not_a_recording_and_newer_versions() {
        assert!(matches!(parse(b""), Err(ReadError::NotARecording)));
        assert!(matches!(
            parse(b"ELF\x7f...."),
            Err(ReadError::NotARecording)
        ));
        let (mut bytes, _) = file(1);
        bytes[8] = 9;
        assert!(matches!(parse(&bytes), Err(ReadError::Version(9))));
        let (mut bytes, _) = file(1);
        bytes[20] ^= 1;
        assert!(matches!(parse(&bytes), Err(ReadError::Header(_))));
    }

    #[test]
    fn random_corruption_never_panics_and_keeps_intact_chunks() {
        for version in [1, 2, 3] {
            let (bytes, chunks) = file_version(6, version);
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut rnd = |m: usize| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % m as u64) as usize
            };
            let header_end = find_magic(&bytes, 0).unwrap();
            for _ in 0..2000 {
                let mut b = bytes.clone();
                // Corrupt 1-4 bytes after the header.
                let hits = 1 + rnd(4);
                let mut touched = Vec::new();
                for _ in 0..hits {
                    let at = header_end + rnd(b.len() - header_end);
                    b[at] = b[at].wrapping_add(1 + rnd(255) as u8);
                    touched.push(at);
                }
                if rnd(3) == 0 {
                    b.truncate(header_end + rnd(b.len() - header_end));
                }
                let r = parse(&b).unwrap();
                // Every chunk untouched and within the kept bytes is read.
                let mut starts = Vec::new();
                let mut p = header_end;
                while let Some(s) = find_magic(&bytes, p) {
                    starts.push(s);
                    p = s + 1;
                }
                let mut intact = 0;
                for (i, s) in starts.iter().enumerate() {
                    let e = starts.get(i + 1).copied().unwrap_or(bytes.len());
                    if e <= b.len() && !touched.iter().any(|t| (*s..e).contains(t)) {
                        intact += chunks[i].len();
                    }
                }
                assert!(
                    r.records.len() >= intact,
                    "{} records read, {intact} intact",
                    r.records.len()
                );
            }
        }
    }
}
