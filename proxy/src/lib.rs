//! The DeFiBus proxy: HTTP/1.1 JSON and WebSocket access to the bus for clients in any
//! language (DESIGN §7), talking to brokers through the Rust client.
//!
//! - HTTP: `POST /v1/publish` (one or a batch), `POST /v1/request` (the answer carries the
//!   reply, 504 at the deadline), `POST /v1/reply` (answer a request by its address),
//!   `POST /v1/subscriptions` (durable webhook push, see [`webhook`]),
//!   `GET`/`DELETE /v1/subscriptions/{id}`, `POST /v1/heartbeat`, `GET /openapi.json`.
//! - Reading the bus, for the web console and other tools ([`console`]): `GET /v1/cluster`,
//!   `/v1/topics`, `/v1/groups`, `/v1/services`, and `POST /v1/services/{id}/deploy|offline`;
//!   the console itself at `GET /console`.
//! - WebSocket `GET /v1/stream`: push delivery with acks, request-reply both ways, see
//!   [`ws::protocol`].
//! - `GET /v1/trace`: one message's life (stored, pushed, committed, replied), see
//!   [`trace`], which also carries W3C trace context in and out (headers and `trace` fields).
//! - Values are text (`value`) or base64 bytes (`value_b64`), see [`api`].
//! - Errors are `{"error": {"code", "message"}}`: malformed JSON 400, unknown topic 404,
//!   body over `body_bytes_max` 413, a bound reached or the rate limit ([`limit`]) 429,
//!   broker unavailable 503, no reply 504 ([`ApiError`]).
//!
//! [`run`] serves on a listener until a shutdown future completes (tests start it on port
//! 0); [`start`] runs it on its own thread and returns a [`ProxyHandle`]; [`cli::ProxyArgs`]
//! is the command line of `defibus-proxy` and `defibus proxy`.
//!
//! Module map: [`config`] settings, [`error`] errors, [`api`] shared JSON shapes, [`limit`]
//! the rate limit, `routes` the HTTP handlers, [`ws`] the WebSocket sessions, [`webhook`]
//! webhook delivery and its store, `metrics` what the `/metrics` endpoint serves, `state`
//! what they share, `server` and `handle` the two
//! ways to run it, `conn` the bounds on connections and `handshake` TLS on them.

#![warn(missing_docs)]

pub mod api;
mod caller;
pub mod cli;
pub mod config;
mod conn;
pub mod console;
pub mod error;
mod handle;
mod handshake;
pub mod limit;
mod metrics;
mod routes;
mod server;
mod state;
pub mod trace;
mod transactions;
pub mod webhook;
pub mod ws;

pub use config::ProxyConfig;
pub use error::{ApiError, ProxyError};
pub use handle::{ProxyHandle, start};
pub use routes::ROUTES;
pub use server::run;
