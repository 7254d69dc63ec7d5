//! The agent's configuration: a TOML file validated in full before anything
//! runs. Every error names the file, the line and the reason; an invalid
//! file never half-applies. The reference is docs/configuration.md.

pub mod filter;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobMatcher;
use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

/// Where the agent looks for its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/memtrace/agent.toml";

/// Used when no file exists at the default path: alert (log and metrics) on
/// any cgroup throttled more than half of a 10 s window; kill nothing.
pub const EMBEDDED_DEFAULT: &str = r#"
[[budget]]
name = "default"
cgroup = "/**"
window = "10s"
max_throttled = "50%"
action = "alert"
"#;

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when the error has a place.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A duration written with a unit: `"10s"`, `"250ms"`, `"2m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like \"10s\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "`{s}` is not a duration ({e}); write e.g. \"10s\", \"250ms\", \"2m\""
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!("`{v}` has no unit; write e.g. \"{v}s\"")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!("`{v}` has no unit; write e.g. \"{v}s\"")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A percentage in (0, 100], written `"30%"` (or a bare number).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percent(pub f64);

impl Percent {
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

fn percent<E: de::Error>(v: f64, shown: &str) -> Result<Percent, E> {
    if v.is_finite() && v > 0.0 && v <= 100.0 {
        Ok(Percent(v))
    } else {
        Err(E::custom(format!(
            "`{shown}` is not a percentage above 0 and at most 100"
        )))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage like \"30%\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Percent, E> {
                let t = s.trim();
                let n = t.strip_suffix('%').unwrap_or(t).trim();
                match n.parse::<f64>() {
                    Ok(v) => percent(v, s),
                    Err(_) => Err(E::custom(format!(
                        "`{s}` is not a percentage; write e.g. \"30%\""
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percent, E> {
                percent(v as f64, &v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                percent(v, &v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// A cgroup glob (see [`crate::config::filter`]).
#[derive(Clone, Debug)]
pub struct CgroupGlob {
    pub pattern: String,
    pub matcher: GlobMatcher,
}

impl CgroupGlob {
    /// Whether the glob selects this cgroup path. The root cgroup is never
    /// selected: it has no memory.high of its own.
    pub fn matches(&self, path: &str) -> bool {
        path != "/" && self.matcher.is_match(path)
    }
}

impl<'de> Deserialize<'de> for CgroupGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(d)?;
        let matcher = crate::config::filter::cgroup_glob(&pattern).map_err(de::Error::custom)?;
        Ok(Self { pattern, matcher })
    }
}

/// A regular expression, matched against a process's comm or cmdline.
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl Pattern {
    pub fn is_match(&self, s: &str) -> bool {
        self.0.is_match(s)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("bad regular expression `{s}`: {e}")))
    }
}

/// A signal by name (`SIGKILL`, `TERM`) or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub i32);

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let name = s.trim().trim_start_matches("SIG");
        let n = match name {
            "KILL" => libc::SIGKILL,
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "USR1" => libc::SIGUSR1,
            "USR2" => libc::SIGUSR2,
            "ABRT" => libc::SIGABRT,
            other => other
                .parse::<i32>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "`{s}` is not a signal; write SIGKILL, SIGTERM or a number"
                    ))
                })?,
        };
        Ok(Self(n))
    }
}

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
    pub cgroup: CgroupGlob,
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
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.cgroup.pattern.clone())
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
    /// The kernel's OOM killer killed.
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
    /// Which events; default all.
    #[serde(default)]
    pub on: Option<Vec<AlertEvent>>,
    /// Alerts with the same event and cgroup closer than this are folded
    /// into the next one.
    #[serde(default = "default_min_interval")]
    pub min_interval: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
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

/// `[host]`: leading-edge alerts on the whole machine.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Alert when free swap stays below this share of total swap ...
    #[serde(default = "default_swap_below")]
    pub swap_free_below: Percent,
    /// ... for this long.
    #[serde(default = "default_swap_for")]
    pub swap_for: Dur,
    /// Alert when MemAvailable stays below this share of MemTotal ...
    #[serde(default = "default_avail_below")]
    pub mem_available_below: Percent,
    /// ... for this long.
    #[serde(default = "default_avail_for")]
    pub mem_available_for: Dur,
    /// PSI trigger: alert when tasks stalled on memory (`some`) for this
    /// long within `psi_window`.
    #[serde(default = "default_psi_some")]
    pub psi_some_stall: Dur,
    /// PSI trigger on `full` stalls (every task stalled).
    #[serde(default = "default_psi_full")]
    pub psi_full_stall: Dur,
    #[serde(default = "default_psi_window")]
    pub psi_window: Dur,
}

fn yes() -> bool {
    true
}
fn default_swap_below() -> Percent {
    Percent(15.0)
}
fn default_swap_for() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_avail_below() -> Percent {
    Percent(10.0)
}
fn default_avail_for() -> Dur {
    Dur(Duration::from_secs(30))
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
            swap_for: default_swap_for(),
            mem_available_below: default_avail_below(),
            mem_available_for: default_avail_for(),
            psi_some_stall: default_psi_some(),
            psi_full_stall: default_psi_full(),
            psi_window: default_psi_window(),
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
            kill_log: None,
            protect: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: Option<AgentSection>,
    #[serde(default)]
    budget: Vec<Spanned<BudgetConfig>>,
    #[serde(default)]
    alert: Vec<Spanned<AlertConfig>>,
    #[serde(default)]
    host: Option<HostConfig>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Where it came from (a path, or "embedded default").
    pub source: String,
    pub agent: AgentSection,
    pub budgets: Vec<BudgetConfig>,
    pub alerts: Vec<AlertConfig>,
    pub host: HostConfig,
    /// The flight recorder's size cap in bytes.
    pub record_max_bytes: u64,
}

impl AgentConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The embedded default.
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED_DEFAULT, "embedded default").expect("the embedded default is valid")
    }

    /// Validates TOML text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = match span {
                Some(r) => {
                    let (l, c) = line_col(text, r.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError {
                file: source.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().trim().to_string()))?;

        let mut budgets = Vec::new();
        for b in raw.budget {
            let span = b.span();
            let b = b.into_inner();
            let fail = |m: String| {
                Err(at(
                    Some(span.clone()),
                    format!("budget `{}`: {m}", b.label()),
                ))
            };
            if b.window.0 < Duration::from_millis(100) {
                return fail("window must be at least 100ms".into());
            }
            if b.budget_ns() < 1_000_000 {
                return fail("max_throttled of window is under 1ms: raise one of them".into());
            }
            if b.window.0 > Duration::from_secs(3600) {
                return fail(
                    "window longer than an hour: memtrace keeps at most an hour of history".into(),
                );
            }
            if let Some(br) = &b.brake {
                if !b.action.kills() {
                    return fail("a brake kills: it needs a kill action (kill-largest, kill-most-throttled, kill-cgroup)".into());
                }
                if br.window.0 < Duration::from_millis(100)
                    || br.window.0 > Duration::from_secs(3600)
                {
                    return fail("brake window must be between 100ms and 1h".into());
                }
                if br.limit.0 < Duration::from_millis(1) {
                    return fail("brake limit must be at least 1ms".into());
                }
                if br.stale.0 < Duration::from_secs(1) {
                    return fail(
                        "brake stale must be at least 1s: the agent beats every 250ms".into(),
                    );
                }
            }
            budgets.push(b);
        }
        let mut alerts = Vec::new();
        for a in raw.alert {
            let span = a.span();
            let a = a.into_inner();
            let fail = |m: String| {
                Err(at(
                    Some(span.clone()),
                    format!("alert `{}`: {m}", a.label()),
                ))
            };
            match a.kind {
                AlertKind::Exec => {
                    match &a.command {
                        Some(c) if !c.is_empty() && !c[0].is_empty() => {}
                        _ => {
                            return fail(
                                "exec alerts need `command = [\"/path/to/program\", \"arg\"]`"
                                    .into(),
                            );
                        }
                    }
                    if a.url.is_some() || a.url_env.is_some() {
                        return fail("exec alerts take `command`, not `url`".into());
                    }
                }
                _ => {
                    match (&a.url, &a.url_env) {
                        (Some(_), Some(_)) => {
                            return fail("give `url` or `url_env`, not both".into());
                        }
                        (None, None) => return fail("needs `url` or `url_env`".into()),
                        (Some(u), None)
                            if !(u.starts_with("http://") || u.starts_with("https://")) =>
                        {
                            return fail(format!("url `{u}` must start with http:// or https://"));
                        }
                        _ => {}
                    }
                    if a.command.is_some() {
                        return fail("`command` is for exec alerts".into());
                    }
                }
            }
            if a.token.is_some() && a.token_env.is_some() {
                return fail("give `token` or `token_env`, not both".into());
            }
            alerts.push(a);
        }
        let host = raw.host.unwrap_or_default();
        if !(Duration::from_millis(500)..=Duration::from_secs(10)).contains(&host.psi_window.0) {
            return Err(at(
                find_key(text, "psi_window"),
                "psi_window must be between 500ms and 10s".into(),
            ));
        }
        for (key, stall) in [
            ("psi_some_stall", host.psi_some_stall.0),
            ("psi_full_stall", host.psi_full_stall.0),
        ] {
            if stall.is_zero() || stall > host.psi_window.0 {
                return Err(at(
                    find_key(text, key),
                    format!("{key} must be above 0 and at most psi_window"),
                ));
            }
        }
        let agent = raw.agent.unwrap_or_default();
        let record_max_bytes = parse_size(&agent.record_max_size).ok_or_else(|| {
            at(
                find_key(text, "record_max_size"),
                format!(
                    "record_max_size `{}` is not a size; write e.g. \"256MiB\"",
                    agent.record_max_size
                ),
            )
        })?;
        if agent.metrics_listen != "off"
            && agent
                .metrics_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(at(
                find_key(text, "metrics_listen"),
                format!(
                    "metrics_listen `{}` is not an address like 127.0.0.1:9478 (or \"off\")",
                    agent.metrics_listen
                ),
            ));
        }
        Ok(Self {
            source: source.to_string(),
            agent,
            budgets,
            alerts,
            host,
            record_max_bytes,
        })
    }

    /// Whether any budget may kill (and the run is not a dry run).
    pub fn kills(&self) -> bool {
        !self.agent.dry_run && self.budgets.iter().any(|b| b.action.kills() && !b.dry_run)
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The span of `key = ` in the text, for errors found after parsing.
fn find_key(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
            let start = off + (line.len() - t.len());
            return Some(start..start + key.len());
        }
        off += line.len();
    }
    None
}

