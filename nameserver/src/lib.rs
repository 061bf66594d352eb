//! The DeFiBus nameserver: a registry of live brokers and the topic routes derived from it.

mod error;

pub mod config;
pub mod registry;
pub mod routing;

pub use config::NameserverConfig;
pub use error::NameserverError;
