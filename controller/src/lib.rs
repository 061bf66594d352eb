//! The DeFiBus replication controller: the one place that decides which brokers hold each
//! queue's replicas, which of them leads, in which epoch, and which are in sync (ISR).
//!
//! A few controller nodes (three or five) replicate one state machine, [`ClusterState`],
//! with Raft. Brokers register with it, proposers create topics through it, and its leader
//! watches the brokers' heartbeats and moves the leadership of a dead broker's queues.
//!
//! # Why openraft
//!
//! Replicating decisions that brokers act on (who may accept writes, in which epoch) needs
//! consensus that survives crashes and partitions; a home-made protocol is where such
//! systems lose data. openraft (0.9) is a maintained Raft with its log, elections,
//! snapshots and membership tested at length; this crate supplies only what Raft leaves to
//! its user: durable storage (`store`), the transport (`net`, over our own frames) and the
//! state machine (`state`). openraft's v2 storage API is enabled with its `storage-v2`
//! feature (its traits are sealed without it).
//!
//! # Why the proposer computes placement
//!
//! [`Command::CreateTopic`] carries the full assignment, computed before proposing with
//! [`place`]. The state machine only validates it. A log entry then means the same thing to
//! every node and every future build: changing the placement rules can never make a node
//! replaying an old log place replicas elsewhere than the node that applied it first.
//!
//! # How failover is decided
//!
//! Brokers heartbeat (any node forwards to the leader). The leader alone keeps liveness, in
//! memory, and looks five times per heartbeat interval; a broker silent past `broker_timeout`
//! is dead. For each queue it leads, the leader proposes an [`Command::ElectLeader`] to the
//! first live ISR member (or `None`, offline, when none is alive), and drops dead brokers
//! from live leaders' ISRs with [`Command::AlterIsr`]. Each command names the epoch it was
//! decided at, and the state machine refuses it if the queue has moved on, so a decision
//! made on stale state never applies. A new controller leader gives every broker a fresh
//! grace period, so a controller election is never taken for every broker failing at once.
//!
//! # Module map
//!
//! - [`state`]: the replicated state and its commands, pure and deterministic.
//! - [`placement`]: where a new topic's replicas go, pure.
//! - `failover`: liveness and the failover decisions, pure (clock passed in).
//! - `store`: the durable log, vote and snapshots (openraft `RaftLogStorage`,
//!   `RaftStateMachine`).
//! - `net`: Raft RPCs to the peers (openraft `RaftNetwork`); `rpc` the async frame client,
//!   over TLS when the process hosting the node has `[tls]` ([`ControllerConfig::tls`]).
//! - `server`: the RPC server's dispatch, on `svc`'s accept, TLS and frame loops.
//! - `node`: handling a request here when leading, else sending it to the leader.
//! - [`controller`]: [`Controller`], a running node; [`config`] its settings; [`error`].

#![warn(missing_docs)]

pub mod config;
pub mod controller;
pub mod error;
pub mod placement;
pub mod rpc;
pub mod state;

mod failover;
mod net;
mod node;
mod server;
mod store;
mod types;

pub use config::ControllerConfig;
pub use controller::Controller;
pub use error::ControllerError;
pub use placement::{PlaceError, place};
pub use state::{
    Acks, BrokerInfo, ClusterState, Command, Outcome, QueueState, Rejected, TopicState,
};
pub use store::StoreError;
