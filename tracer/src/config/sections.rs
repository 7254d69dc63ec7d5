//! The tables of the configuration file and their defaults: `[agent]`,
//! `[[budget]]` (with its `brake`), `[[alert]]`, `[host]` and `[names]`.
//! docs/configuration.md documents every key.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{
    CgroupGlob, Dur, Pattern, Percent, Signal, container_glob, namespace_glob, pod_glob, unit_glob,
};
use crate::names::{Known, NameGlob, identify};

/// What a budget does when it is exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Alert only.
    Alert,
    /// Kill the process with the largest RSS in the cgroup's subtree.
    KillLargest,
    /// Kill the process throttled longest in the window.
    KillMostThrottled,
    /// Kill every process of the cgroup (`cgroup.kill`).
    KillCgroup,
}

impl Action {
    pub fn kills(self) -> bool {
        self != Self::Alert
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::KillLargest => "kill-largest",
            Self::KillMostThrottled => "kill-most-throttled",
            Self::KillCgroup => "kill-cgroup",
        }
    }
}

/// The in-kernel brake of a budget: see [`crate::probe::brake`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrakeConfig {
    /// Throttled time (summed over tasks) per window the kernel allows
    /// while the agent is silent.
    pub limit: Dur,
    #[serde(default = "default_brake_window")]
    pub window: Dur,
    /// The agent counts as silent after this long without a heartbeat.
    #[serde(default = "default_brake_stale")]
    pub stale: Dur,
    #[serde(default = "default_signal")]
    pub signal: Signal,
}

fn default_brake_window() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_brake_stale() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_signal() -> Signal {
    Signal(libc::SIGKILL)
}

/// One `[[budget]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// What the budget watches: the cgroups its path glob and every name
    /// selector below select, all at once (at least one is given).
    #[serde(default)]
    pub cgroup: Option<CgroupGlob>,
    /// The systemd unit, readable or as systemd spells it.
    #[serde(default, deserialize_with = "unit_glob")]
    pub unit: Option<NameGlob>,
    /// The container's id (full or short) or name.
    #[serde(default, deserialize_with = "container_glob")]
    pub container: Option<NameGlob>,
    /// The pod's UID or name.
    #[serde(default, deserialize_with = "pod_glob")]
    pub pod: Option<NameGlob>,
    /// The pod's namespace.
    #[serde(default, deserialize_with = "namespace_glob")]
    pub pod_namespace: Option<NameGlob>,
    #[serde(default = "default_window")]
    pub window: Dur,
    pub max_throttled: Percent,
    /// Warn when this share of the budget is used.
    #[serde(default = "default_warn_at")]
    pub warn_at: Percent,
    #[serde(default = "default_action")]
    pub action: Action,
    #[serde(default)]
    pub dry_run: bool,
    /// Processes never to kill (regex on comm or cmdline).
    #[serde(default)]
    pub avoid: Vec<Pattern>,
    /// Processes to kill first (regex on comm or cmdline).
    #[serde(default)]
    pub prefer: Vec<Pattern>,
    /// After a kill, wait until memory drops below memory.high, or this
    /// long, before this budget may kill again.
    #[serde(default = "default_cooldown")]
    pub cooldown: Dur,
    #[serde(default)]
    pub brake: Option<BrakeConfig>,
}

fn default_window() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_warn_at() -> Percent {
    Percent(50.0)
}
fn default_action() -> Action {
    Action::Alert
}
fn default_cooldown() -> Dur {
    Dur(Duration::from_secs(30))
}

impl BudgetConfig {
    /// The budget's name, or [`Self::scope`].
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.scope())
    }

    /// What it watches, short: the path glob alone, or [`Self::selector`].
    pub fn scope(&self) -> String {
        match (&self.cgroup, self.names().next()) {
            (Some(c), None) => c.pattern.clone(),
            _ => self.selector(),
        }
    }

    fn names(&self) -> impl Iterator<Item = &NameGlob> {
        [&self.unit, &self.container, &self.pod, &self.pod_namespace]
            .into_iter()
            .flatten()
    }

    /// How the budget selects, as written: `cgroup = "/work", unit = "x.service"`.
    pub fn selector(&self) -> String {
        self.cgroup
            .iter()
            .map(|c| format!("cgroup = \"{}\"", c.pattern))
            .chain(self.names().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether it selects by anything: a budget with no selector is refused
    /// when the file is read.
    pub fn selects_anything(&self) -> bool {
        self.cgroup.is_some() || self.names().next().is_some()
    }

    /// Whether enrichment can change what it selects (a container's or
    /// pod's name, a namespace).
    pub fn needs_known(&self) -> bool {
        self.names().any(|g| g.field().enriched())
    }

    /// Whether the budget selects this cgroup: every selector it has
    /// matches the cgroup itself (never `/`). The name selectors see the
    /// cgroup's identity, named from its path and completed by `known`.
    pub fn selects(&self, path: &str, known: &Known) -> bool {
        if path == "/" || !self.selects_anything() {
            return false;
        }
        if let Some(c) = &self.cgroup
            && !c.matches(path)
        {
            return false;
        }
        let mut names = self.names().peekable();
        if names.peek().is_none() {
            return true;
        }
        let mut id = identify(path);
        known.apply(&mut id);
        names.all(|g| g.matches(&id))
    }

    /// The budget as throttled nanoseconds per window.
    pub fn budget_ns(&self) -> u64 {
        (self.window.0.as_nanos() as f64 * self.max_throttled.fraction()) as u64
    }

    pub fn window_ns(&self) -> u64 {
        self.window.0.as_nanos() as u64
    }
}

/// Alert destinations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// Generic JSON POST.
    Webhook,
    Discord,
    Slack,
    /// Run a program (argv, no shell) with the alert in its environment.
    Exec,
    /// Append one JSON line per alert to a path opened when the agent
    /// starts: a file, or a device such as a virtio-serial port whose far
    /// end is off the box.
    File,
}

