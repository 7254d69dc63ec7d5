//! The `memtrace` command line: one binary, one subcommand per job, and
//! what they share: argument types, logging, exit codes.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage, 3 missing privileges
//! or kernel support. Errors say what to do about them.

/// `eprintln!` that never panics: stderr may be a closed pipe
/// (`memtrace events 2>&1 | head`), and a note that cannot be written is
/// not worth a crash.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `println!` that never panics, for short reports to stdout.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod agent;
mod check;
mod docs;
mod events;
mod record;
mod report;
mod stderr;
mod top;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::probe::LoadError;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNSUPPORTED: u8 = 3;

/// A usage error found after parsing (a bad glob, a bad config value).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Parser, Debug)]
#[command(
    name = "memtrace",
    version = crate::build_info::LONG_VERSION,
    about = "See and stop memory.high livelocks: eBPF tracing of cgroup v2 throttling",
    long_about = "memtrace watches the kernel's memory.high throttle, memcg and direct \
reclaim, and OOM kills with eBPF, per memory cgroup and task.\n\n\
A cgroup whose usage sits between memory.high and memory.max with nothing \
reclaimable is throttled on every return to user space, yet never reaches \
memory.max, so the OOM killer never fires: a livelock that PSI-polling guards \
(systemd-oomd, oomd) and free-RAM guards (earlyoom) do not see. memtrace \
measures that throttling directly.\n\n\
Start with `memtrace check` to see what this kernel allows.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 bad usage, 3 missing privileges or kernel support.\n\
Environment: MEMTRACE_DENY_ATTACH=fentry,kprobe,raw_tracepoint,tracepoint skips attach \
mechanisms (to test fallbacks); RUST_LOG sets log detail."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// What this kernel allows: BTF, cgroup layout, PSI, each probe and how
    /// it attached or why not, and what is degraded as a result.
    #[command(
        long_about = "Reports the kernel version, BTF, where the memory controller \
lives (cgroup v1, v2 or hybrid), PSI, and for each probe the attach mechanism that \
worked or why each one failed; then what memtrace cannot see as a result.\n\n\
Loading probes needs root (or CAP_BPF + CAP_PERFMON).\n\n\
Exit status: 0 when every probe attached, 3 when something is missing \
(privileges or kernel support); the report says what."
    )]
    Check(check::CheckArgs),
    /// Print live events, one per line: throttle episodes, reclaim, OOM kills.
    #[command(long_about = "Prints live events as they happen, one per line.\n\n\
