//! What one thrash run measured, from what reached the host: the alert
//! port's lines (timestamped on arrival), Prometheus's own record (`up`
//! and `ALERTS`), the console's heartbeat, and the recording read back
//! from the guest's disk after the power cut. Times are the host's wall
//! clock; the guest's clock is mapped onto it through the heartbeats.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::ThrashArgs;
use super::prom::{SCRAPE_S, SEED_RULE_NAME, seed_rules};
use crate::cmd;

pub struct Input {
    pub args: ThrashArgs,
    pub image_kernel: String,
    pub started: f64,
    pub swarm_at: Option<f64>,
    pub ended_at: Option<f64>,
    pub killed_at: f64,
    pub outcome: String,
    pub console: Vec<(f64, String)>,
    pub results: Vec<Value>,
    pub alerts: Vec<(f64, Value)>,
    pub up: Vec<(Value, Vec<(f64, f64)>)>,
    pub alerts_series: Vec<(Value, Vec<(f64, f64)>)>,
    pub recording: Value,
}

/// Unix seconds of an RFC 3339 UTC time (`2026-12-02T15:20:01.123Z`).
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let time = time.strip_suffix('Z')?;
    let mut t = time.split(':');
    let (h, mi): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

/// `beat N wall_ms=.. avail_kb=.. swapfree_kb=.. psi_some_us=..`.
struct Beat {
    at: f64,
    wall: f64,
    avail_kb: u64,
    swapfree_kb: u64,
}

