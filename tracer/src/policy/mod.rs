//! Deciding, apart from acting: pure functions and state machines over
//! the model and the samples, with unit tests and no I/O.
//!
//! - [`budget`]: throttle budgets: warnings, breaches, the deadline timer,
//!   retries and cool-downs.
//! - [`enforce`]: what a breach leads to: kill now, look again, or let it
//!   be; which victims to prepare ahead.
//! - [`victim`]: whom to kill among a subtree's processes.
//! - [`estimate`]: throttled time from PSI when there is no probe.
//! - [`host`]: the host's leading edge.
//!
//! The agent ([`crate::agent`]) feeds them and carries out what they
//! decide ([`crate::act`]).

pub mod budget;
pub mod enforce;
pub mod estimate;
pub mod host;
pub mod victim;

#[cfg(test)]
mod property;
#[cfg(test)]
mod select;
#[cfg(test)]
mod testing;
