//! The CI case's names checks (issue 15), in the same bookworm boot: who
//! memtrace says it is, as the guest's systemd names it. The agent's kill
//! log, its BREACH line in the journal and the alert its exec sink runs
//! (docs/examples/agent.toml's `page-oncall`, stood in for by a script
//! that writes what it is given) name the seed's unit; after the incident
//! `names-check.sh` squeezes a transient scope to an OOM kill, then a
//! user's login session (`runuser -l wizard`, through PAM), while `memtrace
//! events --json` and `memtrace top` in a tmux watch and the agent alerts.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Guard, T3_SLICE, unit_name};
use crate::vm::debian::image::UNIT_USER;
use crate::vm::debian::payload::Payload;

const SCRIPT: &str = include_str!("../vm/debian/names-check.sh");
const SCRIPT_AT: &str = "/root/names-check.sh";
/// The OOM kills `memtrace events --json` printed.
const EVENTS: &str = "/root/names-seen.jsonl";
/// The login session's cgroup path, and its last events.
const SESSION: &str = "/root/names-session.txt";
const SESSION_EVENTS: &str = "/root/names-session.jsonl";
/// `memtrace top`'s screen as tmux captured it, the session's row shown.
const TOP: &str = "/root/names-top.txt";

/// Where docs/examples/agent.toml's exec sink points.
const PAGER_AT: &str = "/usr/local/bin/page-oncall";
/// The agent's unit lets it write its logs directory only.
const PAGER_LOG: &str = "/var/log/memtrace/page-oncall.log";
const PAGER: &str = r#"#!/bin/sh
# Stands in for the pager docs/examples/agent.toml's exec sink runs: writes
# what memtrace passes it, for the CI case to check (printf: dash's echo
# would undo the JSON's escaped backslashes).
{
	echo "argv: $*"
	env | grep '^MEMTRACE_' | grep -v '^MEMTRACE_JSON=' | sort
	printf '%s\n' "MEMTRACE_JSON=$MEMTRACE_JSON"
} >>/var/log/memtrace/page-oncall.log
"#;

/// The pager stand-in, for every guest that runs the example configuration.
pub(super) fn pager(p: &mut Payload) -> Result<()> {
    p.file(PAGER_AT, PAGER, 0o755)
}

/// What the CI case's guard brings, runs after the incident and reads back.
pub(super) fn add(g: &mut Guard) {
    g.files.push((SCRIPT_AT.into(), SCRIPT.into()));
    g.after.push(json!({
        "name": "names",
        "argv": ["sh", SCRIPT_AT],
        "succeed": true,
    }));
    g.collect.push(EVENTS);
    g.collect.push(SESSION);
    g.collect.push(SESSION_EVENTS);
    g.collect.push(TOP);
    g.collect.push(PAGER_LOG);
}

/// The JSON lines of a collected file.
fn json_lines(r: &Value, file: &str) -> Vec<Value> {
    r["collected"][file]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn lines<'a>(r: &'a Value, file: &str) -> Vec<&'a str> {
    r["collected"][file]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// One line for the log.
pub(super) fn summary(r: &Value) -> String {
    let events = json_lines(r, EVENTS);
    let session = lines(r, SESSION);
    format!(
        "names: {} oom_kill events, login session {}",
        events.len(),
        session.first().unwrap_or(&"none")
    )
}

