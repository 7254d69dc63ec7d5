//! memtrace's terminal screens (`memtrace top`, `memtrace replay`).
//!
//! The crate renders a plain [`Snapshot`] and knows nothing of eBPF: the
//! same screens serve a live system and a replayed recording, each behind a
//! [`SnapshotSource`]. Collection, application state, drawing and the
//! terminal loop are apart:
//!
//! - [`snapshot`]: the data of one frame;
//! - [`app`]: selection, sort, filter, tree, pause, dialogs, keys;
//! - [`canvas`]: drawing a snapshot and the app state ([`tree`]: the
//!   tree view's names);
//! - [`term`]: the terminal loop.

pub mod app;
pub mod canvas;
pub mod fmt;
pub mod snapshot;
pub mod term;
pub mod tree;

pub use app::{App, Command, Mode, SortKey};
pub use snapshot::{CgroupRow, LogKind, LogLine, Snapshot, Source, TaskRow};
pub use term::{SnapshotSource, run};
