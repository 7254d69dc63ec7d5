//! The once-a-second work: keep the model's names current and its episodes
//! in progress true to the kernel, ask for a sample and for victims (both
//! taken on other threads), judge the host's leading edge, keep the kernel
//! brake's rules in step, and publish the metrics page and the status
//! file. Also what comes back from those threads: samples and victims.

use std::sync::Arc;

use super::Agent;
use super::background::Sampled;
use super::prepare::Answer;
use crate::kernel::CgroupVersion;
use crate::metrics::page::{BudgetSeries, BuildInfo, PageInput, SinkCounts, render};
use crate::model::Hierarchy;
use crate::policy::budget::Line;
use tracer_ebpf::BrakeRule;

/// A cgroup with an event this recent is sampled with its processes.
const ACTIVE_NS: u64 = 10_000_000_000;

impl Agent {
    pub(super) fn tick(&mut self, now: u64) {
        self.reclaim_totals(now);
        self.names();
        self.model.gc(now);
        for id in self.model.unresolved() {
            self.registry.resolve(id);
        }
        for id in self.model.maintain(&self.registry, now) {
            self.policy.forget(id);
            self.estimator.forget(id);
        }
        // Returns the kprobe fallback missed are episodes whose end is
        // lost: reported as such, and the model reconciled.
        if let Some(missed) = self.tracer.missed_returns()
            && missed > self.missed_returns
        {
            let count = missed - self.missed_returns;
            self.missed_returns = missed;
            self.on_event(crate::event::Event::Lost(crate::event::Lost {
                ts_ns: now,
                kind: crate::event::LostKind::Throttle,
                count,
            }));
        }
        let changed = self.reconcile(now);
        if !changed.is_empty() {
            let decisions = self.policy.evaluate(&self.model, &changed, now);
            self.decide(decisions);
        }
        self.judge_host(now);
        let active: Vec<u64> = self
            .model
            .cgroups
            .values()
            .filter(|s| {
                now.saturating_sub(s.last_activity_ns) < ACTIVE_NS || s.throttle.in_progress() > 0
            })
            .map(|s| s.id)
            .collect();
        self.sampler.request(now, active);
        self.asked.clear();
        self.request_victims(now);
        self.update_brake();
        self.render_metrics(now);
        self.write_status(now);
    }

    /// Reclaim since the last tick, from the kernel's per-cgroup totals
    /// (when no record per pass crosses the ring): one map lookup when no
    /// pass ended anywhere.
    fn reclaim_totals(&mut self, now: u64) {
        let Some(reader) = &mut self.reclaim_totals else {
            return;
        };
        let d = reader.read();
        for (id, t) in &d.memcg {
            self.model.apply_reclaim_totals(*id, t, now, &self.registry);
        }
        self.model.apply_direct_reclaim_totals(&d.direct);
    }

    /// What the enrichment thread answered renames cgroups (and budgets
    /// that select by those names select again); what the registry wants
    /// to know goes to it. Neither waits.
    fn names(&mut self) {
        let Some(e) = &self.enricher else {
            return;
        };
        // Also when nothing arrived: facts forgotten with gone cgroups.
        if self.registry.learn(e.answers()) {
            self.policy.set_known(self.registry.known());
        }
        let back = e.ask(self.registry.take_asks());
        self.registry.requeue(back);
    }

