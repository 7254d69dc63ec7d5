//! The kernel brake: a last resort that works when the agent cannot.
//!
//! For each budget with a `brake`, the agent writes a rule into the
//! `BRAKE_RULES` map for every cgroup with a memory.high the budget
//! watches, from the start, naming the victim it would kill there (avoid
//! and protect rules applied; pid and start time) once it has one, and
//! beats `HEARTBEAT` four times a second. The throttle program counts each
//! rule's throttled time in the kernel and, only once the agent has beaten
//! and only while the heartbeat is stale, signals that victim when it is
//! the task being throttled. A frozen, stopped or starved agent still ends
//! the livelock.

use std::collections::HashMap;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use tracer_ebpf::{BrakeRule, HEARTBEAT_SLOT};

use crate::probe::{LoadError, Tracer, error_chain};

/// The kernel rule of a budget's brake, aimed at the victim the agent
/// prepared (tgid 0: none yet; the kernel counts, but signals no one).
pub fn rule(cfg: &crate::config::BrakeConfig, victim_tgid: u32, start_ticks: u64) -> BrakeRule {
    BrakeRule {
        limit_ns: cfg.limit.0.as_nanos() as u64,
        window_ns: cfg.window.0.as_nanos() as u64,
        stale_ns: cfg.stale.0.as_nanos() as u64,
        victim_tgid,
        signal: cfg.signal.0 as u32,
        victim_start_ticks: start_ticks,
    }
}

/// Of several budgets' rules for one cgroup, the one that acts: one with a
/// victim over one without, then the smallest share of its window.
pub fn tightest(rules: &[BrakeRule]) -> Option<BrakeRule> {
    rules.iter().copied().min_by(|a, b| {
        let share = |r: &BrakeRule| (u128::from(r.limit_ns), u128::from(r.window_ns.max(1)));
        let ((la, wa), (lb, wb)) = (share(a), share(b));
        (a.victim_tgid == 0)
            .cmp(&(b.victim_tgid == 0))
            .then((la * wb).cmp(&(lb * wa)))
    })
}

pub struct Brake {
    rules: BpfHashMap<MapData, u64, BrakeRule>,
    state: BpfHashMap<MapData, u64, tracer_ebpf::BrakeState>,
    heartbeat: Array<MapData, u64>,
    installed: HashMap<u64, BrakeRule>,
}

impl Brake {
    pub fn new(tracer: &mut Tracer) -> Result<Self, LoadError> {
        let ebpf = tracer.ebpf_mut();
        let rules = ebpf
            .take_map("BRAKE_RULES")
            .ok_or_else(|| LoadError::Load("BRAKE_RULES map missing".into()))?;
        let heartbeat = ebpf
            .take_map("HEARTBEAT")
            .ok_or_else(|| LoadError::Load("HEARTBEAT map missing".into()))?;
        let state = ebpf
            .take_map("BRAKE_STATE")
            .ok_or_else(|| LoadError::Load("BRAKE_STATE map missing".into()))?;
        Ok(Self {
            rules: BpfHashMap::try_from(rules).map_err(|e| LoadError::Load(error_chain(&e)))?,
            state: BpfHashMap::try_from(state).map_err(|e| LoadError::Load(error_chain(&e)))?,
            heartbeat: Array::try_from(heartbeat).map_err(|e| LoadError::Load(error_chain(&e)))?,
            installed: HashMap::new(),
        })
    }

    /// Tells the kernel the agent is alive as of `now` (monotonic ns).
    pub fn beat(&mut self, now: u64) {
        if let Err(e) = self.heartbeat.set(HEARTBEAT_SLOT, now, 0) {
            log::warn!("kernel brake heartbeat failed: {e}");
        }
    }

    /// Installs or updates the rule of one cgroup.
    pub fn set(&mut self, memcg_id: u64, rule: BrakeRule) {
        let same = self.installed.get(&memcg_id).is_some_and(|r| {
            (
                r.victim_tgid,
                r.victim_start_ticks,
                r.limit_ns,
                r.window_ns,
                r.stale_ns,
                r.signal,
            ) == (
                rule.victim_tgid,
                rule.victim_start_ticks,
                rule.limit_ns,
                rule.window_ns,
                rule.stale_ns,
                rule.signal,
            )
        });
        if same {
            return;
        }
        match self.rules.insert(memcg_id, rule, 0) {
            Ok(()) => {
                // Once per new or changed victim, not every tick; a rule
                // without a victim only counts.
                if rule.victim_tgid != 0 {
                    log::info!(
                        "kernel brake armed for {} in cgroup {memcg_id}: {} ms throttled in {} ms, once the agent is silent {} ms",
                        rule.victim_tgid,
                        rule.limit_ns / 1_000_000,
                        rule.window_ns / 1_000_000,
                        rule.stale_ns / 1_000_000
                    );
                }
                self.installed.insert(memcg_id, rule);
            }
            Err(e) => log::warn!("kernel brake rule for cgroup {memcg_id} not installed: {e}"),
        }
    }

    /// Removes every rule whose cgroup is not in `keep`.
    pub fn retain(&mut self, keep: &dyn Fn(u64) -> bool) {
        let gone: Vec<u64> = self
            .installed
            .keys()
            .copied()
            .filter(|id| !keep(*id))
            .collect();
        for id in gone {
            let _ = self.rules.remove(&id);
            // Its accounting goes with it: a rule installed again later
            // starts from an empty window.
            let _ = self.state.remove(&id);
            self.installed.remove(&id);
        }
    }
}
