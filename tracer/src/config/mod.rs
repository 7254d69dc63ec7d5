//! The agent's configuration: a TOML file validated in full before anything
//! runs. Every error names the file, the line and the reason; an invalid
//! file never half-applies. The reference is docs/configuration.md.

pub mod checks;
pub mod filter;
mod sections;
mod values;

#[cfg(test)]
mod tests;

pub use sections::*;
pub use values::*;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
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

/// The file as TOML gives it, before validation.
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
    #[serde(default)]
    names: Option<Spanned<NamesSection>>,
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
/// A validated configuration.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Where it came from (a path, or "embedded default").
    pub source: String,
    pub agent: AgentSection,
    pub budgets: Vec<BudgetConfig>,
    pub alerts: Vec<AlertConfig>,
    pub host: HostConfig,
    pub names: NamesSection,
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

    /// Validates TOML text against this process's environment (`url_env`,
    /// `token_env`); `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(text, source, &|name| std::env::var(name).ok())
    }

    /// [`Self::parse`] with the environment given: `env(NAME)` is the
    /// variable's value, if set.
    pub fn parse_with_env(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let mut m = e.message().trim().to_string();
            // The parser's span points at the key: name it.
            if m.starts_with("duplicate key")
                && let Some(key) = e.span().and_then(|r| text.get(r))
                && !m.contains('`')
            {
                m = format!("duplicate key `{}`", key.trim().trim_matches('"'));
            }
            at(e.span(), m)
        })?;

        let mut budgets: Vec<BudgetConfig> = Vec::new();
        for b in raw.budget {
            let span = b.span();
            let b = b.into_inner();
            // An error about a value points at that value's key.
            let fail = |key: &str, m: String| {
                Err(at(
                    Some(key_in(text, &span, key)),
                    format!("budget `{}`: {m}", b.label()),
                ))
            };
            if b.window.0 < Duration::from_millis(100) {
                return fail("window", "window must be at least 100ms".into());
            }
            if b.budget_ns() < 1_000_000 {
                return fail(
                    "max_throttled",
                    "max_throttled of window is under 1ms: raise one of them".into(),
                );
            }
            if b.window.0 > Duration::from_secs(3600) {
                return fail(
                    "window",
                    "window longer than an hour: memtrace keeps at most an hour of history".into(),
                );
            }
            if !b.selects_anything() {
                return Err(at(
                    Some(span.clone()),
                    format!(
                        "{}: say what it watches: `cgroup = \"/system.slice/*.service\"`, \
                         or a name: `unit`, `container`, `pod`, `pod_namespace`",
                        b.name
                            .as_ref()
                            .map_or_else(|| "a budget".to_string(), |n| format!("budget `{n}`"))
                    ),
                ));
            }
            if b.cgroup
                .as_ref()
                .is_some_and(|c| c.pattern.trim_end_matches('/').is_empty())
            {
                return fail(
                    "cgroup",
                    "cgroup \"/\" is the root: every process of the host. Name the cgroups \
                     (\"/system.slice/*.service\"), or \"/**\" for each cgroup on its own"
                        .into(),
                );
            }
            if let Some(name) = &b.name
                && budgets.iter().any(|o| o.name.as_ref() == Some(name))
            {
                return fail(
                    "name",
                    format!(
                        "a budget named `{name}` is defined twice: names tell alerts and metrics apart"
                    ),
                );
            }
            if let Some(br) = &b.brake {
                if !b.action.kills() {
                    return fail("brake", "a brake kills: it needs a kill action (kill-largest, kill-most-throttled, kill-cgroup)".into());
                }
                if br.window.0 < Duration::from_millis(100)
                    || br.window.0 > Duration::from_secs(3600)
                {
                    return fail("brake", "brake window must be between 100ms and 1h".into());
                }
                if br.limit.0 < Duration::from_millis(1) {
                    return fail("brake", "brake limit must be at least 1ms".into());
                }
                if br.stale.0 < Duration::from_secs(1) {
                    return fail(
                        "brake",
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
            let fail_at = |key: &str, m: String| {
                Err(at(
                    Some(key_in(text, &span, key)),
                    format!("alert `{}`: {m}", a.label()),
                ))
            };
            // What is missing points at the table.
            let fail = |m: String| {
                Err(at(
                    Some(span.clone()),
                    format!("alert `{}`: {m}", a.label()),
                ))
            };
            if a.timeout.0.is_zero() || a.timeout.0 > MAX_ALERT_TIMEOUT {
                return fail_at(
                    "timeout",
                    "timeout must be above 0s and at most 5m: a sink slower than that is down"
                        .into(),
                );
            }
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
                    if a.url.is_some() || a.url_env.is_some() || a.path.is_some() {
                        return fail("exec alerts take `command`, not `url` or `path`".into());
                    }
                }
                AlertKind::File => {
                    match &a.path {
                        Some(p) if p.is_absolute() => {}
                        Some(p) => {
                            return fail_at(
                                "path",
                                format!(
                                    "path `{}` is relative: the agent runs from / under systemd; give an absolute path",
                                    p.display()
                                ),
                            );
                        }
                        None => {
                            return fail(
                                "file alerts need `path = \"/var/log/memtrace/alerts.jsonl\"` (or a device such as /dev/virtio-ports/NAME)"
                                    .into(),
                            );
                        }
                    }
                    if a.url.is_some() || a.url_env.is_some() || a.command.is_some() {
                        return fail("file alerts take `path`, not `url` or `command`".into());
                    }
                    if a.token.is_some() || a.token_env.is_some() || a.ca_file.is_some() {
                        return fail("`token` and `ca_file` are for webhook alerts".into());
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
                            return fail_at(
                                "url",
                                format!("url `{u}` must start with http:// or https://"),
                            );
                        }
                        _ => {}
                    }
                    if a.command.is_some() {
                        return fail("`command` is for exec alerts".into());
                    }
                    if a.path.is_some() {
                        return fail("`path` is for file alerts".into());
                    }
                }
            }
            if a.token.is_some() && a.token_env.is_some() {
                return fail("give `token` or `token_env`, not both".into());
            }
            let resolved = match resolve(&a, env) {
                Ok(r) => r,
                Err(m) => return fail(m),
            };
            alerts.push(AlertConfig { resolved, ..a });
        }
        let host = raw.host.unwrap_or_default();
        if !(Duration::from_millis(500)..=Duration::from_secs(10)).contains(&host.psi_window.0) {
            return Err(at(
                find_key(text, "psi_window"),
                "psi_window must be between 500ms and 10s".into(),
            ));
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&host.trend_window.0) {
            return Err(at(
                find_key(text, "trend_window"),
                "trend_window must be between 10s and 1h: a slope needs several samples, and the agent keeps an hour".into(),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600))
            .contains(&host.exhaustion_within.0)
        {
            return Err(at(
                find_key(text, "exhaustion_within"),
                "exhaustion_within must be between 1s and 24h".into(),
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
        for (key, path) in [
            ("kill_log", agent.kill_log.as_ref()),
            ("record_dir", agent.record_dir.as_ref()),
        ] {
            if let Some(p) = path
                && !p.is_absolute()
            {
                return Err(at(
                    find_key(text, key),
                    if p.as_os_str().is_empty() {
                        format!(
                            "{key} is empty: leave it out to turn it off, or give an absolute path"
                        )
                    } else {
                        format!(
                            "{key} `{}` is relative: the agent runs from / under systemd; give an absolute path",
                            p.display()
                        )
                    },
                ));
            }
        }
        if agent.record_reclaim_passes && agent.record_dir.is_none() {
            return Err(at(
                find_key(text, "record_reclaim_passes"),
                "record_reclaim_passes keeps reclaim passes in the flight recorder: it needs record_dir".into(),
            ));
        }
        if agent.record_max_age.0 < MIN_RECORD_AGE {
            return Err(at(
                find_key(text, "record_max_age"),
                "record_max_age must be at least 20m: the flight recorder starts a file every 10 minutes and deletes whole files".into(),
            ));
        }
        let record_max_bytes = parse_size(&agent.record_max_size).ok_or_else(|| {
            at(
                find_key(text, "record_max_size"),
                format!(
                    "record_max_size `{}` is not a size; write e.g. \"256MiB\"",
                    agent.record_max_size
                ),
            )
        })?;
        if record_max_bytes < MIN_RECORD_BYTES {
            return Err(at(
                find_key(text, "record_max_size"),
                "record_max_size must be at least 8MiB: the flight recorder keeps 8 files of at least 1MiB".into(),
            ));
        }
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
        let (names, names_span) = raw.names.map_or_else(
            || (NamesSection::default(), 0..0),
            |n| {
                let span = n.span();
                (n.into_inner(), span)
            },
        );
        if !(Duration::from_millis(10)..=Duration::from_secs(5)).contains(&names.timeout.0) {
            return Err(at(
                Some(key_in(text, &names_span, "timeout")),
                "[names] timeout must be between 10ms and 5s: a lookup never holds up the agent, \
                 but a slow runtime would hold up every name after it"
                    .into(),
            ));
        }
        Ok(Self {
            source: source.to_string(),
            agent,
            budgets,
            alerts,
            host,
            names,
            record_max_bytes,
        })
    }

    /// Whether any budget may kill (and the run is not a dry run).
    pub fn kills(&self) -> bool {
        !self.agent.dry_run && self.budgets.iter().any(|b| b.action.kills() && !b.dry_run)
    }
}

/// Reads what an alert sink names outside the file: the variables of
/// `url_env` and `token_env` (unset or empty is an error: a webhook sent
/// without its token, or nowhere, fails at 3 a.m. instead of now), and the
/// certificates of `ca_file`.
fn resolve(a: &AlertConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, String> {
    let from_env = |key: &str, name: &str| match env(name) {
        Some(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
        Some(_) => Err(format!("{key} names {name}, which is empty")),
        None => Err(format!(
            "{key} names {name}, which is not set in the agent's environment (under \
             systemd: a line `{name}=...` in /etc/memtrace/secrets.env)"
        )),
    };
    let url = match (&a.url, &a.url_env) {
        (Some(u), _) => Some(Secret(u.clone())),
        (None, Some(name)) => {
            let u = from_env("url_env", name)?;
            if !(u.0.starts_with("http://") || u.0.starts_with("https://")) {
                return Err(format!(
                    "url_env {name} holds something that does not start with http:// or https://"
                ));
            }
            Some(u)
        }
        (None, None) => None,
    };
    let token = match (&a.token, &a.token_env) {
        (Some(t), _) => Some(Secret(t.clone())),
        (None, Some(name)) => Some(from_env("token_env", name)?),
        (None, None) => None,
    };
    let mut ca = Vec::new();
    if let Some(path) = &a.ca_file {
        if a.kind == AlertKind::Exec {
            return Err("`ca_file` is for webhook, discord and slack alerts".into());
        }
        let pem = std::fs::read(path)
            .map_err(|e| format!("ca_file {}: cannot read: {e}", path.display()))?;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => ca.push(c.der().to_vec()),
                Ok(_) => {}
                Err(e) => return Err(format!("ca_file {}: {e}", path.display())),
            }
        }
        if ca.is_empty() {
            return Err(format!(
                "ca_file {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ));
        }
    }
    Ok(Resolved { url, token, ca })
}

/// The longest an alert sink may take before it counts as down.
pub const MAX_ALERT_TIMEOUT: Duration = Duration::from_secs(300);
/// The flight recorder's smallest caps that it can honour (see
/// `record/flight.rs`: 8 segments of at least 1 MiB, a new one every 10 min).
pub const MIN_RECORD_BYTES: u64 = 8 << 20;
pub const MIN_RECORD_AGE: Duration = Duration::from_secs(20 * 60);

/// The span of `key = ` inside a table's span, or the table's when the
/// key is not written there (a default).
fn key_in(text: &str, table: &std::ops::Range<usize>, key: &str) -> std::ops::Range<usize> {
    // The table's keys run from its header to the next header (the span
    // the parser gives may cover the header only).
    let start = table.start.min(text.len());
    let body = text.get(start..).unwrap_or_default();
    let mut end = body.len();
    let mut off = 0;
    for (i, line) in body.split_inclusive('\n').enumerate() {
        if i > 0 && line.trim_start().starts_with('[') {
            end = off;
            break;
        }
        off += line.len();
    }
    body.get(..end)
        .and_then(|t| find_key(t, key))
        .map_or_else(|| table.clone(), |r| r.start + start..r.end + start)
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
