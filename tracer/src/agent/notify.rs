//! Telling people: alerts go to the sinks' own threads (never blocking the
//! loop), and the host's leading-edge findings become alerts.

use super::Agent;
use crate::act::alert::{Alert, Details};
use crate::config::AlertEvent;
use crate::policy::host::{Finding, HostWatch};
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

    /// A PSI trigger fired: judge it against fresh host memory.
    pub(super) fn on_psi(&mut self, line: PsiLine) {
        self.host_mem = HostMemory::read();
        let f = HostWatch::psi(&self.cfg.host, line, &self.host_mem);
        self.host_alert(f, crate::clock::mono_now_ns());
    }

    /// A leading-edge finding about the host: log and alert.
    pub(super) fn host_alert(&self, f: Finding, at: u64) {
        log::warn!("host: {}", f.summary);
        self.alert(
            AlertEvent::Host,
            None,
            f.topic,
            f.summary,
            Details::Host(f.details),
            false,
            at,
        );
    }
}
