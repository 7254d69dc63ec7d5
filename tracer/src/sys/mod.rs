//! Collection: everything read from the running system apart from the
//! ring buffer. Cgroup files ([`cgroupfs`]), the id ↔ path registry
//! ([`registry`]) and its inotify watch for new cgroups ([`watch`]),
//! processes ([`procs`]) and their cgroups as a cgroup namespace shows
//! them ([`cgroupns`]), the once-a-second sample ([`sampler`]), the
//! agent's own process ([`own`]) and the host's PSI triggers ([`psi`]);
//! the names a path does not tell, looked up on their own thread
//! ([`enrich`]); and `top`'s way out of a limited cgroup ([`escape`]). Nothing here
//! decides; the model and the policy get what this stage read as plain
//! values.

pub mod cgroupfs;
pub mod cgroupns;
pub mod enrich;
pub mod escape;
pub mod own;
pub mod procs;
pub mod psi;
pub mod registry;
pub mod sampler;
pub mod timer;
pub mod watch;
