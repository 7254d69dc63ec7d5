//! SIGHUP: a new configuration replaces the running one only when it is
//! valid as a whole; the state of unchanged budgets (cool-downs, breaches)
//! carries over, so a reload mid-incident does not allow a second kill.
//! A changed `[names]` restarts the enrichment thread without losing a
//! question ([`restart_enricher`]).

use super::Agent;
use super::setup::{child_setup, load_config, open_append, recorder_setup};
use crate::act::alert::Alerter;
use crate::config::AgentConfig;
use crate::policy::budget::Policy;
use crate::sys::enrich::Enricher;
use crate::sys::registry::CgroupRegistry;

/// The enrichment thread for a new `[names]`: what the old one answered
/// already is kept, and what it was asked and never answered (its queue,
/// a lookup under way) is asked of the new one, which the next tick sends.
fn restart_enricher(
    old: Option<Enricher>,
    cfg: &AgentConfig,
    registry: &mut CgroupRegistry,
) -> Option<Enricher> {
    if let Some(old) = old {
        registry.learn(old.answers());
    }
    super::setup::start_enricher(cfg, registry)
}

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
            let old = self.enricher.take();
            self.enricher = restart_enricher(old, &cfg, &mut self.registry);
            self.policy.set_known(self.registry.known());
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
        if a.record_reclaim_passes != b.record_reclaim_passes {
            log::warn!(
                "record_reclaim_passes takes effect at the next start: the reclaim programs were loaded {} per-pass records",
                if self.tracer.reclaim_records {
                    "with"
                } else {
                    "without"
                }
            );
        }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::names::Ask;

    fn config(enrich: bool) -> AgentConfig {
        AgentConfig::parse(&format!("[names]\nenrich = {enrich}\n"), "t.toml").unwrap()
    }

    #[test]
    fn a_restarted_enricher_is_asked_what_the_old_one_never_answered() {
        let mut reg = CgroupRegistry::from_paths([(1, "/"), (2, "/user.slice/user-0.slice")]);
        let old = super::super::setup::start_enricher(&config(true), &mut reg);
        assert!(old.is_some());
        // Taken for the old thread, which is replaced before it answers.
        assert_eq!(reg.take_asks(), [Ask::User(0)]);
        let new = restart_enricher(old, &config(true), &mut reg).unwrap();
        let again = reg.take_asks();
        assert_eq!(again, [Ask::User(0)], "the question is not lost");
        assert!(new.ask(again).is_empty());
        // The new thread answers it (uid 0 is root in every user database).
        let deadline = Instant::now() + Duration::from_secs(10);
        while reg.name(2).unwrap().user().is_none() && Instant::now() < deadline {
            reg.learn(new.answers());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(reg.name(2).unwrap().user(), Some("root"));
        // Answered: a further restart asks nothing.
        let _ = restart_enricher(Some(new), &config(true), &mut reg).unwrap();
        assert!(reg.take_asks().is_empty());
    }

    #[test]
    fn without_enrichment_nothing_is_collected_for_a_thread() {
        let mut reg = CgroupRegistry::from_paths([(1, "/"), (2, "/user.slice/user-0.slice")]);
        let old = super::super::setup::start_enricher(&config(true), &mut reg);
        assert!(restart_enricher(old, &config(false), &mut reg).is_none());
        assert!(reg.take_asks().is_empty());
    }
}
