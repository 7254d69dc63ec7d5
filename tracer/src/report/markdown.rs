//! The report as Markdown, for an incident document: the same numbers as
//! `--json`, in tables a person reads, each cgroup by its name and path.

use std::fmt::Write as _;

use super::Report;
use crate::clock::{fmt_bytes, fmt_ns};
use crate::names::{describe, identify};

/// A cgroup's name alone, for a second mention.
fn short(path: &str) -> String {
    identify(path).name().to_string()
}

fn hms(rfc: &str) -> &str {
    rfc.get(11..19).unwrap_or(rfc)
}

/// What a value that was not measured reads as.
const NA: &str = "n/a";

impl Report {
    /// "… and N more" under a list the report cut.
    fn more(&self, s: &mut String, list: &str) {
        if let Some(n) = self.omitted.get(list) {
            let _ = writeln!(
                s,
                "\n… and {n} more, left out (at most {} are listed).",
                super::MAX_ROWS
            );
        }
    }
}

impl Report {
    /// Markdown, for an incident document.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# memtrace report: {} ({})\n", self.host, self.kernel);
        let when = match (&self.start, &self.end) {
            (Some(a), Some(b)) => format!(
                "Recorded {} to {} UTC ({:.0} s).",
                a.replace('T', " ").get(..19).unwrap_or(a),
                hms(b),
                self.duration_s
            ),
            _ => "Recording time unknown (no records, no start in the header).".to_string(),
        };
        let _ = writeln!(
            s,
            "{when}{}\n",
            if self.throttle_probe {
                ""
            } else {
                " **Throttle episodes were not measured on this kernel.**"
            }
        );
        for d in &self.degraded {
            let _ = writeln!(s, "- degraded: {d}");
        }
        if !self.degraded.is_empty() {
            s.push('\n');
        }
        let _ = writeln!(s, "Times are UTC.\n");
        let _ = writeln!(s, "## Throttle incidents\n");
        if self.incidents.is_empty() {
            let _ = writeln!(s, "No memory.high throttling was recorded.\n");
        } else {
            let _ = writeln!(
                s,
                "| cgroup | start | end | duration | throttled | peak 1 s share | episodes | most throttled |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
            for i in &self.incidents {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.0}% | {} | {} |",
                    describe(&i.cgroup),
                    hms(&i.start),
                    hms(&i.end),
                    fmt_ns(i.duration_ms * 1_000_000),
                    fmt_ns(i.throttled_ms * 1_000_000),
                    i.peak_share_pct,
                    i.episodes,
                    i.top_task.as_deref().unwrap_or("-")
                );
            }
            self.more(&mut s, "incidents");
            s.push('\n');
        }
        if !self.cgroups.is_empty() {
            let _ = writeln!(s, "## Cgroups by throttle time\n");
            let _ = writeln!(
                s,
                "| cgroup | throttled | episodes | reclaim (task time) | penalty sleep (task time) | over memory.high |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|");
            for c in &self.cgroups {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    describe(&c.cgroup),
                    fmt_ns(c.throttled_ms * 1_000_000),
                    c.episodes,
                    fmt_ns(c.reclaim_ms * 1_000_000),
                    fmt_ns(c.sleep_ms * 1_000_000),
                    c.over_high
                        .iter()
                        .map(|p| short(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            self.more(&mut s, "cgroups");
            s.push('\n');
        }
        if !self.tasks.is_empty() {
            let _ = writeln!(s, "## Processes by throttle time\n");
            let _ = writeln!(s, "| process | cgroup | throttled | episodes |");
            let _ = writeln!(s, "|---|---|---|---|");
            for t in &self.tasks {
                let _ = writeln!(
                    s,
                    "| {}[{}] | {} | {} | {} |",
                    t.comm,
                    t.pid,
                    describe(&t.cgroup),
                    fmt_ns(t.throttled_ms * 1_000_000),
                    t.episodes
                );
            }
            s.push('\n');
        }
        if !self.evidence.is_empty() {
            let _ = writeln!(s, "## Against the kernel's counters\n");
            let _ = writeln!(
                s,
                "memtrace's throttled time (cgroup and below) next to memory.pressure and memory.events, between the cgroup's first and last sample.\n"
            );
            let _ = writeln!(
                s,
                "| cgroup | memtrace | PSI some | PSI full | difference | memory.events high | OOM kills |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|");
            let dur = |v: Option<u64>| v.map_or(NA.to_string(), |v| fmt_ns(v * 1_000_000));
            let num = |v: Option<u64>| v.map_or(NA.to_string(), |v| v.to_string());
            for e in &self.evidence {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    describe(&e.cgroup),
                    dur(e.memtrace_ms),
                    dur(e.psi_some_ms),
                    dur(e.psi_full_ms),
                    e.diff_vs_some_pct
                        .map_or(NA.to_string(), |d| format!("{d:+.1}%")),
                    num(e.memory_events_high),
                    num(e.oom_kills)
                );
            }
            self.more(&mut s, "evidence");
            let _ = writeln!(
                s,
                "\n{NA}: not measured on this system (cgroup v1 has no memory.pressure or memory.events; a kernel without the throttle probe has no memtrace total)."
            );
            s.push('\n');
        }
        if !self.reclaim.is_empty() {
            let _ = writeln!(s, "## Reclaim latency\n");
            let _ = writeln!(s, "| cgroup | passes | reclaimed | p50 | p90 | p99 | max |");
            let _ = writeln!(s, "|---|---|---|---|---|---|---|");
            for r in &self.reclaim {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} pages | {} | {} | {} | {} |",
                    describe(&r.cgroup),
                    r.passes,
                    r.pages,
                    fmt_ns(r.p50_us * 1_000),
                    fmt_ns(r.p90_us * 1_000),
                    fmt_ns(r.p99_us * 1_000),
                    fmt_ns(r.max_us * 1_000)
                );
            }
            self.more(&mut s, "reclaim");
            s.push('\n');
        }
        let _ = writeln!(s, "## OOM kills and agent actions\n");
        if self.oom_kills.is_empty() && self.actions.is_empty() {
            let _ = writeln!(s, "None.\n");
        }
        for o in &self.oom_kills {
            let _ = writeln!(
                s,
                "- {} OOM kill: {}[{}] in {}{}{}",
                hms(&o.time),
                o.comm,
                o.pid,
                describe(&o.cgroup),
                o.rss_bytes
                    .map(|b| format!(", rss {}", fmt_bytes(b)))
                    .unwrap_or_default(),
                o.oom_cgroup
                    .as_ref()
                    .map(|c| format!(", {} ran out", short(c)))
                    .unwrap_or_default()
            );
        }
        for a in &self.actions {
            let _ = writeln!(
                s,
                "- {} agent {}: {} {}",
                hms(&a.time),
                a.kind,
                describe(&a.cgroup),
                a.details
            );
        }
        self.more(&mut s, "oom_kills");
        self.more(&mut s, "actions");
        if !self.oom_kills.is_empty() || !self.actions.is_empty() {
            s.push('\n');
        }
        if !self.host_series.is_empty() {
            let _ = writeln!(s, "## Host memory over time (UTC)\n");
            let _ = writeln!(
                s,
                "| time | MemAvailable | swap free | PSI some | PSI full |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|");
            for h in &self.host_series {
                let pct = |v: Option<f64>| v.map_or(NA.to_string(), |v| format!("{v:.1}%"));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    hms(&h.time),
                    fmt_bytes(h.mem_available_bytes),
                    if h.swap_total_bytes == 0 {
                        "no swap".to_string()
                    } else {
                        fmt_bytes(h.swap_free_bytes)
                    },
                    pct(h.psi_some_pct),
                    pct(h.psi_full_pct)
                );
            }
            s.push('\n');
        }
        let _ = writeln!(s, "## Integrity\n");
        let i = &self.integrity;
        let _ = writeln!(s, "- {} chunks read", i.chunks);
        let lost: u64 = i.lost_events.values().sum();
        let _ = writeln!(
            s,
            "- {} events lost in the kernel{}",
            lost,
            if lost > 0 {
                format!(
                    " ({})",
                    i.lost_events
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "- {} damaged range(s) skipped, {} bytes",
            i.damaged_chunks, i.damaged_bytes
        );
        for d in &i.damaged {
            let _ = writeln!(
                s,
                "  - at byte {}: {} ({} bytes)",
                d.offset, d.reason, d.len
            );
        }
        if let Some(n) = self.omitted.get("damaged") {
            let _ = writeln!(
                s,
                "  - and {n} more (see --json for the first {})",
                super::MAX_DAMAGE_ROWS
            );
        }
        if let Some(t) = i.torn_tail_at {
            let _ = writeln!(
                s,
                "- the file ends in an incomplete chunk at byte {t} (the recorder was stopped mid-write)"
            );
        }
        if i.unknown_records > 0 {
            let _ = writeln!(
                s,
                "- {} records of kinds this memtrace does not know",
                i.unknown_records
            );
        }
        s
    }
}
