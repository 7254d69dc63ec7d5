//! The plain data the screens show. A live system and a replayed recording
//! both become a [`Snapshot`]; the screens never know which, beyond the
//! header's [`Source`].

/// Where the data comes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Source {
    #[default]
    Live,
    Replay {
        file: String,
        /// Wall-clock time in the recording that is on screen.
        at: String,
        /// 0..=1 through the recording.
        position: f64,
        speed: f64,
        paused: bool,
    },
}

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `HH:MM:SS`.
    pub time: String,
    pub kind: LogKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    Kill,
    Oom,
    Breach,
    Warning,
    Brake,
    Lost,
    Info,
}

impl LogKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Kill => "KILL",
            Self::Oom => "OOM",
            Self::Breach => "BREACH",
            Self::Warning => "WARN",
            Self::Brake => "BRAKE",
            Self::Lost => "LOST",
            Self::Info => "INFO",
        }
    }
}

/// A process of a cgroup, in the detail view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskRow {
    pub pid: u32,
    pub comm: String,
    pub rss: Option<u64>,
    /// Throttled time in the last 10 s.
    pub throttled_ns: u64,
    pub episodes: u64,
    /// `throttled` while inside the throttle function now.
    pub state: String,
    /// The process's start time (clock ticks since boot, /proc stat field
    /// 22), when the source knows it: a kill goes to this process only,
    /// never to a later one that reused the pid.
    pub start_time: Option<u64>,
    /// Why this process may not be killed (pid 1, a kernel thread, ...):
    /// the kill dialog is not offered for it.
    pub protected: Option<String>,
}

/// One memory cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupRow {
    pub id: u64,
    pub path: String,
    /// Who the cgroup is, for people: its unit, container or pod.
    pub name: String,
    /// Every name the filter matches besides the path (unit as systemd
    /// spells it, user, container id and name, pod, namespace), lowercase.
    pub search: String,
    /// Share of the last second / last 10 s with a task of the cgroup (or
    /// below) in the memory.high throttle.
    pub throttled_1s: f64,
    pub throttled_10s: f64,
    pub episodes_per_s: f64,
    /// The kernel gives no throttle probe: the three above are unmeasured
    /// (shown `n/a`), not zero.
    pub throttle_unmeasured: bool,
    pub current: Option<u64>,
    pub high: Option<u64>,
    pub max: Option<u64>,
    pub reclaim_p50_us: Option<u64>,
    pub reclaim_p99_us: Option<u64>,
    pub psi_full_avg10: Option<f32>,
    pub oom_kills: u64,
    /// The agent's budget state: ok, warning, breach, cooldown.
    pub agent: Option<String>,
    /// Filled for the selected cgroup only: throttled share per second,
    /// oldest first.
    pub history: Vec<f32>,
    pub tasks: Vec<TaskRow>,
    pub recent: Vec<LogLine>,
}

/// Everything one frame shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub source: Source,
    pub host: String,
    pub kernel: String,
    /// How throttling is measured: `fentry`, `kprobe`, or `estimates`.
    pub probe_mode: String,
    /// What the kernel does not allow; shown as a banner.
    pub degraded: Vec<String>,
    /// `HH:MM:SS` of the data.
    pub time: String,
    pub events_per_s: f64,
    pub lost_events: u64,
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub psi_some_avg10: Option<f32>,
    pub psi_full_avg10: Option<f32>,
    pub cgroups: Vec<CgroupRow>,
    pub log: Vec<LogLine>,
}
