//! The application state of `top` and `replay`: selection, sort, filter,
//! tree view, pause, dialogs. Keys change it; the canvas draws it.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::snapshot::{CgroupRow, Snapshot, TaskRow};

/// Columns the cgroup table sorts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Throttled10s,
    Throttled1s,
    EpisodesPerSec,
    Memory,
    ReclaimP99,
    PsiFull,
    OomKills,
    Path,
}

impl SortKey {
    pub const ALL: [Self; 8] = [
        Self::Throttled10s,
        Self::Throttled1s,
        Self::EpisodesPerSec,
        Self::Memory,
        Self::ReclaimP99,
        Self::PsiFull,
        Self::OomKills,
        Self::Path,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Throttled10s => "throttled 10s",
            Self::Throttled1s => "throttled 1s",
            Self::EpisodesPerSec => "episodes/s",
            Self::Memory => "memory",
            Self::ReclaimP99 => "reclaim p99",
            Self::PsiFull => "PSI full",
            Self::OomKills => "OOM kills",
            Self::Path => "path",
        }
    }

    fn next(self) -> Self {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// What a key asks of the data source.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Quit,
    /// SIGKILL this process (after the user confirmed), if it is still
    /// the one shown: same pid and same start time.
    Kill {
        pid: u32,
        comm: String,
        start_time: Option<u64>,
    },
    /// Replay: stop or resume the clock.
    Pause(bool),
    /// Replay: jump by this many seconds of recorded time.
    Seek(i64),
    /// Replay: faster or slower (factor).
    Speed(f64),
}

/// Whether the data can be killed (live) or only watched (replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay,
}

#[derive(Clone, Debug)]
pub struct App {
    pub mode: Mode,
    pub sort: SortKey,
    pub descending: bool,
    pub filter: String,
    /// Typing a filter.
    pub editing_filter: bool,
    pub tree: bool,
    pub paused: bool,
    pub help: bool,
    /// The selected cgroup, by id (stays on it when rows move).
    pub selected: Option<u64>,
    /// The detail pane is open; arrows move in its task list.
    pub detail: bool,
    /// The selected task, by pid (stays on it when the list reorders).
    pub task_pid: Option<u32>,
    /// A kill waiting for y/n.
    pub confirm_kill: Option<TaskRow>,
    /// A one-line message (a kill's result, a hint).
    pub status: Option<String>,
    /// Rows visible in the table at the last draw, for paging.
    pub page: usize,
}

