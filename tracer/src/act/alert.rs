//! Alerts: telling people, while the box can still speak.
//!
//! Each sink (webhook, Discord, Slack, exec, file) has its own thread and
//! bounded queue, so a slow endpoint never stalls the agent's loop or
//! another sink. Sinks are prepared ahead, so that an alert on a box going
//! down needs as little as possible: HTTP sinks look their host up when
//! they start and every few minutes after, on their thread
//! ([`super::alert_dns`]), and keep their connection pooled; `file` sinks
//! open their path at start and encode into a buffer kept from then on
//! ([`super::alert_file`]).
//! Alerts with the same event and cgroup closer than the sink's
//! `min_interval` are folded: the next one sent says how many were held
//! back. Secrets (URLs, tokens) come from the config file or the
//! environment, never from argv, and are never logged; the configuration
//! stage read them (and any `ca_file`) already, so a sink never starts
//! without what it needs. `https://` sinks trust the system's store (read
//! once per start or reload) or, with `ca_file`, that CA alone. `exec`
//! sinks run their program as a normal process: see [`super::child`].

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::alert_dns::{self, Prepared};
use super::alert_file::FileSink;
use super::child::ChildSetup;
use crate::config::{AlertConfig, AlertEvent, AlertKind};
use crate::names::Identity;
use crate::policy::host::HostDetails;

/// The machine-readable part of an alert: one shape per kind of finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Details {
    Budget(BudgetDetails),
    Oom(OomDetails),
    Brake(BrakeDetails),
    Host(HostDetails),
}

/// A process and its throttled time in a budget's window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Throttled {
    pub pid: u32,
    pub comm: String,
    pub throttled_ms: u64,
}

/// A budget's warning, breach or kill.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BudgetDetails {
    pub budget: String,
    pub throttled_ms: u64,
    pub budget_ms: u64,
    pub window_ms: u64,
    pub throttled_pct: f64,
    pub action: &'static str,
    /// The most throttled process (a kill: the victim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Up to three, most first.
    pub most_throttled: Vec<Throttled>,
    /// The victim prepared for this budget, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victim_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victim_comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victim_rss_bytes: Option<u64>,
    /// Kills only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breach_to_signal_ms: Option<f64>,
}

/// A kernel OOM kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OomDetails {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: Option<u64>,
    /// The memory cgroup that ran out, when the kernel said.
    pub oom_cgroup: Option<String>,
}

/// The in-kernel brake fired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrakeDetails {
    pub pid: u32,
    pub comm: String,
    pub throttled_ms: u64,
    pub limit_ms: u64,
    pub agent_silent_ms: u64,
}

impl Details {
    /// The fields as a JSON object, for sinks that spread them out.
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// One alert, ready for any sink.
#[derive(Clone, Debug)]
pub struct Alert {
    pub event: AlertEvent,
    /// The cgroup it is about, if any.
    pub cgroup: Option<String>,
    /// Who that cgroup is: unit, user, container, pod.
    pub who: Option<Arc<Identity>>,
    /// What alerts fold on with the event: the cgroup, or a topic such as
    /// `host:swap`.
    pub key: String,
    /// One line for people.
    pub summary: String,
    /// Numbers and names for machines.
    pub details: Details,
    pub host: String,
    /// RFC 3339 wall-clock time of what happened.
    pub time: String,
    /// The numbers are estimates (no throttle probe on this kernel).
    pub estimate: bool,
}

impl Alert {
    pub fn severity(&self) -> &'static str {
        match self.event {
            AlertEvent::Warning | AlertEvent::Host => "warning",
            _ => "critical",
        }
    }

    /// The generic webhook body (also `MEMTRACE_JSON` of exec sinks).
    pub fn body(&self, suppressed: u64) -> WebhookBody<'_> {
        WebhookBody {
            source: "memtrace",
            event: self.event.as_str(),
            severity: self.severity(),
            host: &self.host,
            time: &self.time,
            cgroup: self.cgroup.as_deref(),
            cgroup_name: self.who.as_deref().map(Identity::name),
            who: self.who.as_deref(),
            summary: &self.summary,
            estimate: self.estimate,
            details: &self.details,
            suppressed,
        }
    }

    /// [`Alert::body`] as JSON.
    pub fn json(&self, suppressed: u64) -> Value {
        serde_json::to_value(self.body(suppressed)).unwrap_or(Value::Null)
    }

    /// The text chat sinks show.
    pub fn text(&self, suppressed: u64) -> String {
        let mut s = format!(
            "memtrace [{}] {}: {}",
            self.event.as_str(),
            self.host,
            self.summary
        );
        if self.estimate {
            s.push_str(" (estimate: no throttle probe on this kernel)");
        }
        if suppressed > 0 {
            s.push_str(&format!(" (+{suppressed} similar held back)"));
        }
        s
    }
}

