//! Shared helpers of memtrace's tests: real cgroups (v1 or v2), real
//! processes placed in them, and the memtrace binary run as a user would.

pub mod cgroup;
pub mod guest;
pub mod http_sink;
pub mod probes;
pub mod run;