/// What the names checks found wrong (empty: all passed).
pub(super) fn checks(r: &Value) -> Vec<String> {
    let mut f = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            f.push(what);
        }
    };
    let unit = unit_name();
    let path = format!("/system.slice/{T3_SLICE}/{unit}");

    // The kill log: the budget's cgroup by its unit, template and instance.
    let kills = json_lines(r, "/var/log/memtrace/kills.jsonl");
    let named = kills.iter().any(|k| {
        k["cgroup"] == path.as_str()
            && k["cgroup_name"] == unit.as_str()
            && k["who"]["kind"] == "service"
            && k["who"]["template"] == "t3-serve@.service"
            && k["who"]["instance"] == UNIT_USER
            && k["who"]["slice_escaped"] == T3_SLICE
    });
    check(
        named,
        format!("no kill log record names {unit} with its template and instance: {kills:?}"),
    );

    // The journal: the name first, the path beside it.
    let breach = format!("BREACH: {unit} ({path}) throttled");
    let warnings: Vec<&str> = r["journal_warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    check(
        warnings.iter().any(|l| l.contains(&breach)),
        format!(
            "no journal line `{breach} ...`; BREACH lines: {:?}",
            warnings
                .iter()
                .filter(|l| l.contains("BREACH"))
                .collect::<Vec<_>>()
        ),
    );

    // The exec sink, as the agent ran it on the kill.
    let pager = lines(r, PAGER_LOG);
    let has = |want: &str| pager.iter().any(|l| l.trim() == want);
    let json_named = pager.iter().any(|l| {
        l.strip_prefix("MEMTRACE_JSON=")
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .is_some_and(|j| j["event"] == "kill" && j["cgroup_name"] == unit.as_str())
    });
    check(
        has("MEMTRACE_EVENT=kill") && has(&format!("MEMTRACE_NAME={unit}")) && json_named,
        format!("the exec sink was not given the unit's name on the kill: {pager:?}"),
    );

    // After the incident: a transient scope, OOM-killed.
    let step = r["after"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "names");
    check(
        step.is_some_and(|s| s["exit"] == 0),
        format!("names-check.sh did not end well: {step:?}"),
    );
    let events = json_lines(r, EVENTS);
    let scope = events.iter().any(|e| {
        e["type"] == "oom_kill"
            && e["cgroup"] == "/system.slice/names-batch.scope"
            && e["cgroup_name"] == "names-batch.scope"
            && e["who"]["kind"] == "scope"
            && e["who"]["unit"] == "names-batch.scope"
    });
    check(
        scope,
        format!("no oom_kill event named the scope names-batch.scope: {events:?}"),
    );
    f.extend(session_checks(r, &events));
    f
}

/// The login session: its uid from the path, its user from the passwd
/// lookup, in `events --json`, `top` and the agent's alert.
fn session_checks(r: &Value, events: &[Value]) -> Vec<String> {
    let mut f = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            f.push(what);
        }
    };
    let path = lines(r, SESSION).first().map(|l| l.trim().to_string());
    let Some((path, unit, n)) = path.as_deref().and_then(|p| {
        let unit = p.strip_prefix("/user.slice/user-1000.slice/")?;
        // logind's session ids are alphanumeric (`c1` without an audit
        // session id, as here).
        let n = unit.strip_prefix("session-")?.strip_suffix(".scope")?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some((p.to_string(), unit.to_string(), n.to_string()))
    }) else {
        check(
            false,
            format!(
                "no login session scope of uid 1000: {:?}",
                lines(r, SESSION)
            ),
        );
        return f;
    };
    let name = format!("{unit} (wizard)");
    let who = |w: &Value| {
        w["kind"] == "session"
            && w["unit"] == unit.as_str()
            && w["session"] == n.as_str()
            && w["slice"] == "user-1000.slice"
            && w["uid"] == 1000
            && w["user"] == UNIT_USER
    };
    let oom = events.iter().any(|e| {
        e["type"] == "oom_kill"
            && e["cgroup"] == path.as_str()
            && e["cgroup_name"] == name.as_str()
            && who(&e["who"])
    });
    check(
        oom,
        format!(
            "no oom_kill event named {name} with its session, uid and user: {:?}",
            json_lines(r, SESSION_EVENTS)
        ),
    );

    // top, in a real terminal, filtered by the user's name: the session's
    // row by its name, its path beside it.
    let screen = lines(r, TOP);
    let row = screen.iter().find(|l| {
        l.trim_start_matches(['│', ' '])
            .strip_prefix(name.as_str())
            .is_some_and(|rest| rest.starts_with(' '))
    });
    check(
        screen.iter().any(|l| l.contains("filter: wizard"))
            && row.is_some_and(|l| l.contains("user-1000.slice")),
        format!(
            "top's screen, filtered by `wizard`, has no row {name} beside its path: {screen:#?}"
        ),
    );

    // The agent's alert of the kernel's OOM kill, from the shipped webhook
    // sink: the name in the summary, who in the fields.
    let received: Vec<&Value> = r["received"].as_array().into_iter().flatten().collect();
    let alert = received.iter().any(|x| {
        let b = &x["body"];
        x["path"] == "/memtrace"
            && b["event"] == "oom-kill"
            && b["cgroup"] == path.as_str()
            && b["cgroup_name"] == name.as_str()
            && b["summary"].as_str().is_some_and(|s| s.contains(&name))
            && who(&b["who"])
    });
    check(
        alert,
        format!("the webhook got no oom-kill alert naming {name} with its user: {received:?}"),
    );
    f
}
