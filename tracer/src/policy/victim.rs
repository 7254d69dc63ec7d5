//! Whom to kill: the kill policy's choice among a cgroup subtree's
//! processes. Pure functions over [`ProcessInfo`], so every rule is unit
//! tested without killing anything.
//!
//! Never chosen, whatever the configuration: pid 1, kernel threads,
//! memtrace itself, init and systemd, sshd (the admin's way in), the
//! container runtimes and the kubelet, processes with `oom_score_adj`
//! -1000, and anything matching an `avoid` or `protect` rule. Among the
//! rest, `prefer` matches go first.
//!
//! The built-in set is recognised by identity, never by name: a process can
//! call itself `sshd`, but it cannot change its executable or, without
//! root, its cgroup. A program is protected when its executable is one of
//! the known system paths, or when it lives in the service cgroup of one of
//! them (`/init.scope`, `ssh.service`, `containerd.service`, ...).

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Pattern;
use crate::sys::procs::ProcessInfo;

/// Executables protected by default.
const PROTECTED_EXES: &[&str] = &[
    "/sbin/init",
    "/usr/sbin/init",
    "/usr/sbin/sshd",
    "/usr/lib/openssh/sshd-session",
    "/usr/lib/openssh/sshd-auth",
    "/usr/libexec/openssh/sshd-session",
    "/usr/libexec/openssh/sshd-auth",
    "/usr/bin/containerd",
    "/usr/local/bin/containerd",
    "/usr/bin/dockerd",
    "/usr/local/bin/dockerd",
    "/usr/bin/crio",
    "/usr/local/bin/crio",
    "/usr/bin/conmon",
    "/usr/local/bin/conmon",
    "/usr/libexec/podman/conmon",
    "/usr/bin/kubelet",
    "/usr/local/bin/kubelet",
];

/// Executable path prefixes protected by default: systemd and its
/// helpers, the containerd shims.
const PROTECTED_EXE_PREFIXES: &[&str] = &[
    "/usr/lib/systemd/systemd",
    "/lib/systemd/systemd",
    "/usr/bin/containerd-shim",
    "/usr/local/bin/containerd-shim",
];

/// Service cgroups (their last path segment) whose processes are protected
/// by default: init, the admin's way in, the runtimes.
const PROTECTED_UNITS: &[&str] = &[
    "ssh.service",
    "sshd.service",
    "containerd.service",
    "docker.service",
    "crio.service",
    "kubelet.service",
];

/// Whether the process is one of the built-in protected programs, and
/// which; `own_exe` is memtrace's own executable.
fn builtin(p: &ProcessInfo, own_exe: &str) -> Option<String> {
    // A deleted or replaced binary reads " (deleted)": still the program.
    let exe = p.exe.strip_suffix(" (deleted)").unwrap_or(&p.exe);
    if !exe.is_empty() && exe == own_exe {
        return Some("memtrace".into());
    }
    if PROTECTED_EXES.contains(&exe) || PROTECTED_EXE_PREFIXES.iter().any(|x| exe.starts_with(x)) {
        return Some(format!("protected by default ({exe})"));
    }
    let unit = p.cgroup.rsplit('/').next().unwrap_or("");
    if p.cgroup == "/init.scope" || PROTECTED_UNITS.contains(&unit) {
        return Some(format!("protected by default (cgroup {})", p.cgroup));
    }
    None
}

/// How the victim is ranked.
#[derive(Clone, Copy, Debug)]
pub enum Rank<'a> {
    /// Largest RSS.
    Largest,
    /// Longest throttled in the budget window (tgid → ns); RSS breaks ties.
    MostThrottled(&'a HashMap<u32, u64>),
}

/// Why a process was not chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spared {
    pub pid: u32,
    pub comm: String,
    pub reason: String,
}

/// The policy's decision.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Choice {
    pub victim: Option<ProcessInfo>,
    pub spared: Vec<Spared>,
}

/// Rules that exclude or favour processes.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    pub self_pid: u32,
    /// memtrace's own executable: every memtrace process is protected.
    pub own_exe: &'a str,
    pub protect: &'a [Pattern],
    pub avoid: &'a [Pattern],
    pub prefer: &'a [Pattern],
}

fn matches(patterns: &[Pattern], p: &ProcessInfo) -> bool {
    patterns
        .iter()
        .any(|r| r.is_match(&p.comm) || r.is_match(&p.cmdline))
}

