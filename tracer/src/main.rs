//! The `memtrace` binary: everything lives in the library's
//! [`memtrace::cli`].

fn main() -> std::process::ExitCode {
    memtrace::cli::main()
}
