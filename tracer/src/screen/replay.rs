//! `memtrace replay`: a recording played through the same model and
//! screens as `top`, on a clock that can be paused, stepped, sought and
//! sped up.
//!
//! The recording is streamed, never held: a scan gives its tables and
//! span, then its records are read in time order as the clock reaches
//! them. Seeking back replays from the start, as the model is built
//! forward only.

use std::time::Instant;

use memtrace_ui::{Command, Snapshot, SnapshotSource, Source};

use crate::clock::Clock;
use crate::model::Model;
use crate::record::reader::{Recording, Sorted};
use crate::record::timeline::Timeline;
use crate::record::{Record, Sample};
use crate::screen::view::{Identity, View};
use crate::sys::registry::CgroupRegistry;

const SEC: u64 = 1_000_000_000;

type Records = Box<dyn Iterator<Item = Record> + Send>;

pub struct ReplaySource {
    /// The scan: header, cgroup paths and span (no records).
    rec: Recording,
    timeline: Timeline,
    records: std::iter::Peekable<Sorted<Records>>,
    name: String,
    registry: CgroupRegistry,
    model: Model,
    view: View,
    identity: Identity,
    clock: Clock,
    sample: Option<Sample>,
    start: u64,
    end: u64,
    /// The recorded time on screen (monotonic ns of the recording).
    now: u64,
    speed: f64,
    paused: bool,
    last_wall: Instant,
}

impl ReplaySource {
    /// `rec` is the timeline's scan (tables, span; no records).
    pub fn new(timeline: Timeline, rec: Recording, name: String, speed: f64) -> Self {
        // Records are in file order; play them in time order.
        let records = Sorted::new(timeline.records()).peekable();
        let (start, end) = rec.span().unwrap_or((0, 0));
        let h = &rec.header;
        let mut degraded = h.degraded.clone();
        degraded.sort_by_key(|d| !d.starts_with("throttle"));
        if h.throttle_measured() {
            degraded.clear();
        }
        let identity = Identity {
            host: h.host.clone(),
            kernel: h.kernel.clone(),
            probe_mode: h
                .probes
                .get("throttle")
                .cloned()
                .flatten()
                .unwrap_or_else(|| "UNAVAILABLE".into()),
            degraded,
            throttle_unmeasured: !h.throttle_measured(),
        };
        let clock = h.clock();
        let mut s = Self {
            registry: CgroupRegistry::from_paths(
                rec.cgroups.iter().map(|(id, p)| (*id, p.as_str())),
            ),
            model: Model::new(0, 15 * 60 * SEC),
            view: View::default(),
            identity,
            clock,
            sample: None,
            timeline,
            records,
            start,
            end,
            now: start,
            speed,
            paused: false,
            last_wall: Instant::now(),
            name,
            rec,
        };
        s.apply_until(start);
        s
    }

    fn reset(&mut self) {
        self.model = Model::new(0, 15 * 60 * SEC);
        self.view = View::default();
        self.sample = None;
        // A file gone since the scan yields nothing: what was played
        // stays on screen, and nothing more is read.
        self.records = Sorted::new(self.timeline.records()).peekable();
    }

    fn apply_until(&mut self, t: u64) {
        while let Some(r) = self.records.next_if(|r| r.ts_ns() <= t) {
            match r {
                Record::Event(e) => {
                    self.model.apply(&e, &self.registry);
                    self.view.event(&e, &self.registry, &self.clock);
                }
                Record::Sample(s) => self.sample = Some(s),
                Record::Action(a) => {
                    let path = self.rec.path(a.cgroup_id);
                    let state = match a.kind.as_str() {
                        "kill" | "would-kill" => "cooldown",
                        "breach" => "breach",
                        "warning" => "warning",
                        _ => "ok",
                    };
                    self.view.agent.insert(path.clone(), state.into());
                    let kind = match a.kind.as_str() {
                        "kill" | "would-kill" => memtrace_ui::LogKind::Kill,
                        "breach" => memtrace_ui::LogKind::Breach,
                        "warning" => memtrace_ui::LogKind::Warning,
                        _ => memtrace_ui::LogKind::Info,
                    };
                    let details: serde_json::Value =
                        serde_json::from_str(&a.details).unwrap_or_default();
                    let who = details["comm"]
                        .as_str()
                        .map(|c| format!(" {c}[{}]", details["pid"]))
                        .unwrap_or_default();
                    self.view.action(
                        format!("{}{}{}", a.ts_ns, a.kind, a.cgroup_id),
                        a.cgroup_id,
                        memtrace_ui::LogLine {
                            time: self
                                .clock
                                .hms(a.ts_ns)
                                .get(..8)
                                .unwrap_or_default()
                                .to_string(),
                            kind,
                            text: format!("agent {}{who} in {path}", a.kind),
                        },
                    );
                }
                Record::Note { .. } => {}
            }
        }
    }

