//! Side effects: delivering kills ([`kill`]: pidfds, `process_mrelease`,
//! `cgroup.kill`) and alerts ([`alert`]: one thread and queue per sink;
//! [`child`]: the programs `exec` sinks run start as normal processes).
//! What to do is decided in [`crate::policy`]; this stage only does it.

pub mod alert;
pub mod child;
pub mod kill;
