use super::*;
use crate::policy::testing::{S, WORK, fixture, policy};

#[test]
fn a_running_episode_arms_the_deadline_at_the_crossing() {
    let mut f = fixture();
    let mut p = policy(WORK);
    let touched = f.start(100 * S, f.b);
    assert!(p.evaluate(&f.model, &touched, 100 * S).is_empty());
    // Budget 3 s of 10 s, warning at 50%: first the warning at +1.5 s.
    let d = p.next_deadline(&f.model, 100 * S).unwrap();
    assert_eq!(d, 100 * S + 3 * S / 2);
    let ds = p.evaluate(&f.model, &[f.a], d);
    assert!(
        matches!(&ds[..], [Decision::Warn(x)] if x.path == "/work"),
        "{ds:?}"
    );
    let d = p.next_deadline(&f.model, d).unwrap();
    assert_eq!(d, 103 * S);
    let ds = p.evaluate(&f.model, &[f.a], d);
    match &ds[..] {
        [Decision::Breach(x)] => {
            assert_eq!(
                (x.used_ns, x.budget_ns, x.crossed_ns),
                (3 * S, 3 * S, 103 * S)
            );
            assert!(!x.estimate);
        }
        other => panic!("{other:?}"),
    }
    // Breached: no new deadline, no second breach.
    assert_eq!(p.next_deadline(&f.model, 104 * S), None);
    assert!(p.evaluate(&f.model, &[f.a], 105 * S).is_empty());
}

#[test]
fn a_settled_breach_never_counts_its_old_throttling_again() {
    let mut f = fixture();
    let mut p = policy(WORK);
    let touched = f.end(0, 4 * S, f.b);
    let ds = p.evaluate(&f.model, &touched, 4 * S);
    let [Decision::Breach(x)] = &ds[..] else {
        panic!("{ds:?}");
    };
    p.retry(x.budget, x.line(), 5 * S);
    assert_eq!(p.due_retries(5 * S), vec![f.a]);
    // The line went back under memory.high: over.
    p.settled(x.budget, x.line(), 5 * S);
    assert!(p.due_retries(6 * S).is_empty());
    assert!(p.evaluate(&f.model, &[f.a], 6 * S).is_empty());
    assert_eq!(p.next_deadline(&f.model, 6 * S), None);
}

#[test]
fn completed_episodes_breach_when_they_end() {
    let mut f = fixture();
    let mut p = policy(WORK);
    f.end(0, S, f.b);
    f.end(2 * S, 3 * S, f.b);
    let touched = f.end(4 * S, 5 * S + 1, f.b);
    let ds = p.evaluate(&f.model, &touched, 5 * S + 1);
    assert!(
        ds.iter()
            .any(|d| matches!(d, Decision::Breach(x) if x.cgroup == f.a)),
        "{ds:?}"
    );
}

#[test]
fn a_breach_is_judged_at_the_over_high_cgroup() {
    let mut f = fixture();
    let mut p =
        policy("[[budget]]\ncgroup = \"/**\"\nmax_throttled = \"10%\"\nwarn_at = \"100%\"\n");
    let touched = f.end(0, 2 * S, f.b);
    let ds = p.evaluate(&f.model, &touched, 2 * S);
    // /work is over its memory.high: the one line is /work, caused by
    // /work, where the whole over-high subtree is open to the victim.
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert!(
        matches!(&ds[0], Decision::Breach(x) if x.path == "/work" && x.cause_path == "/work"),
        "{ds:?}"
    );
}

/// Builds `/w` with children `a`, `b` (each over its own memory.high in
/// turn) and `c` (no limit), like the bystander report.
fn siblings() -> (crate::sys::registry::CgroupRegistry, Model) {
    let reg = crate::sys::registry::CgroupRegistry::from_paths([
        (1, "/"),
        (20, "/w"),
        (21, "/w/a"),
        (22, "/w/b"),
        (23, "/w/c"),
    ]);
    (reg, Model::new(0, 600 * S))
}

