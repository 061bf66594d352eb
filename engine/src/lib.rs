//! The DeFiBus broker engine.
//!
//! - [`log`]: the durable, segmented storage of one queue (partition);
//! - [`file`]: the one home for on-disk file names and directory fsync.

#![deny(unsafe_code)]

pub mod file;
pub mod log;
pub mod testing;

pub use crate::log::{
    Appended, FlushMode, Log, LogConfig, LogError, RecoveryReport, RetentionReport,
    storage::{DmaStorage, Storage},
};