/// `256MiB`, `1GiB`, `500MB`, `4096` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" => 1_000,
        "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[agent]
dry_run = false
metrics_listen = "127.0.0.1:9999"
kill_log = "/var/log/memtrace/kills.jsonl"
protect = ["^postgres$"]

[[budget]]
name = "work"
cgroup = "/work*"
window = "10s"
max_throttled = "30%"
warn_at = "60%"
action = "kill-largest"
avoid = ["^sshd", "--keep-me"]
prefer = ["^ugrep$"]
cooldown = "45s"
brake = { limit = "20s", window = "30s", stale = "5s", signal = "SIGKILL" }

[[budget]]
cgroup = "/system.slice/*.service"
max_throttled = 50

[[alert]]
kind = "webhook"
url = "http://127.0.0.1:8080/hook"
token_env = "HOOK_TOKEN"
on = ["breach", "kill"]

[[alert]]
kind = "discord"
url_env = "DISCORD_WEBHOOK_URL"

[[alert]]
kind = "exec"
command = ["/usr/local/bin/page", "--urgent"]
min_interval = "5m"

[host]
swap_free_below = "15%"
swap_for = "2m"
"#;

    #[test]
    fn full_example_parses() {
        let c = AgentConfig::parse(FULL, "agent.toml").unwrap();
        assert_eq!(c.budgets.len(), 2);
        let b = &c.budgets[0];
        assert_eq!(b.label(), "work");
        assert_eq!(b.budget_ns(), 3_000_000_000);
        assert_eq!(b.action, Action::KillLargest);
        assert!(b.cgroup.matches("/work") && b.cgroup.matches("/workers"));
        assert!(!b.cgroup.matches("/work/child"));
        assert!(b.avoid[1].is_match("ugrep --keep-me x"));
        let brake = b.brake.as_ref().unwrap();
        assert_eq!(brake.limit.0, Duration::from_secs(20));
        assert_eq!(brake.signal, Signal(libc::SIGKILL));
        let d = &c.budgets[1];
        assert_eq!(d.window.0, Duration::from_secs(10));
        assert_eq!(d.max_throttled.fraction(), 0.5);
        assert_eq!(d.action, Action::Alert);
        assert_eq!(c.alerts.len(), 3);
        assert!(c.alerts[0].wants(AlertEvent::Kill) && !c.alerts[0].wants(AlertEvent::Host));
        assert!(c.alerts[1].wants(AlertEvent::Host));
        assert_eq!(c.alerts[2].min_interval.0, Duration::from_secs(300));
        assert_eq!(c.host.swap_for.0, Duration::from_secs(120));
        assert_eq!(c.agent.metrics_listen, "127.0.0.1:9999");
        assert_eq!(c.record_max_bytes, 256 << 20);
        assert!(c.kills());
    }

    #[test]
    fn embedded_default_alerts_on_half_of_10s_and_kills_nothing() {
        let c = AgentConfig::embedded();
        assert_eq!(c.budgets.len(), 1);
        let b = &c.budgets[0];
        assert_eq!(b.window.0, Duration::from_secs(10));
        assert_eq!(b.max_throttled.fraction(), 0.5);
        assert_eq!(b.action, Action::Alert);
        assert!(!c.kills());
        assert!(b.cgroup.matches("/a") && b.cgroup.matches("/a/b/c"));
        assert!(!b.cgroup.matches("/"));
        assert_eq!(c.agent.metrics_listen, DEFAULT_METRICS);
    }

    fn err(text: &str) -> ConfigError {
        AgentConfig::parse(text, "t.toml").unwrap_err()
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"130%\"\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().starts_with("t.toml:3:"), "{e}");
        assert!(e.message.contains("130%"), "{e}");

        let e =
            err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nwindow = \"ten seconds\"\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("not a duration"), "{e}");

        let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nwindow = 10\n");
        assert!(e.message.contains("no unit"), "{e}");

        let e = err("[[budget]]\ncgroup = \"/a/[x\"\nmax_throttled = \"30%\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("bad cgroup glob"), "{e}");

        let e =
            err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nmax_throtled = \"1%\"\n");
        assert!(e.message.contains("max_throtled"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");

        let e =
            err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\naction = \"kill-bigest\"\n");
        assert!(e.message.contains("kill-largest"), "{e}");

        let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\navoid = [\"(\"]\n");
        assert!(e.message.contains("regular expression"), "{e}");

        let e = err("[frobnicate]\n");
        assert!(e.message.contains("frobnicate"), "{e}");

        let e = err("[[budget]]\ncgroup = \"/a\"\n");
        assert!(e.message.contains("max_throttled"), "{e}");

        let e = err("this is = = not toml");
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn cross_field_errors_point_at_the_table() {
        let e = err("\n\n[[alert]]\nkind = \"webhook\"\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("needs `url` or `url_env`"), "{e}");
        let e = err("[[alert]]\nkind = \"exec\"\ncommand = []\n");
        assert!(e.message.contains("command"), "{e}");
        let e = err("[[alert]]\nkind = \"slack\"\nurl = \"ftp://x\"\n");
        assert!(e.message.contains("http://"), "{e}");
        let e = err("[agent]\nmetrics_listen = \"everywhere\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = err("[agent]\nrecord_max_size = \"lots\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nwindow = \"0s\"\n");
        assert!(e.message.contains("at least 100ms"), "{e}");
        let e = err(
            "[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nbrake = { limit = \"5s\" }\n",
        );
        assert!(e.message.contains("needs a kill action"), "{e}");
        let brake = |b: &str| {
            err(&format!(
                "[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\nbrake = {{ {b} }}\n"
            ))
        };
        let e = brake("limit = \"5s\", window = \"10ms\"");
        assert!(e.message.contains("between 100ms and 1h"), "{e}");
        let e = brake("limit = \"0s\"");
        assert!(e.message.contains("at least 1ms"), "{e}");
        let e = err("[host]\npsi_window = \"20s\"\n");
        assert!(
            e.message.contains("between 500ms and 10s") && e.line == Some(2),
            "{e}"
        );
    }

    #[test]
    fn percent_and_size_parsing() {
        assert!(
            err("[[budget]]\ncgroup=\"/a\"\nmax_throttled=0\n")
                .message
                .contains("above 0")
        );
        assert!(
            err("[[budget]]\ncgroup=\"/a\"\nmax_throttled=\"-5%\"\n")
                .message
                .contains("above 0")
        );
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("1 PiB"), None);
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../../docs/examples/agent.toml");
        let c = AgentConfig::parse(text, "docs/examples/agent.toml").unwrap();
        assert_eq!(c.budgets.len(), 3);
        assert!(c.budgets[0].brake.is_some());
        assert_eq!(c.alerts.len(), 3);
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "\u{0}",
            "[[budget]]",
            "budget = 3",
            "[[alert]]\nkind=1",
            "[agent]\nprotect=[1]",
        ] {
            let _ = AgentConfig::parse(text, "x");
        }
    }
}
