//! The registry's tests: real directories for the walks, paths alone for names.

use super::*;
use crate::test_util::tempdir;

#[test]
fn maps_inodes_to_relative_paths_and_back() {
    let dir = tempdir("registry");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::create_dir_all(dir.join("c")).unwrap();
    std::fs::write(dir.join("a/memory.current"), "1\n").unwrap();
    let mut r = CgroupRegistry::for_root(&dir);
    let ino = |p: &str| std::fs::metadata(dir.join(p)).unwrap().ino();
    assert_eq!(r.resolve(ino("a/b")).as_deref(), Some("/a/b"));
    assert_eq!(r.resolve(ino("c")).as_deref(), Some("/c"));
    assert_eq!(r.resolve(ino("")).as_deref(), Some("/"));
    assert_eq!(r.id("/a"), Some(ino("a")));
    assert_eq!(r.len(), 4);
    assert_eq!(r.dir("/a/b"), Some(dir.join("a/b")));
    assert_eq!(r.dir("/"), Some(dir.to_path_buf()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn new_cgroups_are_found_on_miss_and_removed_ones_kept() {
    let dir = tempdir("registry");
    let mut r = CgroupRegistry::for_root(&dir);
    std::fs::create_dir(dir.join("late")).unwrap();
    let late = std::fs::metadata(dir.join("late")).unwrap().ino();
    // Let the rescan rate limit pass.
    std::thread::sleep(RESCAN_INTERVAL);
    assert_eq!(r.resolve(late).as_deref(), Some("/late"));
    assert!(r.is_live(late));
    std::fs::remove_dir(dir.join("late")).unwrap();
    r.scan();
    assert_eq!(r.lookup(late).as_deref(), Some("/late"));
    assert!(!r.is_live(late));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_id_a_rescan_did_not_find_is_not_looked_for_again_at_once() {
    let dir = tempdir("registry");
    let mut r = CgroupRegistry::for_root(&dir);
    // Not a directory here: a cgroup removed before the scan.
    let gone = u64::MAX - 7;
    std::thread::sleep(RESCAN_INTERVAL);
    assert_eq!(r.resolve(gone), None);
    std::fs::create_dir(dir.join("late")).unwrap();
    let late = std::fs::metadata(dir.join("late")).unwrap().ino();
    std::thread::sleep(RESCAN_INTERVAL);
    // No walk for the id already missed: `late` stays unknown...
    assert_eq!(r.resolve(gone), None);
    assert_eq!(r.lookup(late), None);
    // ...while an id not missed before is looked for, and found.
    assert_eq!(r.resolve(late).as_deref(), Some("/late"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn watched_cgroups_are_known_at_once() {
    let dir = tempdir("registry");
    std::fs::create_dir(dir.join("old")).unwrap();
    let mut r = CgroupRegistry::for_root(&dir);
    assert!(!r.watching_all(), "not watching yet: walks keep it current");
    assert!(r.watch());
    assert!(r.watching_all(), "every directory watched: no walk needed");
    assert_eq!(r.poll_new(), 0);
    std::fs::create_dir_all(dir.join("old/new/deep")).unwrap();
    std::fs::create_dir(dir.join("top")).unwrap();
    // No rescan: the rate limit has not passed, and lookup never scans.
    assert_eq!(r.poll_new(), 3);
    let ino = |p: &str| std::fs::metadata(dir.join(p)).unwrap().ino();
    assert_eq!(
        r.lookup(ino("old/new/deep")).as_deref(),
        Some("/old/new/deep")
    );
    assert_eq!(r.lookup(ino("top")).as_deref(), Some("/top"));
    let mut created = r.take_created();
    created.sort_unstable();
    let mut want = vec![ino("old/new"), ino("old/new/deep"), ino("top")];
    want.sort_unstable();
    assert_eq!(created, want);
    assert!(r.take_created().is_empty());
    // A rescan finds nothing new, and reports nothing twice.
    r.scan();
    assert!(r.take_created().is_empty());
    std::fs::create_dir(dir.join("old/new/deep/deeper")).unwrap();
    assert_eq!(r.poll_new(), 1, "new directories are watched too");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn names_are_made_once_asked_about_once_and_renamed_by_what_is_learned() {
    let id = "ae836c95b4c3c9e9179e0e91015512da89fdec91612f63cebae57df9a5444c79";
    let ctr = format!("/docker.slice/docker-{id}.scope");
    let mut r = CgroupRegistry::from_paths([(1, "/"), (2, "/docker.slice"), (3, ctr.as_str())]);
    assert_eq!(r.name(3).unwrap().name(), "ae836c95b4c3");
    assert!(
        r.take_asks().is_empty(),
        "a recording's registry asks nothing"
    );
    r.want_names();
    let asks = r.take_asks();
    assert_eq!(
        asks,
        [Ask::Container {
            id: id.into(),
            runtime: Some(crate::names::Runtime::Docker),
            owner: None
        }]
    );
    // Asked once: the same cgroups seen again, and a new cgroup inside
    // the container, ask nothing; a refused batch comes back.
    let mut seen: HashMap<u64, String> = r.entries().map(|(i, p)| (i, p.to_string())).collect();
    seen.insert(4, format!("{ctr}/app"));
    r.absorb(seen, Instant::now(), true);
    assert!(r.take_asks().is_empty());
    r.requeue(asks);
    assert_eq!(r.take_asks().len(), 1);
    let before = r.name(3).unwrap();
    assert!(r.learn([Learned::Container {
        id: id.into(),
        names: crate::names::ContainerNames {
            name: Some("t3-indexer".into()),
            ..Default::default()
        },
    }]));
    assert_eq!(r.name(3).unwrap().name(), "t3-indexer");
    assert_eq!(
        before.name(),
        "ae836c95b4c3",
        "names already handed out stay"
    );
    assert!(Arc::ptr_eq(&r.name(2).unwrap(), &r.name(2).unwrap()));
    // Through the model's lookup too.
    assert_eq!(Hierarchy::identity(&r, 3).unwrap().name(), "t3-indexer");
}

#[test]
fn unknown_and_zero_ids() {
    let mut r = CgroupRegistry::new(None);
    assert!(r.resolve(0).is_none());
    assert!(r.resolve(12345).is_none());
    assert!(r.is_empty());
}

#[test]
fn proc_cgroup_lines() {
    let text = "12:pids:/a\n4:memory:/test\n0::/user.slice/x\n";
    assert_eq!(
        cgroup_line(text, CgroupVersion::V1).as_deref(),
        Some("/test")
    );
    assert_eq!(
        cgroup_line(text, CgroupVersion::V2).as_deref(),
        Some("/user.slice/x")
    );
    assert_eq!(cgroup_line("garbage", CgroupVersion::V2), None);
}

#[test]
fn path_helpers() {
    assert_eq!(parent_path("/a/b"), Some("/a"));
    assert_eq!(parent_path("/a"), Some("/"));
    assert_eq!(parent_path("/"), None);
    assert_eq!(ancestors("/a/b").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
}

/// A container's registry path, for a number.
fn container(n: usize) -> (String, String) {
    let id = format!("{n:064x}");
    (format!("/docker.slice/docker-{id}.scope"), id)
}

/// A walk that finds the root, `docker.slice` and these containers.
fn walk(containers: std::ops::Range<usize>) -> HashMap<u64, String> {
    let mut seen = HashMap::from([(1, "/".to_string()), (2, "/docker.slice".to_string())]);
    for n in containers {
        seen.insert(100 + n as u64, container(n).0);
    }
    seen
}

/// The registry answers what it asks, as the enrichment thread would.
fn answer_all(r: &mut CgroupRegistry) {
    let facts: Vec<Learned> = r
        .take_asks()
        .into_iter()
        .filter_map(|a| match a {
            Ask::Container { id, .. } => Some(Learned::Container {
                names: crate::names::ContainerNames {
                    name: Some(format!("ctr-{}", usize::from_str_radix(&id, 16).unwrap())),
                    ..Default::default()
                },
                id,
            }),
            _ => None,
        })
        .collect();
    r.learn(facts);
}

#[test]
fn container_churn_past_the_bound_keeps_naming_new_containers_in_bounded_memory() {
    use crate::names::MAX_ENTRIES;
    const BATCH: usize = 512;
    let mut r = CgroupRegistry::from_paths([]);
    r.want_names();
    let mut now = Instant::now();
    // Three times the table's bound, a batch at a time; each batch's
    // containers go when the next one starts.
    let rounds = 3 * MAX_ENTRIES / BATCH;
    let mut peak = (0, 0, 0);
    for round in 0..rounds {
        let batch = round * BATCH..(round + 1) * BATCH;
        r.absorb(walk(batch.clone()), now, true);
        answer_all(&mut r);
        for n in [batch.start, batch.end - 1] {
            let name = r.name(100 + n as u64).unwrap();
            assert_eq!(name.name(), format!("ctr-{n}"), "round {round}");
        }
        peak = (
            peak.0.max(r.known().len()),
            peak.1.max(r.names.asked.len()),
            peak.2.max(r.len()),
        );
        now += GONE_RETENTION / 2 + Duration::from_secs(1);
    }
    // Live, plus the two batches gone less than GONE_RETENTION ago.
    let bound = 3 * BATCH;
    assert!(peak.0 <= bound, "facts peaked at {}", peak.0);
    assert!(peak.1 <= bound, "questions asked peaked at {}", peak.1);
    assert!(peak.2 <= bound + 2, "cgroups peaked at {}", peak.2);
    // The oldest containers' facts went with them.
    let (_, first) = container(0);
    assert!(!r.known().answers(&Ask::Container {
        id: first,
        runtime: Some(crate::names::Runtime::Docker),
        owner: None,
    }));
}

#[test]
fn a_user_who_comes_back_after_his_facts_went_is_asked_about_again() {
    let mut r = CgroupRegistry::from_paths([]);
    r.want_names();
    let mut now = Instant::now();
    let user = HashMap::from([
        (1, "/".to_string()),
        (2, "/user.slice".to_string()),
        (3, "/user.slice/user-1000.slice".to_string()),
    ]);
    r.absorb(user.clone(), now, true);
    assert_eq!(r.take_asks(), [Ask::User(1000)]);
    r.learn([Learned::User {
        uid: 1000,
        name: "wizard".into(),
    }]);
    assert_eq!(r.name(3).unwrap().user(), Some("wizard"));
    // Logged out: the slice goes, and after the retention its fact.
    let gone = HashMap::from([(1, "/".to_string()), (2, "/user.slice".to_string())]);
    r.absorb(gone.clone(), now, true);
    now += GONE_RETENTION;
    r.absorb(gone, now, true);
    assert!(r.known().is_empty());
    assert!(
        r.learn([]),
        "copies of what is known hear of the forgetting"
    );
    assert!(!r.learn([]));
    // Back (a new cgroup id): asked again, not taken for answered.
    let mut back = user;
    back.remove(&3);
    back.insert(4, "/user.slice/user-1000.slice".to_string());
    r.absorb(back, now, true);
    assert_eq!(r.take_asks(), [Ask::User(1000)]);
}

#[test]
fn a_new_enrichment_thread_is_asked_what_the_old_one_never_answered() {
    let (ctr, id) = container(7);
    let mut r = CgroupRegistry::from_paths([
        (1, "/"),
        (2, "/user.slice/user-1000.slice"),
        (3, ctr.as_str()),
        (4, "/user.slice/user-1001.slice"),
    ]);
    r.want_names();
    let mut sent = r.take_asks();
    sent.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(sent.len(), 3, "{sent:?}");
    // The old thread answered one question and then was replaced, with
    // one more refused by its full queue and waiting to be sent.
    r.learn([Learned::User {
        uid: 1000,
        name: "wizard".into(),
    }]);
    r.requeue(vec![Ask::User(1001)]);
    r.want_names();
    let mut again = r.take_asks();
    again.sort_by_key(|a| format!("{a:?}"));
    let unanswered: Vec<Ask> = sent.into_iter().filter(|a| *a != Ask::User(1000)).collect();
    assert_eq!(again, unanswered, "each unanswered question once");
    assert!(r.take_asks().is_empty());
    assert!(matches!(&again[0], Ask::Container { id: i, .. } if *i == id));
    // No thread any more: nothing piles up for one.
    r.stop_names();
    r.want_names();
    r.stop_names();
    assert!(r.take_asks().is_empty());
}