Types: throttle (a complete memory.high throttle episode), throttle_start, reclaim \
(memcg reclaim pass), direct_reclaim (global), oom_kill, brake (kernel brake fired), \
lost (records the kernel could not deliver).\n\n\
Examples:\n  \
memtrace events\n  \
memtrace events --cgroup '/system.slice/*.service' --json --duration 30s\n  \
memtrace events --types throttle,oom_kill\n\n\
Event names are snake_case everywhere; the kebab-case spellings (oom-kill) are accepted too.")]
    Events(events::EventsArgs),
    /// The daemon: throttle budgets, kill policy, alerts, Prometheus metrics.
    #[command(
        long_about = "Watches every memory cgroup's throttling and acts the instant a \
budget is exceeded: alert, or kill the largest (or most throttled) process of the cgroup, or \
the whole cgroup. Sends alerts (webhook, Discord, Slack, exec) on warnings, breaches, kills, \
kernel OOM kills and the host's leading edge (swap, MemAvailable, PSI), serves Prometheus \
metrics on 127.0.0.1:9478, and can arm an in-kernel brake that acts even if the agent is frozen.\n\n\
Configuration: /etc/memtrace/agent.toml (reference: /usr/share/doc/memtrace/configuration.md); \
SIGHUP reloads it, and an invalid new file keeps the running one. Secrets for alert sinks come \
from the environment (`url_env`, `token_env`: unset is an error of the file).\n\n\
One agent per host: a second one exits 1 and names the first (lock /run/memtrace/agent.lock). \
Under systemd (memtrace-agent.service) it reports readiness once its probes are attached \
(Type=notify) and feeds the watchdog from the loop that kills.\n\n\
Examples:\n  \
memtrace agent --check-config --config agent.toml\n  \
memtrace agent --dry-run\n  \
memtrace agent --config /etc/memtrace/agent.toml"
    )]
    Agent(agent::AgentArgs),
    /// Record every event and a sample a second to a file, for post-mortems.
    #[command(
        long_about = "Writes every event and, once a second, a sample of each memory cgroup \
in scope (memory.current/high/max, memory.events, memory.pressure, the largest processes) and of \
the host (MemAvailable, swap, PSI) to FILE, in checksummed chunks flushed at least once a second: \
what was on disk a second before a crash can be read back.\n\n\
Examples:\n  \
memtrace record -o incident.mtr\n  \
memtrace record -o web.mtr --cgroup '/system.slice/web.service' --duration 10m --max-size 1GiB\n\n\
Then: memtrace report FILE, memtrace export FILE --format perfetto, memtrace replay FILE."
    )]
    Record(record::RecordArgs),
    /// The post-mortem of a recording: incidents, top cgroups and tasks,
    /// reclaim latency, OOM kills, agent actions, host memory, integrity.
    #[command(
        long_about = "Prints the post-mortem of a recording as Markdown, to paste into an \
incident document (or --json): the time range and host; each throttle incident per cgroup (start, \
peak throttled share, total); the cgroups and processes by throttle time; memtrace's totals next \
to the kernel's own memory.pressure and memory.events from the recorded samples; reclaim latency \
percentiles; OOM kills and agent actions; host memory and PSI over time; and any lost events or \
damaged chunks. A damaged recording is read as far as it can be; what this system could not \
measure reads n/a (null in JSON), never 0.\n\n\
--html writes one self-contained page with the pictures: per cgroup the throttled share, \
memory.current against memory.high and memory.max and PSI over time, kills and OOMs marked; \
the host's MemAvailable, swap and PSI. FILE may be the agent's flight recorder directory, read \
as one timeline; --since, --until and --cgroup cut it.\n\n\
Examples:\n  \
memtrace report incident.mtr\n  \
memtrace report incident.mtr --html -o incident.html\n  \
memtrace report /var/lib/memtrace/flight --since 30m --cgroup '/system.slice/web.service'"
    )]
    Report(report::ReportArgs),
    /// Convert a recording: perfetto (ui.perfetto.dev), chrome-json, jsonl, csv.
    #[command(long_about = "Converts a recording for other tools.\n\n\
  perfetto     Perfetto's protobuf trace for ui.perfetto.dev, of any size: a track per cgroup \
and task, throttle episodes and reclaim as slices, memory and PSI as counters, kills as instants\n  \
chrome-json  the same as Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing), for small \
recordings\n  \
jsonl        one JSON object per record\n  \
csv          events, or the per-second samples with --samples\n\n\
Every format streams: a recording of any length is converted in bounded memory.\n\n\
Example: memtrace export incident.mtr --format perfetto -o incident.perfetto-trace")]
    Export(report::ExportArgs),
    /// The live incident screen: which cgroup is throttled, by how much,
    /// who the hog is, whether it is getting worse.
    #[command(
        long_about = "A live view of every memory cgroup with activity or limits: the \
share of the last 1 s and 10 s it spent in the memory.high throttle, episodes/s, memory.current \
against memory.high and memory.max, reclaim latency, PSI full, OOM kills and the agent's budget \
state; the selected cgroup's throttle chart, processes and events; and a log of kills, OOM \
kills and budget warnings.\n\n\
Keys: arrows or j/k move, Enter opens a cgroup, s sorts, / filters, t shows the tree, p pauses, \
k kills the selected process (asks first), ? helps, q quits.\n\n\
Run as root from inside a throttled cgroup, top first moves itself into /memtrace-top (a cgroup \
without limits) and locks its memory, so it keeps drawing; its log says so.\n\n\
Needs root (or CAP_BPF and CAP_PERFMON). NO_COLOR turns colours off."
    )]
    Top(top::TopArgs),
    /// Play a recording through the same screens as `top`.
    #[command(
        long_about = "Plays a recording on the `top` screens, with its recorded time in \
the header. Keys: p or space pause, , and . step a second, left and right seek 10 s, - and + \
change the speed, and the keys of `top`.\n\n\
Example: memtrace replay incident.mtr --speed 4"
    )]
    Replay(top::ReplayArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    #[command(
        long_about = "Prints the completion script for a shell on standard output. \
The Debian package installs them already; by hand:\n\n  \
memtrace completions bash > /etc/bash_completion.d/memtrace\n  \
memtrace completions zsh > /usr/local/share/zsh/site-functions/_memtrace\n  \
memtrace completions fish > ~/.config/fish/completions/memtrace.fish"
    )]
    Completions(docs::CompletionsArgs),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    Manpages(docs::ManpagesArgs),
}

