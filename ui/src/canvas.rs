//! Drawing: a [`Snapshot`] and the [`App`] state into a ratatui frame.
//!
//! Everything that matters is readable without colour: selection is
//! reversed video, alarms are bold and labelled in words. Colour, when the
//! terminal has it and `NO_COLOR` is unset, only repeats what the text says.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};

use crate::app::{App, Mode};
use crate::fmt::{fmt_bytes, fmt_bytes_short, fmt_ns, fmt_us_short, pct};
use crate::snapshot::{CgroupRow, LogKind, LogLine, Snapshot, Source};

/// Colours on or off.
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set.
    pub fn from_env() -> Self {
        Self {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    /// Throttled shares: bold past a quarter, plus red/yellow in colour.
    fn share(&self, s: f64) -> Style {
        if s >= 0.5 {
            self.fg(Color::Red).add_modifier(Modifier::BOLD)
        } else if s >= 0.25 {
            self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else if s > 0.0 {
            self.fg(Color::Yellow)
        } else {
            Style::default()
        }
    }

    fn log(&self, k: LogKind) -> Style {
        match k {
            LogKind::Kill | LogKind::Oom | LogKind::Brake | LogKind::Breach => {
                self.fg(Color::Red).add_modifier(Modifier::BOLD)
            }
            LogKind::Warning | LogKind::Lost => self.fg(Color::Yellow),
            LogKind::Info => Style::default(),
        }
    }
}

/// Draws one frame.
pub fn draw(f: &mut Frame<'_>, app: &mut App, snap: &Snapshot, theme: Theme) {
    let area = f.area();
    let header_lines = header_lines(snap, app.paused, area.width, theme);
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(header_lines.len() as u16),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(header_lines), header);

    let rows = app.rows(snap);
    let selected = app.selected_index(&rows);
    if let Some(i) = selected {
        app.selected = Some(rows[i].id);
    }
    let detail_row = if app.detail {
        selected.map(|i| rows[i])
    } else {
        None
    };
    let (table_area, lower) = match detail_row {
        Some(_) => {
            let [t, d] = Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)])
                .areas(body);
            (t, d)
        }
        None => {
            let log_h = if body.height >= 16 { 7 } else { 4 }.min(body.height.saturating_sub(4));
            let [t, l] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(log_h)]).areas(body);
            (t, l)
        }
    };
    draw_table(f, table_area, app, snap, &rows, selected, theme);
    match detail_row {
        Some(r) => draw_detail(f, lower, app, r, theme),
        None => draw_log(f, lower, &snap.log, theme),
    }
    draw_footer(f, footer, app);
    if app.help {
        draw_help(f, area, app.mode);
    }
    if let Some(t) = &app.confirm_kill {
        let text = format!(
            "Kill {}[{}]{} with SIGKILL?\n\n y: kill   any other key: cancel",
            t.comm,
            t.pid,
            t.rss
                .map(|r| format!(" (RSS {})", fmt_bytes(r)))
                .unwrap_or_default()
        );
        let w = (text.lines().map(str::len).max().unwrap_or(20) as u16 + 4).min(area.width);
        let popup = centered(area, w, 5);
        f.render_widget(Clear, popup);
        f.render_widget(
            Paragraph::new(text).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" kill ")
                    .style(Style::default().add_modifier(Modifier::BOLD)),
            ),
            popup,
        );
    }
}

