//! The report as one self-contained HTML file (`memtrace report --html`):
//! the pictures of [`super::series`] as inline SVG, then the report's main
//! tables. No scripts, no fonts or styles from elsewhere: it opens from a
//! ticket attachment on a machine without network.

use std::fmt::Write as _;

use super::Report;
use super::series::{Charts, Mark};
use crate::clock::{fmt_bytes, fmt_ns};
use crate::names::describe;

const W: f64 = 900.0;
const H: f64 = 150.0;
/// Room for the y labels on the left and the time labels below.
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// Colours, named by what they draw (the test looks for the first two).
pub const THROTTLED: &str = "#d62728";
pub const CURRENT: &str = "#1f77b4";
const HIGH: &str = "#ff7f0e";
const MAX: &str = "#7f7f7f";
const PSI_SOME: &str = "#9467bd";
const PSI_FULL: &str = "#8c564b";
const SWAP: &str = "#2ca02c";

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

struct Line<'a> {
    label: &'a str,
    color: &'a str,
    values: Vec<Option<f64>>,
    /// Filled to the axis (the throttled share) or a line.
    area: bool,
}

/// `12:00:05` style labels of seconds from the start.
fn time_label(charts: &Charts, t: f64) -> String {
    // Checked all the way: a forged file's times must not panic here.
    let at = humantime::parse_rfc3339(&charts.start)
        .ok()
        .zip(std::time::Duration::try_from_secs_f64(t.max(0.0)).ok())
        .and_then(|(b, d)| b.checked_add(d));
    match at {
        Some(at) => {
            let s = humantime::format_rfc3339_seconds(at).to_string();
            s.get(11..19).unwrap_or(&s).to_string()
        }
        None => format!("{t:.0}s"),
    }
}

fn chart(
    out: &mut String,
    title: &str,
    charts: &Charts,
    lines: &[Line<'_>],
    y_max: f64,
    y_fmt: &dyn Fn(f64) -> String,
    marks: &[Mark],
) {
    let t_end = charts.times.last().copied().unwrap_or(0.0) + charts.step_s;
    let x = |t: f64| LEFT + (t / t_end.max(1e-9)) * (W - LEFT - 10.0);
    let y_max = if y_max > 0.0 { y_max } else { 1.0 };
    let y = |v: f64| TOP + (1.0 - (v / y_max).clamp(0.0, 1.0)) * (H - TOP - BOTTOM);
    let _ = writeln!(
        out,
        r#"<figure><figcaption>{}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    // Axes, grid and labels.
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
        W - LEFT - 10.0,
        H - TOP - BOTTOM
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = y_max * frac;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{0}" y1="{1:.1}" y2="{1:.1}" stroke="#e4e4e4"/><text x="{2}" y="{3:.1}" text-anchor="end" font-size="11">{4}</text>"##,
            W - 10.0,
            y(v),
            LEFT - 4.0,
            y(v) + 4.0,
            esc(&y_fmt(v))
        );
    }
    for k in 0..=4 {
        let t = t_end * f64::from(k) / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
            x(t).clamp(LEFT + 20.0, W - 40.0),
            H - 6.0,
            esc(&time_label(charts, t))
        );
    }
    for l in lines {
        // One path per run of measured points: a gap stays a gap.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, v) in l.values.iter().enumerate() {
            match (v, charts.times.get(i)) {
                (Some(v), Some(&t)) => runs.last_mut().map_or((), |r| r.push((t, *v))),
                _ => {
                    if runs.last().is_some_and(|r| !r.is_empty()) {
                        runs.push(Vec::new());
                    }
                }
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let mut d = String::new();
            for (i, (t, v)) in run.iter().enumerate() {
                // Steps: a value holds for its whole interval.
                let (x0, x1) = (x(*t), x(t + charts.step_s));
                let _ = write!(
                    d,
                    "{}{x0:.1},{:.1} L{x1:.1},{:.1} ",
                    if i == 0 { "M" } else { "L" },
                    y(*v),
                    y(*v)
                );
            }
            if l.area {
                let (a, b) = (run[0].0, run[run.len() - 1].0 + charts.step_s);
                let _ = write!(d, "L{:.1},{:.1} L{:.1},{:.1} Z", x(b), y(0.0), x(a), y(0.0));
                let _ = writeln!(
                    out,
                    r#"<path d="{d}" fill="{}" fill-opacity="1" stroke="{}" stroke-width="1"/>"#,
                    l.color, l.color
                );
            } else {
                let _ = writeln!(
                    out,
                    r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2"/>"#,
                    l.color
                );
            }
        }
    }
    for m in marks {
        let color = if m.kind == "oom" { "#000" } else { "#e377c2" };
        let _ = writeln!(
            out,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{1}" stroke="{color}" stroke-width="2" stroke-dasharray="4 3"><title>{2}</title></line><text x="{3:.1}" y="{4}" font-size="11" fill="{color}">{5}</text>"#,
            x(m.t),
            H - BOTTOM,
            esc(&m.text),
            x(m.t) + 3.0,
            TOP + 11.0,
            if m.kind == "oom" { "OOM" } else { "kill" }
        );
    }
    out.push_str("</svg>");
    out.push_str(r#"<div class="legend">"#);
    for l in lines {
        let _ = write!(
            out,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            l.color,
            esc(l.label)
        );
    }
    out.push_str("</div></figure>\n");
}

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

