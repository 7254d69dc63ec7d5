//! Telling people: alerts go to the sinks' own threads (never blocking the
//! loop), and the host's leading edge: readings judged on the loop, a
//! slide into exhaustion alerted before anything else is done.

use super::Agent;
use crate::act::alert::{Alert, Details};
use crate::config::AlertEvent;
use crate::policy::host::{Finding, HostPoint};
use crate::sys::cgroupfs::HostMemory;
use crate::sys::psi::PsiLine;

impl Agent {
    /// Queues an alert for every sink that wants its event.
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one alert, each from a different place"
    )]
    pub(super) fn alert(
        &self,
        event: AlertEvent,
        cgroup: Option<String>,
        key: &str,
        summary: String,
        details: Details,
        estimate: bool,
        ts_ns: u64,
    ) {
        if self.cfg.alerts.is_empty() {
            return;
        }
        let who = cgroup
            .as_deref()
            .and_then(|p| self.registry.id(p))
            .and_then(|id| self.registry.name(id));
        self.alerter.send(&Alert {
            event,
            cgroup,
            who,
            key: key.to_string(),
            summary,
            details,
            host: self.hostname.clone(),
            time: self.clock.rfc3339(ts_ns),
            estimate,
        });
    }

    /// A PSI trigger fired: judge the host now, not at the next tick.
    pub(super) fn on_psi(&mut self, _line: PsiLine) {
        self.judge_host(crate::clock::mono_now_ns());
    }

    /// Reads the host (two small procfs files, on the loop: the alert must
    /// not wait for the sampler, which a dying box stalls first) and
    /// alerts when a slide into exhaustion starts.
    pub(super) fn judge_host(&mut self, now: u64) {
        self.host_mem = HostMemory::read();
        let point = HostPoint {
            ts_ns: now,
            mem: self.host_mem,
            explained_some_us: self.explained.some_us,
            explained_full_us: self.explained.full_us,
        };
        if let Some(f) = self.host.observe(&self.cfg.host, point, &self.explained) {
            self.host_alert(f, now);
        }
    }

    /// The host is sliding into exhaustion: alert first, then log.
    fn host_alert(&self, f: Finding, at: u64) {
        let summary = f.summary.clone();
        self.alert(
            AlertEvent::Host,
            None,
            f.topic,
            f.summary,
            Details::Host(f.details),
            false,
            at,
        );
        log::warn!("host: {summary}");
    }
}
