//! Workloads against the cluster under test, one module each. A workload creates its own
//! topic, runs in `crate::measure`'s loop, and returns its figures beside the baseline the
//! caller measured for it, or as a sweep over its settings.
//!
//! - [`produce`]: producer throughput (async or sync flush), and over payload sizes;
//! - [`rr`]: request-reply round-trip latency, closed loop or open loop at a rate;
//! - [`consume`]: catch-up read of a pre-filled backlog by a consumer group;
//! - [`e2e`]: publish → consume latency over a sweep of offered rates, up to saturation;
//! - [`fanout`]: one stream delivered to K consumers, multicast and broadcast;
//! - [`scale`]: produce throughput from 1 to 10,000 queues and 1 to 1,000 connections;
//! - [`overhead`]: the client's request-reply beside the same exchange in raw frames;
//! - [`proxy`]: publish throughput and request-reply through the HTTP/WebSocket proxy, beside
//!   the native client;
//! - [`retry`]: the cost of a nack beside a plain delivery;
//! - [`delayed`]: delayed messages' lateness on arrival, and their produce cost;
//! - [`transactional`]: a half + commit per message beside a plain send;
//! - [`delivery`]: the open-loop publish → consume measurement `e2e` and `fanout` share.

pub mod consume;
pub mod delayed;
pub mod delivery;
pub mod e2e;
pub mod fanout;
pub mod overhead;
pub mod produce;
pub mod proxy;
pub mod retry;
pub mod rr;
pub mod scale;
pub mod tls;
pub mod transactional;