/// The header: what and where, the host's memory, and (when there is one)
/// the replay position and the degraded banner, wrapped to two lines.
fn header_lines(snap: &Snapshot, paused: bool, width: u16, theme: Theme) -> Vec<Line<'static>> {
    // A frozen picture must never say LIVE.
    let badge = match snap.source {
        Source::Live if paused => " PAUSED ",
        Source::Live => " LIVE ",
        Source::Replay { .. } => " REPLAY ",
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(
            badge,
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        ),
        Span::styled(" memtrace ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{}  kernel {}  throttle: {}  {} UTC",
            snap.host, snap.kernel, snap.probe_mode, snap.time
        )),
    ])];
    let swap = if snap.swap_total == 0 {
        "no swap".to_string()
    } else {
        format!(
            "swap {}/{}",
            fmt_bytes_short(snap.swap_free),
            fmt_bytes_short(snap.swap_total)
        )
    };
    let psi = |v: Option<f32>| v.map_or(NA.to_string(), |v| format!("{v:.1}%"));
    lines.push(Line::from(format!(
        "events {:.0}/s  lost {}  MemAvail {}/{}  {}  PSI some {} full {}",
        snap.events_per_s,
        snap.lost_events,
        fmt_bytes_short(snap.mem_available),
        fmt_bytes_short(snap.mem_total),
        swap,
        psi(snap.psi_some_avg10),
        psi(snap.psi_full_avg10)
    )));
    if let Source::Replay {
        file,
        at,
        position,
        speed,
        paused,
    } = &snap.source
    {
        lines.push(Line::styled(
            format!(
                "recording {file}  at {at} UTC  {:.0}% through  x{speed}  {}",
                position * 100.0,
                if *paused { "PAUSED" } else { "playing" }
            ),
            Style::default().add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(d) = snap.degraded.first() {
        let text = format!("DEGRADED: {d}");
        let w = usize::from(width.max(20));
        let style = theme.fg(Color::Yellow).add_modifier(Modifier::REVERSED);
        for l in wrap_words(&text, w).into_iter().take(2) {
            lines.push(Line::styled(l, style));
        }
    }
    lines
}

/// Greedy word wrap to `w` columns (a word longer than a line is cut).
fn wrap_words(text: &str, w: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let needed = cur.chars().count() + usize::from(!cur.is_empty()) + word.chars().count();
        if needed > w && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
        while cur.chars().count() > w {
            let head: String = cur.chars().take(w).collect();
            cur = cur.chars().skip(w).collect();
            out.push(head);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A table column: header, width, and its cell for a row.
struct Col {
    title: &'static str,
    width: u16,
    cell: fn(&CgroupRow, u16) -> String,
    style: fn(&CgroupRow, Theme) -> Style,
}

fn gauge(r: &CgroupRow, width: u16) -> String {
    let text = match (r.current, r.max.or(r.high)) {
        (Some(c), Some(l)) => format!("{}/{}", fmt_bytes_short(c), fmt_bytes_short(l)),
        (Some(c), None) => fmt_bytes_short(c),
        _ => "-".into(),
    };
    let bar_w = width.saturating_sub(text.chars().count() as u16 + 1) as usize;
    let (Some(c), Some(l)) = (r.current, r.max.or(r.high)) else {
        return text;
    };
    if bar_w < 3 || l == 0 {
        return text;
    }
    let filled = ((c as f64 / l as f64) * bar_w as f64)
        .round()
        .clamp(0.0, bar_w as f64) as usize;
    let high_at = match (r.high, r.max) {
        (Some(h), Some(m)) if m > 0 => Some(((h as f64 / m as f64) * bar_w as f64) as usize),
        _ => None,
    };
    let bar: String = (0..bar_w)
        .map(|i| {
            if Some(i) == high_at {
                '|'
            } else if i < filled {
                '#'
            } else {
                '.'
            }
        })
        .collect();
    format!("{text} {bar}")
}

/// What a value this system cannot measure reads as: never a 0.
const NA: &str = "n/a";

fn share(r: &CgroupRow, v: f64) -> String {
    if r.throttle_unmeasured {
        NA.into()
    } else {
        pct(v)
    }
}

const COLS: &[Col] = &[
    Col {
        title: "THR10s",
        width: 6,
        cell: |r, _| share(r, r.throttled_10s),
        style: |r, t| t.share(r.throttled_10s),
    },
    Col {
        title: "THR1s",
        width: 5,
        cell: |r, _| share(r, r.throttled_1s),
        style: |r, t| t.share(r.throttled_1s),
    },
    Col {
        title: "MEMORY cur/limit",
        width: 22,
        cell: gauge,
        style: |_, _| Style::default(),
    },
    Col {
        title: "EP/s",
        width: 5,
        cell: |r, _| {
            if r.throttle_unmeasured {
                NA.into()
            } else {
                format!("{:.1}", r.episodes_per_s)
            }
        },
        style: |_, _| Style::default(),
    },
    Col {
        title: "PSIfull",
        width: 7,
        cell: |r, _| r.psi_full_avg10.map_or(NA.into(), |v| format!("{v:.0}%")),
        style: |_, _| Style::default(),
    },
    Col {
        title: "RCLp99",
        width: 6,
        cell: |r, _| r.reclaim_p99_us.map_or("-".into(), fmt_us_short),
        style: |_, _| Style::default(),
    },
    Col {
        title: "OOM",
        width: 3,
        cell: |r, _| r.oom_kills.to_string(),
        style: |r, t| {
            if r.oom_kills > 0 {
                t.share(1.0)
            } else {
                Style::default()
            }
        },
    },
    Col {
        title: "AGENT",
        width: 8,
        cell: |r, _| r.agent.clone().unwrap_or_else(|| "-".into()),
        style: |r, t| match r.agent.as_deref() {
            Some("breach" | "cooldown") => t.share(1.0),
            Some("warning") => t.share(0.3),
            _ => Style::default(),
        },
    },
    Col {
        title: "RCLp50",
        width: 6,
        cell: |r, _| r.reclaim_p50_us.map_or("-".into(), fmt_us_short),
        style: |_, _| Style::default(),
    },
];

/// Path shortened from the left to fit: the end of a path says most.
fn fit_path(p: &str, w: usize) -> String {
    let n = p.chars().count();
    if n <= w {
        return p.to_string();
    }
    let tail: String = p.chars().skip(n - w.saturating_sub(1)).collect();
    format!("…{tail}")
}

/// A name cut at the right to fit: its start says who.
fn fit_name(n: &str, w: usize) -> String {
    if n.chars().count() <= w {
        return n.to_string();
    }
    let head: String = n.chars().take(w.saturating_sub(1)).collect();
    format!("{head}…")
}

fn draw_table(
    f: &mut Frame<'_>,
    area: Rect,
    app: &mut App,
    snap: &Snapshot,
    rows: &[&CgroupRow],
    selected: Option<usize>,
    theme: Theme,
) {
    // Who the cgroup is comes first, then its path while there is room
    // for one that says something; numbers get what the name leaves, the
    // least useful dropped first. In the tree the path's tree leads.
    const NAME_MIN: u16 = 24;
    const PATH_MIN: u16 = 16;
    let inner_w = area.width.saturating_sub(2);
    let mut cols: Vec<&Col> = Vec::new();
    let mut used = NAME_MIN;
    for c in COLS {
        if used + c.width < inner_w {
            used += c.width + 1;
            cols.push(c);
        }
    }
    let flex = inner_w.saturating_sub(used - NAME_MIN).max(8);
    let longest = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(8, usize::from(flex)) as u16;
    // (first column, its width), (second, its width) or none.
    let (first_w, second_w) = if app.tree {
        let name_w = longest.min(flex / 2);
        match flex.checked_sub(name_w + 1) {
            Some(t) if t >= PATH_MIN => (t, Some(name_w)),
            _ => (flex, None),
        }
    } else {
        match flex.checked_sub(longest + 1) {
            Some(p) if p >= PATH_MIN => (longest, Some(p)),
            _ => (flex, None),
        }
    };
    let sort = format!(
        " cgroups {}/{}  sort: {}{}{}{} ",
        rows.len(),
        snap.cgroups.len(),
        app.sort.label(),
        if app.descending { " (desc)" } else { " (asc)" },
        if app.tree { "  tree" } else { "" },
        if app.filter.is_empty() {
            String::new()
        } else {
            format!("  filter: {}", app.filter)
        }
    );
    let titles: &[&str] = match (app.tree, second_w.is_some()) {
        (false, true) => &["NAME", "CGROUP"],
        (false, false) => &["NAME"],
        (true, true) => &["CGROUP", "NAME"],
        (true, false) => &["CGROUP"],
    };
    let header = Row::new(
        titles
            .iter()
            .map(|t| Cell::from(*t))
            .chain(cols.iter().map(|c| Cell::from(c.title))),
    )
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let visible = area.height.saturating_sub(3) as usize;
    app.page = visible.max(1);
    // Keep the selection in view.
    let offset = match selected {
        Some(i) if i >= visible => i + 1 - visible,
        _ => 0,
    };
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(i, r)| {
            let mut cells = if app.tree {
                let tree = crate::tree::tree_name(rows, i);
                vec![Cell::from(fit_path(&tree, first_w as usize))]
            } else {
                vec![Cell::from(fit_name(&r.name, first_w as usize))]
            };
            if let Some(w) = second_w {
                cells.push(Cell::from(if app.tree {
                    fit_name(&r.name, w as usize)
                } else {
                    fit_path(&r.path, w as usize)
                }));
            }
            for c in &cols {
                cells.push(Cell::from((c.cell)(r, c.width)).style((c.style)(r, theme)));
            }
            let row = Row::new(cells);
            if Some(i) == selected {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let mut widths: Vec<Constraint> = std::iter::once(first_w)
        .chain(second_w)
        .map(Constraint::Length)
        .collect();
    widths.extend(cols.iter().map(|c| Constraint::Length(c.width)));
    let empty = rows.is_empty();
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::default().borders(Borders::ALL).title(sort));
    f.render_widget(table, area);
    if empty {
        let msg = if snap.cgroups.is_empty() {
            "no memory cgroup with limits or activity yet"
        } else {
            "no cgroup matches the filter (Esc clears it)"
        };
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1.min(area.height.saturating_sub(3)),
        };
        f.render_widget(Paragraph::new(msg), inner);
    }
}

fn draw_detail(f: &mut Frame<'_>, area: Rect, app: &App, r: &CgroupRow, theme: Theme) {
    let who = if r.name.is_empty() || r.path.ends_with(&format!("/{}", r.name)) {
        String::new()
    } else {
        format!("{}  ", r.name)
    };
    let limits = format!(
        " {who}{}  current {}  high {}  max {} ",
        r.path,
        r.current.map_or("-".into(), fmt_bytes),
        r.high.map_or("max".into(), fmt_bytes),
        r.max.map_or("max".into(), fmt_bytes)
    );
    let block = Block::default().borders(Borders::ALL).title(limits);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let recent_h = if inner.height > 12 { 3 } else { 0 };
    let [chart, tasks, recent] = Layout::vertical([
        Constraint::Length(4.min(inner.height.saturating_sub(2))),
        Constraint::Min(2),
        Constraint::Length(recent_h),
    ])
    .areas(inner);
    let points: Vec<u64> = r
        .history
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 100.0).round() as u64)
        .collect();
    let width = chart.width as usize;
    let shown = &points[points.len().saturating_sub(width)..];
    let [label, spark] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(chart);
    f.render_widget(
        Paragraph::new(format!(
            "throttled share per second, last {} s (full height 100%): now {}, 10 s {}",
            shown.len(),
            share(r, r.throttled_1s),
            share(r, r.throttled_10s)
        )),
        label,
    );
    f.render_widget(
        Sparkline::default()
            .data(shown)
            .max(100)
            .style(theme.share(r.throttled_10s)),
        spark,
    );

    let header = Row::new(["PID", "COMM", "RSS", "THR(10s)", "EPISODES", "STATE"])
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let visible = tasks.height.saturating_sub(1) as usize;
    let selected = app.task_index(&r.tasks);
    let offset = selected.saturating_sub(visible.saturating_sub(1));
    let body: Vec<Row> = r
        .tasks
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(i, t)| {
            let row = Row::new(vec![
                t.pid.to_string(),
                t.comm.clone(),
                t.rss.map_or("-".into(), fmt_bytes_short),
                if t.throttled_ns == 0 {
                    "-".into()
                } else {
                    fmt_ns(t.throttled_ns)
                },
                t.episodes.to_string(),
                t.state.clone(),
            ]);
            if i == selected {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Min(8),
        ],
    )
    .header(header);
    if r.tasks.is_empty() {
        f.render_widget(
            Paragraph::new("no processes seen (none throttled, none sampled)"),
            tasks,
        );
    } else {
        f.render_widget(table, tasks);
    }
    if recent_h > 0 {
        draw_lines(f, recent, &r.recent, theme);
    }
}

fn log_line<'a>(l: &'a LogLine, theme: Theme) -> Line<'a> {
    Line::from(vec![
        Span::raw(format!("{} ", l.time)),
        Span::styled(format!("{:<6} ", l.kind.label()), theme.log(l.kind)),
        Span::raw(l.text.as_str()),
    ])
}

