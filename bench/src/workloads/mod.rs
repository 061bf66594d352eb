//! Workloads against the cluster under test, one module each. A workload creates its own
//! topic, runs in `crate::measure`'s loop, and returns its figures beside the baseline the
//! caller measured for it.
//!
//! - [`produce`]: producer throughput (async or sync flush);
//! - [`rr`]: request-reply round-trip latency, closed loop;
//! - [`proxy`]: publish throughput and request-reply through the HTTP/WebSocket proxy, beside
//!   the native client.

pub mod produce;
pub mod proxy;
pub mod rr;
