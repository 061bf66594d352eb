//! The DeFiBus SGS (service governance): the durable registry of services.
//!
//! A service goes `apply` → `deploy` → `offline`:
//! - `ServiceApply` registers a service (id, name, owner, areas, queue count, depth limit,
//!   flush mode) or changes one not deployed; state `Applied`.
//! - `ServiceDeploy` creates the topic `[area]-[serviceId]` on the brokers of each of its
//!   areas (an area is a broker cluster and its nameservers, `[areas.X]` in the config),
//!   through the client SDK's `Admin`, idempotent and retried; then records `Deployed` and
//!   pushes the deployments to GSL.
//! - `ServiceOffline` records `Offline` and takes the service out of GSL, waits until every
//!   consumer group has committed the end of every queue (or a timeout, which keeps the
//!   topics), then deletes the topics.
//! - `ServiceList` / `ServiceShow` read the registry.
//!
//! The registry is durable ([`store`]): a restarted SGS has every service, and pushes them
//! all to GSL at start and every `gsl_sync_interval_ms`.
//!
//! - [`run`] serves on a listener until a shutdown future completes (tests start it on port
//!   0); [`start`] runs it on its own thread and returns an [`SgsHandle`].
//! - [`SgsConfig`] holds every setting with its default (`sgs.toml` lists them);
//!   [`cli::SgsArgs`] is the command line of `defibus sgs`; [`client::SgsClient`] the
//!   blocking client of `defibus sgs service ...`.
//!
//! Module map: [`config`], [`store`] (the registry made durable through [`svc::file`]),
//! `command` (the answer to each request, the [`svc::connection`] handler, and the order of
//! each operation's steps), `brokers` (topics on an area's brokers), `gsl_push` (updates to
//! GSL), `metrics` (what `/metrics` serves), `server` (accept loop and GSL sync), `handle`,
//! [`rpc`] ([`svc::rpc`] re-exported), [`client`].

#![warn(missing_docs)]

mod brokers;
mod command;
mod error;
mod gsl_push;
mod handle;
mod metrics;
mod server;

pub mod cli;
pub mod client;
pub mod config;
pub use svc::rpc;
pub mod store;

pub use config::SgsConfig;
pub use error::SgsError;
pub use handle::{SgsHandle, start};
pub use server::run;
