//! The once-a-second work: keep the model's names current, sample the
//! cgroups and the host, judge the host's leading edge, prepare victims
//! and the kernel brake's rules, and publish the metrics page and the
//! status file.

use std::sync::Arc;

use super::Agent;
use crate::kernel::CgroupVersion;
use crate::metrics::page::{BudgetSeries, BuildInfo, PageInput, SinkCounts, render};
use crate::model::Hierarchy;
use crate::record::flight::FlightRecorder;
use crate::sys::cgroupfs::HostMemory;

/// A cgroup with an event this recent is sampled with its processes.
const ACTIVE_NS: u64 = 10_000_000_000;

impl Agent {
    pub(super) fn tick(&mut self, now: u64) {
        self.model.gc(now);
        for id in self.model.unresolved() {
            self.registry.resolve(id);
        }
        for id in self.model.maintain(&self.registry, now) {
            self.policy.forget(id);
            self.estimator.forget(id);
        }
        self.host_mem = HostMemory::read();
        for f in self.host.tick(&self.cfg.host, now, &self.host_mem) {
            self.host_alert(f, now);
        }
        self.sample_cgroups(now);
        self.prepare_victims(now);
        self.render_metrics(now);
        self.write_status(now);
    }

    /// Samples the host and the cgroups that matter (those with activity,
    /// and every cgroup with a memory limit, which includes every cgroup a
    /// budget can apply to), feeds the samples to the policy (cool-downs
    /// end when memory drops; estimates without the throttle probe) and
    /// to the flight recorder.
    fn sample_cgroups(&mut self, now: u64) {
        let active: Vec<u64> = self
            .model
            .cgroups
            .values()
            .filter(|s| {
                now.saturating_sub(s.last_activity_ns) < ACTIVE_NS || s.throttle.in_progress() > 0
            })
            .map(|s| s.id)
            .collect();
        let sample = self.sampler.sample(now, &mut self.registry, &active);
        let estimating =
            !self.tracer.caps.throttle_measured() && self.version == Some(CgroupVersion::V2);
        for c in &sample.cgroups {
            self.policy.memory_dropped(c.id, &c.mem, now);
            if estimating && let Some(path) = self.registry.path(c.id) {
                for b in self.policy.budgets_of(c.id, &path) {
                    let window = self.policy.budgets[b].window_ns();
                    if let Some(used) = self.estimator.sample(c.id, now, &c.mem, window)
                        && let Some(d) = self.policy.estimate(b, c.id, &path, used, now)
                    {
                        self.model.state(c.id, &self.registry);
                        self.decide(vec![d]);
                    }
                }
            }
            if let Some(st) = self.model.cgroups.get_mut(&c.id) {
                st.memory = Some(c.mem);
            }
        }
        if let Some(w) = self.recorder.as_mut().and_then(FlightRecorder::writer) {
            let reg = &mut self.registry;
            if let Err(e) = w.sample(&sample, &mut |id| reg.resolve(id)) {
                log::error!("flight recorder stopped: {e}");
                self.recorder = None;
            }
        }
    }

    /// Lets the flight recorder write its chunk when one is due.
    pub(super) fn tick_recorder(&mut self) {
        if let Some(rec) = &mut self.recorder
            && let Err(e) = rec.tick()
        {
            log::error!("flight recorder stopped: {e}");
            self.recorder = None;
        }
    }

    /// Keeps a verified victim ready for every killing budget whose cgroup
    /// is being throttled, and the kernel brake's rules in step.
    fn prepare_victims(&mut self, now: u64) {
        let wanted = self.policy.victims_wanted(&self.model, now);
        self.prepared.retain(|k, _| wanted.contains(k));
        for &(b, id) in &wanted {
            // Re-choose each tick: the largest process can change.
            match self.prepare(b, id, now) {
                Some(v) => {
                    self.prepared.insert((b, id), v);
                }
                None => {
                    self.prepared.remove(&(b, id));
                }
            }
        }
        let Some(brake) = &mut self.brake else {
            return;
        };
        let mut keep = Vec::new();
        for &(b, id) in &wanted {
            let budget = &self.policy.budgets[b];
            // A dry run kills nothing, from user space or the kernel.
            if self.opts.dry_run || self.cfg.agent.dry_run || budget.dry_run {
                continue;
            }
            let (Some(cfg), Some(v)) = (&budget.brake, self.prepared.get(&(b, id))) else {
                continue;
            };
            brake.set(id, crate::probe::brake::rule(cfg, v.info.pid));
            keep.push(id);
        }
        brake.retain(&|id| keep.contains(&id));
    }

    fn render_metrics(&mut self, now: u64) {
        let alerts: Vec<SinkCounts> = self.alerter.counts();
        let budgets: Vec<BudgetSeries> = self
            .policy
            .budgets
            .iter()
            .map(|b| BudgetSeries {
                name: b.label(),
                action: b.action.as_str(),
            })
            .collect();
        let page = render(&PageInput {
            now,
            build: BuildInfo {
                version: crate::build_info::VERSION,
                commit: crate::build_info::COMMIT,
                dirty: crate::build_info::DIRTY,
            },
            probes: &self.tracer.caps.probes,
            model: &self.model,
            budgets: &budgets,
            counters: &self.counters,
            alerts: &alerts,
            host: &self.host_mem,
            process: crate::sys::own::read(self.page_size),
        });
        if let Ok(mut p) = self.page.lock() {
            *p = Arc::new(page);
        }
    }
}
