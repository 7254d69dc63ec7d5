//! `cargo xtask shootout`: the first incident against every guard, one
//! Debian guest boot per guard, in one run. Prints the table, writes it
//! with the command to reproduce into docs/benchmarks.md, and draws the
//! server's latency over time, one line per guard, into
//! docs/shootout-latency.svg.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::incident::{self, Guard, Timing};
use crate::vm::debian;
use crate::{cmd, setup};

#[derive(Args, Debug)]
pub struct ShootoutArgs {
    /// Debian suite of the guest: bookworm (6.1), trixie (6.12), bullseye (5.10).
    #[arg(long, default_value = "bookworm")]
    pub suite: String,
    /// Guard to run (repeatable); default: all, in the table's order.
    #[arg(long = "guard", value_name = "NAME")]
    pub guards: Vec<String>,
    /// Seconds to watch after the plateau when nothing ends the incident.
    #[arg(long, default_value_t = 75.0)]
    pub observe: f64,
    /// Print the table only; leave docs/ alone.
    #[arg(long)]
    pub no_docs: bool,
    /// Boot nothing: redo the table, docs and picture from the last run's
    /// results (target/debian/runs/SUITE/shootout-GUARD/result.json).
    #[arg(long)]
    pub replot: bool,
}

const BEGIN: &str = "<!-- shootout:begin (written by `cargo xtask shootout`) -->";
const END: &str = "<!-- shootout:end -->";
const SVG: &str = "docs/shootout-latency.svg";

pub fn run(args: &ShootoutArgs) -> Result<()> {
    setup::run()?;
    let suite = debian::suite(&args.suite)?;
    let guards: Vec<Guard> = if args.guards.is_empty() {
        incident::guards()
    } else {
        args.guards
            .iter()
            .map(|g| incident::guard(g))
            .collect::<Result<_>>()?
    };
    if args.replot {
        let mut results = Vec::new();
        for g in &guards {
            let path = cmd::workspace_root()
                .join("target/debian/runs")
                .join(suite.name)
                .join(format!("shootout-{}", g.name))
                .join("result.json");
            let Ok(text) = std::fs::read_to_string(&path) else {
                eprintln!(
                    "shootout: no result for {} ({}); left out",
                    g.name,
                    path.display()
                );
                continue;
            };
            let r: Value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a result: run the shoot-out again",
                    path.display()
                )
            })?;
            results.push((g, r));
        }
        return finish(args, &results);
    }
    let release = incident::build_binaries()?;
    let image = debian::image::image(&suite)?;
    let timing = Timing {
        observe_s: args.observe,
        // Long enough to see a guard kill again after a restart.
        after_recovery_s: 30.0,
    };
    let mut results = Vec::new();
    for g in &guards {
        if !g.available_on(&image) {
            eprintln!(
                "shootout: {} is not packaged for {}; skipped",
                g.name, suite.name
            );
            continue;
        }
        eprintln!("\n==> shootout: {} ({})", g.label, g.config);
        let r = incident::run(
            &image,
            g,
            &release,
            &format!("shootout-{}", g.name),
            &timing,
        )
        .with_context(|| format!("the {} run", g.name))?;
        print_logs(g, &r);
        results.push((g, r));
    }
    finish(args, &results)
}