    /// Moves the recorded clock to `t` (clamped), replaying from the start
    /// when going back.
    fn seek_to(&mut self, t: u64) {
        let t = t.clamp(self.start, self.end);
        if t < self.now {
            self.reset();
        }
        self.now = t;
        self.apply_until(t);
    }

    fn advance(&mut self) {
        let wall = self.last_wall.elapsed();
        self.last_wall = Instant::now();
        if self.paused || self.now >= self.end {
            return;
        }
        let step = (wall.as_nanos() as f64 * self.speed) as u64;
        self.seek_to(self.now.saturating_add(step));
    }
}

impl SnapshotSource for ReplaySource {
    fn snapshot(&mut self, detail: Option<u64>) -> Snapshot {
        self.advance();
        let span = self.end.saturating_sub(self.start).max(1);
        let source = Source::Replay {
            file: self.name.clone(),
            at: self
                .clock
                .hms(self.now)
                .get(..8)
                .unwrap_or_default()
                .to_string(),
            position: (self.now - self.start) as f64 / span as f64,
            speed: self.speed,
            paused: self.paused || self.now >= self.end,
        };
        self.view.build(
            &self.model,
            self.sample.as_ref(),
            &self.registry,
            &self.identity,
            source,
            &self.clock,
            self.now,
            detail,
        )
    }

    fn command(&mut self, c: &Command) -> Result<String, String> {
        match c {
            Command::Pause(p) => {
                self.paused = *p;
                self.last_wall = Instant::now();
                Ok(if *p {
                    "paused (p resumes, , . step)".into()
                } else {
                    String::new()
                })
            }
            Command::Seek(secs) => {
                let t = if *secs >= 0 {
                    self.now.saturating_add(*secs as u64 * SEC)
                } else {
                    self.now.saturating_sub(secs.unsigned_abs() * SEC)
                };
                self.seek_to(t);
                Ok(format!(
                    "at {}",
                    self.clock.hms(self.now).get(..8).unwrap_or_default()
                ))
            }
            Command::Speed(f) => {
                self.speed = (self.speed * f).clamp(0.125, 64.0);
                Ok(format!("speed x{}", self.speed))
            }
            Command::Kill { .. } => Err("this is a replay: nothing to kill".into()),
            Command::Quit => Ok(String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> ReplaySource {
        let (bytes, _) = crate::record::reader::tests::file(3);
        let input = crate::record::reader::Input::Bytes(bytes.into());
        let (timeline, rec) = crate::record::timeline::scan_inputs(
            vec![("t.mtr".into(), input)],
            true,
            &Default::default(),
        )
        .unwrap();
        ReplaySource::new(timeline, rec, "t.mtr".into(), 1.0)
    }

    #[test]
    fn seeking_steps_and_pausing_move_the_recorded_clock() {
        let mut s = source();
        s.command(&Command::Pause(true)).unwrap();
        let first = s.snapshot(None);
        let Source::Replay {
            position, paused, ..
        } = first.source
        else {
            panic!()
        };
        assert!(paused && position == 0.0);
        s.command(&Command::Seek(1)).unwrap();
        let snap = s.snapshot(None);
        let Source::Replay { position, .. } = snap.source else {
            panic!()
        };
        assert!(position > 0.0);
        let row = snap
            .cgroups
            .iter()
            .find(|r| r.path == "/work/job")
            .expect("the recorded cgroup");
        assert!(row.reclaim_p99_us.is_some());
        // Back to the start: the model is rebuilt, not double-counted.
        s.command(&Command::Seek(-100)).unwrap();
        s.command(&Command::Seek(100)).unwrap();
        let end = s.snapshot(None);
        let Source::Replay { position, .. } = end.source else {
            panic!()
        };
        assert_eq!(position, 1.0);
        assert_eq!(
            s.model.cgroups.values().map(|c| c.throttle.episodes).max(),
            Some(15)
        );
        assert!(
            s.command(&Command::Kill {
                pid: 1,
                comm: "x".into(),
                start_time: None,
            })
            .is_err()
        );
        assert_eq!(s.command(&Command::Speed(4.0)).unwrap(), "speed x4");
    }
}
