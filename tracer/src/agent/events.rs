//! What arrives from the kernel: each event is completed from the system
//! (its cgroup ids resolved), applied to the model, queued for the
//! recorder, told to people when it is news on its own (an OOM kill, the
//! kernel brake, lost records), and the budgets of the cgroups it touched
//! are evaluated. A lost record makes the model check its episodes in
//! progress against the kernel at once; the first throttling of a cause
//! asks for its victims at once.

use super::Agent;
use crate::act::alert::{BrakeDetails, Details, OomDetails};
use crate::clock::{fmt_bytes, fmt_ns};
use crate::config::AlertEvent;
use crate::event::{Brake, Event, LostKind, OomKill};
use crate::model::Hierarchy;

impl Agent {
    pub(super) fn on_event(&mut self, mut e: Event) {
        // Events the timer's drain hands over keep the timer's steps; one
        // that arrives on its own starts them at its kernel timestamp.
        if !self.steps.timer {
            self.steps = super::Steps {
                woke_ns: e.ts_ns(),
                ..super::Steps::default()
            };
        }
        self.registry.complete(&mut e);
        let mut touched = self.model.apply(&e, &self.registry);
        let mut paths: [(u64, Option<std::sync::Arc<str>>); 3] = Default::default();
        for (slot, id) in paths.iter_mut().zip(e.cgroup_ids()) {
            *slot = (id, self.registry.path(id));
        }
        self.recorder.event(&e, paths);
        match &e {
            Event::ThrottleStart(s) => self.ask_victims_for(s.cause(), e.ts_ns()),
            Event::Lost(l) if matches!(l.kind, LostKind::ThrottleStart | LostKind::Throttle) => {
                touched.extend(self.reconcile(e.ts_ns()));
            }
            _ => {}
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
        let who = self.who(o.victim_memcg_id);
        let rss = o.rss_pages.map(|r| r.total() * self.page_size);
        let pid = o.victim.tgid.max(o.victim.pid);
        log::warn!(
            "OOM kill: the kernel killed {}[{}] in {who}{}",
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
            "the kernel OOM-killed {}[{}] in {who}",
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
        let who = self.who(b.rule_memcg_id);
        log::warn!(
            "kernel brake fired while the agent was silent for {}: signal {} to {}[{}] in {who}",
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
            "kernel brake killed {}[{}] in {who}: the agent was silent for {}",
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