/// The table, the picture and the docs from the results.
fn finish(args: &ShootoutArgs, results: &[(&Guard, Value)]) -> Result<()> {
    if results.is_empty() {
        bail!("no guard ran");
    }
    let table = table(results);
    println!("\n{table}");
    let svg = draw(results);
    let root = cmd::workspace_root();
    std::fs::write(root.join("target/debian/shootout-latency.svg"), &svg)?;
    if args.no_docs {
        eprintln!("shootout: picture in target/debian/shootout-latency.svg (docs left alone)");
        return Ok(());
    }
    std::fs::write(root.join(SVG), &svg)?;
    let section = section(results, &table, &args.suite);
    let path = root.join("docs/benchmarks.md");
    let text = std::fs::read_to_string(&path).context("reading docs/benchmarks.md")?;
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &text[..a], section, &text[b + END.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(&path, new)?;
    eprintln!("shootout: table written to docs/benchmarks.md, picture to {SVG}");
    Ok(())
}

/// The guard's own journal, printed so a reader checks it ran as meant.
fn print_logs(g: &Guard, r: &Value) {
    eprintln!("--- {}: guard units {}", g.name, r["guard_state"]);
    for (when, key) in [("start", "probes"), ("end", "probes_end")] {
        for (cmdline, lines) in r[key].as_object().into_iter().flatten() {
            eprintln!("--- $ {cmdline} (at the {when})");
            for l in lines.as_array().into_iter().flatten().take(40) {
                eprintln!("    {}", l.as_str().unwrap_or(""));
            }
        }
    }
    if let Some(j) = r["journal"].as_object() {
        for (unit, lines) in j {
            let lines: Vec<&str> = lines
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            eprintln!(
                "--- journal of {unit} ({} lines, the last 60):",
                lines.len()
            );
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("    {l}");
            }
        }
    }
}

fn secs(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Whether a victim was in the unit. A process that lived too briefly for
/// the census has no known cgroup: `t3` and `scanner` run only in the
/// unit (a restarted server killed again), anything else is counted
/// outside.
fn in_unit(k: &Value) -> bool {
    match k["in_unit"].as_bool() {
        Some(b) => b,
        None => k["comm"] == "t3" || k["comm"] == "scanner",
    }
}

/// What the kernel saw sent: `scanner (pid 4) by memtrace, SIGKILL`.
fn kills_text(r: &Value, want_in_unit: bool) -> String {
    let kills: Vec<String> = incident::kills(r)
        .into_iter()
        .filter(|k| in_unit(k) == want_in_unit)
        .map(|k| {
            format!(
                "{}{} (pid {}) by {}, {}",
                if k["cgroup"].is_null() {
                    "restarted "
                } else {
                    ""
                },
                k["comm"].as_str().unwrap_or("?"),
                k["pid"],
                k["killer_comm"].as_str().unwrap_or("?"),
                if k["sig"] == 9 { "SIGKILL" } else { "SIGTERM" }
            )
        })
        .collect();
    if kills.is_empty() {
        "none".into()
    } else {
        kills.join("; ")
    }
}

fn survived_text(r: &Value) -> String {
    if r["server_survived"].as_bool() == Some(true) {
        return "yes".into();
    }
    let restarts = r["unit_restarts"].as_str().unwrap_or("0");
    if r["main_pid_after"] != r["main_pid"] && r["unit_state_after"] == "active" {
        format!(
            "no: killed, restarted by systemd ({restarts} restart{})",
            if restarts == "1" { "" } else { "s" }
        )
    } else {
        format!(
            "no (unit {})",
            r["unit_state_after"].as_str().unwrap_or("?")
        )
    }
}

/// From the plateau to the start of the last run of normal replies, if it
/// lasted to the end of the run (at least [`incident::RECOVERY_RUN`]
/// replies): a recovery the guard did not undo.
fn lasting_recovery_s(r: &Value) -> Option<f64> {
    let p = r["plateau_ms"].as_f64()?;
    let normal = r["normal_ms"].as_f64()?;
    let reqs: Vec<(f64, f64, bool)> = r["latency"]
        .as_array()?
        .iter()
        .filter_map(|s| {
            let a = s.as_array()?;
            Some((
                a.first()?.as_f64()?,
                a.get(1)?.as_f64()?,
                a.get(2)?.as_u64()? == 1,
            ))
        })
        .filter(|(at, _, _)| *at >= p)
        .collect();
    let bad = reqs
        .iter()
        .rposition(|(_, ms, stalled)| *stalled || *ms > normal);
    let from = bad.map_or(0, |i| i + 1);
    (reqs.len() - from >= incident::RECOVERY_RUN).then(|| (reqs[from].0 - p) / 1e3)
}

fn recovery_text(r: &Value) -> String {
    let lasting = lasting_recovery_s(r);
    match secs(&r["plateau_to_recovery_s"]) {
        Some(s) => match lasting {
            Some(l) if (l - s).abs() < 0.05 => format!("{s:.1} s"),
            Some(l) => format!("{s:.1} s, relapsed; for good at {l:.1} s"),
            None => format!("{s:.1} s, then down again"),
        },
        None if r["plateau_ms"].is_null() => "no plateau".into(),
        None => {
            let watched = (r["end_ms"].as_f64().unwrap_or(0.0)
                - r["plateau_ms"].as_f64().unwrap_or(0.0))
                / 1e3;
            format!("never (watched {watched:.0} s)")
        }
    }
}

fn table(results: &[(&Guard, Value)]) -> String {
    let mut t = String::from(
        "| guard | plateau → recovery | client stalls (> 1 s) | worst gap | killed in the unit | killed outside the unit | server survived |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (g, r) in results {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} s | {} | {} | {} |",
            g.label,
            recovery_text(r),
            r["stalls"],
            r["worst_gap_ms"].as_f64().unwrap_or(0.0) / 1e3,
            kills_text(r, true),
            kills_text(r, false),
            survived_text(r)
        );
    }
    t
}

