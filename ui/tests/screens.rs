//! The key screens, drawn from fixed snapshots into ratatui's TestBackend
//! and compared with the reviewed pictures in tests/snapshots/.

use memtrace_ui::app::{App, Mode};
use memtrace_ui::canvas::{Theme, draw};
use memtrace_ui::snapshot::{CgroupRow, LogKind, LogLine, Snapshot, Source, TaskRow};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The first incident's cgroup, as systemd spells it, and a container of
/// the seeds' docker.slice (Docker's own example id).
const UNIT: &str = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
const CONTAINER: &str = "ae836c95b4c3c9e9179e0e91015512da89fdec91612f63cebae57df9a5444c79";

fn screen(app: &mut App, snap: &Snapshot, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app, snap, Theme { color: false }))
        .unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn key(app: &mut App, snap: &Snapshot, c: KeyCode) {
    let k = KeyEvent {
        code: c,
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Press,
        state: KeyEventState::NONE,
    };
    let _ = app.key(k, snap);
}

fn base() -> Snapshot {
    Snapshot {
        source: Source::Live,
        host: "devvm".into(),
        kernel: "6.12.107".into(),
        probe_mode: "fentry".into(),
        time: "15:42:07".into(),
        events_per_s: 37.0,
        lost_events: 0,
        mem_total: 23 * GIB,
        mem_available: 9 * GIB,
        swap_total: 0,
        swap_free: 0,
        psi_some_avg10: Some(41.2),
        psi_full_avg10: Some(38.9),
        ..Default::default()
    }
}

fn livelock() -> Snapshot {
    let mut s = base();
    s.cgroups = vec![
        CgroupRow {
            id: 10,
            path: UNIT.into(),
            name: "t3-serve@wizard.service".into(),
            search: format!(
                "t3-serve@wizard.service\n{}",
                UNIT.rsplit('/').next().unwrap()
            ),
            throttled_1s: 0.82,
            throttled_10s: 0.78,
            episodes_per_s: 3.1,
            throttle_unmeasured: false,
            current: Some(12 * GIB + 300 * MIB),
            high: Some(12 * GIB),
            max: Some(16 * GIB),
            reclaim_p50_us: Some(140),
            reclaim_p99_us: Some(5_600),
            psi_full_avg10: Some(79.5),
            oom_kills: 0,
            agent: Some("breach".into()),
            history: (0..120)
                .map(|i| {
                    if i < 40 {
                        0.0
                    } else {
                        0.7 + (i % 7) as f32 * 0.04
                    }
                })
                .collect(),
            tasks: vec![
                TaskRow {
                    pid: 4242,
                    comm: "ugrep".into(),
                    rss: Some(12 * GIB),
                    throttled_ns: 7_100_000_000,
                    episodes: 14,
                    state: "throttled".into(),
                    start_time: None,
                    protected: None,
                },
                TaskRow {
                    pid: 811,
                    comm: "t3".into(),
                    rss: Some(210 * MIB),
                    throttled_ns: 6_400_000_000,
                    episodes: 31,
                    state: "running".into(),
                    start_time: None,
                    protected: None,
                },
                TaskRow {
                    pid: 990,
                    comm: "node".into(),
                    rss: Some(95 * MIB),
                    throttled_ns: 0,
                    episodes: 0,
                    state: "running".into(),
                    start_time: None,
                    protected: None,
                },
            ],
            recent: vec![LogLine {
                time: "15:42:06".into(),
                kind: LogKind::Breach,
                text: "throttled 7.8s of 10s, budget work 30%".into(),
            }],
        },
        CgroupRow {
            id: 11,
            path: "/user.slice/user-1000.slice".into(),
            name: "user-1000.slice (wizard)".into(),
            search: "user-1000.slice (wizard)\nuser-1000.slice\nwizard\n1000".into(),
            throttled_1s: 0.0,
            throttled_10s: 0.04,
            episodes_per_s: 0.2,
            current: Some(3 * GIB),
            high: Some(12 * GIB),
            max: Some(16 * GIB),
            reclaim_p99_us: Some(800),
            reclaim_p50_us: Some(90),
            psi_full_avg10: Some(1.0),
            agent: Some("ok".into()),
            ..Default::default()
        },
        CgroupRow {
            id: 12,
            path: "/docker.slice".into(),
            name: "docker.slice".into(),
            search: "docker.slice\ndocker.slice".into(),
            current: Some(700 * MIB),
            max: Some(8 * GIB),
            psi_full_avg10: Some(0.0),
            oom_kills: 2,
            ..Default::default()
        },
        CgroupRow {
            id: 13,
            path: format!("/docker.slice/docker-{CONTAINER}.scope"),
            name: "t3-indexer".into(),
            search: format!("t3-indexer\ndocker-{CONTAINER}.scope\n{CONTAINER}\nt3-indexer"),
            current: Some(650 * MIB),
            psi_full_avg10: Some(0.0),
            oom_kills: 2,
            ..Default::default()
        },
    ];
    s.log = vec![
        LogLine {
            time: "15:41:58".into(),
            kind: LogKind::Warning,
            text: "t3-serve@wizard.service throttled 1.6s of 10s (50% of budget)".into(),
        },
        LogLine {
            time: "15:42:01".into(),
            kind: LogKind::Oom,
            text: format!(
                "the kernel OOM-killed chrome[3003] in t3-indexer (/docker.slice/docker-{}.scope)",
                &CONTAINER[..12]
            ),
        },
        LogLine {
            time: "15:42:06".into(),
            kind: LogKind::Breach,
            text: "t3-serve@wizard.service throttled 3.0s of 10s: budget work".into(),
        },
        LogLine {
            time: "15:42:06".into(),
            kind: LogKind::Kill,
            text: "ugrep[4242] rss 12.0GiB in t3-serve@wizard.service".into(),
        },
    ];
    s
}