/// What a webhook receives.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub source: &'static str,
    pub event: &'static str,
    pub severity: &'static str,
    pub host: &'a str,
    pub time: &'a str,
    pub cgroup: Option<&'a str>,
    /// The cgroup's name for people ([`Identity::name`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_name: Option<&'a str>,
    /// Everything known of who the cgroup is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<&'a Identity>,
    pub summary: &'a str,
    pub estimate: bool,
    pub details: &'a Details,
    pub suppressed: u64,
}

/// Discord's webhook body.
#[derive(Debug, Serialize)]
struct DiscordBody {
    content: String,
}

/// Slack's incoming-webhook body.
#[derive(Debug, Serialize)]
struct SlackBody {
    text: String,
}

/// Delivery counters of one sink, for metrics.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub suppressed: AtomicU64,
    pub dropped: AtomicU64,
}

struct Sink {
    label: String,
    config: AlertConfig,
    tx: SyncSender<Alert>,
    stats: Arc<SinkStats>,
}

/// All sinks of a configuration.
pub struct Alerter {
    sinks: Vec<Sink>,
}

impl Alerter {
    /// Starts one worker thread per sink, with the trust roots each needs
    /// (the system's store is read once here). The secrets were read when
    /// the configuration was loaded; `file` sinks open their path here, and
    /// one that cannot is an error (a sink never sits silent).
    pub fn start(configs: &[AlertConfig], child: &Arc<ChildSetup>) -> Result<Self, String> {
        let https = configs.iter().any(|c| {
            c.resolved.ca.is_empty()
                && c.resolved
                    .url
                    .as_ref()
                    .is_some_and(|u| u.0.starts_with("https://"))
        });
        let system = if https {
            system_roots()
        } else {
            RootCerts::WebPki
        };
        let mut files = Vec::new();
        for c in configs {
            files.push(match (&c.kind, &c.path) {
                (AlertKind::File, Some(p)) => Some(
                    FileSink::open(p).map_err(|e| format!("alert sink `{}`: {e}", c.label()))?,
                ),
                _ => None,
            });
        }
        let sinks = configs
            .iter()
            .zip(files)
            .map(|(c, file)| {
                let (tx, rx) = sync_channel::<Alert>(256);
                let stats = Arc::new(SinkStats::default());
                let worker = Worker::new(c.clone(), stats.clone(), &system, child.clone(), file);
                let label = c.label();
                let thread_label = label.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("alert-{thread_label}"))
                    .spawn(move || worker.run(rx));
                if let Err(e) = spawned {
                    log::error!("alert sink {thread_label}: cannot start its thread: {e}");
                }
                Sink {
                    label,
                    config: c.clone(),
                    tx,
                    stats,
                }
            })
            .collect();
        Ok(Self { sinks })
    }

    /// Queues an alert for every sink that wants its event. Never blocks.
    pub fn send(&self, alert: &Alert) {
        for s in self.sinks.iter().filter(|s| s.config.wants(alert.event)) {
            match s.tx.try_send(alert.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    log::warn!("alert sink {}: queue full, alert dropped", s.label);
                }
                Err(TrySendError::Disconnected(_)) => {
                    s.stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Each sink's delivery counters, now.
    pub fn counts(&self) -> Vec<crate::metrics::page::SinkCounts> {
        self.sinks
            .iter()
            .map(|s| crate::metrics::page::SinkCounts {
                label: s.label.clone(),
                sent: s.stats.sent.load(Ordering::Relaxed),
                failed: s.stats.failed.load(Ordering::Relaxed),
                suppressed: s.stats.suppressed.load(Ordering::Relaxed),
                dropped: s.stats.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Folds alerts of the same kind and cgroup.
#[derive(Default)]
pub struct RateLimiter {
    last: HashMap<(AlertEvent, String), (Instant, u64)>,
}

impl RateLimiter {
    /// Whether to send now; if not, the alert is counted as held back. When
    /// it returns `Some(n)`, `n` alerts were held back since the last one.
    pub fn admit(&mut self, a: &Alert, min_interval: Duration, now: Instant) -> Option<u64> {
        let key = (a.event, a.key.clone());
        match self.last.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < min_interval => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// The system's trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), as rustls-native-certs finds it; Mozilla's roots built
/// into the binary when the host has none (a minimal container).
fn system_roots() -> RootCerts {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        log::warn!("system trust store: {e}");
    }
    if found.certs.is_empty() {
        log::warn!(
            "no CA certificates in the system trust store (install ca-certificates, or set \
             ca_file): https alerts trust the Mozilla roots built into memtrace"
        );
        return RootCerts::WebPki;
    }
    log::debug!("system trust store: {} certificates", found.certs.len());
    let certs: Vec<Certificate<'static>> = found
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    RootCerts::new_with_certs(&certs)
}

struct Worker {
    config: AlertConfig,
    stats: Arc<SinkStats>,
    http: ureq::Agent,
    /// The webhook's addresses, looked up ahead.
    dns: Prepared,
    file: Option<FileSink>,
    limiter: RateLimiter,
    child: Arc<ChildSetup>,
}

impl Worker {
    fn new(
        config: AlertConfig,
        stats: Arc<SinkStats>,
        system: &RootCerts,
        child: Arc<ChildSetup>,
        file: Option<FileSink>,
    ) -> Self {
        let roots = if config.resolved.ca.is_empty() {
            system.clone()
        } else {
            let certs: Vec<Certificate<'static>> = config
                .resolved
                .ca
                .iter()
                .map(|der| Certificate::from_der(der).to_owned())
                .collect();
            RootCerts::new_with_certs(&certs)
        };
        let http_config = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout.0))
            .http_status_as_error(true)
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build();
        let dns = Prepared::default();
        let http = ureq::Agent::with_parts(
            http_config,
            ureq::unversioned::transport::DefaultConnector::default(),
            dns.clone(),
        );
        Self {
            config,
            stats,
            http,
            dns,
            file,
            limiter: RateLimiter::default(),
            child,
        }
    }

    /// Looks the webhook's host up again when the last lookup is old (or
    /// failed): between alerts, never in front of one.
    fn refresh_dns(&self) {
        let Some(url) = self.config.resolved.url.as_ref() else {
            return;
        };
        if !self.dns.stale() {
            return;
        }
        if let Err(e) = self.dns.refresh(&url.0) {
            log::debug!(
                "alert sink {}: {e}; looked up again when an alert is sent",
                self.config.label()
            );
        }
    }

    fn run(mut self, rx: Receiver<Alert>) {
        loop {
            self.refresh_dns();
            let alert = match rx.recv_timeout(alert_dns::REFRESH) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let Some(held) = self
                .limiter
                .admit(&alert, self.config.min_interval.0, Instant::now())
            else {
                self.stats.suppressed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match self.deliver(&alert, held) {
                Ok(()) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "alert sink {}: {} alert not delivered: {e}",
                        self.config.label(),
                        alert.event.as_str()
                    );
                }
            }
        }
    }

    fn deliver(&mut self, a: &Alert, held: u64) -> Result<(), String> {
        match self.config.kind {
            AlertKind::Exec => self.exec(a, held),
            AlertKind::File => match &mut self.file {
                Some(f) => f.write(&a.body(held)),
                None => Err("no file open".into()),
            },
            kind => {
                let url = self
                    .config
                    .resolved
                    .url
                    .as_ref()
                    .map(|u| u.0.as_str())
                    .ok_or("no URL")?;
                let body = match kind {
                    AlertKind::Discord => serde_json::to_string(&DiscordBody {
                        content: truncate(&a.text(held), 1900),
                    }),
                    AlertKind::Slack => serde_json::to_string(&SlackBody { text: a.text(held) }),
                    _ => serde_json::to_string(&a.body(held)),
                }
                .map_err(|e| format!("cannot encode the alert: {e}"))?;
                let mut req = self
                    .http
                    .post(url)
                    .header("Content-Type", "application/json");
                if let Some(t) = &self.config.resolved.token {
                    req = req.header("Authorization", &format!("Bearer {}", t.0));
                }
                let sent = req.send(body).map(drop);
                if sent.is_err() {
                    // It may have moved: look it up again before the next.
                    self.dns.forget();
                }
                sent.map_err(|e| {
                    // ureq errors can echo the URL, which is a secret for
                    // Discord and Slack: name the host only.
                    let host = url.split('/').nth(2).unwrap_or("?");
                    format!("POST to {host}: {}", redact(&e.to_string(), url))
                })
            }
        }
    }

    fn exec(&self, a: &Alert, held: u64) -> Result<(), String> {
        let argv = self.config.command.as_deref().unwrap_or_default();
        let (program, args) = argv.split_first().ok_or("empty command")?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("MEMTRACE_EVENT", a.event.as_str())
            .env("MEMTRACE_SEVERITY", a.severity())
            .env("MEMTRACE_SUMMARY", &a.summary)
            .env("MEMTRACE_HOST", &a.host)
            .env("MEMTRACE_TIME", &a.time)
            .env("MEMTRACE_CGROUP", a.cgroup.as_deref().unwrap_or(""))
            .env("MEMTRACE_NAME", a.who.as_deref().map_or("", Identity::name))
            .env("MEMTRACE_ESTIMATE", if a.estimate { "1" } else { "0" })
            .env("MEMTRACE_SUPPRESSED", held.to_string())
            .env("MEMTRACE_JSON", a.json(held).to_string())
            // The agent's own line to systemd is not the program's.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (k, v) in &a.details.fields() {
            let key = format!("MEMTRACE_{}", k.to_uppercase());
            let val = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            cmd.env(key, val);
        }
        self.child.apply(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let deadline = Instant::now() + self.config.timeout.0;
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("{program} exited with {s}")),
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{program} ran longer than {:?}, killed",
                        self.config.timeout.0
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn redact(text: &str, secret: &str) -> String {
    text.replace(secret, "<url>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(event: AlertEvent, cgroup: &str) -> Alert {
        let details = Details::Brake(BrakeDetails {
            pid: 42,
            comm: "hog".into(),
            throttled_ms: 1,
            limit_ms: 1,
            agent_silent_ms: 1,
        });
        Alert {
            event,
            cgroup: Some(cgroup.into()),
            who: Some(Arc::new(crate::names::identify(cgroup))),
            key: cgroup.into(),
            summary: format!("{cgroup} throttled 6.0s of 10s"),
            details,
            host: "box".into(),
            time: "2026-11-22T00:00:00Z".into(),
            estimate: false,
        }
    }

    #[test]
    fn json_and_text_bodies() {
        let a = alert(AlertEvent::Breach, "/work");
        let v = a.json(3);
        assert_eq!(v["event"], "breach");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["cgroup"], "/work");
        assert_eq!(v["details"]["pid"], 42);
        assert_eq!(v["suppressed"], 3);
        assert_eq!(v["cgroup_name"], "work");
        assert_eq!(v["who"]["kind"], "other");
        let unit = alert(
            AlertEvent::Kill,
            r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service",
        );
        let v = unit.json(0);
        assert_eq!(v["cgroup_name"], "t3-serve@wizard.service");
        assert_eq!(v["who"]["template"], "t3-serve@.service");
        assert_eq!(v["who"]["instance"], "wizard");
        let t = a.text(2);
        assert!(
            t.starts_with("memtrace [breach] box: /work throttled"),
            "{t}"
        );
        assert!(t.ends_with("(+2 similar held back)"), "{t}");
        assert_eq!(alert(AlertEvent::Warning, "/x").severity(), "warning");
    }

    #[test]
    fn rate_limit_folds_same_event_and_cgroup() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let a = alert(AlertEvent::Breach, "/a");
        assert_eq!(r.admit(&a, min, t0), Some(0));
        assert_eq!(r.admit(&a, min, t0 + Duration::from_secs(1)), None);
        assert_eq!(r.admit(&a, min, t0 + Duration::from_secs(2)), None);
        // Another cgroup or event is not folded.
        assert_eq!(r.admit(&alert(AlertEvent::Breach, "/b"), min, t0), Some(0));
        assert_eq!(r.admit(&alert(AlertEvent::Kill, "/a"), min, t0), Some(0));
        assert_eq!(r.admit(&a, min, t0 + Duration::from_secs(61)), Some(2));
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(
            redact("GET https://x/secret failed", "https://x/secret"),
            "GET <url> failed"
        );
    }
}
