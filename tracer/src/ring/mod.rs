//! Stage 2: the ring buffer and the decoder. The kernel's programs
//! (`tracer-ebpf`) write fixed-size records into the `EVENTS` ring buffer;
//! [`stream::EventSource`] drains it on an `AsyncFd` and [`decode`] turns
//! each record into a typed [`crate::event::Event`], checking its length
//! first. Records the kernel could not deliver become `Lost` events. The
//! next stage is the model ([`crate::model`]).

pub mod decode;
pub mod stream;

pub use stream::EventSource;