impl App {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            sort: SortKey::Throttled10s,
            descending: true,
            filter: String::new(),
            editing_filter: false,
            tree: false,
            paused: false,
            help: false,
            selected: None,
            detail: false,
            task_pid: None,
            confirm_kill: None,
            status: None,
            page: 10,
        }
    }

    /// The rows to show, filtered and ordered.
    pub fn rows<'a>(&self, snap: &'a Snapshot) -> Vec<&'a CgroupRow> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&CgroupRow> = snap
            .cgroups
            .iter()
            .filter(|r| {
                needle.is_empty()
                    || r.path.to_lowercase().contains(&needle)
                    || r.name.to_lowercase().contains(&needle)
                    || r.search.contains(&needle)
            })
            .collect();
        if self.tree {
            // By path segments, so `/a/b` follows `/a` before `/a-b` does.
            rows.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
            return rows;
        }
        let key = |r: &CgroupRow| -> f64 {
            match self.sort {
                SortKey::Throttled10s => r.throttled_10s,
                SortKey::Throttled1s => r.throttled_1s,
                SortKey::EpisodesPerSec => r.episodes_per_s,
                SortKey::Memory => r.current.unwrap_or(0) as f64,
                SortKey::ReclaimP99 => r.reclaim_p99_us.unwrap_or(0) as f64,
                SortKey::PsiFull => f64::from(r.psi_full_avg10.unwrap_or(0.0)),
                SortKey::OomKills => r.oom_kills as f64,
                SortKey::Path => 0.0,
            }
        };
        if self.sort == SortKey::Path {
            rows.sort_by(|a, b| a.path.cmp(&b.path));
            if self.descending {
                rows.reverse();
            }
        } else {
            // Ties (a thousand idle cgroups at 0%, or throttling not
            // measured at all) go by what else says "incident": OOM kills,
            // reclaim latency, how full the cgroup is; then the path.
            let fill = |r: &CgroupRow| match (r.current, r.max.or(r.high)) {
                (Some(c), Some(l)) if l > 0 => c as f64 / l as f64,
                _ => 0.0,
            };
            rows.sort_by(|a, b| {
                let o = key(a)
                    .total_cmp(&key(b))
                    .then(a.oom_kills.cmp(&b.oom_kills))
                    .then(a.reclaim_p99_us.cmp(&b.reclaim_p99_us))
                    .then_with(|| fill(a).total_cmp(&fill(b)))
                    .then_with(|| b.path.cmp(&a.path));
                if self.descending { o.reverse() } else { o }
            });
        }
        rows
    }

    /// The selected row's position in `rows`, selecting the first row when
    /// the selection is gone.
    pub fn selected_index(&self, rows: &[&CgroupRow]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        Some(
            self.selected
                .and_then(|id| rows.iter().position(|r| r.id == id))
                .unwrap_or(0),
        )
    }

    /// The cgroup whose detail the source should fill in.
    pub fn detail_id(&self, snap: &Snapshot) -> Option<u64> {
        let rows = self.rows(snap);
        self.selected_index(&rows).map(|i| rows[i].id)
    }

    fn move_selection(&mut self, snap: &Snapshot, delta: isize) {
        let rows = self.rows(snap);
        let Some(i) = self.selected_index(&rows) else {
            return;
        };
        let n = rows.len() as isize;
        let j = (i as isize + delta).clamp(0, n - 1) as usize;
        self.selected = Some(rows[j].id);
    }

    fn selected_row<'a>(&self, snap: &'a Snapshot) -> Option<&'a CgroupRow> {
        let rows = self.rows(snap);
        self.selected_index(&rows).map(|i| rows[i])
    }

    /// The selected task's position in `tasks`, the first when it is gone.
    pub fn task_index(&self, tasks: &[TaskRow]) -> usize {
        self.task_pid
            .and_then(|pid| tasks.iter().position(|t| t.pid == pid))
            .unwrap_or(0)
    }

    fn move_task(&mut self, snap: &Snapshot, delta: isize) {
        let Some(tasks) = self.selected_row(snap).map(|r| &r.tasks) else {
            return;
        };
        if tasks.is_empty() {
            return;
        }
        let i = self.task_index(tasks) as isize;
        let j = (i + delta).clamp(0, tasks.len() as isize - 1) as usize;
        self.task_pid = Some(tasks[j].pid);
    }

    /// Handles a key. Returns a command for the data source, if any.
    pub fn key(&mut self, k: KeyEvent, snap: &Snapshot) -> Option<Command> {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Some(Command::Quit);
        }
        if let Some(task) = self.confirm_kill.take() {
            if matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                return Some(Command::Kill {
                    pid: task.pid,
                    comm: task.comm,
                    start_time: task.start_time,
                });
            }
            self.status = Some(format!("not killed: {}[{}]", task.comm, task.pid));
            return None;
        }
        if self.editing_filter {
            match k.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return None;
        }
        if self.help {
            self.help = false;
            return None;
        }
        self.status = None;
        match k.code {
            KeyCode::Char('q') => return Some(Command::Quit),
            KeyCode::Esc if self.detail => self.detail = false,
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            // In the task list (detail open) arrows, j and the paging keys
            // move between tasks and k kills, after a confirmation; in the
            // table j/k move.
            KeyCode::Up if self.detail => self.move_task(snap, -1),
            KeyCode::Down | KeyCode::Char('j') if self.detail => self.move_task(snap, 1),
            KeyCode::PageUp if self.detail => self.move_task(snap, -(self.page.max(1) as isize)),
            KeyCode::PageDown if self.detail => self.move_task(snap, self.page.max(1) as isize),
            KeyCode::Home | KeyCode::Char('g') if self.detail => {
                self.move_task(snap, isize::MIN / 2);
            }
            KeyCode::End | KeyCode::Char('G') if self.detail => {
                self.move_task(snap, isize::MAX / 2);
            }
            KeyCode::Char('k') if self.detail => return self.ask_kill(snap),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(snap, -1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(snap, 1),
            KeyCode::PageUp => self.move_selection(snap, -(self.page.max(1) as isize)),
            KeyCode::PageDown => self.move_selection(snap, self.page.max(1) as isize),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(snap, isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(snap, isize::MAX / 2),
            KeyCode::Enter => {
                if self.selected.is_none() {
                    self.selected = self.detail_id(snap);
                }
                self.detail = !self.detail;
                self.task_pid = None;
            }
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('S') => self.descending = !self.descending,
            KeyCode::Char('/') => {
                self.editing_filter = true;
                self.filter.clear();
            }
            KeyCode::Char('t') => self.tree = !self.tree,
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                return Some(Command::Pause(self.paused));
            }
            KeyCode::Right if self.mode == Mode::Replay => return Some(Command::Seek(10)),
            KeyCode::Left if self.mode == Mode::Replay => return Some(Command::Seek(-10)),
            KeyCode::Char('.') if self.mode == Mode::Replay => return Some(Command::Seek(1)),
            KeyCode::Char(',') if self.mode == Mode::Replay => return Some(Command::Seek(-1)),
            KeyCode::Char('+') if self.mode == Mode::Replay => return Some(Command::Speed(2.0)),
            KeyCode::Char('-') if self.mode == Mode::Replay => return Some(Command::Speed(0.5)),
            _ => {}
        }
        None
    }

    fn ask_kill(&mut self, snap: &Snapshot) -> Option<Command> {
        if self.mode == Mode::Replay {
            self.status = Some("this is a replay: nothing to kill".into());
            return None;
        }
        match self
            .selected_row(snap)
            .and_then(|r| r.tasks.get(self.task_index(&r.tasks)))
        {
            Some(t) => match &t.protected {
                Some(why) => {
                    self.status = Some(format!("{}[{}] cannot be killed: {why}", t.comm, t.pid));
                }
                None => self.confirm_kill = Some(t.clone()),
            },
            None => self.status = Some("no task selected".into()),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventKind;

    pub(crate) fn key(c: KeyCode) -> KeyEvent {
        KeyEvent {
            code: c,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: ratatui::crossterm::event::KeyEventState::NONE,
        }
    }

    fn row(id: u64, path: &str, thr: f64, mem: u64) -> CgroupRow {
        CgroupRow {
            id,
            path: path.into(),
            throttled_10s: thr,
            current: Some(mem),
            tasks: vec![TaskRow {
                pid: id as u32 * 10,
                comm: format!("t{id}"),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn snap() -> Snapshot {
        Snapshot {
            cgroups: vec![
                row(1, "/a", 0.1, 300),
                row(2, "/b", 0.9, 100),
                row(3, "/a/c", 0.5, 200),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn sorts_and_cycles_and_reverses() {
        let s = snap();
        let mut app = App::new(Mode::Live);
        let ids = |app: &App| app.rows(&s).iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&app), [2, 3, 1]);
        app.key(key(KeyCode::Char('S')), &s);
        assert_eq!(ids(&app), [1, 3, 2]);
        app.key(key(KeyCode::Char('S')), &s);
        for _ in 0..3 {
            app.key(key(KeyCode::Char('s')), &s);
        }
        assert_eq!(app.sort, SortKey::Memory);
        assert_eq!(ids(&app), [1, 3, 2]);
        app.key(key(KeyCode::Char('t')), &s);
        assert_eq!(ids(&app), [1, 3, 2], "tree: by path");
        // Ties at the sort key: the cgroup with an OOM kill, then with
        // reclaim, comes first.
        let mut idle = s.clone();
        for (i, r) in idle.cgroups.iter_mut().enumerate() {
            r.throttled_10s = 0.0;
            r.oom_kills = u64::from(i == 2);
            r.reclaim_p99_us = (i == 1).then_some(500);
        }
        let order: Vec<u64> = App::new(Mode::Live)
            .rows(&idle)
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(order[..2], [idle.cgroups[2].id, idle.cgroups[1].id]);
        // By segments: a child follows its parent, before a sibling whose
        // name only shares a prefix.
        let mut t = s.clone();
        for (r, p) in t.cgroups.iter_mut().zip(["/a-b", "/a/c", "/a"]) {
            r.path = p.into();
        }
        let paths: Vec<&str> = app.rows(&t).iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/a/c", "/a-b"]);
    }

    #[test]
    fn filter_typing_and_escape() {
        let s = snap();
        let mut app = App::new(Mode::Live);
        app.key(key(KeyCode::Char('/')), &s);
        for c in "/A".chars() {
            app.key(key(KeyCode::Char(c)), &s);
        }
        assert!(app.editing_filter);
        app.key(key(KeyCode::Enter), &s);
        assert!(!app.editing_filter);
        assert_eq!(app.rows(&s).len(), 2);
        app.key(key(KeyCode::Esc), &s);
        assert_eq!(app.rows(&s).len(), 3);
    }

    #[test]
    fn selection_follows_the_cgroup_and_kill_needs_confirmation() {
        let s = snap();
        let mut app = App::new(Mode::Live);
        app.key(key(KeyCode::Down), &s);
        assert_eq!(app.selected, Some(3));
        app.key(key(KeyCode::Char('j')), &s);
        assert_eq!(app.selected, Some(1));
        app.key(key(KeyCode::Down), &s);
        assert_eq!(app.selected, Some(1), "stays at the end");
        // In the table k moves up ...
        app.key(key(KeyCode::Char('k')), &s);
        assert_eq!(app.selected, Some(3));
        app.key(key(KeyCode::Char('j')), &s);
        // ... in the task list it kills, after a confirmation.
        app.key(key(KeyCode::Enter), &s);
        assert!(app.detail);
        assert_eq!(app.key(key(KeyCode::Char('k')), &s), None);
        assert_eq!(app.confirm_kill.as_ref().map(|t| t.pid), Some(10));
        assert_eq!(
            app.key(key(KeyCode::Char('y')), &s),
            Some(Command::Kill {
                pid: 10,
                comm: "t1".into(),
                start_time: None,
            })
        );
        // Anything but y declines.
        app.key(key(KeyCode::Char('k')), &s);
        assert_eq!(app.key(key(KeyCode::Char('n')), &s), None);
        assert!(app.status.as_deref().unwrap_or("").contains("not killed"));
        assert_eq!(app.key(key(KeyCode::Char('q')), &s), Some(Command::Quit));
    }

    #[test]
    fn the_task_selection_follows_the_pid_when_the_list_reorders() {
        let mut s = snap();
        s.cgroups[1].tasks = (1..=3)
            .map(|pid| TaskRow {
                pid,
                comm: format!("w{pid}"),
                start_time: Some(100 + u64::from(pid)),
                ..Default::default()
            })
            .collect();
        let mut app = App::new(Mode::Live);
        app.key(key(KeyCode::Enter), &s);
        app.key(key(KeyCode::Down), &s);
        assert_eq!(app.task_pid, Some(2));
        // The list re-sorts (throttled time changed): still pid 2.
        s.cgroups[1].tasks.reverse();
        app.key(key(KeyCode::Char('k')), &s);
        assert_eq!(
            app.key(key(KeyCode::Char('y')), &s),
            Some(Command::Kill {
                pid: 2,
                comm: "w2".into(),
                start_time: Some(102),
            })
        );
        // Paging keys move in the task list, not the table.
        app.key(key(KeyCode::End), &s);
        assert_eq!((app.task_pid, app.selected), (Some(1), Some(2)));
        app.key(key(KeyCode::PageUp), &s);
        assert_eq!(app.task_pid, Some(3));
    }

    #[test]
    fn replay_keys_and_no_kills() {
        let s = snap();
        let mut app = App::new(Mode::Replay);
        assert_eq!(app.key(key(KeyCode::Right), &s), Some(Command::Seek(10)));
        assert_eq!(app.key(key(KeyCode::Char('.')), &s), Some(Command::Seek(1)));
        assert_eq!(
            app.key(key(KeyCode::Char('p')), &s),
            Some(Command::Pause(true))
        );
        app.key(key(KeyCode::Enter), &s);
        assert_eq!(app.key(key(KeyCode::Char('k')), &s), None);
        assert!(app.confirm_kill.is_none());
        assert!(app.status.as_deref().unwrap_or("").contains("replay"));
    }
}
