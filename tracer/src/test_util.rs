//! What unit tests that need real files share: a temporary directory that
//! is removed when the test ends, whether it passed or not.

use std::path::Path;

/// A temporary directory, used as the path it is.
pub(crate) struct TempDir(tempfile::TempDir);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// A new empty directory named after the tests that use it (`what`), so a
/// directory left by a killed test run says whose it was.
pub(crate) fn tempdir(what: &str) -> TempDir {
    match tempfile::Builder::new()
        .prefix(&format!("memtrace-{what}-"))
        .tempdir()
    {
        Ok(dir) => TempDir(dir),
        Err(e) => panic!("cannot make a temporary directory: {e}"),
    }
}
