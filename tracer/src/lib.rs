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
//! - [`output`]: events as text lines or JSON.

pub mod btf;
pub mod clock;
pub mod decode;
pub mod event;
pub mod filter;
pub mod kernel;
pub mod model;
pub mod output;
pub mod probes;
pub mod registry;
pub mod stream;
