//! What the agent publishes about itself: the status file `memtrace top`
//! reads (budget state per cgroup, recent decisions and actions), and the
//! actions it puts into the flight recorder.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::Agent;
use crate::model::Hierarchy;
use crate::record::Action as RecordedAction;

/// Where the agent publishes its state for `memtrace top`.
pub const STATUS_FILE: &str = "/run/memtrace/agent.json";

/// How many recent decisions and actions the status file lists.
const RECENT: usize = 50;

/// The status file. Readers take what they know: every field defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub pid: u32,
    /// RFC 3339 time of the last update (once a second).
    pub updated: String,
    /// Where the configuration came from.
    pub config: String,
    pub dry_run: bool,
    pub kills: u64,
    /// Budget state by cgroup path: `ok`, `warning`, `breach`, `cooldown`.
    pub cgroups: BTreeMap<String, String>,
    /// Oldest first.
    pub recent: VecDeque<RecentAction>,
}

/// A decision or an action, for people.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecentAction {
    pub time: String,
    /// `warning`, `breach`, `kill`, `would-kill`.
    pub kind: String,
    pub cgroup: Option<String>,
    pub text: String,
}

/// The last [`RECENT`] decisions and actions.
#[derive(Debug, Default)]
pub(super) struct Recent(VecDeque<RecentAction>);

impl Recent {
    fn push(&mut self, a: RecentAction) {
        if self.0.len() == RECENT {
            self.0.pop_front();
        }
        self.0.push_back(a);
    }
}

/// Reads a status file; `None` when it is absent or not one.
pub fn read(path: &std::path::Path) -> Option<Status> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

impl Agent {
    /// Puts a decision or an action into the flight recorder and the
    /// status file's recent list.
    pub(super) fn record_action(
        &mut self,
        kind: &str,
        cgroup: u64,
        ts_ns: u64,
        details: &impl Serialize,
        text: &str,
    ) {
        self.status.push(RecentAction {
            time: self.clock.rfc3339(ts_ns),
            kind: kind.to_string(),
            cgroup: self.registry.path(cgroup).map(|p| p.to_string()),
            text: text.to_string(),
        });
        let a = RecordedAction {
            ts_ns,
            cgroup_id: cgroup,
            kind: kind.to_string(),
            details: serde_json::to_string(details).unwrap_or_default(),
        };
        let paths = self
            .registry
            .path(cgroup)
            .map(|p| vec![(cgroup, p)])
            .unwrap_or_default();
        self.recorder.action(a, paths);
    }

    /// The status as of `now`.
    pub(super) fn status(&self, now: u64) -> Status {
        Status {
            pid: self.self_pid,
            updated: self.clock.rfc3339(now),
            config: self.cfg.source.clone(),
            dry_run: self.opts.dry_run || self.cfg.agent.dry_run,
            kills: self.counters.kills(),
            cgroups: self
                .model
                .cgroups
                .values()
                .filter_map(|st| {
                    let s = self.policy.status(st.id, now)?;
                    Some((st.path.to_string(), s.to_string()))
                })
                .collect(),
            recent: self.status.0.clone(),
        }
    }

    /// Queues the status file for the files thread, which writes it
    /// atomically (a reader never sees half).
    pub(super) fn write_status(&self, now: u64) {
        if let Ok(text) = serde_json::to_string(&self.status(now)) {
            self.files.status(self.opts.status_file.clone(), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_keeps_its_shape_and_reads_back() {
        let mut s = Status {
            pid: 4242,
            updated: "2026-12-01T03:00:01.000000000Z".into(),
            config: "/etc/memtrace/agent.toml".into(),
            dry_run: false,
            kills: 1,
            ..Status::default()
        };
        s.cgroups.insert("/work".into(), "cooldown".into());
        s.cgroups.insert("/other".into(), "ok".into());
        s.recent.push_back(RecentAction {
            time: "2026-12-01T03:00:00.500000000Z".into(),
            kind: "kill".into(),
            cgroup: Some("/work".into()),
            text: "killed ugrep[4243] (rss 100.0 MiB) in /work".into(),
        });
        let text = serde_json::to_string_pretty(&s).unwrap();
        insta::assert_snapshot!(text);
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), s);
        // Older or newer writers: unknown fields ignored, missing ones default.
        let partial: Status = serde_json::from_str(r#"{"pid": 7, "extra": 1}"#).unwrap();
        assert_eq!(partial.pid, 7);
        assert!(partial.recent.is_empty());
    }

    #[test]
    fn the_recent_list_keeps_the_last_fifty() {
        let mut r = Recent::default();
        for i in 0..60 {
            r.push(RecentAction {
                text: i.to_string(),
                ..RecentAction::default()
            });
        }
        assert_eq!(r.0.len(), RECENT);
        assert_eq!(r.0.front().unwrap().text, "10");
    }
}
