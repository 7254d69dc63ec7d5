//! A real Prometheus on the host's loopback: Debian's `prometheus`,
//! scraping the guest's node_exporter and memtrace's metrics through
//! qemu's port forwards, evaluating the seed's rule as its operator asked
//! for it and memtrace's example rules, with its own rule engine. Read
//! through its HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cmd;

/// Scrapes and rule evaluations: every 5 s, finer than the usual 15 s, so
/// that Prometheus is not late by its interval.
pub const SCRAPE_S: u32 = 5;

/// The seed's ask, written as its operator wrote it: "SwapFree low for N
/// minutes (e.g. < 15 % of SwapTotal)" and "rate(waiting[1m]) rising".
/// N is 1 minute, the shortest that still reads "for N minutes"; rising is
/// the rate now above the rate a minute before.
pub const SEED_RULE_NAME: &str = "Seed003SwapLowAndPressureRising";
pub fn seed_rules() -> String {
    format!(
        r#"# Seed 003's ask, as its operator wrote it (a vmalert rule on node_exporter):
# node_memory_SwapFree_bytes low for N minutes (< 15 % of SwapTotal), and
# rate(node_pressure_memory_waiting_seconds_total[1m]) rising.
groups:
  - name: seed-003
    rules:
      - alert: {SEED_RULE_NAME}
        expr: |
          max_over_time(node_memory_SwapFree_bytes[1m]) < 0.15 * node_memory_SwapTotal_bytes
          and
          rate(node_pressure_memory_waiting_seconds_total[1m])
            > rate(node_pressure_memory_waiting_seconds_total[1m] offset 1m)
        labels: {{ severity: critical }}
        annotations:
          summary: "{{{{ $labels.instance }}}}: swap low for a minute and memory pressure rising"
"#
    )
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
    http: ureq::Agent,
}

/// A free port on the host's loopback (bound, then let go).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Prometheus {
    /// Starts Prometheus scraping `node` and `memtrace` (host ports the
    /// guest's are forwarded to), with its data in `dir`.
    pub fn start(dir: &Path, node: u16, memtrace: u16) -> Result<Self> {
        if !cmd::have("prometheus") {
            bail!("prometheus is missing: run `cargo xtask setup` (Debian's prometheus package)");
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("seed-003.yml"), seed_rules())?;
        std::fs::copy(
            cmd::workspace_root().join("docs/examples/prometheus-rules.yml"),
            dir.join("memtrace-rules.yml"),
        )
        .context("copying docs/examples/prometheus-rules.yml")?;
        let config = format!(
            r#"global:
  scrape_interval: {SCRAPE_S}s
  scrape_timeout: {SCRAPE_S}s
  evaluation_interval: {SCRAPE_S}s
rule_files:
  - seed-003.yml
  - memtrace-rules.yml
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:{node}"]
        labels: {{ instance: "debian-guest" }}
  - job_name: memtrace
    static_configs:
      - targets: ["127.0.0.1:{memtrace}"]
        labels: {{ instance: "debian-guest" }}
"#
        );
        std::fs::write(dir.join("prometheus.yml"), &config)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut p = Self { child, port, http };
        let until = Instant::now() + Duration::from_secs(60);
        while p.get("/-/ready").is_err() {
            if Instant::now() > until || p.child.try_wait()?.is_some() {
                bail!(
                    "prometheus did not come up within 60 s: see {}",
                    dir.join("prometheus.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(p)
    }

    fn get(&self, path: &str) -> Result<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut r = self.http.get(&url).call()?;
        Ok(r.body_mut().read_to_string()?)
    }

    fn api(&self, path: &str) -> Result<Value> {
        let v: Value = serde_json::from_str(&self.get(path)?)?;
        if v["status"] != "success" {
            bail!("prometheus {path}: {v}");
        }
        Ok(v["data"].clone())
    }

    /// Alerts pending or firing now: `(alertname, state)`.
    pub fn alerts(&self) -> Vec<(String, String)> {
        self.api("/api/v1/alerts")
            .ok()
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("?").to_string(),
                    a["state"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect()
    }

    /// Per job: whether its last scrape succeeded.
    pub fn targets(&self) -> Vec<(String, bool)> {
        self.api("/api/v1/targets")
            .ok()
            .and_then(|d| d["activeTargets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or("?").to_string(),
                    t["health"] == "up",
                )
            })
            .collect()
    }

    /// The raw samples of a range selector (`up{job="node"}[1h]`): per
    /// series, its labels and `(unix seconds, value)`.
    pub fn range(&self, selector: &str) -> Vec<(Value, Vec<(f64, f64)>)> {
        let q = percent_encode(selector);
        self.api(&format!("/api/v1/query?query={q}"))
            .ok()
            .and_then(|d| d["result"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let values = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let t = p.get(0)?.as_f64()?;
                        let v = p.get(1)?.as_str()?.parse().ok()?;
                        Some((t, v))
                    })
                    .collect();
                (s["metric"].clone(), values)
            })
            .collect()
    }

    pub fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