    /// A sample arrived from the sampler thread: cool-downs end when memory
    /// drops, estimates without the throttle probe, the model's memory
    /// readings, the brake's causes, and the recorder.
    pub(super) fn on_sample(&mut self, s: Sampled) {
        let Sampled { sample, paths } = s;
        let now = sample.ts_ns;
        let held: Vec<(u64, &str, &crate::sys::cgroupfs::CgroupMemory)> = sample
            .cgroups
            .iter()
            .filter_map(|c| {
                let (_, p) = paths.iter().find(|(id, _)| *id == c.id)?;
                Some((c.id, p.as_ref(), &c.mem))
            })
            .collect();
        self.explained.sample(now, &held);
        drop(held);
        let estimating =
            !self.tracer.caps.throttle_measured() && self.version == Some(CgroupVersion::V2);
        self.limited_high.clear();
        for c in &sample.cgroups {
            if c.mem.high.is_some() {
                self.limited_high.push(c.id);
            }
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
        self.recorder.sample(sample, paths);
    }

    /// Asks the victim thread for every line that wants a victim ahead of
    /// a breach, and forgets victims no line wants.
    pub(super) fn request_victims(&mut self, now: u64) {
        let wanted = self.policy.victims_wanted(&self.model, now);
        self.prepared.retain(|k, _| wanted.contains(k));
        let jobs: Vec<_> = wanted
            .iter()
            .filter_map(|&(b, line)| self.job(b, line, now))
            .collect();
        if !jobs.is_empty() && !self.preparer.send(jobs) {
            log::debug!("the victim thread is still busy; victims are a second older");
        }
    }

    /// The first throttling of a cause with no victim ready: ask now, not
    /// at the next tick.
    pub(super) fn ask_victims_for(&mut self, cause: u64, now: u64) {
        if self.prepared.keys().any(|(_, l)| l.cause == cause) || !self.asked.insert(cause) {
            return;
        }
        self.request_victims(now);
    }

    /// Victims came back from the victim thread.
    pub(super) fn on_prepared(&mut self, answers: Vec<Answer>) {
        for a in answers {
            match a.victim {
                Some(v) => {
                    self.prepared.insert(a.key, v);
                }
                None => {
                    self.prepared.remove(&a.key);
                }
            }
        }
        self.update_brake();
    }

    /// Keeps the kernel brake's rules in step: one rule for every cause
    /// with a memory.high in the scope of a budget with a brake (present
    /// from the start, so the kernel counts from the first episode), aimed
    /// at the victim prepared for it, if any; where several budgets cover
    /// one cgroup, the tightest limit wins.
    pub(super) fn update_brake(&mut self) {
        let Some(brake) = &mut self.brake else {
            return;
        };
        let global_dry = self.opts.dry_run || self.cfg.agent.dry_run;
        let mut offers: std::collections::HashMap<u64, Vec<BrakeRule>> =
            std::collections::HashMap::new();
        for (b, budget) in self.policy.budgets.iter().enumerate() {
            // A dry run kills nothing, from user space or the kernel.
            let Some(cfg) = &budget.brake else { continue };
            if global_dry || budget.dry_run {
                continue;
            }
            for &id in &self.limited_high {
                let Some(path) = self.registry.path(id) else {
                    continue;
                };
                let known = self.registry.known();
                if crate::sys::registry::ancestors(&path).any(|a| budget.selects(a, known)) {
                    let v = self.prepared.get(&(b, Line::own(id))).map(|v| &v.info);
                    let (pid, start) = v.map_or((0, 0), |v| (v.pid, v.start_time));
                    let rule = crate::probe::brake::rule(cfg, pid, start);
                    offers.entry(id).or_default().push(rule);
                }
            }
            for ((pb, line), v) in &self.prepared {
                if *pb == b {
                    let rule = crate::probe::brake::rule(cfg, v.info.pid, v.info.start_time);
                    offers.entry(line.cgroup).or_default().push(rule);
                }
            }
        }
        let rules: std::collections::HashMap<u64, BrakeRule> = offers
            .into_iter()
            .filter_map(|(id, v)| Some((id, crate::probe::brake::tightest(&v)?)))
            .collect();
        for (id, rule) in &rules {
            brake.set(*id, *rule);
        }
        brake.retain(&|id| rules.contains_key(&id));
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
        let lookups: Vec<_> = self
            .enricher
            .as_ref()
            .map(|e| e.stats.read())
            .unwrap_or_default()
            .into_iter()
            .map(|(s, o, n)| (s, o.as_str(), n))
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
            names: &self.registry,
            lookups: &lookups,
            budgets: &budgets,
            counters: &self.counters,
            alerts: &alerts,
            host: &self.host_mem,
            host_verdict: self.host.latest,
            process: crate::sys::own::read(self.page_size),
        });
        if let Ok(mut p) = self.page.lock() {
            *p = Arc::new(page);
        }
    }
}
