//! Writes its MEMTRACE_* environment to a file: the target of the agent's
//! `exec` alerts in the tests. env-dump FILE
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
