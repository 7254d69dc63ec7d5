//! SIGHUP: a new configuration replaces the running one only when it is
//! valid as a whole; the state of unchanged budgets (cool-downs, breaches)
//! carries over, so a reload mid-incident does not allow a second kill.

use super::Agent;
use super::setup::{child_setup, load_config, open_append, recorder_setup};
use crate::act::alert::Alerter;
use crate::policy::budget::Policy;

impl Agent {
    pub(super) fn reload(&mut self) {
        self.notifier.reloading();
        let cfg = match load_config(self.opts.config_path.as_ref()) {
            Ok(cfg) => cfg,
            Err(e) => {
                self.counters.reloads_failed += 1;
                log::error!("configuration NOT reloaded, the running one stays: {e}");
                self.notifier.ready(&self.status_line());
                return;
            }
        };
        // Sinks first: one that cannot start (a file that cannot be
        // opened) keeps the running configuration, as a bad file does.
        let has_exec = |c: &crate::config::AgentConfig| {
            c.alerts
                .iter()
                .any(|a| a.kind == crate::config::AlertKind::Exec)
        };
        if has_exec(&cfg) && !has_exec(&self.cfg) {
            let hierarchy = self.tracer.caps.kernel.cgroups.memory.clone();
            self.child = std::sync::Arc::new(child_setup(&cfg, hierarchy.as_ref()));
        }
        self.alerter = match Alerter::start(&cfg.alerts, &self.child) {
            Ok(a) => a,
            Err(e) => {
                self.counters.reloads_failed += 1;
                log::error!("configuration NOT reloaded, the running one stays: {e}");
                self.notifier.ready(&self.status_line());
                return;
            }
        };
        log::info!(
            "configuration reloaded from {}: {} budget(s), {} alert sink(s)",
            cfg.source,
            cfg.budgets.len(),
            cfg.alerts.len()
        );
        let mut policy = Policy::new(cfg.budgets.clone());
        policy.inherit(&self.policy);
        policy.set_known(self.registry.known());
        self.policy = policy;
        if cfg.names.sources() != self.cfg.names.sources()
            || cfg.names.enrich != self.cfg.names.enrich
        {
            // What the old thread answered already is kept; what it was
            // asked and did not answer, the new one is asked again.
            if let Some(old) = self.enricher.take() {
                let facts = old.answers();
                if !facts.is_empty() && self.registry.learn(facts) {
                    self.policy.set_known(self.registry.known());
                }
            }
            self.enricher = super::setup::start_enricher(&cfg, &mut self.registry);
        }
        if cfg.agent.kill_log != self.cfg.agent.kill_log {
            self.files.kill_log(match &cfg.agent.kill_log {
                Some(p) => open_append(p)
                    .map_err(|e| log::error!("kill log {}: {e}", p.display()))
                    .ok(),
                None => None,
            });
        }
        let (h, o) = (&cfg.host, &self.cfg.host);
        if cfg.agent.metrics_listen != self.cfg.agent.metrics_listen
            || (h.psi_window, h.psi_some_stall, h.psi_full_stall)
                != (o.psi_window, o.psi_some_stall, o.psi_full_stall)
        {
            log::warn!("metrics_listen and the [host] PSI triggers take effect at the next start");
        }
        let a = &cfg.agent;
        let b = &self.cfg.agent;
        if (&a.record_dir, cfg.record_max_bytes, a.record_max_age)
            != (&b.record_dir, self.cfg.record_max_bytes, b.record_max_age)
        {
            self.recorder
                .restart(recorder_setup(&cfg, &self.tracer, &self.clock));
        }
        // Victims and brake rules follow the new budgets at once.
        self.prepared.clear();
        self.cfg = cfg;
        self.counters.reloads_ok += 1;
        let now = crate::clock::mono_now_ns();
        self.request_victims(now);
        self.update_brake();
        self.notifier.ready(&self.status_line());
    }
}
