//! Prometheus metrics for DeFiBus processes: a plain histogram a single thread records into,
//! the text a scrape returns, and the `/metrics` HTTP endpoint that serves it.
//!
//! Recording and serving are split on purpose. A process records into state it owns
//! (a shard's `Cell`s, a server's atomics) and builds a [`Scrape`] only when asked; the
//! [`Endpoint`] runs on its own thread and calls back for that text, so nothing on a hot path
//! waits on HTTP. The text is encoded by `prometheus-client` as OpenMetrics, served to a
//! scraper that asks for it (Prometheus does), and as the classic text format otherwise
//! (`curl`, `promtool check metrics`).

mod endpoint;
mod histogram;
pub mod parse;
mod scrape;

pub use endpoint::{Endpoint, Render, bind_or_warn, serve_or_warn};
pub use histogram::{AtomicHistogram, Histogram};
pub use scrape::{CONTENT_TYPE, CONTENT_TYPE_CLASSIC, Scrape};
