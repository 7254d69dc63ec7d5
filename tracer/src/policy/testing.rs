//! Test fixtures for the policy: a hierarchy by name and a model fed with
//! hand-made episodes. No file system, no clock.

use crate::config::AgentConfig;
use crate::event::{Comm, Event, Task, Throttle, ThrottleStart};
use crate::model::Model;
use crate::sys::registry::CgroupRegistry;

use super::budget::Policy;

pub(crate) const S: u64 = 1_000_000_000;

/// `/work` (id 10) and `/work/job` (id 11) under the root (id 1). The hog
/// runs in `/work/job`; `/work` is over its memory.high (the cause).
pub(crate) struct Fixture {
    pub reg: CgroupRegistry,
    pub model: Model,
    pub a: u64,
    pub b: u64,
    /// The over-high cgroup the fixture's episodes name.
    pub cause: u64,
}

pub(crate) fn fixture() -> Fixture {
    Fixture {
        reg: CgroupRegistry::from_paths([(1, "/"), (10, "/work"), (11, "/work/job")]),
        model: Model::new(0, 600 * S),
        a: 10,
        b: 11,
        cause: 10,
    }
}

pub(crate) fn policy(text: &str) -> Policy {
    Policy::new(AgentConfig::parse(text, "t").unwrap().budgets)
}

/// A kill budget of 30 % of 10 s on `/work`.
pub(crate) const WORK: &str = "[[budget]]\ncgroup = \"/work\"\nwindow = \"10s\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\n";

fn task() -> Task {
    Task {
        pid: 7,
        tgid: 7,
        comm: Comm::new("hog"),
    }
}

impl Fixture {
    /// A throttle episode of the hog starts in `memcg` at `at`.
    pub fn start(&mut self, at: u64, memcg: u64) -> Vec<u64> {
        let e = Event::ThrottleStart(ThrottleStart {
            ts_ns: at,
            task: task(),
            memcg_id: memcg,
            over_high_id: self.cause,
            over_high_usage_pages: 0,
            over_high_limit_pages: 0,
            nr_pages: 1,
        });
        self.model.apply(&e, &self.reg)
    }

    /// A complete episode of the hog in `memcg`.
    pub fn end(&mut self, from: u64, to: u64, memcg: u64) -> Vec<u64> {
        let e = Event::Throttle(Throttle {
            ts_ns: to,
            start_ns: from,
            task: task(),
            memcg_id: memcg,
            over_high_id: self.cause,
            reclaim_ns: 0,
            reclaimed_pages: 0,
            nr_pages: 1,
        });
        self.model.apply(&e, &self.reg)
    }
}
