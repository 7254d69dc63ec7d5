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

pub mod act;
pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod event;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod names;
pub mod policy;
pub mod probe;
pub mod record;
pub mod report;
pub mod ring;
pub mod screen;
pub mod sys;
