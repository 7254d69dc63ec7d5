//! What `--check-config` warns about: a valid file that will not work on
//! this machine as it is now. Exec programs that are not there,
//! directories the agent cannot write, budgets that match no cgroup, keys
//! that no longer do anything.
//! Warnings, not errors: the machine may change before the agent needs
//! them (a service started later makes its cgroup). Unset `url_env` /
//! `token_env` variables are errors at load, not warnings here: a sink
//! without its secret fails at 3 a.m. instead of now.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{AgentConfig, AlertKind};
use crate::names::Known;

/// One warning, with the key it is about.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// `budget "web"`, `alert "pager"`, `agent`.
    pub table: String,
    pub key: String,
    pub message: String,
}

/// The warnings for `cfg` on this machine; `cgroups` are the cgroup paths
/// that exist now.
pub fn warnings(cfg: &AgentConfig, cgroups: &[String]) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut warn = |table: String, key: &str, message: String| {
        out.push(Warning {
            table,
            key: key.into(),
            message,
        });
    };
    for a in &cfg.alerts {
        let table = format!("alert `{}`", a.label());
        if a.kind == AlertKind::Exec
            && let Some(program) = a.command.as_ref().and_then(|c| c.first())
            && let Some(why) = not_runnable(Path::new(program))
        {
            warn(table.clone(), "command", format!("{program}: {why}"));
        }
        if a.kind == AlertKind::File
            && let Some(path) = &a.path
            && !path.exists()
            && let Some(why) = path.parent().and_then(|d| not_writable_dir(d, true))
        {
            warn(table.clone(), "path", format!("{}: {why}", path.display()));
        }
    }
    for (key, set) in [
        ("swap_for", cfg.host.swap_for.is_some()),
        ("mem_available_for", cfg.host.mem_available_for.is_some()),
    ] {
        if set {
            warn(
                "host".into(),
                key,
                "no longer used: the host verdict judges how fast memory and swap fall \
                 (exhaustion_within, trend_window), not how long a level held; remove it"
                    .into(),
            );
        }
    }
    let agent = &cfg.agent;
    if let Some(dir) = &agent.record_dir
        && let Some(why) = not_writable_dir(dir, true)
    {
        warn(
            "agent".into(),
            "record_dir",
            format!("{}: {why}", dir.display()),
        );
    }
    if let Some(log) = &agent.kill_log
        && let Some(dir) = log.parent()
        && let Some(why) = not_writable_dir(dir, false)
    {
        warn(
            "agent".into(),
            "kill_log",
            format!("{}: {why}", dir.display()),
        );
    }
    for b in &cfg.budgets {
        let table = format!("budget `{}`", b.label());
        // The first selector written.
        let selector = b.selector();
        let key = selector.split(' ').next().unwrap_or("cgroup");
        if b.needs_known() {
            // What it selects is known once the agent runs and asks.
            if !cfg.names.enrich {
                warn(
                    table,
                    key,
                    format!(
                        "`{}` selects by a name only the container runtime knows, and [names] \
                         enrich = false: it will select nothing",
                        b.selector()
                    ),
                );
            }
        } else if !cgroups.iter().any(|p| b.selects(p, &Known::default())) {
            warn(
                table,
                key,
                format!(
                    "`{}` matches no cgroup now ({} exist): check the spelling, or start the service first",
                    b.scope(),
                    cgroups.len()
                ),
            );
        }
    }
    out
}

/// Why a program cannot be run, if it cannot.
fn not_runnable(p: &Path) -> Option<String> {
    if !p.is_absolute() {
        return Some("not an absolute path: the agent does not search PATH".into());
    }
    match std::fs::metadata(p) {
        Err(e) => Some(format!("cannot be run: {e}")),
        Ok(m) if !m.is_file() => Some("is not a file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some("is not executable".into()),
        Ok(_) => None,
    }
}

/// Why the agent cannot write in `dir`, if it cannot. A directory the
/// agent would create (`create`) needs a writable nearest existing parent.
fn not_writable_dir(dir: &Path, create: bool) -> Option<String> {
    let mut d = dir;
    if create {
        while !d.exists() {
            d = d.parent()?;
        }
    } else if !d.exists() {
        return Some("does not exist".into());
    }
    if !d.is_dir() {
        return Some(format!("{} is not a directory", d.display()));
    }
    // access(2) answers for this process's identity, which is the agent's
    // when it checks its own file.
    let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: c is a valid NUL-terminated path.
    let ok = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    (!ok).then(|| format!("{} is not writable", d.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_about_what_will_not_work_here() {
        let text = r#"
[agent]
record_dir = "/etc/passwd/memtrace"
kill_log = "/nonexistent-dir/kills.jsonl"

[[budget]]
name = "web"
cgroup = "/system.slice/web.service"
max_throttled = "30%"

[[budget]]
name = "any"
cgroup = "/**"
max_throttled = "30%"

[[alert]]
name = "pager"
kind = "exec"
command = ["/nonexistent/page"]
"#;
        let cfg = AgentConfig::parse(text, "t.toml").unwrap();
        let w = warnings(&cfg, &["/".into(), "/user.slice".into()]);
        let keys: Vec<(&str, &str)> = w
            .iter()
            .map(|w| (w.table.as_str(), w.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("alert `pager`", "command"),
                ("agent", "record_dir"),
                ("agent", "kill_log"),
                ("budget `web`", "cgroup"),
            ],
            "{w:#?}"
        );
        assert!(w[0].message.contains("cannot be run"), "{w:#?}");
        assert!(w[3].message.contains("matches no cgroup"));
        // The same file where everything is in place: no warnings.
        let ok = warnings(
            &AgentConfig::parse(
                "[[budget]]\ncgroup = \"/system.slice/web.service\"\nmax_throttled = \"30%\"\n\
                 [[alert]]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n",
                "t.toml",
            )
            .unwrap(),
            &["/system.slice/web.service".into()],
        );
        assert!(ok.is_empty(), "{ok:#?}");
    }
}
