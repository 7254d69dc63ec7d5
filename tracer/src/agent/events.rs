//! What arrives from the kernel: each event is completed from the system
//! (its cgroup ids resolved), applied to the model, recorded, told to
//! people when it is news on its own (an OOM kill, the kernel brake, lost
//! records), and the budgets of the cgroups it touched are evaluated.

use super::Agent;
use crate::act::alert::{BrakeDetails, Details, OomDetails};
use crate::clock::{fmt_bytes, fmt_ns};
use crate::config::AlertEvent;
use crate::event::{Brake, Event, OomKill};
use crate::model::Hierarchy;
use crate::record::flight::FlightRecorder;

impl Agent {
    pub(super) fn on_event(&mut self, mut e: Event) {
        self.registry.complete(&mut e);
        let touched = self.model.apply(&e, &self.registry);
        if let Some(w) = self.recorder.as_mut().and_then(FlightRecorder::writer) {
            let reg = &mut self.registry;
            if let Err(err) = w.event(&e, &mut |id| reg.resolve(id)) {
                log::error!("flight recorder stopped: {err}");
                self.recorder = None;
            }
        }
        match &e {
            Event::OomKill(o) => self.on_oom_kill(o),
            Event::Brake(b) => self.on_brake(b),
            Event::Lost(l) => log::warn!(
                "{} {} records lost: the ring buffer was full",
                l.count,
                l.kind.as_str()
            ),
            _ => {}
        }
        if !touched.is_empty() {
            let decisions = self.policy.evaluate(&self.model, &touched, e.ts_ns());
            self.decide(decisions);
        }
    }

    fn on_oom_kill(&mut self, o: &OomKill) {
        let path = self.path(o.victim_memcg_id);
        let rss = o.rss_pages.map(|r| r.total() * self.page_size);
        let pid = o.victim.tgid.max(o.victim.pid);
        log::warn!(
            "OOM kill: the kernel killed {}[{}] in {path}{}",
            o.victim.comm,
            o.victim.pid,
            rss.map(|r| format!(", rss {}", fmt_bytes(r)))
                .unwrap_or_default()
        );
        let details = Details::Oom(OomDetails {
            pid,
            comm: o.victim.comm.to_string(),
            rss_bytes: rss,
            oom_cgroup: self.registry.path(o.oom_memcg_id).map(|p| p.to_string()),
        });
        let summary = format!(
            "the kernel OOM-killed {}[{}] in {path}",
            o.victim.comm, o.victim.pid
        );
        self.alert(
            AlertEvent::OomKill,
            Some(path.clone()),
            &path,
            summary,
            details,
            false,
            o.ts_ns,
        );
    }

    fn on_brake(&mut self, b: &Brake) {
        let path = self.path(b.rule_memcg_id);
        log::warn!(
            "kernel brake fired while the agent was silent for {}: signal {} to {}[{}] in {path}",
            fmt_ns(b.heartbeat_age_ns),
            b.signal,
            b.task.comm,
            b.task.tgid
        );
        let details = Details::Brake(BrakeDetails {
            pid: b.task.tgid,
            comm: b.task.comm.to_string(),
            throttled_ms: b.throttled_ns / 1_000_000,
            limit_ms: b.limit_ns / 1_000_000,
            agent_silent_ms: b.heartbeat_age_ns / 1_000_000,
        });
        let summary = format!(
            "kernel brake killed {}[{}] in {path}: the agent was silent for {}",
            b.task.comm,
            b.task.tgid,
            fmt_ns(b.heartbeat_age_ns)
        );
        self.alert(
            AlertEvent::Brake,
            Some(path.clone()),
            &path,
            summary,
            details,
            false,
            b.ts_ns,
        );
    }
}
