//! The one error type of the log, carrying the context needed to act on it.

use std::{io, path::PathBuf, sync::Arc};

use protocol::record::BatchError;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An IO operation on a file or directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "fdatasync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An earlier write or fdatasync failed; the log accepts nothing more until reopened,
    /// because what reached the disk is no longer known.
    #[error("log is poisoned by an earlier failed write or fdatasync: {cause}")]
    Poisoned {
        /// The failure that poisoned the log.
        #[source]
        cause: Arc<LogError>,
    },
    /// The appended bytes are not a valid record batch.
    #[error("invalid record batch: {source}")]
    InvalidBatch {
        /// Why the batch was rejected.
        #[source]
        source: BatchError,
    },
    /// The appended buffer holds more than one batch.
    #[error("buffer of {buffer_len} bytes holds a batch of {batch_len} bytes and trailing bytes")]
    TrailingBytes {
        /// Length declared by the batch.
        batch_len: usize,
        /// Length of the buffer.
        buffer_len: usize,
    },
    /// A read below the oldest retained offset or past the end of the log.
    #[error("offset {offset} is outside the log [{start_offset}, {next_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// Oldest offset still in the log.
        start_offset: u64,
        /// Offset the next append gets.
        next_offset: u64,
    },
    /// Data on disk that recovery accepted no longer parses.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position in the file.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The offset lies at or past damaged stored data, which is not served until repaired:
    /// serving past it would skip or relabel records silently.
    #[error("stored data is damaged: {damage}; repair the queue with `defibus log repair`")]
    Damaged {
        /// Where and what.
        damage: Box<super::damage::Damage>,
    },
    /// Another log holds the directory's lock: it is open in this or another process, or a
    /// dropped log's committer is still writing what it had buffered. Opening a second writer
    /// would hand out offsets the first one already acknowledged.
    #[error("log directory is in use: {path} is locked by another open log")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A replicated batch does not continue the log: a follower appends only the batch that
    /// starts at its end, so that its offsets stay the leader's.
    #[error("replicated batch at offset {found} does not continue the log at {expected}")]
    OutOfSequence {
        /// The log's next offset.
        expected: u64,
        /// The batch's base offset.
        found: u64,
    },
    /// A leader epoch that cannot be recorded.
    #[error("leader epoch refused: {source}")]
    Epoch {
        /// Why.
        #[source]
        source: super::epochs::EpochError,
    },
    /// A cut of the log that would remove what it must keep.
    #[error("cannot truncate the log to offset {offset}: {reason}")]
    Truncate {
        /// The new end asked for.
        offset: u64,
        /// Why not.
        reason: String,
    },
    /// The configuration is inconsistent.
    #[error("invalid log configuration: {reason}")]
    Config {
        /// Which field is wrong and why.
        reason: String,
    },
}

impl LogError {
    /// An IO error with its operation and path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
