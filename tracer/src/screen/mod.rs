//! The incident screens' data: [`view`] builds the `ui` crate's plain
//! `Snapshot` from the model, and two sources feed it: [`live`] (`memtrace
//! top`: probes, ring buffer, model) and [`replay`] (a recording through
//! the same model). The `ui` crate draws; it knows nothing of eBPF.

pub mod live;
pub mod replay;
pub mod view;