fn draw_lines(f: &mut Frame<'_>, area: Rect, lines: &[LogLine], theme: Theme) {
    let n = area.height as usize;
    let shown: Vec<Line> = lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| log_line(l, theme))
        .collect();
    f.render_widget(Paragraph::new(shown), area);
}

fn draw_log(f: &mut Frame<'_>, area: Rect, log: &[LogLine], theme: Theme) {
    if area.height < 3 {
        return;
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" events: kills, OOM kills, budgets ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    if log.is_empty() {
        f.render_widget(Paragraph::new("nothing yet"), inner);
    } else {
        draw_lines(f, inner, log, theme);
    }
}

fn draw_footer(f: &mut Frame<'_>, area: Rect, app: &App) {
    let text = if app.editing_filter {
        format!(" filter: {}_   (Enter apply, Esc clear)", app.filter)
    } else if let Some(s) = &app.status {
        format!(" {s}")
    } else {
        match (app.mode, app.detail) {
            (Mode::Live, false) => " q quit  ↑↓/jk move  Enter tasks  s sort  / filter  t tree  p pause  ? help".into(),
            (Mode::Live, true) => " q quit  ↑↓ task  k kill task  Esc back  s sort  p pause  ? help".into(),
            (Mode::Replay, _) => " q quit  ↑↓/jk move  Enter tasks  p pause  ←→ seek 10s  ,. step 1s  +- speed  ? help".into(),
        }
    };
    f.render_widget(
        Paragraph::new(text).style(Style::default().add_modifier(Modifier::REVERSED)),
        area,
    );
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn draw_help(f: &mut Frame<'_>, area: Rect, mode: Mode) {
    let mut text = vec![
        "↑/↓ or j/k   move between cgroups",
        "PgUp/PgDn    a page; g/G first/last",
        "Enter        open the cgroup: chart, tasks, events",
        "Esc          close it; clear the filter",
        "s / S        next sort column / reverse order",
        "/            filter by path or name (unit, user, pod, ...)",
        "t            tree view (by path)",
        "p or space   pause",
    ];
    match mode {
        Mode::Live => text.push("k            in the task list: kill the task (asks first)"),
        Mode::Replay => {
            text.extend([
                "← / →        seek 10 s back / ahead",
                ", / .        step 1 s",
                "- / +        slower / faster",
            ]);
        }
    }
    text.extend([
        "q, Ctrl-C    quit",
        "",
        "NAME: the unit, user, container or pod; CGROUP: its path.",
        "THR1s/THR10s: share of the last 1 s / 10 s with a task of",
        "the cgroup (or below) in the memory.high throttle.",
        "MEMORY: memory.current of memory.max (| marks memory.high).",
        "PSIfull: memory.pressure full avg10. RCL: reclaim latency.",
        "AGENT: the agent's budget state, when it runs.",
        "",
        "any key closes this help",
    ]);
    let h = text.len() as u16 + 2;
    let popup = centered(area, 64, h);
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(text.join("\n"))
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" help ")),
        popup,
    );
}