fn episode(
    m: &mut Model,
    reg: &crate::sys::registry::CgroupRegistry,
    tgid: u32,
    memcg: u64,
    cause: u64,
    from: u64,
    to: u64,
) -> Vec<u64> {
    m.apply(
        &crate::event::Event::Throttle(crate::event::Throttle {
            ts_ns: to,
            start_ns: from,
            task: crate::event::Task {
                pid: tgid,
                tgid,
                comm: crate::event::Comm::new("w"),
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

#[test]
fn siblings_throttled_in_turn_are_two_incidents_each_within_budget() {
    let (reg, mut m) = siblings();
    let mut p = policy(
        "[[budget]]\ncgroup = \"/**\"\nwindow = \"10s\"\nmax_throttled = \"70%\"\naction = \"kill-largest\"\n",
    );
    let mut ds = Vec::new();
    // /w/a then /w/b, 2 s each in turn: /w is throttled 100 % of the
    // window, but neither cause comes near 7 s.
    for i in 0..5u64 {
        let (memcg, t0) = if i % 2 == 0 {
            (21, i * 2 * S)
        } else {
            (22, i * 2 * S)
        };
        let touched = episode(
            &mut m,
            &reg,
            100 + memcg as u32,
            memcg,
            memcg,
            t0,
            t0 + 2 * S,
        );
        ds.extend(p.evaluate(&m, &touched, t0 + 2 * S));
    }
    assert!(
        ds.iter().all(|d| !matches!(d, Decision::Breach(_))),
        "no breach: {ds:?}"
    );
    // The union at /w is there for people.
    assert_eq!(m.cgroups[&20].throttle.throttled_in(10 * S, 10 * S), 10 * S);
    // An ancestor not over high judges nothing of its own.
    assert!(p.lines_of(&m, 20).is_empty());
}

#[test]
fn a_budget_below_the_cause_acts_in_its_own_cgroup() {
    // The slice /w is over its memory.high; the budget selects only the
    // service /w/a: its line is /w/a (inside the cause), caused by /w.
    let (reg, mut m) = siblings();
    let mut p = policy(
        "[[budget]]\ncgroup = \"/w/a\"\nwindow = \"10s\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\n",
    );
    let touched = episode(&mut m, &reg, 7, 21, 20, 0, 4 * S);
    let ds = p.evaluate(&m, &touched, 4 * S);
    match &ds[..] {
        [Decision::Breach(x)] => {
            assert_eq!((x.path.as_str(), x.cause_path.as_str()), ("/w/a", "/w"));
        }
        other => panic!("{other:?}"),
    }
    // Throttling of /w/b by the same cause is not this budget's.
    let touched = episode(&mut m, &reg, 8, 22, 20, 5 * S, 9 * S);
    assert!(p.evaluate(&m, &touched, 9 * S).is_empty());
}

#[test]
fn cooldown_blocks_kills_in_the_line_and_ends_when_memory_drops() {
    let mut f = fixture();
    let mut p = policy(WORK);
    f.end(0, S, f.b);
    assert_eq!(p.kill_blocked_until("/work", &f.model, 2 * S), None);
    p.killed(0, Line::own(f.a), 2 * S);
    assert_eq!(p.kill_blocked_until("/work", &f.model, 3 * S), Some(32 * S));
    assert!(
        p.kill_blocked_until("/work/job", &f.model, 3 * S).is_some(),
        "a descendant of a cooling cgroup"
    );
    assert_eq!(p.status(f.a, 3 * S), Some("cooldown"));
    let over = CgroupMemory {
        current: Some(100),
        high: Some(50),
        ..Default::default()
    };
    p.memory_dropped(f.a, &over, 4 * S);
    assert!(p.kill_blocked_until("/work", &f.model, 5 * S).is_some());
    let under = CgroupMemory {
        current: Some(10),
        high: Some(50),
        ..Default::default()
    };
    // Memory dropped, but one window (10 s) after the kill has not
    // passed: still cooling down.
    p.memory_dropped(f.a, &under, 6 * S);
    assert_eq!(p.kill_blocked_until("/work", &f.model, 6 * S), Some(12 * S));
    assert_eq!(p.kill_blocked_until("/work", &f.model, 12 * S), None);
    // Throttling before the kill no longer counts.
    assert_eq!(p.used(0, Line::own(f.a), &f.model, 12 * S), Some(0));
}

#[test]
fn a_breach_that_could_not_act_is_reported_again() {
    let mut f = fixture();
    let mut p = policy(WORK);
    let t = f.start(100 * S, f.b);
    let _ = p.evaluate(&f.model, &t, 100 * S);
    let d = p.next_deadline(&f.model, 100 * S).unwrap();
    let _ = p.evaluate(&f.model, &[f.a], d);
    let d = p.next_deadline(&f.model, d).unwrap();
    assert!(matches!(&p.evaluate(&f.model, &[f.a], d)[..], [Decision::Breach(x)] if !x.retry));
    // The agent could not kill (cool-down): try again in a second.
    p.retry(0, Line::own(f.a), d + S);
    assert_eq!(p.next_deadline(&f.model, d), Some(d + S));
    assert!(p.evaluate(&f.model, &[f.a], d + S / 2).is_empty());
    assert_eq!(p.due_retries(d + S), vec![f.a]);
    match &p.evaluate(&f.model, &[f.a], d + S)[..] {
        [Decision::Breach(x)] => assert!(x.retry),
        other => panic!("{other:?}"),
    }
    // Reported once per retry, not on every evaluation.
    assert!(p.evaluate(&f.model, &[f.a], d + 2 * S).is_empty());
}

#[test]
fn a_due_retry_never_keeps_the_timer_firing() {
    let mut f = fixture();
    let mut p = policy(WORK);
    let b = f.b;
    let t = f.start(100 * S, b);
    let _ = p.evaluate(&f.model, &t, 100 * S);
    let _ = p.evaluate(&f.model, &[f.a], 102 * S);
    assert!(matches!(
        &p.evaluate(&f.model, &[f.a], 103 * S)[..],
        [Decision::Breach(_)]
    ));
    f.end(100 * S, 103 * S, b);
    // Blocked; by the retry the window (101..111 s) holds 2 s: under
    // the 3 s budget, over the re-arm point.
    p.retry(0, Line::own(f.a), 111 * S);
    assert_eq!(p.used(0, Line::own(f.a), &f.model, 111 * S), Some(2 * S));
    let due = p.due_retries(111 * S);
    assert_eq!(due, vec![f.a]);
    assert!(p.evaluate(&f.model, &due, 111 * S).is_empty());
    assert_eq!(p.status(f.a, 111 * S), Some("warning"));
    assert_eq!(p.next_deadline(&f.model, 111 * S), None);
    // A retry for a cgroup nobody evaluates is dropped, not spun on.
    p.state.get_mut(&(0, Line::own(f.a))).unwrap().breached = true;
    p.retry(0, Line::own(f.a), 112 * S);
    p.expire_retries(112 * S);
    assert!(p.due_retries(112 * S).is_empty());
    assert_eq!(p.next_deadline(&f.model, 112 * S), None);
}

#[test]
fn a_reload_keeps_the_cooldown_of_unchanged_budgets() {
    let mut f = fixture();
    let mut old = policy(WORK);
    f.end(0, S, f.b);
    let _ = old.budgets_of(f.a, "/work");
    old.killed(0, Line::own(f.a), 2 * S);
    let mut new = policy(&format!(
        "{WORK}[[budget]]\ncgroup = \"/other\"\nmax_throttled = \"10%\"\n"
    ));
    new.inherit(&old);
    assert!(new.kill_blocked_until("/work", &f.model, 3 * S).is_some());
    new.forget(f.a);
    assert!(new.kill_blocked_until("/work", &f.model, 3 * S).is_none());
}

#[test]
fn rearm_after_recovery() {
    let mut f = fixture();
    let mut p = policy(WORK);
    let t = f.end(0, 4 * S, f.b);
    assert_eq!(p.evaluate(&f.model, &t, 4 * S).len(), 1);
    // Long after, the window is empty: re-armed; a new breach reports.
    assert!(p.evaluate(&f.model, &[f.a], 30 * S).is_empty());
    let t = f.end(40 * S, 44 * S, f.b);
    assert_eq!(p.evaluate(&f.model, &t, 44 * S).len(), 1);
}