/// Events an alert sink can be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertEvent {
    /// A share of a budget used.
    Warning,
    /// A budget exceeded.
    Breach,
    /// The agent killed (or, dry run, would have killed).
    Kill,
    /// The kernel's OOM killer killed (`oom_kill`, as `memtrace events`
    /// and memory.events spell it, is accepted too).
    #[serde(alias = "oom_kill")]
    OomKill,
    /// The host is running out of memory: swap, MemAvailable, PSI.
    Host,
    /// The in-kernel brake fired while the agent was silent.
    Brake,
}

impl AlertEvent {
    pub const ALL: [Self; 6] = [
        Self::Warning,
        Self::Breach,
        Self::Kill,
        Self::OomKill,
        Self::Host,
        Self::Brake,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Breach => "breach",
            Self::Kill => "kill",
            Self::OomKill => "oom-kill",
            Self::Host => "host",
            Self::Brake => "brake",
        }
    }
}

/// One `[[alert]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    pub kind: AlertKind,
    #[serde(default)]
    pub name: Option<String>,
    /// Destination URL (webhook, discord, slack).
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the URL (webhook URLs are secrets).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Bearer token sent as `Authorization` (webhook).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// Program and arguments (exec).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Where a `file` sink writes (absolute).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Which events; default all.
    #[serde(default)]
    pub on: Option<Vec<AlertEvent>>,
    /// Alerts with the same event and cgroup closer than this are folded
    /// into the next one.
    #[serde(default = "default_min_interval")]
    pub min_interval: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// PEM file of the CA (or CAs) to trust for this sink's `https://`
    /// URL instead of the system's trust store: a webhook behind a
    /// private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// What validation read from the environment and `ca_file`.
    #[serde(skip)]
    pub resolved: Resolved,
}

/// An alert sink's secrets and trust roots, read once when the file is
/// loaded (start, SIGHUP), so a missing one is an error of the file.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// The URL, from `url` or `url_env`.
    pub url: Option<Secret>,
    /// The bearer token, from `token` or `token_env`.
    pub token: Option<Secret>,
    /// DER certificates of `ca_file`.
    pub ca: Vec<Vec<u8>>,
}

/// A value that must never reach a log: Debug prints a placeholder.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

fn default_min_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

impl AlertConfig {
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{:?}", self.kind).to_lowercase())
    }

    pub fn wants(&self, e: AlertEvent) -> bool {
        self.on.as_ref().is_none_or(|on| on.contains(&e))
    }
}

/// `[host]`: the host's leading edge, one verdict judged from several
/// signals together (see [`crate::policy::host`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Swap counts as low below this share of total swap ...
    #[serde(default = "default_swap_below")]
    pub swap_free_below: Percent,
    /// ... MemAvailable below this share of MemTotal.
    #[serde(default = "default_avail_below")]
    pub mem_available_below: Percent,
    /// Below this share of MemTotal, MemAvailable alone falling steadily
    /// enough to be gone within `exhaustion_within` pages (`collapse`).
    #[serde(default = "default_collapse_below")]
    pub collapse_below: Percent,
    /// The box is sliding when its free memory and swap, at the pace of
    /// the last `trend_window`, would be gone within this long.
    #[serde(default = "default_exhaustion_within")]
    pub exhaustion_within: Dur,
    /// The recent slope is a least-squares fit over this much history.
    #[serde(default = "default_trend_window")]
    pub trend_window: Dur,
    /// Memory pressure counts when tasks that no cgroup limit of their own
    /// explains stalled (`some`) this share of the last 10 s ...
    #[serde(default = "default_psi_some_above")]
    pub psi_some_above: Percent,
    /// ... or every task stalled (`full`) this share.
    #[serde(default = "default_psi_full_above")]
    pub psi_full_above: Percent,
    /// Kernel PSI triggers that make the agent judge at once, not at the
    /// next second: some task stalled this long within `psi_window`.
    #[serde(default = "default_psi_some")]
    pub psi_some_stall: Dur,
    /// The same for `full` stalls (every task stalled).
    #[serde(default = "default_psi_full")]
    pub psi_full_stall: Dur,
    #[serde(default = "default_psi_window")]
    pub psi_window: Dur,
    /// No longer used (the verdict judges the trend, not how long a level
    /// held): accepted so that an older file still loads, with a warning.
    #[serde(default)]
    pub swap_for: Option<Dur>,
    #[serde(default)]
    pub mem_available_for: Option<Dur>,
}

