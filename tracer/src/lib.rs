//! memtrace: catch memory.high livelocks as they start, and end them.
//!
//! The crate is the user side of one pipeline. Each stage lives in its own
//! folder, and data flows one way:
//!
//! ```text
//!  kernel (tracer-ebpf)    ring/           model/          policy/        act/
//! ┌────────────────────┐  ┌────────────┐  ┌───────────┐   ┌──────────┐   ┌────────────┐
//! │ throttle entry/exit│  │ EventSource│  │ per-cgroup│   │ budgets, │   │ kill       │
//! │ memcg/direct recl. ├─►│ + decode   ├─►│ throttle, ├──►│ victims, ├──►│ alert sinks│
//! │ OOM, kernel brake  │  │ → Event    │  │ reclaim,  │   │ host edge│   └────────────┘
//! └─────────▲──────────┘  └────────────┘  │ OOM (pure)│   └──────────┘
//!           │ probe/ (loader)      sys/ ─►└─────┬─────┘   agent/ runs the loop:
//!           │ kernel/ (BTF offsets)  samples    │         it feeds policy and acts
//!                                               ├──► record/   flight recorder, files
//!                                               ├──► metrics/  Prometheus page
//!                                               ├──► screen/   top, replay (ui crate)
//!                                               └──► report/   report, export, events
//! ```
//!
//! - [`kernel`]: what the running kernel offers (BTF, cgroup layout, PSI,
//!   struct offsets for the programs).
//! - [`probe`]: loads the eBPF object and attaches each probe with the best
//!   mechanism the kernel allows; the kernel brake's maps.
//! - [`ring`]: the ring buffer and the decoder, records → [`event::Event`].
//! - [`sys`]: collection from cgroupfs and procfs: registry, samples, PSI.
//! - [`model`]: per-cgroup state over time, a pure function of the events
//!   and samples, shared by the agent, `top`, `report` and `replay`.
//! - [`policy`]: decisions, pure and unit-tested.
//! - [`act`]: side effects: kills and alerts.
//! - [`agent`]: the daemon's loop, which feeds the policy and acts.
//! - [`record`], [`metrics`], [`screen`], [`report`]: the other consumers.
//! - [`names`]: who a cgroup is (systemd unit, user, container, pod), from
//!   its path.
//! - [`config`]: the agent's configuration; [`cli`]: the command line.

mod act;
mod agent;
mod build_info;
pub mod cli;
mod clock;
mod config;
mod event;
mod kernel;
mod metrics;
mod model;
mod names;
mod policy;
mod probe;
mod record;
mod report;
mod ring;
mod screen;
mod sys;
#[cfg(test)]
mod test_util;

// What the integration tests, fuzz targets and benchmarks use: the pure
// stages, the file formats and the collection types they drive them with.
pub use clock::Clock;
pub use config::AgentConfig;
pub use event::{Comm, Event, Reclaim, Task, Throttle};
pub use kernel::{CgroupLayout, CgroupVersion, MemoryHierarchy};
pub use model::{IntervalUnion, Model};
pub use probe::baseline::{ProgramStats, attach_baselines, program_stats};
pub use probe::reclaim::{Deltas as ReclaimDeltas, ReclaimTotalsReader};
pub use probe::{LoadOptions, Tracer};
pub use record::{CgroupSample, ProcSample, Sample};
pub use record::{Header, Record, chunk, reader, timeline, writer};
pub use report::perfetto::perfetto;
pub use report::{build as build_report, build_from as build_report_from, export};
pub use ring::EventSource;
pub use ring::decode::decode as decode_record;
pub use screen::replay::ReplaySource;
pub use screen::view::{Identity, View};
pub use sys::cgroupfs::{CgroupMemory, HostMemory, MemEvents, Psi};
pub use sys::registry::CgroupRegistry;
