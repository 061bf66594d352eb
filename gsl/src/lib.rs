//! The DeFiBus GSL (global service location): where is service S, seen from area A?
//!
//! GSL holds, per service, its deployments (area, topic, cluster, nameservers), as SGS pushes
//! them with `GslUpdate` (each update replaces the service's whole set; an empty set takes it
//! out of resolution). `GslResolve(serviceId, callerArea)` answers the deployments, the
//! caller's area first, then the others by area code. The directory is durable: every update
//! is written to a snapshot file atomically before it is answered ([`store`], [`svc::file`]'s
//! protocol), so a restarted GSL resolves every service at once; SGS also
//! re-pushes everything when it starts and periodically.
//!
//! - [`run`] serves on a listener until a shutdown future completes (tests start it on port
//!   0); [`start`] runs it on its own thread and returns a [`GslHandle`].
//! - [`GslConfig`] holds every setting with its default (`gsl.toml` lists them);
//!   [`cli::GslArgs`] is the command line of `defibus gsl`.
//! - The client side (cached, refreshed resolution, calls by service id) is the client
//!   SDK's `client::ServiceLocator`: GSL is a server, and clients reach it over the protocol.
//!
//! Module map: [`config`], [`directory`] (pure: services, checks, nearby order), [`store`]
//! (the directory made durable through [`svc::file`]), `command` (the answer to each request:
//! the [`svc::connection`] handler), `metrics` (what `/metrics` serves), `server` (accept
//! loop), `handle` (threaded form), [`rpc`] (a blocking frame connection, [`svc::rpc`]
//! re-exported).

#![warn(missing_docs)]

mod command;
mod error;
mod handle;
mod metrics;
mod server;

pub mod cli;
pub mod config;
pub mod directory;
pub use svc::rpc;
pub mod store;

pub use config::GslConfig;
pub use error::GslError;
pub use handle::{GslHandle, start};
pub use server::run;
