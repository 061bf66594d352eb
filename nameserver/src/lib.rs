//! The DeFiBus nameserver: a registry of live brokers and the topic routes derived from it.
//!
//! Brokers send `BrokerRegister` every few seconds (the registration is also their
//! heartbeat) and `BrokerUnregister` at a clean shutdown; clients ask `TopicRoute` (every
//! queue of a topic: broker, area, the owning shard's port, readable and writable) and
//! `ClusterInfo`. A broker that stops registering is no longer routed to once
//! `broker_expiry_ms` has passed, and is then swept from the registry. Several nameservers
//! run independently, each knowing what was registered with it; brokers register with all,
//! clients ask any. Frames and bodies are those of `protocol` (`docs/ARCHITECTURE.md` §4.1).
//!
//! - [`run`] serves on a listener until a shutdown future completes: tests start it in-process
//!   on port 0; [`start`] runs it on its own thread and returns a [`NameserverHandle`].
//! - [`NameserverConfig`] holds every setting with its default; [`cli::NameserverArgs`] is the
//!   command line that the `defibus-nameserver` binary and `defibus nameserver` share.
//!
//! Module map: [`config`] settings, [`registry`] the brokers and routes (pure, clock passed
//! in), [`roles`] what a controller must tell brokers of replicated queues (pure), [`protocol::routing`] the queue → shard mapping, `command` the answer to each request
//! (the [`svc::connection`] handler: the frame loop is shared), `server` accept loop and sweep,
//! `handle` the threaded form.

#![warn(missing_docs)]

mod command;
mod error;
mod handle;
mod metrics;
mod replication;
mod server;

pub mod cli;
pub mod config;
pub mod registry;
pub mod roles;

pub use config::NameserverConfig;
pub use error::NameserverError;
pub use handle::{NameserverHandle, start};
pub use server::run;
