//! Parsing and validation tests: every error names the file, line and
//! reason.

use super::*;

const FULL: &str = r#"
[agent]
dry_run = false
metrics_listen = "127.0.0.1:9999"
kill_log = "/var/log/memtrace/kills.jsonl"
protect = ["^postgres$"]

[[budget]]
name = "work"
cgroup = "/work*"
window = "10s"
max_throttled = "30%"
warn_at = "60%"
action = "kill-largest"
avoid = ["^sshd", "--keep-me"]
prefer = ["^ugrep$"]
cooldown = "45s"
brake = { limit = "20s", window = "30s", stale = "5s", signal = "SIGKILL" }

[[budget]]
cgroup = "/system.slice/*.service"
max_throttled = 50

[[alert]]
kind = "webhook"
url = "http://127.0.0.1:8080/hook"
token_env = "HOOK_TOKEN"
on = ["breach", "kill"]

[[alert]]
kind = "discord"
url_env = "DISCORD_WEBHOOK_URL"

[[alert]]
kind = "exec"
command = ["/usr/local/bin/page", "--urgent"]
min_interval = "5m"

[host]
swap_free_below = "15%"
exhaustion_within = "3m"
trend_window = "90s"
"#;

/// The environment FULL's `*_env` keys name.
fn env(name: &str) -> Option<String> {
    match name {
        "HOOK_TOKEN" => Some("s3cret".into()),
        "DISCORD_WEBHOOK_URL" => Some("https://discord.example/api/webhooks/1/x".into()),
        "EMPTY" => Some("  ".into()),
        "NOT_A_URL" => Some("discord.example/x".into()),
        _ => None,
    }
}

#[test]
fn full_example_parses() {
    let c = AgentConfig::parse_with_env(FULL, "agent.toml", &env).unwrap();
    assert_eq!(c.budgets.len(), 2);
    let b = &c.budgets[0];
    assert_eq!(b.label(), "work");
    assert_eq!(b.budget_ns(), 3_000_000_000);
    assert_eq!(b.action, Action::KillLargest);
    let cg = b.cgroup.as_ref().unwrap();
    assert!(cg.matches("/work") && cg.matches("/workers"));
    assert!(!cg.matches("/work/child"));
    assert!(b.avoid[1].is_match("ugrep --keep-me x"));
    let brake = b.brake.as_ref().unwrap();
    assert_eq!(brake.limit.0, Duration::from_secs(20));
    assert_eq!(brake.signal, Signal(libc::SIGKILL));
    let d = &c.budgets[1];
    assert_eq!(d.window.0, Duration::from_secs(10));
    assert_eq!(d.max_throttled.fraction(), 0.5);
    assert_eq!(d.action, Action::Alert);
    assert_eq!(c.alerts.len(), 3);
    assert!(c.alerts[0].wants(AlertEvent::Kill) && !c.alerts[0].wants(AlertEvent::Host));
    let hook = &c.alerts[0].resolved;
    assert_eq!(hook.token, Some(Secret("s3cret".into())));
    assert_eq!(
        c.alerts[1].resolved.url,
        Some(Secret("https://discord.example/api/webhooks/1/x".into()))
    );
    assert_eq!(
        format!("{:?}", c.alerts[1])
            .matches("discord.example")
            .count(),
        0,
        "secrets never reach Debug output"
    );
    assert!(c.alerts[1].wants(AlertEvent::Host));
    assert_eq!(c.alerts[2].min_interval.0, Duration::from_secs(300));
    assert_eq!(c.host.exhaustion_within.0, Duration::from_secs(180));
    assert_eq!(c.host.trend_window.0, Duration::from_secs(90));
    assert_eq!(c.host.mem_available_below.0, 10.0);
    assert_eq!(c.host.collapse_below.0, 40.0);
    assert_eq!(c.agent.metrics_listen, "127.0.0.1:9999");
    assert_eq!(c.record_max_bytes, 256 << 20);
    assert!(c.kills());
}

