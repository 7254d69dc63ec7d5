//! Prometheus metrics: the exposition page as a pure function of the
//! model and the agent's counters ([`page`]), the text format
//! ([`exposition`]), and the endpoint that serves the latest page
//! ([`serve`]).

pub mod exposition;
pub mod page;
pub mod serve;

pub use exposition::Exposition;
pub use serve::{Page, bind, serve};
