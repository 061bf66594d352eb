//! The types openraft is instantiated with: node ids are `u64`, a node is its `host:port`
//! ([`BasicNode`]), a log entry carries one [`Command`], and its result is an [`Applied`].

use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::state::{Command, Outcome, Rejected};

openraft::declare_raft_types!(
    /// The controller's Raft type configuration. Snapshots are whole in memory
    /// (`Cursor<Vec<u8>>`): the state is small, a control plane's brokers and topics.
    pub(crate) TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The result of applying one log entry: the command's outcome or refusal; `None` for the
/// entries openraft writes itself (a new leader's blank entry, membership changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Applied(pub Option<Result<Outcome, Rejected>>);

/// A log entry of the controller.
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// A log id (term, leader, index).
pub(crate) type LogId = openraft::LogId<u64>;
/// A Raft vote.
pub(crate) type Vote = openraft::Vote<u64>;
/// A storage failure as openraft takes it; any stops the Raft node.
pub(crate) type StorageError = openraft::StorageError<u64>;
/// The Raft node.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
