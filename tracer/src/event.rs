//! Typed events: what the decoder makes of the kernel's records, and what
//! every consumer (model, policy, recorder, `memtrace events`) works with.
//!
//! Events carry kernel cgroup ids, not paths: the [`crate::sys::registry`]
//! resolves ids when something is shown to a person or written out.
//! Times are monotonic nanoseconds (`CLOCK_MONOTONIC`, the clock of
//! `bpf_ktime_get_ns`); [`crate::clock::Clock`] turns them into wall time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A task's `comm`: up to 16 bytes, no allocation.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn new(s: &str) -> Self {
        let mut b = [0u8; 16];
        let n = s.len().min(15);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        Self(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&c| c == 0).unwrap_or(16);
        &self.0[..end]
    }

    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_str_lossy())
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_str_lossy())
    }
}

impl Serialize for Comm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_str_lossy())
    }
}

impl<'de> Deserialize<'de> for Comm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::new(&s))
    }
}

/// A task: thread id, process id and name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: u32,
    pub tgid: u32,
    pub comm: Comm,
}

impl From<tracer_ebpf::TaskId> for Task {
    fn from(t: tracer_ebpf::TaskId) -> Self {
        Self {
            pid: t.pid,
            tgid: t.tgid,
            comm: Comm(t.comm),
        }
    }
}

/// A task entered the memory.high throttle function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleStart {
    pub ts_ns: u64,
    pub task: Task,
    pub memcg_id: u64,
    /// The ancestor-or-self furthest over memory.high (0: none found).
    pub over_high_id: u64,
    pub over_high_usage_pages: u64,
    pub over_high_limit_pages: u64,
    pub nr_pages: u32,
}

/// A complete throttle episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// End of the episode.
    pub ts_ns: u64,
    pub start_ns: u64,
    pub task: Task,
    pub memcg_id: u64,
    pub over_high_id: u64,
    /// Nested memcg reclaim time; the rest is penalty sleep.
    pub reclaim_ns: u64,
    pub reclaimed_pages: u64,
    pub nr_pages: u32,
}

impl ThrottleStart {
    /// The memory cgroup whose memory.high the kernel is enforcing on this
    /// task: the over-high ancestor-or-self, or, when the probe found none
    /// over high at entry, the task's own memory cgroup.
    pub fn cause(&self) -> u64 {
        if self.over_high_id != 0 {
            self.over_high_id
        } else {
            self.memcg_id
        }
    }
}

impl Throttle {
    /// See [`ThrottleStart::cause`].
    pub fn cause(&self) -> u64 {
        if self.over_high_id != 0 {
            self.over_high_id
        } else {
            self.memcg_id
        }
    }

    pub fn duration_ns(&self) -> u64 {
        self.ts_ns.saturating_sub(self.start_ns)
    }

    pub fn sleep_ns(&self) -> u64 {
        self.duration_ns().saturating_sub(self.reclaim_ns)
    }
}

/// A reclaim pass: memcg reclaim or global direct reclaim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reclaim {
    /// End of the pass.
    pub ts_ns: u64,
    pub start_ns: u64,
    pub task: Task,
    /// The reclaimed memory cgroup when `memcg_exact`, else the charging
    /// task's memory cgroup.
    pub memcg_id: u64,
    pub memcg_exact: bool,
    /// Ran inside a throttle episode of the same task.
    pub in_throttle: bool,
    pub nr_reclaimed: u64,
}

impl Reclaim {
    pub fn duration_ns(&self) -> u64 {
        self.ts_ns.saturating_sub(self.start_ns)
    }
}

/// The OOM killer chose a victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomKill {
    pub ts_ns: u64,
    pub victim: Task,
    /// The task whose allocation invoked the OOM killer.
    pub invoker: Task,
    /// The victim's memory cgroup (0: unknown).
    pub victim_memcg_id: u64,
    /// The memory cgroup that ran out (0: global OOM, or not exposed).
    pub oom_memcg_id: u64,
    /// Victim RSS in pages, when known.
    pub rss_pages: Option<RssPages>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RssPages {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

impl RssPages {
    pub fn total(&self) -> u64 {
        self.anon
            .saturating_add(self.file)
            .saturating_add(self.shmem)
    }
}

/// The in-kernel brake signalled a throttled task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Brake {
    pub ts_ns: u64,
    pub task: Task,
    pub rule_memcg_id: u64,
    pub signal: u32,
    pub throttled_ns: u64,
    pub limit_ns: u64,
    pub heartbeat_age_ns: u64,
    pub result: i64,
}

/// Which record kind was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostKind {
    ThrottleStart,
    Throttle,
    Reclaim,
    DirectReclaim,
    OomKill,
    Brake,
    Unknown,
}

impl LostKind {
    /// Every kind, for series that must exist before the first loss.
    pub const ALL: [Self; 7] = [
        Self::ThrottleStart,
        Self::Throttle,
        Self::Reclaim,
        Self::DirectReclaim,
        Self::OomKill,
        Self::Brake,
        Self::Unknown,
    ];

