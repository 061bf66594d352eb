//! The DeFiBus wire protocol: everything two DeFiBus processes must agree on, and nothing else.
//!
//! This crate has no runtime and no sockets. It defines
//! - [`frame`]: the fixed frame header and a check-then-parse framer over bytes;
//! - [`codes`]: the command and status codes of the whole system;
//! - [`record`]: the record batch, the unit that travels producer → socket → disk → consumer
//!   without being re-encoded;
//! - [`names`]: area codes, service ids, topics (`[area]-[serviceId]`), group and client ids;
//! - [`control`]: control-plane payloads as rkyv archives, validated on access;
//! - [`data`]: data-plane addressing of record batch frames (header-extension fields);
//! - [`retry`]: retry and dead-letter topic names and the default backoff schedule;
//! - [`trace`]: W3C Trace Context (`traceparent`, `tracestate`), checked at the edge and
//!   carried as record properties.
//!
//! Every decoder here takes untrusted bytes: it never panics, never allocates past a caller's
//! limit, and says why input was rejected.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codes;
pub mod control;
pub mod data;
pub mod frame;
pub mod names;
pub mod record;
pub mod retry;
pub mod routing;
pub mod trace;
