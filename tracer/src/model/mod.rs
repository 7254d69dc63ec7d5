//! The per-cgroup model: what the events mean over time, per memory cgroup
//! and task. Consumers (policy, recorder, metrics, ui) read it; it knows
//! nothing of eBPF or of how events arrived.

pub mod intervals;

pub use intervals::IntervalUnion;
