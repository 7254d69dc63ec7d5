//! Recordings: the black box of a memory incident.
//!
//! A recording holds every event and, once a second, a sample of the memory
//! cgroups in scope and of the host, in framed, checksummed chunks written
//! at least once a second: what was on disk a second before a crash or a
//! power cut can be read back, and a torn or corrupt chunk costs only
//! itself. The layout is in docs/record-format.md.
//!
//! - [`writer::Writer`] writes a file; [`flight::FlightRecorder`] keeps a
//!   rolling set of them for the agent.
//! - [`stream::Stream`] reads one back a chunk at a time, skipping and
//!   counting damage; it never panics on garbage. [`reader`] collects it
//!   for small files; [`stream::Sorted`] puts records in time order.
//!   [`timeline::open`] reads a file or a flight recorder's directory as
//!   one time-ordered recording, cut to a window.
//! - [`chunk`] encodes a chunk, [`decode`] decodes one, [`columns`]
//!   lays it out by column (version 3), [`compress`] compresses it
//!   (version 2), [`codec`] has the varints.
//! - The once-a-second samples come from [`crate::sys::sampler`]; they
//!   are stored as they are.

pub mod chunk;
pub mod codec;
mod columns;
mod compress;
mod decode;
pub mod flight;
pub mod reader;
pub mod stream;
#[cfg(test)]
mod stream_tests;
pub mod timeline;
pub mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Event;
pub use crate::sys::sampler::{CgroupSample, ProcSample, Sample};

/// The file's first bytes.
pub const FILE_MAGIC: &[u8; 8] = b"MEMTRACE";
/// The version this build writes; it reads this one and every older one.
/// Version 3 lays each chunk out by column (columns.rs), version 2
/// compresses each chunk (compress.rs); version 1 did neither.
pub const FORMAT_VERSION: u16 = 3;
/// Each chunk's first bytes.
pub const CHUNK_MAGIC: &[u8; 4] = b"MTCK";
/// No chunk is larger: a length field above it is damage.
pub const MAX_CHUNK: usize = 16 << 20;
/// Bytes before a chunk's payload: magic, length, base time, count, CRC.
pub const CHUNK_HEADER: usize = 4 + 4 + 8 + 4 + 4;

/// What a recording says about where and when it was made. Every field
/// has a default, so a writer may add or drop fields without breaking
/// readers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Header {
    pub format: u16,
    pub tool: String,
    pub host: String,
    pub kernel: String,
    pub boot_id: String,
    /// Wall-clock start, RFC 3339.
    pub start: String,
    pub start_mono_ns: u64,
    /// Wall-clock ns since the epoch minus monotonic ns: turns the
    /// monotonic timestamps of the records into wall time.
    pub wall_offset_ns: i64,
    pub page_size: u64,
    /// `v1`, `v2` or empty.
    pub cgroup_version: String,
    /// Each probe and the mechanism it attached with (None: unavailable).
    pub probes: BTreeMap<String, Option<String>>,
    pub degraded: Vec<String>,
    /// The `--cgroup` globs (empty: everything).
    pub scope: Vec<String>,
}

impl Header {
    /// Describes this host and kernel now.
    pub fn for_this_host(
        caps: &crate::probe::Capabilities,
        scope: &[String],
        clock: &crate::clock::Clock,
    ) -> Self {
        let now = crate::clock::mono_now_ns();
        Self {
            format: FORMAT_VERSION,
            tool: format!("memtrace {}", env!("CARGO_PKG_VERSION")),
            host: caps.kernel.hostname.clone(),
            kernel: caps.kernel.release.clone(),
            boot_id: caps.kernel.boot_id.clone(),
            start: clock.rfc3339(now),
            start_mono_ns: now,
            wall_offset_ns: clock.offset_ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            page_size: caps.kernel.page_size,
            cgroup_version: match caps.kernel.cgroups.memory.as_ref().map(|m| m.version) {
                Some(crate::kernel::CgroupVersion::V1) => "v1".into(),
                Some(crate::kernel::CgroupVersion::V2) => "v2".into(),
                None => String::new(),
            },
            probes: caps
                .probes
                .iter()
                .map(|p| {
                    (
                        p.probe.name().to_string(),
                        p.attached.map(|m| m.as_str().to_string()),
                    )
                })
                .collect(),
            degraded: caps.degraded.clone(),
            scope: scope.to_vec(),
        }
    }

    pub fn clock(&self) -> crate::clock::Clock {
        crate::clock::Clock {
            offset_ns: i128::from(self.wall_offset_ns),
        }
    }

    /// Whether the recording measured throttle episodes.
    pub fn throttle_measured(&self) -> bool {
        self.probes.get("throttle").is_some_and(Option::is_some)
    }
}

/// Something the agent did or decided: `breach`, `warning`, `kill`,
/// `would-kill`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub kind: String,
    /// A JSON object with the numbers (the kill log's fields).
    pub details: String,
}

/// Everything a recording holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Event(Event),
    Sample(Sample),
    Action(Action),
    Note { ts_ns: u64, text: String },
}

impl Record {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Event(e) => e.ts_ns(),
            Self::Sample(s) => s.ts_ns,
            Self::Action(a) => a.ts_ns,
            Self::Note { ts_ns, .. } => *ts_ns,
        }
    }

    /// When the record's activity began: a throttle or reclaim record is
    /// written at its end, and its start can precede earlier records.
    pub fn began_ns(&self) -> u64 {
        match self {
            Self::Event(Event::Throttle(t)) => t.start_ns,
            Self::Event(Event::Reclaim(x) | Event::DirectReclaim(x)) => x.start_ns,
            other => other.ts_ns(),
        }
    }
}
