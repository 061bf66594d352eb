//! The controller's one error type.
//!
//! A refusal of a command by the state machine ([`Rejected`]) is a result, replicated like a
//! success; it reaches the proposer as [`ControllerError::Rejected`]. The other variants say
//! why a node could not start, or why a request got no answer from the cluster.

use std::net::SocketAddr;

use crate::rpc::RpcError;
use crate::state::Rejected;
use crate::store::StoreError;

/// Why a controller node could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A setting is out of range or contradicts another.
    #[error("invalid controller setting {key}: {reason}")]
    Config {
        /// The setting's name, as in [`crate::ControllerConfig`].
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// openraft refused the Raft settings derived from the configuration.
    #[error("invalid Raft settings: {source}")]
    RaftConfig {
        /// openraft's reason (boxed: it is large, and errors travel in every `Result`).
        #[source]
        source: Box<openraft::ConfigError>,
    },
    /// The listen address could not be bound or set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The `[tls]` settings cannot be used (a missing setting, an unreadable file).
    #[error("controller TLS settings ([tls])")]
    Tls {
        /// What is wrong, naming the setting or the file.
        #[source]
        source: tls::TlsError,
    },
    /// The data directory could not be opened (locked by another node, unreadable, damaged).
    #[error("controller storage: {source}")]
    Storage {
        /// What went wrong, with the file.
        #[from]
        source: StoreError,
    },
    /// The Raft node has stopped: shut down, or stopped by a storage failure.
    #[error("the Raft node stopped: {source}")]
    Raft {
        /// openraft's reason (boxed: it is large).
        #[source]
        source: Box<openraft::error::Fatal<u64>>,
    },
    /// No leader was known for the whole wait: the controller has no quorum, or is electing.
    #[error("no controller leader within {waited_ms} ms")]
    NoLeader {
        /// How long the request waited.
        waited_ms: u64,
    },
    /// A leader was known but did not answer in time. The command may still be applied: a
    /// proposal is only known to have failed when it is refused.
    #[error("no answer from controller leader {leader} within {waited_ms} ms (last: {last})")]
    Timeout {
        /// The leader last asked.
        leader: u64,
        /// How long the request waited.
        waited_ms: u64,
        /// What the last attempt ended with.
        last: String,
    },
    /// The leader answered the forwarded request with an error.
    #[error("controller leader {leader}: {source}")]
    Forward {
        /// The leader.
        leader: u64,
        /// Its answer.
        #[source]
        source: RpcError,
    },
    /// The state machine refused the command.
    #[error("refused: {0}")]
    Rejected(#[from] Rejected),
    /// openraft answered something it never answers here: a bug.
    #[error("internal error: {reason}")]
    Internal {
        /// What was unexpected.
        reason: String,
    },
    /// A body could not be encoded or decoded: a bug, or a peer of another version.
    #[error("cannot {action}: {source}")]
    Codec {
        /// What was being encoded or decoded.
        action: &'static str,
        /// serde_json's reason.
        #[source]
        source: serde_json::Error,
    },
}
