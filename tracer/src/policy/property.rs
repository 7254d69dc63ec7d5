//! A property of the whole policy, over random hierarchies, limits,
//! budgets and episode streams: a breach's victim is always inside the
//! subtree of the cgroup whose memory.high caused the throttling, and
//! inside the budget's scope. Deterministic (a fixed xorshift seed), so a
//! failure is reproducible.

use super::budget::Decision;
use super::testing::S;
use super::victim::{Rank, Rules, choose};
use crate::config::AgentConfig;
use crate::event::{Comm, Event, Task, Throttle, ThrottleStart};
use crate::model::Model;
use crate::names::Known;
use crate::sys::procs::ProcessInfo;
use crate::sys::registry::{CgroupRegistry, ancestors};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn inside(path: &str, root: &str) -> bool {
    ancestors(path).any(|a| a == root)
}

#[test]
fn a_victim_is_always_inside_the_cause_and_the_budgets_scope() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut breaches = 0;
    for _ in 0..300 {
        // A random tree of up to 12 cgroups under the root (id 1).
        let n = 2 + rng.below(11) as usize;
        let mut paths = vec!["/".to_string()];
        for i in 1..n {
            let parent = paths[rng.below(i as u64) as usize].clone();
            let p = if parent == "/" {
                format!("/g{i}")
            } else {
                format!("{parent}/g{i}")
            };
            paths.push(p);
        }
        let id = |i: usize| i as u64 + 1;
        let reg =
            CgroupRegistry::from_paths(paths.iter().enumerate().map(|(i, p)| (id(i), p.as_str())));
        // Some cgroups have a memory.high: the only possible causes.
        let limited: Vec<usize> = (1..n).filter(|_| rng.below(3) == 0).collect();
        if limited.is_empty() {
            continue;
        }
        // One or two budgets on random cgroups, exact or with their subtree.
        let mut text = String::new();
        for _ in 0..1 + rng.below(2) {
            let at = &paths[1 + rng.below(n as u64 - 1) as usize];
            let glob = if rng.below(2) == 0 {
                at.clone()
            } else {
                format!("{at}/**")
            };
            text.push_str(&format!(
                "[[budget]]\ncgroup = \"{glob}\"\nwindow = \"10s\"\nmax_throttled = \"{}%\"\naction = \"kill-largest\"\n",
                10 + rng.below(60)
            ));
        }
        let cfg = AgentConfig::parse(&text, "t").unwrap();
        let mut p = super::budget::Policy::new(cfg.budgets.clone());
        let mut model = Model::new(0, 600 * S);
        // Processes anywhere in the tree, the biggest often outside the
        // cause: exactly the bystanders the policy must not reach.
        let procs: Vec<ProcessInfo> = (0..8)
            .map(|k| ProcessInfo {
                pid: 100 + k,
                comm: format!("p{k}"),
                cgroup: paths[rng.below(n as u64) as usize].clone(),
                rss_bytes: rng.below(1 << 30),
                start_time: 1,
                exe: format!("/opt/p{k}"),
                ..ProcessInfo::default()
            })
            .collect();
        let mut now = S;
        for step in 0..60u32 {
            // A task in a random cgroup below a random limited cgroup,
            // throttled because that cgroup is over its memory.high.
            let cause = limited[rng.below(limited.len() as u64) as usize];
            let below: Vec<usize> = (0..n)
                .filter(|&i| inside(&paths[i], &paths[cause]))
                .collect();
            let memcg = below[rng.below(below.len() as u64) as usize];
            let task = Task {
                pid: 1000 + step,
                tgid: 1000 + step,
                comm: Comm::new("t"),
            };
            let start = now;
            let end = now + rng.below(3 * S);
            let mut touched = model.apply(
                &Event::ThrottleStart(ThrottleStart {
                    ts_ns: start,
                    task,
                    memcg_id: id(memcg),
                    over_high_id: id(cause),
                    over_high_usage_pages: 0,
                    over_high_limit_pages: 0,
                    nr_pages: 1,
                }),
                &reg,
            );
            let mut decisions = p.evaluate(&model, &touched, start);
            if let Some(d) = p.next_deadline(&model, start)
                && d < end
            {
                decisions.extend(p.evaluate(&model, &touched, d));
            }
            touched = model.apply(
                &Event::Throttle(Throttle {
                    ts_ns: end,
                    start_ns: start,
                    task,
                    memcg_id: id(memcg),
                    over_high_id: id(cause),
                    reclaim_ns: 0,
                    reclaimed_pages: 0,
                    nr_pages: 1,
                }),
                &reg,
            );
            decisions.extend(p.evaluate(&model, &touched, end));
            for d in decisions {
                let Decision::Breach(f) = d else { continue };
                breaches += 1;
                let budget = &p.budgets[f.budget];
                assert!(
                    inside(&f.path, &f.cause_path),
                    "line {} is outside its cause {}",
                    f.path,
                    f.cause_path
                );
                assert!(
                    limited.iter().any(|&i| paths[i] == f.cause_path),
                    "cause {} has no memory.high",
                    f.cause_path
                );
                assert!(
                    ancestors(&f.path).any(|a| budget.selects(a, &Known::default())),
                    "line {} is outside the scope of {}",
                    f.path,
                    budget.selector()
                );
                // Whom kill-largest would choose there: only processes of
                // the line's subtree are candidates.
                let candidates: Vec<ProcessInfo> = procs
                    .iter()
                    .filter(|q| inside(&q.cgroup, &f.path))
                    .cloned()
                    .collect();
                let rules = Rules {
                    self_pid: 1,
                    own_exe: "/usr/bin/memtrace",
                    protect: &[],
                    avoid: &[],
                    prefer: &[],
                };
                if let Some(v) = choose(candidates, Rank::Largest, &rules).victim {
                    assert!(inside(&v.cgroup, &f.cause_path), "victim outside the cause");
                    assert!(
                        ancestors(&v.cgroup).any(|a| budget.selects(a, &Known::default())),
                        "victim outside the budget's scope"
                    );
                }
                p.killed(f.budget, f.line(), end);
            }
            now = end + rng.below(S);
        }
    }
    // The property was exercised, not vacuous.
    assert!(breaches > 100, "only {breaches} breaches");
}