/// Parses the arguments, runs the subcommand and maps its outcome to the
/// documented exit code.
pub fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            // Help and version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let args = match Cli::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(args.verbose, matches!(args.command, Command::Agent(_)));
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit_code(&e);
            say!("memtrace: error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Logging to stderr; the daemon tells what it does (info), the commands
/// only what goes wrong (warn), unless asked for more.
pub fn init_logging(verbose: u8, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    builder.format_target(false);
    if stderr_is_journal() {
        // journald stamps the time itself and reads an sd-daemon `<N>`
        // priority at the start of a line (sd-daemon(3)).
        builder.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            std::io::Write::write_fmt(buf, format_args!("<{priority}>{}\n", record.args()))
        });
    }
    // The daemon logs from its kill path: never let a stalled stderr (a
    // journald under pressure) block it.
    if daemon && let Some(q) = stderr::Queued::start() {
        builder.target(env_logger::Target::Pipe(Box::new(q)));
    }
    builder.init();
}

/// Whether stderr is the journal stream systemd connected: `JOURNAL_STREAM`
/// names its device and inode (a child whose stderr was redirected
/// inherits the variable but not the stream).
fn stderr_is_journal() -> bool {
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        v.split_once(':')
            .map(|(d, i)| (d.to_string(), i.to_string()))
    }) else {
        return false;
    };
    // SAFETY: fstat writes only the struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino)
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Events(a) => events::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Record(a) => record::run(a),
        Command::Report(a) => report::report(a),
        Command::Export(a) => report::export(a),
        Command::Top(a) => top::top(a),
        Command::Replay(a) => top::replay(a),
        Command::Completions(a) => docs::completions(&a),
        Command::Manpages(a) => docs::manpages(&a),
    }
}

/// Maps an error to the documented exit code.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(l) = cause.downcast_ref::<LoadError>() {
            return match l {
                LoadError::Privileges(_) | LoadError::Unsupported(_) => EXIT_UNSUPPORTED,
                LoadError::Usage(_) => EXIT_USAGE,
                LoadError::Load(_) => EXIT_FAILURE,
            };
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return EXIT_USAGE;
        }
        // A file that is not a recording is bad input, like a bad flag.
        use crate::record::reader::ReadError;
        use crate::record::timeline::TimelineError;
        let read = cause.downcast_ref::<ReadError>().or_else(|| {
            match cause.downcast_ref::<TimelineError>() {
                Some(TimelineError::Read(r)) => Some(r),
                _ => None,
            }
        });
        if let Some(r) = read {
            return match r {
                ReadError::Io { .. } => EXIT_FAILURE,
                _ => EXIT_USAGE,
            };
        }
        match cause.downcast_ref::<TimelineError>() {
            Some(TimelineError::EmptyDir(_)) => return EXIT_USAGE,
            Some(TimelineError::List { .. }) => return EXIT_FAILURE,
            _ => {}
        }
    }
    EXIT_FAILURE
}

/// Parses a duration flag: `30s`, `5m`, `1.5`.
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::clock::parse_duration(s)
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