/// Lines of a guard's journal that show how it ran: what it read at the
/// start, then what it saw and did (each message once).
fn telling_lines(g: &Guard, r: &Value) -> Vec<String> {
    let (start, action): (&[&str], &[&str]) = match g.name {
        "earlyoom" => (
            &["Preferring", "Will avoid", "sending SIGTERM when"],
            &["mem avail", "sending SIG", "escalating"],
        ),
        "systemd-oomd" => (&["No swap"], &["Considered", "Killed", "Pressure:"]),
        "oomd" | "oomd-aggressive" => (
            &["DetectorGroup=", "Running oomd"],
            &["is over the threshold", "Picked", "Killed"],
        ),
        "nohang" => (
            &["psi_checking_enabled", "Monitoring has started"],
            &["Do not measure", "Implement", "SIGTERM", "SIGKILL"],
        ),
        "memtrace" => (&["memtrace agent ready"], &["BREACH", "KILL", "exited"]),
        _ => (&[], &[]),
    };
    let lines: Vec<&str> = r["journal"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(u, _)| !u.starts_with("t3-serve"))
        .flat_map(|(_, l)| l.as_array().into_iter().flatten().filter_map(Value::as_str))
        .collect();
    let message = |l: &str| {
        let m = l.split_once("]: ").map_or(l, |(_, m)| m);
        // Numbers change from line to line; the message's words do not.
        m.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
    };
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (needles, max) in [(start, 3usize), (action, 5usize)] {
        let mut n = 0;
        for l in &lines {
            if n < max && needles.iter().any(|x| l.contains(x)) && seen.insert(message(l)) {
                out.push(l.chars().take(220).collect::<String>());
                n += 1;
            }
        }
    }
    // The last of what it saw (earlyoom's final memory report).
    if let Some(last) = lines
        .iter()
        .rev()
        .find(|l| action.iter().any(|x| l.contains(x)))
    {
        let last: String = last.chars().take(220).collect();
        if !out.contains(&last) {
            out.push(last);
        }
    }
    // systemd-oomd's view at the end of the incident says why it acted or
    // not; memtrace's check-config what it was told. (oomd's own dump of
    // its configuration is in its journal lines above.)
    let probes = match g.name {
        "systemd-oomd" => &r["probes_end"],
        "memtrace" => &r["probes"],
        _ => &Value::Null,
    };
    if let Some(p) = probes.as_object() {
        for (cmdline, lines) in p {
            out.push(format!("$ {cmdline}"));
            for l in lines
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .skip_while(|l| cmdline == "oomctl" && !l.contains("Memory Pressure Monitored"))
                .take(if cmdline == "oomctl" { 9 } else { 6 })
            {
                out.push(format!("  {}", l.chars().take(200).collect::<String>()));
            }
        }
    }
    out
}