fn yes() -> bool {
    true
}
fn default_swap_below() -> Percent {
    Percent(15.0)
}
fn default_avail_below() -> Percent {
    Percent(10.0)
}
fn default_collapse_below() -> Percent {
    Percent(40.0)
}
fn default_exhaustion_within() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_trend_window() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_psi_some_above() -> Percent {
    Percent(10.0)
}
fn default_psi_full_above() -> Percent {
    Percent(5.0)
}
// Windows are a multiple of 2 s: the kernel requires it of processes
// without CAP_SYS_RESOURCE, which containers and sandboxes often drop.
fn default_psi_some() -> Dur {
    Dur(Duration::from_millis(300))
}
fn default_psi_full() -> Dur {
    Dur(Duration::from_millis(200))
}
fn default_psi_window() -> Dur {
    Dur(Duration::from_secs(2))
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            swap_free_below: default_swap_below(),
            mem_available_below: default_avail_below(),
            collapse_below: default_collapse_below(),
            exhaustion_within: default_exhaustion_within(),
            trend_window: default_trend_window(),
            psi_some_above: default_psi_some_above(),
            psi_full_above: default_psi_full_above(),
            psi_some_stall: default_psi_some(),
            psi_full_stall: default_psi_full(),
            psi_window: default_psi_window(),
            swap_for: None,
            mem_available_for: None,
        }
    }
}

/// `[names]`: where the names a path does not tell are looked up
/// ([`crate::sys::enrich`]), off the kill path.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamesSection {
    /// Look names up at all (users, containers, pods).
    #[serde(default = "yes")]
    pub enrich: bool,
    #[serde(default = "default_docker_socket")]
    pub docker_socket: PathBuf,
    #[serde(default = "default_podman_socket")]
    pub podman_socket: PathBuf,
    /// For each lookup.
    #[serde(default = "default_names_timeout")]
    pub timeout: Dur,
}

fn default_docker_socket() -> PathBuf {
    crate::sys::enrich::Sources::default().docker_socket
}
fn default_podman_socket() -> PathBuf {
    crate::sys::enrich::Sources::default().podman_socket
}
fn default_names_timeout() -> Dur {
    Dur(crate::sys::enrich::Sources::default().timeout)
}

impl Default for NamesSection {
    fn default() -> Self {
        Self {
            enrich: true,
            docker_socket: default_docker_socket(),
            podman_socket: default_podman_socket(),
            timeout: default_names_timeout(),
        }
    }
}

impl NamesSection {
    /// Where the enrichment thread looks.
    pub fn sources(&self) -> crate::sys::enrich::Sources {
        crate::sys::enrich::Sources {
            docker_socket: self.docker_socket.clone(),
            podman_socket: self.podman_socket.clone(),
            timeout: self.timeout.0,
            ..Default::default()
        }
    }
}

/// `[agent]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Log "would kill" instead of killing, for every budget.
    #[serde(default)]
    pub dry_run: bool,
    /// Prometheus endpoint; `"off"` disables it.
    #[serde(default = "default_metrics")]
    pub metrics_listen: String,
    /// Flight recorder directory (rolling recordings); unset: off.
    #[serde(default)]
    pub record_dir: Option<PathBuf>,
    /// Flight recorder caps: total size and age of the kept files.
    #[serde(default = "default_record_max_size")]
    pub record_max_size: String,
    #[serde(default = "default_record_max_age")]
    pub record_max_age: Dur,
    /// The flight recorder also keeps every reclaim pass. Off: the kernel
    /// only counts passes per cgroup (the metrics and status are the same)
    /// and no record per pass crosses the ring. Needs `record_dir`; read at
    /// start only.
    #[serde(default)]
    pub record_reclaim_passes: bool,
    /// A JSON line per kill (and would-kill) is appended here.
    #[serde(default)]
    pub kill_log: Option<PathBuf>,
    /// More processes never to kill, besides the built-in protected set.
    #[serde(default)]
    pub protect: Vec<Pattern>,
}

/// The default metrics address: loopback only.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9478";

fn default_metrics() -> String {
    DEFAULT_METRICS.into()
}
fn default_record_max_size() -> String {
    "256MiB".into()
}
fn default_record_max_age() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            dry_run: false,
            metrics_listen: default_metrics(),
            record_dir: None,
            record_max_size: default_record_max_size(),
            record_max_age: default_record_max_age(),
            record_reclaim_passes: false,
            kill_log: None,
            protect: Vec::new(),
        }
    }
}
