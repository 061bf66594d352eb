//! Workloads against the cluster under test, one module each. A workload creates its own
//! topic, runs in `crate::measure`'s loop, and returns its figures beside the baseline the
//! caller measured for it.
//!
//! - [`produce`]: producer throughput (async or sync flush);
//! - [`rr`]: request-reply round-trip latency, closed loop.

pub mod produce;
pub mod rr;