fn beats(console: &[(f64, String)]) -> Vec<Beat> {
    console
        .iter()
        .filter_map(|(at, l)| {
            let rest = l.split_once("debian-guest: beat ")?.1;
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some(Beat {
                at: *at,
                wall: field("wall_ms=")? as f64 / 1e3,
                avail_kb: field("avail_kb=")?,
                swapfree_kb: field("swapfree_kb=")?,
            })
        })
        .collect()
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The result of a run, relative to the swarm's start (seconds).
pub fn analyse(i: &Input) -> Value {
    let t0 = i.swarm_at.unwrap_or(i.started);
    let rel = |t: f64| r1(t - t0);
    let beats = beats(&i.console);
    // host = guest + offset; the smallest difference is the one with the
    // least delay on the way.
    let offset = beats
        .iter()
        .map(|b| b.at - b.wall)
        .fold(f64::INFINITY, f64::min);
    let offset = if offset.is_finite() { offset } else { 0.0 };
    let ready = i.results.iter().find(|r| r["ready"] == true).cloned();

    // memtrace's alerts, as they arrived.
    let alerts: Vec<Value> = i
        .alerts
        .iter()
        .map(|(at, a)| {
            let decided = a["time"]
                .as_str()
                .and_then(parse_rfc3339)
                .map(|g| g + offset);
            json!({
                "arrived_s": rel(*at),
                "event": a["event"],
                "summary": a["summary"],
                "decided_s": decided.map(rel),
                "delivery_ms": decided.map(|d| ((at - d) * 1e3).round()),
                "details": a["details"],
            })
        })
        .collect();
    let host_alert = alerts.iter().find(|a| a["event"] == "host").cloned();

    // Prometheus's rules: the first evaluation each was pending, firing.
    let mut rules = serde_json::Map::new();
    for (m, values) in &i.alerts_series {
        let (Some(name), Some(state)) = (m["alertname"].as_str(), m["alertstate"].as_str()) else {
            continue;
        };
        let Some(first) = values.iter().map(|v| v.0).reduce(f64::min) else {
            continue;
        };
        let e = rules.entry(name.to_string()).or_insert_with(|| json!({}));
        e[state] = json!(rel(first));
    }

    // Scrapes: the first missed one after the swarm started, per job.
    let scrapes = |job: &str| {
        let mut v: Vec<(f64, f64)> =
            i.up.iter()
                .filter(|(m, _)| m["job"] == job)
                .flat_map(|(_, v)| v.iter().copied())
                .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let after: Vec<&(f64, f64)> = v.iter().filter(|s| s.0 >= t0).collect();
        let first_missed = after.iter().find(|s| s.1 == 0.0).map(|s| s.0);
        let last_ok = after.iter().rev().find(|s| s.1 == 1.0).map(|s| s.0);
        let missed = after.iter().filter(|s| s.1 == 0.0).count();
        json!({
            "first_missed_s": first_missed.map(rel),
            "last_ok_s": last_ok.map(rel),
            "scrapes": after.len(),
            "missed": missed,
        })
    };
    let node = scrapes("node");
    let memtrace_scrapes = scrapes("memtrace");

    // The console: its last line, and its longest silence while the swarm ran.
    let after: Vec<f64> = i.console.iter().map(|c| c.0).filter(|&t| t >= t0).collect();
    let last_line = i.console.last().map(|c| c.0);
    let mut longest = (0.0, t0);
    for w in after.windows(2) {
        if w[1] - w[0] > longest.0 {
            longest = (w[1] - w[0], w[0]);
        }
    }
    let final_silence = last_line.map(|l| i.killed_at - l);
    let dark = final_silence.is_some_and(|s| s >= i.args.dark_s as f64);
    let console_silent_from = if dark { last_line } else { None };

    // The blackout: the first sign the box stopped answering, the first
    // missed scrape or the start of the final console silence.
    let blackout = [
        node["first_missed_s"].as_f64().map(|s| s + t0),
        console_silent_from,
    ]
    .into_iter()
    .flatten()
    .reduce(f64::min);

    // The recording, in host time.
    let samples: Vec<(f64, Value)> = i.recording["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                parse_rfc3339(s["ts"].as_str()?)? + offset,
                s["host"].clone(),
            ))
        })
        .collect();
    let last_sample = samples.iter().map(|s| s.0).reduce(f64::max);
    let coverage = blackout.map(|b| {
        let within: Vec<f64> = samples
            .iter()
            .map(|s| s.0)
            .filter(|&t| t >= b - 60.0 && t <= b)
            .collect();
        let mut gap: f64 = within.first().map_or(60.0, |f| f - (b - 60.0));
        for w in within.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
        gap = gap.max(within.last().map_or(60.0, |l| b - l));
        json!({ "samples": within.len(), "longest_gap_s": r1(gap) })
    });
    let lead = |t: Option<f64>| match (host_alert.as_ref().and_then(|a| a["arrived_s"].as_f64()), t)
    {
        (Some(a), Some(t)) => Some(r1(t - a)),
        _ => None,
    };
    let seed_firing = rules.get(SEED_RULE_NAME).and_then(|r| r["firing"].as_f64());
    json!({
        "outcome": i.outcome,
        "kernel": i.image_kernel,
        "args": {
            "memory_mb": i.args.memory_mb, "swap_mb": i.args.swap_mb, "swap_bps": i.args.swap_bps,
            "workers": i.args.workers, "worker_mib": i.args.worker_mib,
            "grow_mib_per_s": i.args.grow_mib_per_s, "spawn_every_s": i.args.spawn_every_s,
            "touch_share": i.args.touch_share, "dark_s": i.args.dark_s,
        },
        "guest": ready,
        "clock_offset_s": r1(offset),
        "boot_to_swarm_s": i.swarm_at.map(|s| r1(s - i.started)),
        "swarm_ended_s": i.ended_at.map(rel),
        "power_cut_s": rel(i.killed_at),
        "memtrace_host_alert": host_alert,
        "memtrace_alerts": alerts,
        "prometheus_rules": rules,
        "seed_rule_firing_s": seed_firing,
        "scrapes_node": node,
        "scrapes_memtrace": memtrace_scrapes,
        "console": {
            "last_line_s": last_line.map(rel),
            "final_silence_s": final_silence.map(r1),
            "longest_silence_s": r1(longest.0),
            "longest_silence_from_s": rel(longest.1),
            "beats": beats.len(),
            "last_beat": beats.last().map(|b| json!({
                "at_s": rel(b.at), "avail_mib": b.avail_kb / 1024, "swapfree_mib": b.swapfree_kb / 1024,
            })),
        },
        "blackout_s": blackout.map(rel),
        "lead_over_blackout_s": lead(blackout.map(|b| b - t0)),
        "lead_over_seed_rule_s": lead(seed_firing),
        "recording": {
            "e2fsck_exit": i.recording["e2fsck_exit"],
            "files": i.recording["files"],
            "report_exit": i.recording["report_exit"],
            "report_start": i.recording["report"]["start"],
            "report_end": i.recording["report"]["end"],
            "integrity": i.recording["report"]["integrity"],
            "oom_kills": i.recording["report"]["oom_kills"].as_array().map_or(0, Vec::len),
            "samples": samples.len(),
            "last_sample_s": last_sample.map(rel),
            "lost_to_the_power_cut_s": last_sample.map(|l| r1(i.killed_at - l)),
            "last_minute_before_blackout": coverage,
        },
    })
}

