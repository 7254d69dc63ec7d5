//! Side effects: delivering kills ([`kill`]: pidfds, `process_mrelease`,
//! `cgroup.kill`) and alerts ([`alert`]: one thread and queue per sink).
//! What to do is decided in [`crate::policy`]; this stage only does it.

pub mod alert;
pub mod kill;
