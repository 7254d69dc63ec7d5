//! What memtrace knows about the running kernel: version, BTF, where the
//! memory controller lives, PSI, and the struct offsets the eBPF programs
//! need. Everything here is read from procfs, sysfs and BTF; nothing is
//! assumed from the kernel version number.

pub mod btf;
pub mod info;
pub mod offsets;
pub mod tracefs;

pub use info::{CgroupLayout, CgroupMode, CgroupVersion, KernelInfo, MemoryHierarchy};
