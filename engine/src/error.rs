//! Errors of the broker: [`BrokerError`] for starting and stopping it, [`Reject`] for one
//! request refused with a status (answered to the peer, never fatal to the broker).

use std::{io, path::PathBuf};

use protocol::codes::Status;
use protocol::control::ControlError;
use protocol::data::AddressError;

use crate::log::LogError;

/// Why the broker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration is inconsistent.
    #[error("invalid broker configuration: {reason}")]
    Config {
        /// Which field is wrong and why.
        reason: String,
    },
    /// A file or socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file, directory or address involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A shard failed to start, or its thread failed.
    #[error("shard {shard}: {reason}")]
    Shard {
        /// The shard id.
        shard: usize,
        /// What went wrong.
        reason: String,
    },
    /// The `[tls]` settings cannot be used (a file missing or unreadable, a key that does not
    /// match its certificate).
    #[error("[tls] settings")]
    Tls {
        /// Which file or setting, and why.
        #[source]
        source: tls::TlsError,
    },
    /// A queue, offset or reply log failed to open or close.
    #[error("shard {shard}: {what}: {source}")]
    Log {
        /// The shard id.
        shard: usize,
        /// Which log.
        what: String,
        /// The log's error.
        #[source]
        source: LogError,
    },
}

/// A request refused: the status and a message for the requester's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The status answered.
    pub status: Status,
    /// What a human needs to fix it.
    pub message: String,
}

impl Reject {
    /// A rejection with `status` and `message`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl From<ControlError> for Reject {
    fn from(e: ControlError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

impl From<AddressError> for Reject {
    fn from(e: AddressError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

impl From<LogError> for Reject {
    fn from(e: LogError) -> Self {
        let status = match e {
            LogError::InvalidBatch { .. } | LogError::TrailingBytes { .. } => {
                Status::InvalidArgument
            }
            LogError::OffsetOutOfRange { .. } => Status::InvalidArgument,
            LogError::Damaged { .. } => Status::DataDamaged,
            _ => Status::StorageError,
        };
        Self::new(status, e.to_string())
    }
}
