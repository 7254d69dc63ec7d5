//! The terminal loop: draw, wait for a key or the next refresh, repeat.
//! Raw mode and the alternate screen are restored on exit and on panic.

use std::io;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::app::{App, Command, Mode};
use crate::canvas::{Theme, draw};
use crate::snapshot::Snapshot;

/// Where frames come from: a live system or a recording.
pub trait SnapshotSource {
    /// The current data; `detail` is the cgroup whose chart and tasks to
    /// fill in.
    fn snapshot(&mut self, detail: Option<u64>) -> Snapshot;
    /// Carries out a command; the message is shown in the footer.
    fn command(&mut self, c: &Command) -> Result<String, String>;
    /// Called often (ten times a second) between frames: a live source
    /// drains its event buffer here so nothing overflows.
    fn pump(&mut self) {}
}

/// How often the loop wakes between frames, for keys and [`SnapshotSource::pump`].
const TICK: Duration = Duration::from_millis(100);

/// Runs the screens until the user quits.
pub fn run(source: &mut dyn SnapshotSource, mode: Mode, refresh: Duration) -> io::Result<()> {
    let mut terminal = ratatui::init();
    let result = run_loop(&mut terminal, source, mode, refresh);
    ratatui::restore();
    result
}

fn run_loop(
    terminal: &mut ratatui::DefaultTerminal,
    source: &mut dyn SnapshotSource,
    mode: Mode,
    refresh: Duration,
) -> io::Result<()> {
    let theme = Theme::from_env();
    let mut app = App::new(mode);
    let mut snap = source.snapshot(None);
    let mut last = Instant::now();
    loop {
        terminal.draw(|f| draw(f, &mut app, &snap, theme))?;
        let wait = refresh.saturating_sub(last.elapsed()).min(TICK);
        source.pump();
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    let detail_before = (app.detail, app.selected);
                    if let Some(cmd) = app.key(k, &snap) {
                        if cmd == Command::Quit {
                            return Ok(());
                        }
                        app.status = Some(match source.command(&cmd) {
                            Ok(m) | Err(m) => m,
                        })
                        .filter(|m| !m.is_empty());
                    }
                    // A newly opened or moved detail needs its data now.
                    if app.detail && detail_before != (app.detail, app.selected) {
                        snap = source.snapshot(app.detail_id(&snap));
                    }
                }
                _ => {}
            }
            // Keys and resizes redraw at once; otherwise wait for the
            // refresh (a redraw with nothing new costs nothing, ratatui only
            // writes what changed).
        }
        // Live: pause freezes the picture. Replay: the source pauses its
        // clock and keeps answering.
        if last.elapsed() >= refresh && (!app.paused || mode == Mode::Replay) {
            snap = source.snapshot(if app.detail {
                app.detail_id(&snap)
            } else {
                None
            });
            last = Instant::now();
        }
    }
}