fn degraded() -> Snapshot {
    let mut s = base();
    s.kernel = "6.18.44".into();
    s.probe_mode = "UNAVAILABLE".into();
    s.psi_some_avg10 = Some(0.2);
    s.psi_full_avg10 = Some(0.0);
    s.mem_available = 22 * GIB;
    s.degraded = vec!["throttle episodes not measured: the kernel refused tracing programs and has no kprobes (see memtrace check)".into()];
    s.cgroups = vec![CgroupRow {
        id: 3,
        path: "/memtrace-test".into(),
        name: "memtrace-test".into(),
        search: "memtrace-test".into(),
        current: Some(63 * MIB),
        max: Some(64 * MIB),
        reclaim_p50_us: Some(45),
        reclaim_p99_us: Some(219),
        oom_kills: 1,
        throttle_unmeasured: true,
        ..Default::default()
    }];
    s.log = vec![LogLine {
        time: "20:50:20".into(),
        kind: LogKind::Oom,
        text: "the kernel OOM-killed hog[12368] in /memtrace-test".into(),
    }];
    s
}

#[test]
fn empty_system() {
    let mut app = App::new(Mode::Live);
    insta::assert_snapshot!("empty_80x24", screen(&mut app, &base(), 80, 24));
}

#[test]
fn degraded_banner() {
    let mut app = App::new(Mode::Live);
    insta::assert_snapshot!("degraded_80x24", screen(&mut app, &degraded(), 80, 24));
}

#[test]
fn livelock_table_and_log() {
    let mut app = App::new(Mode::Live);
    let s = livelock();
    insta::assert_snapshot!("livelock_80x24", screen(&mut app, &s, 80, 24));
    insta::assert_snapshot!("livelock_160x40", screen(&mut app, &s, 160, 40));
}

#[test]
fn detail_with_chart_and_tasks_and_kill_confirmation() {
    let mut app = App::new(Mode::Live);
    let s = livelock();
    key(&mut app, &s, KeyCode::Enter);
    insta::assert_snapshot!("detail_100x30", screen(&mut app, &s, 100, 30));
    key(&mut app, &s, KeyCode::Char('k'));
    insta::assert_snapshot!("kill_confirm_100x30", screen(&mut app, &s, 100, 30));
}

#[test]
fn help_filter_and_tree() {
    let mut app = App::new(Mode::Live);
    let s = livelock();
    key(&mut app, &s, KeyCode::Char('?'));
    insta::assert_snapshot!("help_80x24", screen(&mut app, &s, 80, 24));
    key(&mut app, &s, KeyCode::Char('x'));
    key(&mut app, &s, KeyCode::Char('/'));
    for c in "slice".chars() {
        key(&mut app, &s, KeyCode::Char(c));
    }
    insta::assert_snapshot!("filter_typing_80x24", screen(&mut app, &s, 80, 24));
    key(&mut app, &s, KeyCode::Enter);
    key(&mut app, &s, KeyCode::Char('t'));
    insta::assert_snapshot!("filter_tree_80x24", screen(&mut app, &s, 80, 24));
}