fn section(results: &[(&Guard, Value)], table: &str, suite: &str) -> String {
    let first = &results[0].1;
    let date = cmd::output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "## The first incident against the guards (Debian guest, systemd)\n\n\
         Reproduce (as root; one boot per guard, about 15 minutes):\n\n\
         ```sh\ncargo xtask shootout            # --suite trixie|bullseye, --guard NAME, --no-docs\n```\n\n\
         Measured on {date} in a {} guest ({} kernel {}, 512 MiB, 2 vCPUs, qemu TCG) on the \
         project's 2-core CI machine kind. The unit is the seeds' `t3-serve@.service` scaled \
         to the guest: `MemoryHigh={}M`, `MemoryMax={}M`, `MemorySwapMax=0`, \
         `OOMPolicy=continue`. Its server (`/usr/bin/t3`, memtrace's stand-in: one event loop, \
         each request allocates 64 KiB) spawns a child that grows to {} MiB, between the two \
         limits, and keeps scanning its memory. A client outside the unit sends a request every \
         {} ms on one connection; a reply later than {} ms is a stall (the t3 clients' 20 s \
         watchdog, scaled), after which it reconnects. The plateau is the moment the unit's \
         memory.current passed memory.high; recovery is the first of {} replies in a row \
         within the server's normal latency (four times its baseline median, at least 50 ms), \
         after its first slow one. Kills \
         are the kernel's own record (the `signal:signal_generate` tracepoint, SIGKILL and \
         SIGTERM), whoever sent them.\n",
        first["os"].as_str().unwrap_or(suite),
        first["kernel_package"].as_str().unwrap_or("?"),
        first["kernel"].as_str().unwrap_or("?"),
        incident::HIGH_MB,
        incident::MAX_MB,
        incident::SCAN_MB,
        incident::INTERVAL_MS,
        incident::WATCHDOG_MS,
        incident::RECOVERY_RUN,
    );
    s.push_str(table);
    let _ = writeln!(
        s,
        "\n![The server's latency over time, one line per guard](shootout-latency.svg)\n"
    );
    let _ = writeln!(
        s,
        "How each guard was configured, and what it logged in the guest:\n"
    );
    for (g, r) in results {
        let _ = writeln!(s, "- **{}**: {}.", g.label, g.config);
        let lines = telling_lines(g, r);
        if !lines.is_empty() {
            let _ = writeln!(s, "\n  ```");
            for l in lines {
                let _ = writeln!(s, "  {l}");
            }
            let _ = writeln!(s, "  ```");
        }
    }
    let _ = writeln!(s, "{END}");
    s
}

