//! Plumbing shared by the control servers (nameserver, GSL, SGS): what each would otherwise
//! carry a copy of. It holds no domain logic and depends only on `protocol`, so depending on
//! it keeps components apart (docs/ARCHITECTURE.md §1).
//!
//! - [`connection`]: the per-connection frame loop on tokio; a server supplies a
//!   [`connection::Handler`], its command dispatch.
//! - [`handle`]: a server on its own thread and runtime, stopped through a handle.
//! - [`file`]: the snapshot format, its atomic replace and the data directory's lock.
//! - [`rpc`]: a blocking request/response connection over `protocol` frames.
//! - [`signal`]: running a server in the foreground until SIGTERM or SIGINT.
//! - [`server`]: the accept loop: connection limit, accept-error backoff, shutdown.
//! - [`stream`]: plain TCP or TLS under the frame loop, and the server's TLS handshake.
//! - [`config`]: settings from a TOML file and flags, and the frame limits every server checks.
//! - [`error`]: [`server_error!`], a server's error type as the traits here need it.
//! - [`limits`]: the limits against hostile clients (frame deadline, partial-frame memory,
//!   connections per address) and their defaults; [`admission`] enforces them per server,
//!   [`loglimit`] keeps a flood of bad connections from flooding the log.

#![warn(missing_docs)]

pub mod admission;
pub mod config;
pub mod connection;
pub mod error;
pub mod file;
pub mod handle;
mod inbound;
pub mod limits;
pub mod loglimit;
pub mod policy;
pub mod rpc;
pub mod security;
pub mod server;
pub mod signal;
pub mod stream;