fn s(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "—".into(), |x| format!("{x:.1} s"))
}

const BEGIN: &str = "<!-- thrash:begin (written by `cargo xtask thrash`) -->";
const END: &str = "<!-- thrash:end -->";

/// The section of docs/benchmarks.md.
pub fn markdown(r: &Value) -> String {
    let a = &r["args"];
    let g = &r["guest"];
    let mut t = String::new();
    let _ = writeln!(t, "{BEGIN}");
    let _ = writeln!(
        t,
        "## The second incident: a thrash, memtrace against the seed's rule (Debian guest)\n"
    );
    let _ = writeln!(
        t,
        "Reproduce (as root; one boot, 10–30 minutes on a loaded 2-core machine):\n\n```sh\ncargo xtask thrash            # --no-docs, --workers N, --swap-bps B, ...\n```\n"
    );
    let _ = writeln!(
        t,
        "Measured on {} in a bookworm guest ({}, {} MiB, 2 vCPUs, qemu TCG) with {} MiB of swap on a \
         virtio disk qemu throttles to {:.1} MiB/s. The swarm (the seed's 3 a.m. build, scaled): {} \
         workers in `build.service`, one every {} s, each growing by {} MiB/s to {} MiB and writing \
         to {:.0} % of its pages every second. memtrace's agent runs under its shipped unit with the \
         shipped `[host]` defaults; its alerts go to a `file` sink on a virtio-serial port, read and \
         timestamped on the host; its flight recorder is on a disk of its own. Prometheus ({}) on \
         the host's loopback scrapes node_exporter and memtrace every {SCRAPE_S} s through qemu port \
         forwards (`restrict=on`) and evaluates the seed's rule and docs/examples/prometheus-rules.yml. \
         Times are seconds after the swarm started (host clock). Run outcome: **{}**.\n",
        today(),
        r["kernel"].as_str().unwrap_or("?"),
        g["mem_total_kb"]
            .as_u64()
            .map_or(a["memory_mb"].as_u64().unwrap_or(0), |k| k / 1024),
        a["swap_mb"],
        a["swap_bps"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 20),
        a["workers"],
        a["spawn_every_s"],
        a["grow_mib_per_s"],
        a["worker_mib"],
        a["touch_share"].as_f64().unwrap_or(0.0) * 100.0,
        prometheus_version(),
        r["outcome"].as_str().unwrap_or("?"),
    );
    let h = &r["memtrace_host_alert"];
    let _ = writeln!(t, "| what | when | notes |\n|---|---|---|");
    let _ = writeln!(
        t,
        "| memtrace `host` alert arrives on the host (virtio-serial) | {} | {} |",
        s(&h["arrived_s"]),
        if h.is_null() {
            "never".to_string()
        } else {
            format!(
                "signals {}; predicted exhaustion in {}; delivered {} ms after the verdict",
                h["details"]["signals"],
                s(&h["details"]["eta_s"]),
                h["delivery_ms"]
            )
        }
    );
    let rules = r["prometheus_rules"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let firing = |name: &str| rules.get(name).map_or(Value::Null, |v| v["firing"].clone());
    let _ = writeln!(
        t,
        "| Prometheus: the seed's rule `{SEED_RULE_NAME}` fires | {} | {} |",
        s(&firing(SEED_RULE_NAME)),
        if firing(SEED_RULE_NAME).is_null() {
            "never fired"
        } else {
            ""
        }
    );
    for name in [
        "HostSwapDraining",
        "HostMemoryPressureRising",
        "HostMemAvailableCollapsing",
        "MemtraceHostMemoryPressure",
        "MemtraceHostExhaustion",
    ] {
        let _ = writeln!(
            t,
            "| Prometheus: example rule `{name}` fires | {} | |",
            s(&firing(name))
        );
    }
    let n = &r["scrapes_node"];
    let m = &r["scrapes_memtrace"];
    let _ = writeln!(
        t,
        "| first missed scrape: node_exporter | {} | last good scrape {}; {} of {} scrapes missed |",
        s(&n["first_missed_s"]),
        s(&n["last_ok_s"]),
        n["missed"],
        n["scrapes"]
    );
    let _ = writeln!(
        t,
        "| first missed scrape: memtrace's metrics | {} | last good scrape {} |",
        s(&m["first_missed_s"]),
        s(&m["last_ok_s"])
    );
    let c = &r["console"];
    let _ = writeln!(
        t,
        "| console silent (heartbeat every 1 s) | {} | last line {}; silent {} until the power cut; longest silence before it {} (from {}) |",
        if c["final_silence_s"].as_f64().unwrap_or(0.0) >= a["dark_s"].as_f64().unwrap_or(f64::MAX)
        {
            s(&c["last_line_s"])
        } else {
            "never".into()
        },
        s(&c["last_line_s"]),
        s(&c["final_silence_s"]),
        s(&c["longest_silence_s"]),
        s(&c["longest_silence_from_s"])
    );
    let _ = writeln!(
        t,
        "| power cut (qemu killed) | {} | |",
        s(&r["power_cut_s"])
    );
    let rec = &r["recording"];
    let _ = writeln!(
        t,
        "| recording read back: last sample | {} | {} samples in {} files; e2fsck exit {}; `memtrace report` exit {}; lost to the power cut: {} |",
        s(&rec["last_sample_s"]),
        rec["samples"],
        rec["files"].as_array().map_or(0, Vec::len),
        rec["e2fsck_exit"],
        rec["report_exit"],
        s(&rec["lost_to_the_power_cut_s"])
    );
    let cov = &rec["last_minute_before_blackout"];
    let _ = writeln!(
        t,
        "\n- **Blackout** (the first missed scrape or the start of the final console silence): {}.",
        s(&r["blackout_s"])
    );
    let _ = writeln!(
        t,
        "- **memtrace's lead** over the blackout: {}; over the seed's rule: {}.",
        s(&r["lead_over_blackout_s"]),
        match r["lead_over_seed_rule_s"].as_f64() {
            Some(x) => format!("{x:.1} s"),
            None if r["seed_rule_firing_s"].is_null() => "the rule never fired".into(),
            None => "—".into(),
        }
    );
    let _ = writeln!(
        t,
        "- **The recording covers the last minute before the blackout**: {}.",
        if cov.is_null() {
            "no blackout to measure against".into()
        } else {
            format!(
                "{} once-a-second samples in it, the longest gap {}",
                cov["samples"],
                s(&cov["longest_gap_s"])
            )
        }
    );
    if let Some(summary) = h["summary"].as_str() {
        let _ = writeln!(t, "\nThe alert, as it arrived:\n\n```\n{summary}\n```");
    }
    let _ = writeln!(
        t,
        "\nThe seed's rule, as its operator asked for it:\n\n```yaml\n{}```",
        seed_rules()
    );
    let _ = writeln!(
        t,
        "\nEverything of the run is in `target/thrash/run/` (`result.json`, the console, \
         Prometheus's data, the recording as read back)."
    );
    let _ = writeln!(t, "{END}");
    t
}

fn today() -> String {
    cmd::output(Command::new("date").args(["-u", "+%Y-%m-%d"])).unwrap_or_default()
}

fn prometheus_version() -> String {
    cmd::output(Command::new("prometheus").arg("--version"))
        .and_then(|o| o.lines().next().map(str::to_string))
        .map_or_else(
            || "prometheus".into(),
            |l| l.replace("prometheus, version ", "Prometheus "),
        )
}

/// Puts the section into docs/benchmarks.md, replacing an older one.
pub fn write_docs(section: &str) -> Result<()> {
    let path = cmd::workspace_root().join("docs/benchmarks.md");
    let text = std::fs::read_to_string(&path).context("reading docs/benchmarks.md")?;
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!(
                "{}{}{}",
                &text[..a],
                section.trim_end(),
                &text[b + END.len()..]
            )
        }
        _ => format!("{}\n\n{}\n", text.trim_end(), section.trim_end()),
    };
    std::fs::write(&path, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_unix() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
        assert_eq!(parse_rfc3339("2026-12-02T15:20:01Z"), Some(1_796_224_801.0));
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