/// One line per guard: latency (log scale) against seconds from the
/// plateau. Hand-written SVG: a few paths, a legend and the plateau mark.
fn draw(results: &[(&Guard, Value)]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 480.0;
    const L: f64 = 70.0;
    const R: f64 = 200.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 8] = [
        "#444444", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#d62728", "#17becf",
    ];
    let (x0, mut x1) = (-incident::BASELINE_S, 10.0f64);
    let mut y_max: f64 = 1000.0;
    let mut lines = Vec::new();
    for (g, r) in results {
        let Some(p) = r["plateau_ms"].as_f64() else {
            continue;
        };
        let pts: Vec<(f64, f64, bool)> = r["latency"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let a = s.as_array()?;
                Some((
                    (a.first()?.as_f64()? - p) / 1e3,
                    a.get(1)?.as_f64()?.max(0.5),
                    a.get(2)?.as_u64()? == 1,
                ))
            })
            .filter(|(t, _, _)| *t >= x0)
            .collect();
        // The worst reply of each second: every request's line is noise
        // at 10 per second, the worst one is what a user feels.
        let mut bins: std::collections::BTreeMap<i64, f64> = std::collections::BTreeMap::new();
        for (t, ms, _) in &pts {
            let b = bins.entry(t.floor() as i64).or_insert(0.0);
            *b = b.max(*ms);
        }
        let pts: Vec<(f64, f64, bool)> = bins
            .into_iter()
            .map(|(b, ms)| (b as f64 + 0.5, ms, false))
            .collect();
        if let Some(last) = pts.last() {
            x1 = x1.max(last.0);
        }
        y_max = y_max.max(pts.iter().map(|p| p.1).fold(0.0, f64::max));
        lines.push((g.label, pts));
    }
    let x1 = (x1 / 10.0).ceil() * 10.0;
    let (ly0, ly1) = (0.0f64, y_max.log10().ceil());
    let px = |t: f64| L + (t - x0) / (x1 - x0) * (W - L - R);
    let py = |ms: f64| T + (1.0 - (ms.log10() - ly0) / (ly1 - ly0)) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{L}" y="22" font-size="15" font-weight="bold">The server's worst response each second in the livelock, one line per guard</text>"#
    );
    // Axes and grid.
    for d in 0..=(ly1 as i32) {
        let ms = 10f64.powi(d);
        let y = py(ms);
        let label = if ms >= 1000.0 {
            format!("{} s", ms / 1000.0)
        } else {
            format!("{ms} ms")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0
        );
    }
    let mut t = (x0 / 10.0).ceil() * 10.0;
    while t <= x1 {
        let x = px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{T}" y2="{}" stroke="#eeeeee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - B,
            H - B + 16.0,
            (t.round() as i64)
        );
        t += 10.0;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#888888"/>"##,
        W - L - R,
        H - T - B
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds from the plateau (memory.current over MemoryHigh)</text>"#,
        (L + W - R) / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">response latency (log scale)</text>"#,
        (T + H - B) / 2.0
    );
    // The plateau and the watchdog.
    let xp = px(0.0);
    let _ = writeln!(
        s,
        r##"<line x1="{xp:.1}" x2="{xp:.1}" y1="{T}" y2="{}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6,4"/><text x="{:.1}" y="{}" fill="#d62728">plateau</text>"##,
        H - B,
        xp + 4.0,
        T + 14.0
    );
    let yw = py(incident::WATCHDOG_MS as f64);
    let _ = writeln!(
        s,
        r##"<line x1="{L}" x2="{}" y1="{yw:.1}" y2="{yw:.1}" stroke="#999999" stroke-dasharray="2,3"/><text x="{}" y="{:.1}" fill="#777777">client watchdog</text>"##,
        W - R,
        L + 4.0,
        yw - 4.0
    );
    for (i, (label, pts)) in lines.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let d: String = pts
            .iter()
            .enumerate()
            .map(|(j, (t, ms, _))| {
                format!(
                    "{}{:.1},{:.1}",
                    if j == 0 { "M" } else { " L" },
                    px(*t),
                    py(*ms)
                )
            })
            .collect();
        // memtrace's line on top and thicker: it is the one that drops.
        let width = if i + 1 == lines.len() { 3.0 } else { 1.8 };
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{c}" stroke-width="{width}" stroke-linejoin="round"/>"#
        );
        let ly = T + 10.0 + i as f64 * 20.0;
        let lx = W - R + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{label}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0
        );
    }
    let ly = T + 10.0 + lines.len() as f64 * 20.0 + 16.0;
    for (i, text) in [
        "On the watchdog line:",
        "no reply within 1 s; the",
        "client reconnects (a stall).",
        "Normal: under 50 ms.",
    ]
    .iter()
    .enumerate()
    {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#555555">{text}</text>"##,
            W - R + 14.0,
            ly + i as f64 * 15.0
        );
    }
    s.push_str("</svg>\n");
    s
}
