//! What this binary is: its version and the commit it was built from, as
//! the build script found them (`--version`, `memtrace_build_info`).

/// The package version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The full commit hash, or `unknown` outside a git checkout.
pub const COMMIT: &str = env!("MEMTRACE_COMMIT");
/// `true` when the tree had uncommitted changes, `false`, or `unknown`.
pub const DIRTY: &str = env!("MEMTRACE_DIRTY");
/// `0.1.0 (commit 4f7f…, dirty tree)`: what `--version` prints.
pub const LONG_VERSION: &str = env!("MEMTRACE_LONG_VERSION");
