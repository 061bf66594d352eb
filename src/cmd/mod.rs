pub mod acl;
pub mod admin;
pub mod certs;
pub mod consume;
pub mod dlq;
pub mod log;
pub mod log_repair;
pub mod produce;
mod replicas;
pub mod request;
pub mod respond;
pub mod security;
pub mod sgs;
pub mod shared;
pub mod standalone;
mod standalone_config;
#[cfg(test)]
mod standalone_metrics;
pub mod trace;
