//! Side effects: delivering kills ([`kill`]: pidfds, `process_mrelease`,
//! `cgroup.kill`) and alerts ([`alert`]: one thread and queue per sink;
//! [`alert_dns`]: webhook hosts looked up ahead; [`alert_file`]: JSON lines
//! to a file or a port off the box; [`child`]: the programs `exec` sinks
//! run start as normal processes).
//! What to do is decided in [`crate::policy`]; this stage only does it.

pub mod alert;
pub mod alert_dns;
pub mod alert_file;
pub mod child;
pub mod kill;
