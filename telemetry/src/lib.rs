//! Prometheus metrics for DeFiBus processes: a plain histogram a single thread records into,
//! the text a scrape returns, and the `/metrics` HTTP endpoint that serves it.
//!
//! Recording and serving are split on purpose. A process records into state it owns
//! (a shard's `Cell`s, a server's atomics) and builds a [`Scrape`] only when asked; the
//! [`Endpoint`] runs on its own thread and calls back for that text, so nothing on a hot path
//! waits on HTTP. The text is encoded by `prometheus-client` (OpenMetrics text, which
//! Prometheus scrapes natively and `promtool check metrics` accepts).

mod endpoint;
mod histogram;
mod scrape;

pub use endpoint::Endpoint;
pub use histogram::Histogram;
pub use scrape::{CONTENT_TYPE, Scrape};