/// Why a process may never be killed, if it may not.
pub fn protected(p: &ProcessInfo, rules: &Rules<'_>) -> Option<String> {
    if p.pid == 1 {
        return Some("pid 1".into());
    }
    if p.pid == rules.self_pid {
        return Some("the memtrace agent itself".into());
    }
    if p.kernel_thread {
        return Some("kernel thread".into());
    }
    if let Some(why) = builtin(p, rules.own_exe) {
        return Some(why);
    }
    if p.oom_score_adj == -1000 {
        return Some("oom_score_adj is -1000".into());
    }
    if matches(rules.protect, p) {
        return Some("matches an agent protect rule".into());
    }
    None
}

/// Why a budget never kills this process: protected, or avoided.
pub fn spared(p: &ProcessInfo, rules: &Rules<'_>) -> Option<String> {
    protected(p, rules)
        .or_else(|| matches(rules.avoid, p).then(|| "matches the budget's avoid rule".to_string()))
}

/// Chooses the victim among `candidates`.
pub fn choose(candidates: Vec<ProcessInfo>, rank: Rank<'_>, rules: &Rules<'_>) -> Choice {
    let mut spared_list = Vec::new();
    let mut eligible = Vec::new();
    for p in candidates {
        match spared(&p, rules) {
            Some(reason) => spared_list.push(Spared {
                pid: p.pid,
                comm: p.comm.clone(),
                reason,
            }),
            None => eligible.push(p),
        }
    }
    let preferred: Vec<&ProcessInfo> = eligible
        .iter()
        .filter(|p| matches(rules.prefer, p))
        .collect();
    let pool: Vec<&ProcessInfo> = if preferred.is_empty() {
        eligible.iter().collect()
    } else {
        preferred
    };
    let key = |p: &ProcessInfo| -> (u64, u64) {
        match rank {
            Rank::Largest => (p.rss_bytes, 0),
            Rank::MostThrottled(t) => (t.get(&p.pid).copied().unwrap_or(0), p.rss_bytes),
        }
    };
    let victim = pool
        .into_iter()
        .max_by(|a, b| key(a).cmp(&key(b)).then(b.pid.cmp(&a.pid)))
        .cloned();
    Choice {
        victim,
        spared: spared_list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, comm: &str, rss_mib: u64) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            comm: comm.into(),
            cmdline: format!("/usr/bin/{comm}"),
            rss_bytes: rss_mib << 20,
            start_time: 100,
            kernel_thread: false,
            oom_score_adj: 0,
            cgroup: "/work".into(),
            exe: format!("/usr/bin/{comm}"),
        }
    }

    /// A process with this executable, in this cgroup.
    fn at(pid: u32, comm: &str, exe: &str, cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            exe: exe.into(),
            cgroup: cgroup.into(),
            ..p(pid, comm, 10_000)
        }
    }

    fn pat(s: &str) -> Pattern {
        Pattern(regex::Regex::new(s).unwrap())
    }

    const NONE: &[Pattern] = &[];

    fn rules<'a>(avoid: &'a [Pattern], prefer: &'a [Pattern], protect: &'a [Pattern]) -> Rules<'a> {
        Rules {
            self_pid: 4242,
            own_exe: "/usr/bin/memtrace",
            protect,
            avoid,
            prefer,
        }
    }

    #[test]
    fn the_largest_is_chosen() {
        let c = choose(
            vec![p(10, "server", 50), p(11, "ugrep", 900), p(12, "sh", 2)],
            Rank::Largest,
            &rules(NONE, NONE, NONE),
        );
        assert_eq!(c.victim.unwrap().pid, 11);
        assert!(c.spared.is_empty());
    }

    #[test]
    fn protected_processes_are_never_chosen() {
        let mut kthread = p(20, "kworker/0:1", 9000);
        kthread.kernel_thread = true;
        let mut adj = p(21, "postgres", 8000);
        adj.oom_score_adj = -1000;
        let all = vec![
            at(1, "systemd", "/usr/lib/systemd/systemd", "/init.scope"),
            p(4242, "memtrace", 10_000),
            at(30, "sshd", "/usr/sbin/sshd", "/system.slice/ssh.service"),
            at(
                31,
                "sshd-session",
                "/usr/lib/openssh/sshd-session",
                "/user.slice/user-0.slice/session-1.scope",
            ),
            at(
                32,
                "systemd-journal",
                "/usr/lib/systemd/systemd-journald",
                "/system.slice/systemd-journald.service",
            ),
            at(
                33,
                "containerd-shim",
                "/usr/bin/containerd-shim-runc-v2",
                "/w",
            ),
            at(
                34,
                "dockerd",
                "/usr/bin/dockerd",
                "/system.slice/docker.service",
            ),
            at(35, "kubelet", "/usr/local/bin/kubelet", "/w"),
            at(36, "conmon", "/usr/bin/conmon", "/w"),
            at(37, "top", "/usr/bin/memtrace", "/w"),
            kthread,
            adj,
            p(40, "victim", 1),
        ];
        let c = choose(all, Rank::Largest, &rules(NONE, NONE, NONE));
        assert_eq!(c.victim.unwrap().pid, 40);
        assert_eq!(c.spared.len(), 12);
        let reasons: Vec<&str> = c.spared.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons.contains(&"pid 1"));
        assert!(reasons.contains(&"the memtrace agent itself"));
        assert!(reasons.contains(&"kernel thread"));
        assert!(reasons.contains(&"oom_score_adj is -1000"));
        assert!(reasons.contains(&"memtrace"), "{reasons:?}");
    }

    #[test]
    fn a_name_is_not_an_identity() {
        // A hog that calls itself sshd, or systemd, in a work cgroup.
        let fake_sshd = at(50, "sshd", "/tmp/hogs/sshd", "/work");
        let fake_systemd = at(51, "systemd", "/home/u/systemd", "/work");
        let c = choose(
            vec![fake_sshd.clone(), fake_systemd, p(52, "small", 1)],
            Rank::Largest,
            &rules(NONE, NONE, NONE),
        );
        assert!(c.spared.is_empty(), "{:?}", c.spared);
        assert_eq!(c.victim.unwrap().pid, 50);
        // The real one, by executable, and anything in its service cgroup.
        let real = at(60, "sshd", "/usr/sbin/sshd", "/system.slice/ssh.service");
        let helper = at(61, "sh", "/usr/bin/sh", "/system.slice/ssh.service");
        let c = choose(vec![real, helper], Rank::Largest, &rules(NONE, NONE, NONE));
        assert!(c.victim.is_none());
        // A deleted binary after an upgrade is still the program.
        let upgraded = at(62, "sshd", "/usr/sbin/sshd (deleted)", "/work");
        assert!(protected(&upgraded, &rules(NONE, NONE, NONE)).is_some());
    }

    #[test]
    fn avoid_spares_and_the_next_largest_is_chosen() {
        let avoid = [pat("--keep-me")];
        let mut big = p(10, "hog", 900);
        big.cmdline = "/bin/hog --keep-me".into();
        let c = choose(
            vec![big, p(11, "hog", 300), p(12, "x", 10)],
            Rank::Largest,
            &rules(&avoid, NONE, NONE),
        );
        assert_eq!(c.victim.unwrap().pid, 11);
        assert_eq!(c.spared[0].pid, 10);
        assert!(c.spared[0].reason.contains("avoid"));
    }

    #[test]
    fn prefer_goes_first_even_if_smaller() {
        let prefer = [pat("^ugrep$")];
        let c = choose(
            vec![p(10, "db", 900), p(11, "ugrep", 100)],
            Rank::Largest,
            &rules(NONE, &prefer, NONE),
        );
        assert_eq!(c.victim.unwrap().pid, 11);
        // No preferred process: back to the largest.
        let c = choose(
            vec![p(10, "db", 900), p(12, "x", 100)],
            Rank::Largest,
            &rules(NONE, &prefer, NONE),
        );
        assert_eq!(c.victim.unwrap().pid, 10);
    }

    #[test]
    fn most_throttled_with_rss_tie_break() {
        let t: HashMap<u32, u64> = [(10, 5), (11, 9), (12, 9)].into();
        let c = choose(
            vec![p(10, "a", 900), p(11, "b", 10), p(12, "c", 20)],
            Rank::MostThrottled(&t),
            &rules(NONE, NONE, NONE),
        );
        assert_eq!(c.victim.unwrap().pid, 12);
    }

    #[test]
    fn nothing_eligible_means_no_victim() {
        let protect = [pat("^db$")];
        let c = choose(
            vec![p(10, "db", 900)],
            Rank::Largest,
            &rules(NONE, NONE, &protect),
        );
        assert!(c.victim.is_none());
        assert_eq!(c.spared.len(), 1);
        assert!(
            choose(Vec::new(), Rank::Largest, &rules(NONE, NONE, NONE))
                .victim
                .is_none()
        );
    }
}
