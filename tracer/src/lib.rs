//! memtrace: catch memory.high livelocks as they start.
//!
//! The crate is the user side of a pipeline whose stages each live in one
//! module:
//!
//! ```text
//!  kernel (tracer-ebpf)      ring buffer        user space (this crate)
//! ┌──────────────────────┐                 ┌──────────┐   ┌─────────┐   ┌──────────────┐
//! │ throttle fentry/exit │                 │ stream   │   │         │   │ policy/agent │
//! │ memcg/direct reclaim ├──► EVENTS ─────►│ + decode ├──►│ model   ├──►│ recorder     │
//! │ OOM mark_victim      │     (LOST)      │          │   │         │   │ metrics, ui  │
//! └──────────────────────┘                 └──────────┘   └─────────┘   └──────────────┘
//!         ▲ KERNEL_CONFIG offsets from BTF (probes, kernel::offsets)
//! ```
//!
//! - [`probes`]: loads the eBPF object and attaches each probe with the
//!   best mechanism the kernel allows; reports [`probes::Capabilities`].
//! - [`stream`] and [`decode`]: ring buffer records → typed [`event::Event`]s.
//! - [`registry`]: memory cgroup id ↔ path.
//! - [`model`]: per-cgroup throttling, reclaim and OOM state over time.
//! - [`policy`], [`victim`], [`kill`], [`brake`]: budgets and what is done
//!   when one is exceeded.
//! - [`alert`], [`metrics`], [`host`]: telling people and Prometheus.
//! - [`agent`]: the daemon loop that ties them together.
//! - [`output`]: events as text lines or JSON.

pub mod agent;
pub mod alert;
pub mod brake;
pub mod btf;
pub mod cgroupfs;
pub mod clock;
pub mod config;
pub mod decode;
pub mod event;
pub mod export;
pub mod filter;
pub mod host;
pub mod kernel;
pub mod kill;
pub mod metrics;
pub mod model;
pub mod names;
pub mod output;
pub mod policy;
pub mod probes;
pub mod procs;
pub mod record;
pub mod registry;
pub mod replay;
pub mod report;
pub mod stream;
pub mod top;
pub mod victim;
pub mod view;
