//! Writes its MEMTRACE_* environment to a file: the target of the agent's
//! `exec` alerts in the tests. env-dump FILE. It also writes what it runs
//! as (`PROC_NICE`, `PROC_OOM_SCORE_ADJ`, `PROC_CGROUP`, and whether
//! `NOTIFY_SOCKET` reached it), which the agent must have reset to a
//! normal process's.
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: env-dump FILE");
        std::process::exit(2);
    };
    let mut lines: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MEMTRACE_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    lines.sort();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Field 19 of stat is the nice value; after the comm's ')' it is the
    // 17th.
    let nice = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(16))
        .unwrap_or("?")
        .to_string();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    lines.push(format!("PROC_NICE={nice}"));
    lines.push(format!(
        "PROC_OOM_SCORE_ADJ={}",
        read("/proc/self/oom_score_adj")
    ));
    let cgroup = read("/proc/self/cgroup");
    let v2 = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("");
    lines.push(format!("PROC_CGROUP={v2}"));
    lines.push(format!(
        "PROC_NOTIFY_SOCKET={}",
        std::env::var_os("NOTIFY_SOCKET").is_some()
    ));
    lines.push(format!(
        "ARGS={}",
        std::env::args().skip(2).collect::<Vec<_>>().join(" ")
    ));
    let tmp = format!("{path}.tmp");
    if std::fs::write(&tmp, lines.join("\n") + "\n")
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        std::process::exit(1);
    }
}