fn bytes(v: f64) -> String {
    fmt_bytes(v as u64)
}

fn floats<T: Copy>(v: &[Option<T>], f: impl Fn(T) -> f64) -> Vec<Option<f64>> {
    v.iter().map(|x| x.map(&f)).collect()
}

impl Report {
    /// One self-contained HTML page: pictures first, then the tables.
    pub fn html(&self) -> String {
        let mut s = String::new();
        let title = format!("memtrace report: {} ({})", self.host, self.kernel);
        let _ = writeln!(
            s,
            r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{}</title><style>
body{{font-family:sans-serif;margin:24px;color:#222;max-width:960px}}
h1{{font-size:20px}} h2{{font-size:17px;margin-top:28px}} h3{{font-size:15px}}
figure{{margin:8px 0 14px 0}} figcaption{{font-size:13px;font-weight:bold}}
.legend span{{font-size:12px;margin-right:14px}} .legend i{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}
.na{{color:#888}} .warn{{background:#fff3cd;padding:6px}}
</style></head><body>"#,
            esc(&title)
        );
        let _ = writeln!(s, "<h1>{}</h1>", esc(&title));
        let _ = writeln!(
            s,
            "<p>Recorded {} to {} (UTC, {:.0} s).</p>",
            esc(self.start.as_deref().unwrap_or("n/a")),
            esc(self.end.as_deref().unwrap_or("n/a")),
            self.duration_s
        );
        if !self.throttle_probe {
            let _ = writeln!(
                s,
                r#"<p class="warn">Throttle episodes were not measured on this kernel: the throttled share is n/a.</p>"#
            );
        }
        for d in &self.degraded {
            let _ = writeln!(s, r#"<p class="warn">degraded: {}</p>"#, esc(d));
        }
        let c = &self.charts;
        if c.times.is_empty() {
            let _ = writeln!(s, "<p>The recording holds no records: nothing to draw.</p>");
        }
        for g in &c.cgroups {
            let _ = writeln!(s, "<h2>{}</h2>", esc(&describe(&g.cgroup)));
            chart(
                &mut s,
                "throttled share (memory.high throttle)",
                c,
                &[Line {
                    label: "throttled share",
                    color: THROTTLED,
                    values: g.throttled.clone(),
                    area: true,
                }],
                1.0,
                &pct,
                &g.marks,
            );
            let top = g
                .current
                .iter()
                .chain(&g.high)
                .chain(&g.max)
                .flatten()
                .copied()
                .max()
                .unwrap_or(0) as f64
                * 1.05;
            chart(
                &mut s,
                "memory.current against memory.high and memory.max",
                c,
                &[
                    Line {
                        label: "memory.current",
                        color: CURRENT,
                        values: floats(&g.current, |v| v as f64),
                        area: false,
                    },
                    Line {
                        label: "memory.high",
                        color: HIGH,
                        values: floats(&g.high, |v| v as f64),
                        area: false,
                    },
                    Line {
                        label: "memory.max",
                        color: MAX,
                        values: floats(&g.max, |v| v as f64),
                        area: false,
                    },
                ],
                top,
                &bytes,
                &g.marks,
            );
            if g.psi_some.iter().any(Option::is_some) {
                chart(
                    &mut s,
                    "memory.pressure some",
                    c,
                    &[Line {
                        label: "PSI some",
                        color: PSI_SOME,
                        values: g.psi_some.clone(),
                        area: false,
                    }],
                    1.0,
                    &pct,
                    &g.marks,
                );
            } else {
                let _ = writeln!(
                    s,
                    r#"<p class="na">memory.pressure: n/a (not measured here)</p>"#
                );
            }
        }
        if !c.times.is_empty() {
            let h = &c.host;
            let _ = writeln!(s, "<h2>Host</h2>");
            chart(
                &mut s,
                "MemAvailable and swap used",
                c,
                &[
                    Line {
                        label: "MemAvailable",
                        color: CURRENT,
                        values: floats(&h.mem_available, |v| v as f64),
                        area: false,
                    },
                    Line {
                        label: if h.swap_total == 0 {
                            "swap used (no swap)"
                        } else {
                            "swap used"
                        },
                        color: SWAP,
                        values: floats(&h.swap_used, |v| v as f64),
                        area: false,
                    },
                ],
                h.mem_total.max(h.swap_total) as f64,
                &bytes,
                &[],
            );
            if h.psi_some.iter().any(Option::is_some) {
                chart(
                    &mut s,
                    "host memory PSI",
                    c,
                    &[
                        Line {
                            label: "some",
                            color: PSI_SOME,
                            values: h.psi_some.clone(),
                            area: false,
                        },
                        Line {
                            label: "full",
                            color: PSI_FULL,
                            values: h.psi_full.clone(),
                            area: false,
                        },
                    ],
                    1.0,
                    &pct,
                    &[],
                );
            } else {
                let _ = writeln!(s, r#"<p class="na">host PSI: n/a (not measured here)</p>"#);
            }
        }
        self.html_tables(&mut s);
        s.push_str("</body></html>\n");
        s
    }

    fn html_tables(&self, s: &mut String) {
        let na = |v: Option<String>| v.unwrap_or_else(|| r#"<span class="na">n/a</span>"#.into());
        if !self.incidents.is_empty() {
            let _ = writeln!(
                s,
                "<h2>Throttle incidents (UTC)</h2><table><tr><th>cgroup</th><th>start</th><th>end</th><th>throttled</th><th>peak 1 s share</th><th>most throttled</th></tr>"
            );
            for i in &self.incidents {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td><td>{}</td></tr>",
                    esc(&describe(&i.cgroup)),
                    esc(i.start.get(11..19).unwrap_or(&i.start)),
                    esc(i.end.get(11..19).unwrap_or(&i.end)),
                    fmt_ns(i.throttled_ms * 1_000_000),
                    i.peak_share_pct,
                    esc(i.top_task.as_deref().unwrap_or("-"))
                );
            }
            s.push_str("</table>\n");
        }
        if !self.evidence.is_empty() {
            let _ = writeln!(
                s,
                "<h2>Against the kernel's counters</h2><table><tr><th>cgroup</th><th>memtrace</th><th>PSI some</th><th>PSI full</th><th>memory.events high</th><th>OOM kills</th></tr>"
            );
            let dur = |v: Option<u64>| na(v.map(|v| fmt_ns(v * 1_000_000)));
            let num = |v: Option<u64>| na(v.map(|v| v.to_string()));
            for e in &self.evidence {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&describe(&e.cgroup)),
                    dur(e.memtrace_ms),
                    dur(e.psi_some_ms),
                    dur(e.psi_full_ms),
                    num(e.memory_events_high),
                    num(e.oom_kills)
                );
            }
            s.push_str("</table>\n");
        }
        if !self.oom_kills.is_empty() || !self.actions.is_empty() {
            let _ = writeln!(s, "<h2>OOM kills and agent actions (UTC)</h2><ul>");
            for o in &self.oom_kills {
                let _ = writeln!(
                    s,
                    "<li>{} OOM kill: {}[{}] in {}</li>",
                    esc(o.time.get(11..19).unwrap_or(&o.time)),
                    esc(&o.comm),
                    o.pid,
                    esc(&describe(&o.cgroup))
                );
            }
            for a in &self.actions {
                let _ = writeln!(
                    s,
                    "<li>{} agent {}: {}</li>",
                    esc(a.time.get(11..19).unwrap_or(&a.time)),
                    esc(&a.kind),
                    esc(&describe(&a.cgroup))
                );
            }
            s.push_str("</ul>\n");
        }
        let i = &self.integrity;
        let _ = writeln!(
            s,
            "<h2>Integrity</h2><p>{} chunks read; {} damaged range(s), {} bytes skipped{}.</p>",
            i.chunks,
            i.damaged_chunks,
            i.damaged_bytes,
            if i.torn_tail_at.is_some() {
                "; the file ends mid-chunk"
            } else {
                ""
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_cgroup_name_may_hold() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn an_empty_report_is_a_page_that_says_so() {
        let r = super::super::build(&crate::record::reader::Recording::default());
        let h = r.html();
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.contains("nothing to draw"));
        assert!(!h.contains("<svg"));
        assert!(h.ends_with("</html>\n"));
    }
}