#[test]
fn embedded_default_alerts_on_half_of_10s_and_kills_nothing() {
    let c = AgentConfig::embedded();
    assert_eq!(c.budgets.len(), 1);
    let b = &c.budgets[0];
    assert_eq!(b.window.0, Duration::from_secs(10));
    assert_eq!(b.max_throttled.fraction(), 0.5);
    assert_eq!(b.action, Action::Alert);
    assert!(!c.kills());
    let cg = b.cgroup.as_ref().unwrap();
    assert!(cg.matches("/a") && cg.matches("/a/b/c"));
    assert!(!cg.matches("/"));
    assert_eq!(c.agent.metrics_listen, DEFAULT_METRICS);
}

fn err(text: &str) -> ConfigError {
    AgentConfig::parse(text, "t.toml").unwrap_err()
}

#[test]
fn errors_name_file_line_and_reason() {
    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"130%\"\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.to_string().starts_with("t.toml:3:"), "{e}");
    assert!(e.message.contains("130%"), "{e}");

    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nwindow = \"ten seconds\"\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("not a duration"), "{e}");

    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nwindow = 10\n");
    assert!(e.message.contains("no unit"), "{e}");

    let e = err("[[budget]]\ncgroup = \"/a/[x\"\nmax_throttled = \"30%\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("bad cgroup glob"), "{e}");

    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nmax_throtled = \"1%\"\n");
    assert!(e.message.contains("max_throtled"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");

    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\naction = \"kill-bigest\"\n");
    assert!(e.message.contains("kill-largest"), "{e}");

    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\navoid = [\"(\"]\n");
    assert!(e.message.contains("regular expression"), "{e}");

    let e = err("[frobnicate]\n");
    assert!(e.message.contains("frobnicate"), "{e}");

    let e = err("[[budget]]\ncgroup = \"/a\"\n");
    assert!(e.message.contains("max_throttled"), "{e}");

    let e = err("this is = = not toml");
    assert_eq!(e.line, Some(1), "{e}");
}

#[test]
fn cross_field_errors_point_at_the_table() {
    let e = err("\n\n[[alert]]\nkind = \"webhook\"\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("needs `url` or `url_env`"), "{e}");
    let e = err("[[alert]]\nkind = \"exec\"\ncommand = []\n");
    assert!(e.message.contains("command"), "{e}");
    let e = err("[[alert]]\nkind = \"slack\"\nurl = \"ftp://x\"\n");
    assert!(e.message.contains("http://"), "{e}");
    let e = err("[agent]\nmetrics_listen = \"everywhere\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    let e = err("[agent]\nrecord_max_size = \"lots\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nwindow = \"0s\"\n");
    assert!(e.message.contains("at least 100ms"), "{e}");
    let e =
        err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nbrake = { limit = \"5s\" }\n");
    assert!(e.message.contains("needs a kill action"), "{e}");
    let brake = |b: &str| {
        err(&format!(
            "[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\naction = \"kill-largest\"\nbrake = {{ {b} }}\n"
        ))
    };
    let e = brake("limit = \"5s\", window = \"10ms\"");
    assert!(e.message.contains("between 100ms and 1h"), "{e}");
    let e = brake("limit = \"0s\"");
    assert!(e.message.contains("at least 1ms"), "{e}");
    let e = err("[host]\npsi_window = \"20s\"\n");
    assert!(
        e.message.contains("between 500ms and 10s") && e.line == Some(2),
        "{e}"
    );
}

#[test]
fn value_errors_point_at_their_key_and_name_it() {
    // The window's own line, not the [[budget]] header.
    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nwindow = \"0s\"\n");
    assert_eq!(e.line, Some(4), "{e}");
    let e = err("[[alert]]\nkind = \"slack\"\nurl = \"ftp://x\"\n");
    assert_eq!(e.line, Some(3), "{e}");
    let e = err("[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nmax_throttled = \"20%\"\n");
    assert!(e.message.contains("`max_throttled`"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn both_spellings_of_an_event_name_are_accepted() {
    for on in ["oom-kill", "oom_kill"] {
        let c = AgentConfig::parse(
            &format!(
                "[[alert]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\non = [\"{on}\"]\n"
            ),
            "t.toml",
        )
        .unwrap();
        assert!(c.alerts[0].wants(AlertEvent::OomKill), "{on}");
    }
}

#[test]
fn what_would_not_work_is_refused() {
    let e = err("[[budget]]\ncgroup = \"/\"\nmax_throttled = \"30%\"\n");
    assert!(e.message.contains("is the root"), "{e}");
    assert_eq!(e.line, Some(2), "{e}");
    let e = err(
        "[[budget]]\nname = \"a\"\ncgroup = \"/x\"\nmax_throttled = \"30%\"\n\
         [[budget]]\nname = \"a\"\ncgroup = \"/y\"\nmax_throttled = \"30%\"\n",
    );
    assert!(e.message.contains("defined twice"), "{e}");
    assert_eq!(e.line, Some(6), "{e}");
    for t in ["0s", "1h"] {
        let e = err(&format!(
            "[[alert]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"{t}\"\n"
        ));
        assert!(e.message.contains("timeout must be"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");
    }
    // Far too large for any deadline: refused when read, not a panic later.
    let e = err(
        "[[alert]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"300000000000years\"\n",
    );
    assert!(e.message.contains("too long"), "{e}");
    let e = err("[agent]\nkill_log = \"\"\n");
    assert!(
        e.message.contains("kill_log is empty") && e.line == Some(2),
        "{e}"
    );
    let e = err("[agent]\nrecord_dir = \"var/memtrace\"\n");
    assert!(e.message.contains("is relative"), "{e}");
    let e = err("[agent]\nrecord_max_size = \"1MiB\"\n");
    assert!(
        e.message.contains("at least 8MiB") && e.line == Some(2),
        "{e}"
    );
    let e = err("[agent]\nrecord_reclaim_passes = true\n");
    assert!(
        e.message.contains("needs record_dir") && e.line == Some(2),
        "{e}"
    );
    let e = err("[agent]\nrecord_max_age = \"1m\"\n");
    assert!(
        e.message.contains("at least 20m") && e.line == Some(2),
        "{e}"
    );
}

#[test]
fn percent_and_size_parsing() {
    assert!(
        err("[[budget]]\ncgroup=\"/a\"\nmax_throttled=0\n")
            .message
            .contains("above 0")
    );
    assert!(
        err("[[budget]]\ncgroup=\"/a\"\nmax_throttled=\"-5%\"\n")
            .message
            .contains("above 0")
    );
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("500MB"), Some(500_000_000));
    assert_eq!(parse_size("4096"), Some(4096));
    assert_eq!(parse_size("1.5KiB"), Some(1536));
    assert_eq!(parse_size("lots"), None);
    assert_eq!(parse_size("1 PiB"), None);
}

#[test]
fn the_documented_example_is_valid() {
    let text = include_str!("../../../docs/examples/agent.toml");
    // With the secrets its comments say to put in the environment.
    let secrets = |name: &str| {
        ["MEMTRACE_DISCORD_URL", "MEMTRACE_WEBHOOK_TOKEN"]
            .contains(&name)
            .then(|| "https://example.invalid/x".to_string())
    };
    let c = AgentConfig::parse_with_env(text, "docs/examples/agent.toml", &secrets).unwrap();
    assert_eq!(c.budgets.len(), 3);
    assert!(c.budgets[0].brake.is_some());
    assert_eq!(c.alerts.len(), 3);
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        "\u{0}",
        "[[budget]]",
        "budget = 3",
        "[[alert]]\nkind=1",
        "[agent]\nprotect=[1]",
    ] {
        let _ = AgentConfig::parse(text, "x");
    }
}

/// A sink whose secret is missing fails at load, not at the first alert.
#[test]
fn unset_url_env_and_token_env_are_errors_of_the_file() {
    let cases = [
        (
            "[[alert]]\nkind = \"webhook\"\nurl = \"http://x/\"\ntoken_env = \"NO_SUCH_TOKEN\"\n",
            "token_env names NO_SUCH_TOKEN, which is not set",
        ),
        (
            "[[alert]]\nkind = \"discord\"\nurl_env = \"NO_SUCH_URL\"\n",
            "url_env names NO_SUCH_URL, which is not set",
        ),
        (
            "[[alert]]\nkind = \"webhook\"\nurl = \"http://x/\"\ntoken_env = \"EMPTY\"\n",
            "token_env names EMPTY, which is empty",
        ),
        (
            "[[alert]]\nkind = \"slack\"\nurl_env = \"NOT_A_URL\"\n",
            "does not start with http:// or https://",
        ),
    ];
    for (text, want) in cases {
        let e = AgentConfig::parse_with_env(text, "a.toml", &env).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains(want), "{e}");
        assert!(!e.message.contains("s3cret"), "{e}");
    }
}

#[test]
fn ca_file_is_read_at_load() {
    let dir = std::env::temp_dir().join(format!("memtrace-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/testdata/ca.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let conf = |path: &str, kind: &str| {
        format!(
            "[[alert]]\nkind = \"{kind}\"\n{}ca_file = \"{path}\"\n",
            if kind == "exec" {
                "command = [\"/bin/true\"]\n"
            } else {
                "url = \"https://hooks.internal/x\"\n"
            }
        )
    };
    let c = AgentConfig::parse_with_env(&conf(good, "webhook"), "a.toml", &env).unwrap();
    assert_eq!(c.alerts[0].resolved.ca.len(), 1);
    for (path, kind, want) in [
        ("/no/such/ca.pem", "webhook", "cannot read"),
        (garbage.to_str().unwrap(), "webhook", "no PEM certificate"),
        (good, "exec", "`ca_file` is for webhook"),
    ] {
        let e = AgentConfig::parse_with_env(&conf(path, kind), "a.toml", &env).unwrap_err();
        assert!(e.message.contains(want), "{e}");
        assert_eq!(e.line, Some(1));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the Debian package installs as /etc/memtrace/agent.toml is valid
/// with an empty environment and kills nothing.
#[test]
fn the_packaged_default_is_valid_and_kills_nothing() {
    let text = include_str!("../../../packaging/debian/agent.toml");
    let c = AgentConfig::parse_with_env(text, "packaging/debian/agent.toml", &|_| None).unwrap();
    assert!(!c.kills());
    assert!(c.alerts.is_empty());
    assert_eq!(c.budgets.len(), 1);
}

#[test]
fn host_keys_are_checked_and_the_old_duration_keys_still_load() {
    let e = err("[host]\ntrend_window = \"2s\"\n");
    assert!(
        e.message.contains("between 10s and 1h") && e.line == Some(2),
        "{e}"
    );
    let e = err("[host]\nexhaustion_within = \"0s\"\n");
    assert!(e.message.contains("between 1s and 24h"), "{e}");
    let e = err("[host]\npsi_some_above = \"0%\"\n");
    assert!(e.message.contains("above 0"), "{e}");
    let e = err("[host]\ncollapse_below = \"140%\"\n");
    assert!(
        e.message.contains("at most 100") && e.line == Some(2),
        "{e}"
    );
    let c = AgentConfig::parse("[host]\ncollapse_below = \"25%\"\n", "t").unwrap();
    assert_eq!(c.host.collapse_below.0, 25.0);
    // Files written for the older verdict load; --check-config says the
    // keys do nothing now.
    let c = AgentConfig::parse(
        "[host]\nswap_for = \"2m\"\nmem_available_for = \"30s\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.host.swap_for.map(|d| d.0), Some(Duration::from_secs(120)));
    let w = checks::warnings(&c, &[]);
    assert_eq!(w.iter().filter(|w| w.table == "host").count(), 2, "{w:#?}");
}

#[test]
fn file_alerts_need_an_absolute_path_and_nothing_of_a_webhook() {
    let c = AgentConfig::parse(
        "[[alert]]\nkind = \"file\"\npath = \"/dev/virtio-ports/memtrace.alerts\"\non = [\"host\"]\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.alerts[0].kind, AlertKind::File);
    assert!(c.alerts[0].wants(AlertEvent::Host));
    for (text, want, line) in [
        ("[[alert]]\nkind = \"file\"\n", "file alerts need `path", 1),
        (
            "[[alert]]\nkind = \"file\"\npath = \"alerts.jsonl\"\n",
            "is relative",
            3,
        ),
        (
            "[[alert]]\nkind = \"file\"\npath = \"/a\"\nurl = \"http://x/\"\n",
            "take `path`, not `url`",
            1,
        ),
        (
            "[[alert]]\nkind = \"webhook\"\nurl = \"http://x/\"\npath = \"/a\"\n",
            "`path` is for file alerts",
            1,
        ),
        (
            "[[alert]]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\npath = \"/a\"\n",
            "not `url` or `path`",
            1,
        ),
    ] {
        let e = err(text);
        assert!(e.message.contains(want), "{text}: {e}");
        assert_eq!(e.line, Some(line), "{text}: {e}");
    }
}

/// Budgets that select by name: every key parses, bad globs and budgets
/// that select nothing point at their line, and `[names]` is checked.
#[test]
fn budgets_select_by_name() {
    let c = AgentConfig::parse(
        r#"
[[budget]]
name = "t3"
unit = "t3-serve@*.service"
max_throttled = "30%"

[[budget]]
cgroup = "/kubepods.slice/**"
pod_namespace = "batch"
pod = "etl-*"
max_throttled = "50%"

[[budget]]
container = "ae836c95b4c3"
max_throttled = "50%"

[names]
docker_socket = "/var/run/docker.sock"
timeout = "100ms"
"#,
        "t.toml",
    )
    .unwrap();
    let [t3, batch, ctr] = &c.budgets[..] else {
        panic!("{:?}", c.budgets);
    };
    assert!(t3.cgroup.is_none());
    assert_eq!(t3.selector(), r#"unit = "t3-serve@*.service""#);
    assert_eq!(t3.label(), "t3");
    assert!(!t3.needs_known(), "a unit is in the path");
    assert_eq!(
        batch.label(),
        r#"cgroup = "/kubepods.slice/**", pod = "etl-*", pod_namespace = "batch""#
    );
    assert!(batch.needs_known());
    assert_eq!(ctr.scope(), r#"container = "ae836c95b4c3""#);
    assert_eq!(
        c.names.docker_socket,
        std::path::Path::new("/var/run/docker.sock")
    );
    assert_eq!(c.names.timeout.0, Duration::from_millis(100));
    assert!(c.names.enrich);
    let unit = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
    assert!(t3.selects(unit, &crate::names::Known::default()));
    assert!(!t3.selects("/", &crate::names::Known::default()));

    let e = err("[[budget]]\nmax_throttled = \"30%\"\nunit = \"[x\"\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("bad unit glob `[x`"), "{e}");
    let e = err("[[budget]]\nmax_throttled = \"30%\"\npod_namespace = \"\"\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("empty pod_namespace glob"), "{e}");
    let e = err("\n[[budget]]\nname = \"x\"\nmax_throttled = \"30%\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.message.contains("say what it watches") && e.message.contains("pod_namespace"),
        "{e}"
    );
    let e = err(
        "[[budget]]\nunit = \"x.service\"\nmax_throttled = \"30%\"\n\n[names]\ntimeout = \"1m\"\n",
    );
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("[names] timeout"), "{e}");
    let e = err("[names]\nsocket = \"/x\"\n");
    assert!(e.message.contains("socket"), "{e}");
}
