//! The agent on this machine's real kernel: alert sinks against a real
//! HTTP receiver on loopback and a real exec'd program, the Prometheus
//! endpoint, and SIGHUP reloads. Root only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use memtrace_tests::cgroup::TestCgroup;
use memtrace_tests::http_sink::HttpSink;
use memtrace_tests::run::{AgentRun, workspace_bin};

use super::squeeze;

/// A datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: String,
}

impl NotifySocket {
    fn bind(name: &str) -> Self {
        let path = std::env::temp_dir()
            .join(format!("memtrace-notify-{name}-{}", std::process::id()))
            .display()
            .to_string();
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self { socket, path }
    }

    fn path(&self) -> &str {
        &self.path
    }

    /// Messages received until `until` is among them or `timeout` passes.
    fn until(&self, timeout: Duration, until: &str) -> Vec<(std::time::Instant, String)> {
        let end = std::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while std::time::Instant::now() < end {
            let mut buf = [0u8; 512];
            if let Ok(n) = self.socket.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).to_string();
                let done = m.lines().any(|l| l == until);
                got.push((std::time::Instant::now(), m));
                if done {
                    break;
                }
            }
        }
        got
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A metric's value for a label set, from exposition text.
fn value(page: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

#[test]
fn alerts_reach_every_sink_and_metrics_count_them() {
    let _serial = super::serial();
    let cg = TestCgroup::create(&format!("memtrace-agent-{}", std::process::id())).unwrap();
    cg.set_max(64 << 20).unwrap();
    let sink = HttpSink::start().unwrap();
    let dump = std::env::temp_dir().join(format!("memtrace-exec-{}", std::process::id()));
    let _ = std::fs::remove_file(&dump);
    let port = free_port();
    let flight = std::env::temp_dir().join(format!("memtrace-flight-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&flight);
    let config = std::env::temp_dir().join(format!("memtrace-agent-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
metrics_listen = "127.0.0.1:{port}"
record_dir = "{flight}"
record_max_size = "8MiB"
# Never breached here (no memory.high on this host): its series must be
# on the page at 0 all the same.
[[budget]]
name = "work"
cgroup = "/memtrace-no-such-cgroup/**"
max_throttled = "30%"
action = "kill-largest"
# Not `host`: the squeeze can raise this machine's own memory PSI enough
# for a leading-edge alert, which would make the counts below depend on
# the machine.
[[alert]]
kind = "webhook"
url = "{hook}"
token = "t0ken"
on = ["warning", "breach", "kill", "oom-kill", "brake"]
[[alert]]
kind = "discord"
url_env = "TEST_DISCORD_URL"
[[alert]]
kind = "slack"
url = "{slack}"
on = ["oom-kill"]
[[alert]]
kind = "exec"
command = ["{envdump}", "{dump}", "--from-config"]
on = ["oom-kill"]
"#,
            hook = sink.url("/hook"),
            slack = sink.url("/slack"),
            envdump = workspace_bin("env-dump").display(),
            dump = dump.display(),
            flight = flight.display(),
        ),
    )
    .unwrap();
    let discord = sink.url("/discord");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let notify = NotifySocket::bind("alerts");
    let agent = AgentRun::start(
        &workspace_bin("memtrace"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--status-file",
            "/tmp/memtrace-test-status.json",
        ],
        &[
            ("TEST_DISCORD_URL", discord.as_str()),
            ("NOTIFY_SOCKET", notify.path()),
        ],
    )
    .unwrap();

    // Before anything happened: every counter an alert rule watches is
    // there at 0, so the first kill is an increase Prometheus can see.
    std::thread::sleep(Duration::from_millis(1500));
    let first = scrape(port);
    for (name, labels) in [
        (
            "memtrace_agent_kills_total",
            "budget=\"work\",action=\"kill-largest\"",
        ),
        (
            "memtrace_agent_would_kill_total",
            "budget=\"work\",action=\"kill-largest\"",
        ),
        ("memtrace_agent_nothing_to_kill_total", "budget=\"work\""),
        ("memtrace_budget_breaches_total", "budget=\"work\""),
    ] {
        assert_eq!(
            value(&first, name, labels),
            Some(0.0),
            "{name}{{{labels}}}: {first}"
        );
    }
    // Host-wide ones are there too (their value is the machine's: other
    // tests on it may OOM-kill meanwhile).
    for (name, labels) in [
        ("memtrace_oom_kills_total", ""),
        ("memtrace_kernel_brakes_total", ""),
        ("memtrace_lost_events_total", "type=\"throttle\""),
    ] {
        assert!(
            value(&first, name, labels).is_some(),
            "{name}{{{labels}}}: {first}"
        );
    }

    // Without CAP_SYS_RESOURCE (some CI containers) the agent cannot lower
    // its OOM score; raise it instead, so a child that inherited it shows.
    let adj = format!("/proc/{}/oom_score_adj", agent.child.id());
    if std::fs::read_to_string(&adj).unwrap().trim() == "0" {
        std::fs::write(&adj, "300").unwrap();
    }
    let agent_adj = std::fs::read_to_string(&adj).unwrap();
    assert_ne!(agent_adj.trim(), "0");

    squeeze(&cg);
    let t = Duration::from_secs(20);
    let hook = sink
        .wait_for(t, |r| r.path == "/hook")
        .expect("no webhook alert");
    assert_eq!(hook.body["event"], "oom-kill", "{:?}", hook.body);
    assert_eq!(hook.body["cgroup"], cg.path.as_str());
    assert_eq!(hook.body["source"], "memtrace");
    assert!(
        hook.body["details"]["pid"].as_u64().is_some(),
        "{:?}",
        hook.body
    );
    assert_eq!(hook.body["details"]["comm"], "hog");
    assert!(
        hook.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer t0ken")
    );
    // The discord sink takes every event: on a busy machine a host
    // (PSI) alert may come first; the OOM kill's must come.
    let d = sink
        .wait_for(t, |r| {
            r.path == "/discord"
                && r.body["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("memtrace [oom-kill] "))
        })
        .expect("no discord alert for the OOM kill");
    let content = d.body["content"].as_str().unwrap();
    assert!(content.starts_with("memtrace [oom-kill] "), "{content}");
    assert!(content.contains("OOM-killed hog["), "{content}");
    let s = sink
        .wait_for(t, |r| r.path == "/slack")
        .expect("no slack alert");
    assert!(
        s.body["text"].as_str().unwrap().contains(&cg.path),
        "{:?}",
        s.body
    );
    let mut env = String::new();
    for _ in 0..100 {
        if let Ok(e) = std::fs::read_to_string(&dump) {
            env = e;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(env.contains("MEMTRACE_EVENT=oom-kill"), "{env}");
    assert!(
        env.contains(&format!("MEMTRACE_CGROUP={}", cg.path)),
        "{env}"
    );
    assert!(env.contains("MEMTRACE_COMM=hog"), "{env}");
    assert!(
        env.contains("ARGS=--from-config"),
        "argv from the config, no shell: {env}"
    );
    // The agent runs at nice -10 and oom_score_adj -1000 (or what the test
    // set, below); what it starts is an ordinary process, and does not get
    // its line to systemd.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.child.id())).unwrap();
    let nice = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(16));
    assert_eq!(nice, Some("-10"), "the agent raises its priority: {stat}");
    assert!(env.contains("PROC_NICE=0\n"), "{env}");
    assert!(env.contains("PROC_OOM_SCORE_ADJ=0\n"), "{env}");
    assert!(env.contains("PROC_NOTIFY_SOCKET=false"), "{env}");

    // A second OOM in the same cgroup within min_interval is held back.
    squeeze(&cg);
    std::thread::sleep(Duration::from_secs(3));
    let page = scrape(port);
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    // The build the binary says it is, and the standard process metrics.
    let version = std::process::Command::new(workspace_bin("memtrace"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let commit = version
        .split("(commit ")
        .nth(1)
        .and_then(|r| r.split([',', ')']).next())
        .unwrap_or_else(|| panic!("no commit in --version: {version}"));
    assert!(
        page.lines().any(|l| l.starts_with("memtrace_build_info{")
            && l.contains(&format!("commit=\"{commit}\""))
            && l.ends_with(" 1")),
        "{page}"
    );
    let rss = value(&page, "process_resident_memory_bytes", "").unwrap_or(0.0);
    assert!(rss > 1e6, "{page}");
    assert!(value(&page, "process_open_fds", "").unwrap_or(0.0) >= 3.0);
    let started = value(&page, "process_start_time_seconds", "").unwrap_or(0.0);
    assert!(
        (before - 5.0..before + 60.0).contains(&started),
        "started {started}, test at {before}"
    );
    // Host-wide: this machine's other OOM kills count too (other tests,
    // other users); the two of this test's cgroup are among them.
    let host_ooms = value(&page, "memtrace_oom_kills_total", "").unwrap_or(0.0);
    assert!(host_ooms >= 2.0, "{page}");
    let oom = value(
        &page,
        "memtrace_cgroup_oom_kills_total",
        &format!("cgroup=\"{}\"", cg.path),
    );
    assert_eq!(oom, Some(2.0), "{page}");
    let reclaims = value(
        &page,
        "memtrace_cgroup_reclaim_seconds_count",
        &format!("cgroup=\"{}\"", cg.path),
    );
    assert!(reclaims.unwrap_or(0.0) > 0.0, "{page}");
    assert_eq!(
        value(
            &page,
            "memtrace_alerts_total",
            "sink=\"webhook\",result=\"sent\""
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "memtrace_alerts_total",
            "sink=\"webhook\",result=\"suppressed\""
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(sink.all().iter().filter(|r| r.path == "/hook").count(), 1);
    // Every sample line is `name{labels} value`, and Prometheus's own
    // linter finds nothing wrong with the page.
    let body = page.split("\r\n\r\n").nth(1).unwrap();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        assert!(
            series.starts_with("memtrace_") || series.starts_with("process_"),
            "{line}"
        );
        assert!(
            v == "NaN" || v == "+Inf" || v.parse::<f64>().is_ok(),
            "{line}"
        );
    }
    promtool_check_metrics(body);
    // Every memtrace metric the example alert rules and the Grafana
    // dashboard use is one the agent exports.
    for file in ["prometheus-rules.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docs/examples")
                .join(file),
        )
        .unwrap();
        for name in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("memtrace_") || w.starts_with("process_"))
        {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| page.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(name);
            assert!(
                page.contains(&format!("# TYPE {family} ")),
                "{file} uses {name}, which the agent does not export"
            );
        }
    }
    // The flight recorder has the OOM kills on disk, readable.
    drop(agent);
    let files: Vec<_> = std::fs::read_dir(&flight)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        !files.is_empty(),
        "no flight recording in {}",
        flight.display()
    );
    let ooms: usize = files
        .iter()
        .map(|f| memtrace::reader::read(f).unwrap())
        .map(|r| {
            r.records
                .iter()
                .filter(|x| matches!(x, memtrace::Record::Event(memtrace::Event::OomKill(_))))
                .count()
        })
        .sum();
    assert_eq!(ooms, 2, "the flight recorder should hold both OOM kills");
    // Without `record_reclaim_passes` the kernel only counted the squeezes'
    // reclaim (the metrics above had it): no pass crossed into the
    // recording, and the recording says so, which `report` prints.
    for f in &files {
        let r = memtrace::reader::read(f).unwrap();
        assert!(
            r.header
                .degraded
                .iter()
                .any(|d| d.starts_with("reclaim passes not recorded")),
            "{:?}",
            r.header.degraded
        );
        assert!(
            !r.records
                .iter()
                .any(|x| matches!(x, memtrace::Record::Event(memtrace::Event::Reclaim(_)))),
            "a reclaim pass was recorded in {}",
            f.display()
        );
    }
    let report = std::process::Command::new(workspace_bin("memtrace"))
        .arg("report")
        .arg(&flight)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.contains("degraded: reclaim passes not recorded"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&flight);
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&dump);
}

/// `promtool check metrics`: the exposition linter of Prometheus itself
/// (names, units, HELP, counters ending in `_total`).
fn promtool_check_metrics(body: &str) {
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; cargo xtask setup installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sighup_reloads_a_valid_file_and_keeps_the_running_one_on_a_bad_file() {
    let _serial = super::serial();
    let port = free_port();
    let config = std::env::temp_dir().join(format!("memtrace-hup-{}.toml", std::process::id()));
    let good = format!(
        "[agent]\nmetrics_listen = \"127.0.0.1:{port}\"\n[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\n"
    );
    std::fs::write(&config, &good).unwrap();
    // systemd's side of Type=notify and WatchdogSec=2s.
    let notify = NotifySocket::bind("hup");
    let mut agent = AgentRun::start(
        &workspace_bin("memtrace"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--status-file",
            "/tmp/memtrace-hup-status.json",
        ],
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    )
    .unwrap();
    let ready = notify.until(Duration::from_secs(5), "READY=1");
    assert!(
        ready
            .iter()
            .any(|(_, m)| m.starts_with("READY=1\nSTATUS=1 budget(s)")),
        "{ready:?}"
    );
    // Fed from the loop at least every third of the interval (0.67 s),
    // with a margin for a busy 2-core machine: never a gap of 1.5 s.
    let pings = notify.until(Duration::from_secs(4), "never");
    let times: Vec<_> = pings
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(times.len() >= 3, "{pings:?}");
    for w in times.windows(2) {
        assert!(w[1] - w[0] < Duration::from_millis(1500), "{pings:?}");
    }
    std::fs::write(
        &config,
        "[[budget]]\ncgroup = \"/a\"\nmax_throttled = \"30%\"\nwindow = \"soon\"\n",
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    assert!(
        agent.wait_log(Duration::from_secs(10), "NOT reloaded"),
        "{}",
        agent.log_text()
    );
    // The reload is framed for systemd, and the agent is ready again with
    // the running configuration.
    let reload = notify.until(Duration::from_secs(5), "READY=1");
    let texts: Vec<&str> = reload
        .iter()
        .map(|(_, m)| m.as_str())
        .filter(|m| *m != "WATCHDOG=1")
        .collect();
    assert!(
        texts.len() == 2
            && texts[0].starts_with("RELOADING=1\nMONOTONIC_USEC=")
            && texts[1].starts_with("READY=1"),
        "{texts:?}"
    );
    assert!(
        agent.log_text().contains(":4:"),
        "the error names the line: {}",
        agent.log_text()
    );
    std::fs::write(&config, &good).unwrap();
    agent.signal(libc::SIGHUP);
    assert!(
        agent.wait_log(Duration::from_secs(10), "configuration reloaded"),
        "{}",
        agent.log_text()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let page = scrape(port);
    assert_eq!(
        value(&page, "memtrace_config_reloads_total", "result=\"ok\""),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "memtrace_config_reloads_total", "result=\"invalid\""),
        Some(1.0),
        "{page}"
    );
    drop(agent.stop());
    let stop = notify.until(Duration::from_secs(5), "STOPPING=1");
    assert!(stop.iter().any(|(_, m)| m == "STOPPING=1"), "{stop:?}");
    let _ = std::fs::remove_file(&config);
}

/// One agent per host: a second one, on the same lock, changes nothing
/// and says who holds it.
#[test]
fn a_second_agent_is_refused() {
    let _serial = super::serial();
    let dir = std::env::temp_dir().join(format!("memtrace-lock-test-{}", std::process::id()));
    let lock = dir.join("agent.lock");
    let lock_arg = lock.to_str().unwrap();
    let config = dir.join("agent.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&config, "[agent]\nmetrics_listen = \"off\"\n").unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--status-file",
        "/tmp/memtrace-lock-status.json",
        "--lock-file",
        lock_arg,
    ];
    let first = AgentRun::start(&workspace_bin("memtrace"), &args, &[]).unwrap();
    let second = std::process::Command::new(workspace_bin("memtrace"))
        .arg("agent")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another memtrace agent is running on this host")
            && err.contains(&format!("pid {}", first.child.id())),
        "{err}"
    );
    // Refused before loading anything: the error is all it says.
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(first.log_text().contains("memtrace agent ready"));
    drop(first.stop());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Makes a CA and a server certificate for 127.0.0.1 signed by it, with
/// the openssl command line; returns (ca.pem, server chain, server key).
fn private_ca(dir: &std::path::Path, name: &str) -> (String, String, String) {
    let p = |f: &str| dir.join(format!("{name}-{f}")).display().to_string();
    let (ca_key, ca, key, csr, cert) = (
        p("ca.key"),
        p("ca.pem"),
        p("key.pem"),
        p("csr.pem"),
        p("cert.pem"),
    );
    let ext = p("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n").unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        &format!("/CN=memtrace test {name} CA"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    (ca, cert, key)
}

/// Webhooks over TLS: behind a private CA given as `ca_file`; through the
/// system's trust store (here `SSL_CERT_FILE` holding that CA, which
/// Mozilla's bundled roots do not know); and refused when the certificate
/// is signed by a CA the sink does not trust.
#[test]
fn alerts_over_tls_trust_the_system_store_or_ca_file() {
    let _serial = super::serial();
    let dir = std::env::temp_dir().join(format!("memtrace-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = private_ca(&dir, "private");
    let (other_ca, _, _) = private_ca(&dir, "other");
    let sink =
        HttpSink::start_tls(std::path::Path::new(&cert), std::path::Path::new(&key)).unwrap();
    let cg = TestCgroup::create(&format!("memtrace-tls-{}", std::process::id())).unwrap();
    cg.set_max(64 << 20).unwrap();
    let port = free_port();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
metrics_listen = "127.0.0.1:{port}"
[[alert]]
name = "ca-file"
kind = "webhook"
url = "{a}"
ca_file = "{ca}"
on = ["oom-kill"]
[[alert]]
name = "system"
kind = "webhook"
url = "{b}"
on = ["oom-kill"]
[[alert]]
name = "untrusted"
kind = "webhook"
url = "{c}"
ca_file = "{other_ca}"
on = ["oom-kill"]
"#,
            a = sink.url("/ca-file"),
            b = sink.url("/system"),
            c = sink.url("/untrusted"),
        ),
    )
    .unwrap();
    let agent = AgentRun::start(
        &workspace_bin("memtrace"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--status-file",
            "/tmp/memtrace-tls-status.json",
        ],
        &[("SSL_CERT_FILE", ca.as_str())],
    )
    .unwrap();
    squeeze(&cg);
    let t = Duration::from_secs(20);
    for path in ["/ca-file", "/system"] {
        let r = sink
            .wait_for(t, |r| r.path == path)
            .unwrap_or_else(|| panic!("nothing reached {path} over TLS:\n{}", agent.log_text()));
        assert_eq!(r.body["event"], "oom-kill", "{:?}", r.body);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let page = scrape(port);
    assert_eq!(
        value(
            &page,
            "memtrace_alerts_total",
            "sink=\"untrusted\",result=\"failed\""
        ),
        Some(1.0),
        "{page}"
    );
    assert!(sink.all().iter().all(|r| r.path != "/untrusted"));
    assert!(
        agent
            .log_text()
            .contains("alert sink untrusted: oom-kill alert not delivered"),
        "{}",
        agent.log_text()
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
