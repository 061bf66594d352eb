//! Replicated queues (`docs/ARCHITECTURE.md` §10): a queue of a topic with more than one
//! replica is led by one broker and copied by the others, each in the role the controller
//! assigned for the current epoch.
//!
//! - [`progress`]: [`ReplicaSet`], the leader's pure rules (fetch as acknowledgement, commit
//!   point over the in-sync set, lag);
//! - [`commit_point`]: [`CommitWaiters`], produces waiting for the commit point, failed with
//!   [`Deposed`] when the leader's epoch ends;
//! - `role`: the queue's role on this broker and its changes;
//! - `serve`: the leader's answers to `ReplicaFetch` and `ReplicaEpochEnd`;
//! - `follower`: the follower's task (it reaches its leader through `crate::peer`).
//!
//! The log provides what the roles need: [`crate::log::Log::append_replicated`],
//! [`crate::log::Log::truncate_to`] and the leader-epoch journal ([`crate::log::epochs`]).

pub mod commit_point;
mod follower;
pub mod progress;
pub(crate) mod role;
pub(crate) mod serve;

pub use commit_point::{CommitWaiters, Deposed, WaitCommitted};
pub use progress::{FetchRefused, FollowerView, ReplicaSet, Term};
