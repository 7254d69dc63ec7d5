//! memtrace's developer tasks, run as `cargo xtask <task>`.
//!
//! - `setup`: installs what building and testing need on a Debian machine.
//! - `run -- ARGS`: setup, build memtrace (release) and run it with ARGS.
//! - `test`: the whole suite, as CI runs it.
//! - `lint`: rustfmt and clippy, including the eBPF crate.
//! - `vmtest`: the scenarios in qemu VMs on Debian's 6.1, 6.12, 7.2 kernels.

mod cmd;
mod setup;
mod test;
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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Run { args } => run_memtrace(&args),
        Task::Test(a) => test::run(&a),
        Task::Lint => test::lint(),
        Task::Vmtest(a) => vm::run(&a),
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
