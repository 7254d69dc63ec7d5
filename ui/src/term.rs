//! The terminal loop: draw, wait for a key or the next refresh, repeat.
//! Raw mode and the alternate screen are restored on exit, on panic and on
//! SIGTERM, SIGINT, SIGHUP and SIGQUIT.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Set by SIGTERM, SIGINT, SIGHUP and SIGQUIT: the loop ends at its next
/// wake-up (within [`TICK`]) and restores the terminal on the way out.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Catches the signals that would otherwise end the process with the
/// terminal still raw and on the alternate screen.
fn catch_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; the sigaction struct is zeroed then filled.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Runs the screens until the user quits or a signal asks it to stop. The
/// terminal is restored on every way out: quit, error, signal, panic.
pub fn run(source: &mut dyn SnapshotSource, mode: Mode, refresh: Duration) -> io::Result<()> {
    catch_stop_signals();
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
        if STOP.load(Ordering::Relaxed) {
            return Ok(());
        }
        terminal.draw(|f| draw(f, &mut app, &snap, theme))?;
        let wait = refresh.saturating_sub(last.elapsed()).min(TICK);
        source.pump();
        // A signal interrupts the wait (EINTR): that is a stop, not an error.
        let ready = match event::poll(wait) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(e) => return Err(e),
        };
        if ready {
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
