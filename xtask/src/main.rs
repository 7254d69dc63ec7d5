//! memtrace's developer tasks, run as `cargo xtask <task>`.
//!
//! - `setup`: installs what building and testing need on a Debian machine.
//! - `run -- ARGS`: setup, build memtrace (release) and run it with ARGS.
//! - `test`: the whole suite, as CI runs it.
//! - `lint`: rustfmt and clippy, including the eBPF crate.
//! - `vmtest`: the scenarios in qemu VMs on Debian's 5.10, 6.1, 6.12, 7.2 and 7.3 kernels.
//! - `bench`: the benchmarks behind docs/benchmarks.md.
//! - `shootout`: the first incident against every OOM guard, in Debian
//!   guests with systemd (docs/benchmarks.md).
//! - `thrash`: the second incident, a box thrashing into a blackout:
//!   memtrace's host alert against the seed's Prometheus rule.
//! - `fuzz`: the cargo-fuzz targets, longer than CI runs them.
//! - `dist`: the static binary and the Debian package.

mod bench;
mod cmd;
mod dist;
mod incident;
mod rules;
mod setup;
mod shootout;
mod test;
mod thrash;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "memtrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything the build and the tests need (idempotent).
    Setup,
    /// Set up, build memtrace in release mode and run it with ARGS.
    Run {
        /// Arguments for memtrace, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the whole test suite, as CI does (needs root).
    Test(test::TestArgs),
    /// rustfmt --check and clippy -D warnings, host crates and eBPF crate.
    Lint,
    /// Boot Debian kernels in qemu and run the scenarios inside (root).
    Vmtest(vm::VmtestArgs),
    /// Benchmarks: recordings (size, speed, an hour of report, export and
    /// replay), the event path, the agent at 1,000 cgroups, frames, top's
    /// idle CPU, probe cost on the host and in a VM, the kill path's
    /// breach to signal over many real breaches in a VM, then the thrash
    /// run (`cargo xtask thrash`) (root, qemu). Results go to
    /// target/bench.md; docs/benchmarks.md says how to read them.
    Bench(bench::BenchArgs),
    /// The first incident (a hog plateaued between MemoryHigh and
    /// MemoryMax) against no guard, earlyoom, systemd-oomd, oomd, nohang
    /// and memtrace's agent, one Debian guest boot each (root, qemu). Writes
    /// the table into docs/benchmarks.md and docs/shootout-latency.svg.
    Shootout(shootout::ShootoutArgs),
    /// The second incident: a Debian guest with swap on a slow disk thrashes
    /// until it goes dark, while a real Prometheus on the host scrapes it;
    /// measures memtrace's host alert against the seed's rule and the
    /// blackout, and reads the flight recorder back after a power cut
    /// (root, qemu, about 10-30 minutes). Writes docs/benchmarks.md.
    Thrash(thrash::ThrashArgs),
    /// The CI's Debian guest case alone: memtrace's agent, started by its
    /// unit, ends the incident in a bookworm guest (root, qemu).
    DebianTest,
    /// Build (or find cached) the Debian guest image of a suite and print
    /// its path (root; mmdebstrap).
    DebianImage {
        /// bookworm (6.1), trixie (6.12) or bullseye (5.10).
        #[arg(long, default_value = "bookworm")]
        suite: String,
    },
    /// Run the fuzz targets for a while (nightly, cargo-fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Build what is shipped: the static (musl) binary and the Debian
    /// package, in target/dist/.
    Dist(dist::DistArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Run { args } => run_memtrace(&args),
        Task::Test(a) => test::run(&a),
        Task::Lint => test::lint(),
        Task::Vmtest(a) => vm::run(&a),
        Task::Bench(a) => bench::run(&a),
        Task::Shootout(a) => shootout::run(&a),
        Task::Thrash(a) => thrash::run(&a),
        Task::DebianTest => setup::run().and_then(|()| incident::ci_case()),
        Task::DebianImage { suite } => vm::debian::suite(&suite)
            .and_then(|s| vm::debian::image::image(&s))
            .map(|img| println!("{}\n{}", img.root.display(), img.vmlinuz.display())),
        Task::Dist(a) => dist::run(&a),
        Task::Fuzz { seconds } => {
            let targets: Vec<(&str, u32)> = test::FUZZ_CI
                .iter()
                .map(|&(name, _)| (name, seconds))
                .collect();
            test::fuzz(&targets)
        }
    };
    if let Err(e) = result {
        eprintln!("\nxtask: FAILED: {e:#}");
        std::process::exit(1);
    }
}

fn run_memtrace(args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    cmd::cargo(&["build", "--release", "-p", "memtrace"])?;
    let bin = cmd::workspace_root().join("target/release/memtrace");
    let args = if args.is_empty() {
        vec!["check".to_string()]
    } else {
        args.to_vec()
    };
    let mut command = if cmd::is_root() || !cmd::have("sudo") {
        std::process::Command::new(&bin)
    } else {
        // Loading eBPF programs needs root.
        let mut c = std::process::Command::new("sudo");
        c.arg(&bin);
        c
    };
    let status = command.args(&args).status()?;
    std::process::exit(status.code().unwrap_or(1));
}