/// `/` matches names as well as paths: the unit's user, a container's
/// name, a pod's namespace, case aside.
#[test]
fn the_filter_finds_names() {
    let s = livelock();
    let shown = |filter: &str| {
        let mut app = App::new(Mode::Live);
        key(&mut app, &s, KeyCode::Char('/'));
        for c in filter.chars() {
            key(&mut app, &s, KeyCode::Char(c));
        }
        key(&mut app, &s, KeyCode::Enter);
        app.rows(&s).iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(shown("WIZARD"), [10, 11], "the unit and the user's slice");
    assert_eq!(shown("t3-indexer"), [13], "a container by its name");
    assert_eq!(shown("ae836c95"), [13], "and by its id");
    assert_eq!(shown("x2dserve"), [10], "a unit as systemd spells it");
    assert!(shown("nothing-by-this-name").is_empty());
    let mut app = App::new(Mode::Live);
    key(&mut app, &s, KeyCode::Char('/'));
    for c in "t3-indexer".chars() {
        key(&mut app, &s, KeyCode::Char(c));
    }
    key(&mut app, &s, KeyCode::Enter);
    insta::assert_snapshot!("filter_by_name_100x30", screen(&mut app, &s, 100, 30));
}

#[test]
fn a_paused_live_screen_never_says_live() {
    let mut app = App::new(Mode::Live);
    let s = livelock();
    assert!(screen(&mut app, &s, 80, 24).starts_with(" LIVE "));
    key(&mut app, &s, KeyCode::Char('p'));
    let paused = screen(&mut app, &s, 80, 24);
    assert!(paused.starts_with(" PAUSED "), "{paused}");
    assert!(!paused.contains(" LIVE "), "{paused}");
    key(&mut app, &s, KeyCode::Char('p'));
    assert!(screen(&mut app, &s, 80, 24).starts_with(" LIVE "));
}

#[test]
fn unmeasured_is_n_a_never_zero() {
    let mut app = App::new(Mode::Live);
    let mut s = livelock();
    s.psi_some_avg10 = None;
    s.psi_full_avg10 = None;
    for r in &mut s.cgroups {
        r.throttle_unmeasured = true;
        r.psi_full_avg10 = None;
    }
    let shown = screen(&mut app, &s, 100, 30);
    assert!(shown.contains("PSI some n/a full n/a"), "{shown}");
    let row = shown
        .lines()
        .find(|l| l.contains("docker.slice"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(!row.contains("0%"), "{row}");
    assert_eq!(
        row.matches("n/a").count(),
        4,
        "THR10s, THR1s, EP/s, PSIfull: {row}"
    );
}

#[test]
fn protected_processes_get_no_kill_dialog() {
    let mut app = App::new(Mode::Live);
    let mut s = livelock();
    for t in &mut s.cgroups[0].tasks {
        t.protected = Some("pid 1".into());
    }
    key(&mut app, &s, KeyCode::Enter);
    key(&mut app, &s, KeyCode::Char('k'));
    assert!(app.confirm_kill.is_none());
    let shown = screen(&mut app, &s, 100, 30);
    assert!(shown.contains("cannot be killed: pid 1"), "{shown}");
    assert!(!shown.contains("Kill "), "{shown}");
}

#[test]
fn replay_header() {
    let mut app = App::new(Mode::Replay);
    let mut s = livelock();
    s.source = Source::Replay {
        file: "livelock.mtr".into(),
        at: "20:55:58".into(),
        position: 0.42,
        speed: 1.0,
        paused: true,
    };
    insta::assert_snapshot!("replay_80x24", screen(&mut app, &s, 80, 24));
}

#[test]
fn a_thousand_cgroups_in_a_small_and_a_large_terminal() {
    let mut s = livelock();
    s.cgroups = (0..1000)
        .map(|i| CgroupRow {
            id: 100 + i,
            path: format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8e3f{i:04}_7c4d_4b2a_9f10_2d6e5a7b8c9d.slice/cri-containerd-{}.scope",
                &CONTAINER[4..]
            ),
            name: format!("batch/etl-{i:04}/worker"),
            search: format!("batch/etl-{i:04}/worker\nbatch\netl-{i:04}\nworker"),
            throttled_10s: (i % 17) as f64 / 20.0,
            current: Some((i % 50 + 1) * 40 * MIB),
            high: Some(2 * GIB),
            max: Some(4 * GIB),
            ..Default::default()
        })
        .collect();
    let mut app = App::new(Mode::Live);
    // Draws without panicking at the smallest sane size and a large one;
    // the selection scrolls into view.
    for _ in 0..30 {
        key(&mut app, &s, KeyCode::Down);
    }
    let small = screen(&mut app, &s, 80, 24);
    assert!(small.contains("cgroups 1000/1000"), "{small}");
    let big = screen(&mut app, &s, 240, 70);
    assert!(
        big.contains("RCLp50"),
        "all columns fit in a wide terminal: {big}"
    );
    let tiny = screen(&mut app, &s, 40, 10);
    assert!(tiny.lines().count() == 10);
}
