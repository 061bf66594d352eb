//! The DeFiBus broker engine.
//!
//! - [`log`]: the durable, segmented storage of one queue (partition);
//! - [`file`]: the one home for on-disk file names and directory fsync;
//! - [`config`]: the broker's configuration and limits;
//! - [`broker`]: the public entry, [`Broker`];
//! - internally, the data path: `shard` (one executor per core) → `net` (connections,
//!   dispatch) → `topic` / `queue` (owned queues) → `group` / `push` (consumption) →
//!   `offsets`, `rr` (request-reply), `mesh` (between shards), `admin`, `register`,
//!   `retention` and `scrub` (background passes over the stored data), `trace` (one
//!   message's life, for `defibus trace`).

#![deny(unsafe_code)]

mod admin;
pub mod broker;
pub mod cli;
pub mod config;
mod dead_letter;
mod depth;
mod disk;
mod dynamic;
pub mod error;
pub mod file;
mod group;
mod held;
pub mod log;
mod mesh;
mod metrics;
mod net;
mod notify;
mod offsets;
mod peer;
pub mod producers;
mod push;
mod queue;
mod redirect;
mod register;
pub mod replica;
mod reserve;
mod retention;
mod retry;
mod rr;
mod rt;
mod scrub;
mod security;
mod shard;
pub mod testing;
pub mod topic;
mod trace;

pub use crate::broker::Broker;
pub use crate::config::BrokerConfig;
pub use crate::error::{BrokerError, Reject};
pub use crate::log::{
    Appended, FlushMode, Log, LogConfig, LogError, RecoveryReport, RetentionReport,
    storage::{DmaStorage, Storage},
};