    pub fn from_raw(kind: u32) -> Self {
        use tracer_ebpf::kind as k;
        match kind {
            k::THROTTLE_START => Self::ThrottleStart,
            k::THROTTLE_END => Self::Throttle,
            k::RECLAIM => Self::Reclaim,
            k::DIRECT_RECLAIM => Self::DirectReclaim,
            k::OOM_KILL => Self::OomKill,
            k::BRAKE => Self::Brake,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ThrottleStart => "throttle_start",
            Self::Throttle => "throttle",
            Self::Reclaim => "reclaim",
            Self::DirectReclaim => "direct_reclaim",
            Self::OomKill => "oom_kill",
            Self::Brake => "brake",
            Self::Unknown => "unknown",
        }
    }
}

/// Records the kernel could not deliver (ring buffer full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    pub ts_ns: u64,
    pub kind: LostKind,
    pub count: u64,
}

/// Every event of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    ThrottleStart(ThrottleStart),
    Throttle(Throttle),
    Reclaim(Reclaim),
    DirectReclaim(Reclaim),
    OomKill(OomKill),
    Brake(Brake),
    Lost(Lost),
}

impl Event {
    /// The event's monotonic timestamp (the end, for spans).
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::ThrottleStart(e) => e.ts_ns,
            Self::Throttle(e) => e.ts_ns,
            Self::Reclaim(e) | Self::DirectReclaim(e) => e.ts_ns,
            Self::OomKill(e) => e.ts_ns,
            Self::Brake(e) => e.ts_ns,
            Self::Lost(e) => e.ts_ns,
        }
    }

    /// The `type` name used in JSON and text output.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ThrottleStart(_) => "throttle_start",
            Self::Throttle(_) => "throttle",
            Self::Reclaim(_) => "reclaim",
            Self::DirectReclaim(_) => "direct_reclaim",
            Self::OomKill(_) => "oom_kill",
            Self::Brake(_) => "brake",
            Self::Lost(_) => "lost",
        }
    }

    /// The memory cgroup the event belongs to (0: none or unknown).
    pub fn memcg_id(&self) -> u64 {
        match self {
            Self::ThrottleStart(e) => e.memcg_id,
            Self::Throttle(e) => e.memcg_id,
            Self::Reclaim(e) | Self::DirectReclaim(e) => e.memcg_id,
            Self::OomKill(e) => e.victim_memcg_id,
            Self::Brake(e) => e.rule_memcg_id,
            Self::Lost(_) => 0,
        }
    }

    /// Every cgroup id the event names (0s left out).
    pub fn cgroup_ids(&self) -> impl Iterator<Item = u64> {
        let ids = match self {
            Self::ThrottleStart(e) => [e.memcg_id, e.over_high_id, 0],
            Self::Throttle(e) => [e.memcg_id, e.over_high_id, 0],
            Self::Reclaim(e) | Self::DirectReclaim(e) => [e.memcg_id, 0, 0],
            Self::OomKill(e) => [e.victim_memcg_id, e.oom_memcg_id, 0],
            Self::Brake(e) => [e.rule_memcg_id, 0, 0],
            Self::Lost(_) => [0, 0, 0],
        };
        ids.into_iter().filter(|&id| id != 0)
    }

    /// The task the event is about, if any.
    pub fn task(&self) -> Option<&Task> {
        match self {
            Self::ThrottleStart(e) => Some(&e.task),
            Self::Throttle(e) => Some(&e.task),
            Self::Reclaim(e) | Self::DirectReclaim(e) => Some(&e.task),
            Self::OomKill(e) => Some(&e.victim),
            Self::Brake(e) => Some(&e.task),
            Self::Lost(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_round_trips_and_truncates() {
        let c = Comm::new("ugrep");
        assert_eq!(c.to_string(), "ugrep");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"ugrep\"");
        let back: Comm = serde_json::from_str("\"ugrep\"").unwrap();
        assert_eq!(back, c);
        assert_eq!(Comm::new("a-very-long-process-name").to_string().len(), 15);
        let mut raw = [b'x'; 16];
        raw[2] = 0xff;
        assert_eq!(Comm(raw).to_string().chars().count(), 16);
    }

    #[test]
    fn throttle_split_into_reclaim_and_sleep() {
        let t = Throttle {
            ts_ns: 1_500,
            start_ns: 1_000,
            task: Task::default(),
            memcg_id: 7,
            over_high_id: 7,
            reclaim_ns: 120,
            reclaimed_pages: 3,
            nr_pages: 32,
        };
        assert_eq!(t.duration_ns(), 500);
        assert_eq!(t.sleep_ns(), 380);
        let e = Event::Throttle(t);
        assert_eq!(
            (e.type_name(), e.ts_ns(), e.memcg_id()),
            ("throttle", 1_500, 7)
        );
    }
}
