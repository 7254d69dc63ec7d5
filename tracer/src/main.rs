//! The `memtrace` command line: one binary, one subcommand per job.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage, 3 missing privileges
//! or kernel support. Errors say what to do about them.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = match cli::Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            // Help and version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { cli::EXIT_USAGE } else { 0 });
        }
    };
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    cli::init_logging(args.verbose, matches!(args.command, cli::Command::Agent(_)));
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = cli::exit_code(&e);
            eprintln!("memtrace: error: {e:#}");
            ExitCode::from(code)
        }
    }
}
