//! Budgets that select by name: a unit glob, a pod's namespace, a path
//! glob and a name at once, over the real path shapes of the seeds and of
//! the kubelet; and selection made again when enrichment learns a name.

use super::budget::{Decision, Policy};
use super::testing::S;
use crate::config::AgentConfig;
use crate::event::{Comm, Event, Task, Throttle};
use crate::model::Model;
use crate::names::{ContainerNames, Known, Learned, PodNames};
use crate::sys::registry::CgroupRegistry;

const UNIT: &str = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
const OTHER: &str = r"/system.slice/system-t3\x2dserve.slice/t3-serve@emo.service";
const POD_UID: &str = "8e3f1a52-7c4d-4b2a-9f10-2d6e5a7b8c9d";
const CTR: &str = "1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119";

fn pod() -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        POD_UID.replace('-', "_")
    )
}

fn ctr() -> String {
    format!("{}/cri-containerd-{CTR}.scope", pod())
}

/// The unit (10), a subgroup of it (11), another instance (12), a pod (20)
/// and its container (21).
fn hierarchy() -> CgroupRegistry {
    CgroupRegistry::from_paths(
        [
            (1, "/".to_string()),
            (2, "/system.slice".to_string()),
            (3, r"/system.slice/system-t3\x2dserve.slice".to_string()),
            (10, UNIT.to_string()),
            (11, format!("{UNIT}/agents")),
            (12, OTHER.to_string()),
            (13, "/kubepods.slice".to_string()),
            (14, "/kubepods.slice/kubepods-burstable.slice".to_string()),
            (20, pod()),
            (21, ctr()),
        ]
        .iter()
        .map(|(i, p)| (*i, p.as_str()))
        .collect::<Vec<_>>(),
    )
}

fn policy(text: &str) -> Policy {
    Policy::new(AgentConfig::parse(text, "t").unwrap().budgets)
}

/// An episode of a task in `memcg` charged to `cause`, from..to seconds.
fn episode(
    m: &mut Model,
    reg: &CgroupRegistry,
    memcg: u64,
    cause: u64,
    from: u64,
    to: u64,
) -> Vec<u64> {
    m.apply(
        &Event::Throttle(Throttle {
            ts_ns: to * S,
            start_ns: from * S,
            task: Task {
                pid: 7,
                tgid: 7,
                comm: Comm::new("ugrep"),
            },
            memcg_id: memcg,
            over_high_id: cause,
            reclaim_ns: 0,
            reclaimed_pages: 0,
            nr_pages: 1,
        }),
        reg,
    )
}

fn breaches(ds: &[Decision]) -> Vec<String> {
    ds.iter()
        .filter_map(|d| match d {
            Decision::Breach(f) => Some(f.path.clone()),
            Decision::Warn(_) => None,
        })
        .collect()
}

#[test]
fn a_unit_glob_selects_the_units_it_names_and_judges_below_them() {
    let reg = hierarchy();
    let mut m = Model::new(0, 600 * S);
    let mut p = policy(
        "[[budget]]\nunit = \"t3-serve@*.service\"\nwindow = \"10s\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\n",
    );
    assert_eq!(p.budgets_of(10, UNIT), [0]);
    assert_eq!(p.budgets_of(12, OTHER), [0]);
    assert!(
        p.budgets_of(3, r"/system.slice/system-t3\x2dserve.slice")
            .is_empty()
    );
    // A subgroup the server made is in the budget's scope, not selected.
    assert!(p.budgets_of(11, &format!("{UNIT}/agents")).is_empty());
    // The hog in the unit's subgroup, the unit over its memory.high: the
    // line is the unit.
    let touched = episode(&mut m, &reg, 11, 10, 0, 4);
    assert_eq!(breaches(&p.evaluate(&m, &touched, 4 * S)), [UNIT]);
    // The same shape written as systemd spells the slice, with a path glob
    // beside the name: both must hold.
    let mut both = policy(
        "[[budget]]\ncgroup = \"/system.slice/**\"\nunit = 'system-t3\\x2dserve.slice'\nmax_throttled = \"30%\"\n",
    );
    assert_eq!(
        both.budgets_of(3, r"/system.slice/system-t3\x2dserve.slice"),
        [0]
    );
    let mut neither = policy(
        "[[budget]]\ncgroup = \"/user.slice/**\"\nunit = \"t3-serve@*.service\"\nmax_throttled = \"30%\"\n",
    );
    assert!(neither.budgets_of(10, UNIT).is_empty());
}

#[test]
fn a_namespace_selects_its_pods_once_enrichment_names_them() {
    let mut reg = hierarchy();
    let mut m = Model::new(0, 600 * S);
    let mut p = policy(
        "[[budget]]\npod_namespace = \"batch\"\nwindow = \"10s\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\n",
    );
    // The container over the pod's memory.high (KEP-2570 sets it per
    // container): nothing selected yet, no namespace is known.
    let touched = episode(&mut m, &reg, 21, 20, 0, 4);
    assert!(breaches(&p.evaluate(&m, &touched, 4 * S)).is_empty());
    assert!(p.budgets_of(20, &pod()).is_empty());
    // The runtime answered: the pod is in `batch`. The throttling counted
    // all along; the next evaluation judges it at the pod's line.
    assert!(reg.learn([Learned::Container {
        id: CTR.into(),
        names: ContainerNames {
            name: Some("worker".into()),
            pod_uid: Some(POD_UID.into()),
            pod: PodNames {
                name: Some("etl-28641".into()),
                namespace: Some("batch".into()),
            },
        },
    }]));
    p.set_known(reg.known());
    assert_eq!(p.budgets_of(20, &pod()), [0]);
    let touched = episode(&mut m, &reg, 21, 21, 4, 5);
    let mut all = touched.clone();
    all.push(20);
    let ds = p.evaluate(&m, &all, 5 * S);
    assert_eq!(breaches(&ds), [pod()], "{ds:?}");
    // Another namespace's budget selects nothing here.
    let mut shop = policy("[[budget]]\npod_namespace = \"shop\"\nmax_throttled = \"30%\"\n");
    shop.set_known(reg.known());
    assert!(shop.budgets_of(20, &pod()).is_empty());
    // By pod name and container name too.
    let mut by_pod = policy("[[budget]]\npod = \"etl-*\"\nmax_throttled = \"30%\"\n");
    by_pod.set_known(reg.known());
    assert_eq!(by_pod.budgets_of(20, &pod()), [0]);
    let mut by_ctr = policy("[[budget]]\ncontainer = \"worker\"\nmax_throttled = \"30%\"\n");
    assert!(by_ctr.budgets_of(21, &ctr()).is_empty());
    by_ctr.set_known(reg.known());
    assert_eq!(by_ctr.budgets_of(21, &ctr()), [0]);
    let mut by_id = policy("[[budget]]\ncontainer = \"1207db63eaeb\"\nmax_throttled = \"30%\"\n");
    assert_eq!(
        by_id.budgets_of(21, &ctr()),
        [0],
        "an id needs no enrichment"
    );
}

#[test]
fn learning_names_keeps_breaches_and_path_budgets_alone() {
    let reg = hierarchy();
    let mut m = Model::new(0, 600 * S);
    let mut p = policy(
        "[[budget]]\ncgroup = \"/system.slice/**\"\nwindow = \"10s\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\n",
    );
    let touched = episode(&mut m, &reg, 11, 10, 0, 4);
    assert_eq!(breaches(&p.evaluate(&m, &touched, 4 * S)).len(), 1);
    let mut known = Known::default();
    known.learn(Learned::User {
        uid: 1000,
        name: "wizard".into(),
    });
    p.set_known(&known);
    // Still breached: no second breach for the same crossing.
    let touched = episode(&mut m, &reg, 11, 10, 4, 5);
    assert!(breaches(&p.evaluate(&m, &touched, 5 * S)).is_empty());
}
