//! What one controller node does with a request: apply it itself when it is the Raft
//! leader, or send it to the leader.
//!
//! Only the leader may propose (Raft) and only the leader watches brokers' liveness (see
//! `failover`), so a proposal or a broker heartbeat that reaches a follower is forwarded to
//! the leader it knows, over one cached connection ([`Peer`]). A leader that turns out not
//! to be one answers `NotLeader` and never forwards again, so a request makes at most one
//! hop per try; the sender retries until its deadline, waiting for a leader to be known (or
//! to change) between tries. When the deadline passes without any leader known the error
//! is [`ControllerError::NoLeader`]; with a leader that did not answer in time it is
//! [`ControllerError::Timeout`], and the command may still be applied later.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use log::debug;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use protocol::codes::Command as Code;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ControllerConfig;
use crate::error::ControllerError;
use crate::failover::Liveness;
use crate::rpc::{Credentials, Peer, RpcError};
use crate::state::{ClusterState, Command, Outcome, Rejected};
use crate::types::Raft;

/// The longest a request waits before trying the same leader again after a failed try.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The body of a `ControllerHeartbeat` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeartbeatBody {
    /// The broker that is alive.
    pub broker: String,
}

/// The answer body of a `ControllerPropose` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProposeReply {
    /// The index of the command's log entry, so the proposer can wait until its own node
    /// has applied it.
    pub log_index: u64,
    /// What the command did.
    pub result: Result<Outcome, Rejected>,
}

/// Why this node did not handle a request itself.
#[derive(Debug)]
pub(crate) enum Local {
    /// It is not the leader; `leader` is the one it knows of.
    NotLeader { leader: Option<u64> },
    /// The proposal was not committed by the deadline.
    TimedOut,
    /// The Raft node has stopped (boxed: it is large).
    Stopped(Box<Fatal<u64>>),
    /// openraft answered what it cannot answer to a normal entry.
    Internal(String),
}

/// A request that needs the leader.
#[derive(Debug)]
enum Request<'a> {
    Propose(&'a Command),
    Heartbeat(&'a str),
}

/// The leader's answer to a [`Request`].
enum Reply {
    Applied(ProposeReply),
    Heard,
}

/// The parts of a controller node that requests, the RPC server and the failure detector
/// share.
pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) config: ControllerConfig,
    pub(crate) raft: Raft,
    pub(crate) state: watch::Receiver<Arc<ClusterState>>,
    /// What this node presents when it forwards to the leader.
    credentials: Credentials,
    /// The connection to the leader last forwarded to.
    leader_peer: tokio::sync::Mutex<Option<(u64, Peer)>>,
    liveness: Mutex<Liveness>,
}

impl Node {
    pub(crate) fn new(
        config: ControllerConfig,
        raft: Raft,
        state: watch::Receiver<Arc<ClusterState>>,
        credentials: Credentials,
    ) -> Self {
        Self {
            id: config.node_id,
            credentials,
            liveness: Mutex::new(Liveness::new(config.broker_timeout)),
            config,
            raft,
            state,
            leader_peer: tokio::sync::Mutex::new(None),
        }
    }

    /// The leader this node knows of.
    pub(crate) fn leader_id(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this node is the Raft leader now.
    pub(crate) fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state.is_leader() && metrics.current_leader == Some(self.id)
    }

    /// The failure detector's view of the brokers. Every update is one map operation, so a
    /// panic elsewhere cannot leave it half-done.
    pub(crate) fn liveness(&self) -> MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `command` through Raft on the leader, wherever this node is, and returns
    /// once this node has applied it too (or the request timeout passed), so that
    /// this node's state shows what the proposal did.
    pub(crate) async fn propose(&self, command: &Command) -> Result<Outcome, ControllerError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let reply = match self.to_leader(Request::Propose(command), deadline).await? {
            Reply::Applied(reply) => reply,
            Reply::Heard => {
                return Err(ControllerError::Internal {
                    reason: "a heartbeat's answer to a proposal".into(),
                });
            }
        };
        let mut metrics = self.raft.metrics();
        let applied =
            metrics.wait_for(|m| m.last_applied.is_some_and(|id| id.index >= reply.log_index));
        if tokio::time::timeout_at(deadline, applied).await.is_err() {
            // Committed all the same: only this node's view lags.
            debug!(
                "node {}: log entry {} committed but not applied here yet",
                self.id, reply.log_index
            );
        }
        Ok(reply.result?)
    }

    /// Tells the leader that `broker` is alive, wherever this node is.
    pub(crate) async fn broker_heartbeat(&self, broker: &str) -> Result<(), ControllerError> {
        let deadline = Instant::now() + self.config.request_timeout;
        self.to_leader(Request::Heartbeat(broker), deadline)
            .await
            .map(|_| ())
    }

    /// Proposes `command` if this node leads, waiting for it to be applied until `deadline`.
    pub(crate) async fn propose_here(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<ProposeReply, Local> {
        if !self.is_leader() {
            return Err(Local::NotLeader {
                leader: self.leader_id(),
            });
        }
        match tokio::time::timeout_at(deadline, self.raft.client_write(command)).await {
            Err(_elapsed) => Err(Local::TimedOut),
            Ok(Ok(response)) => match response.data.0 {
                Some(result) => Ok(ProposeReply {
                    log_index: response.log_id.index,
                    result,
                }),
                None => Err(Local::Internal(format!(
                    "no result for log entry {}",
                    response.log_id
                ))),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(Local::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(Local::Internal(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(Local::Stopped(Box::new(fatal))),
        }
    }

    /// Records a heartbeat of `broker` if this node leads.
    pub(crate) fn heartbeat_here(&self, broker: &str) -> Result<(), Local> {
        if !self.is_leader() {
            return Err(Local::NotLeader {
                leader: self.leader_id(),
            });
        }
        self.liveness().heard(broker, std::time::Instant::now());
        Ok(())
    }

    /// Handles `request` here or on the leader, trying until the request timeout.
    async fn to_leader(
        &self,
        request: Request<'_>,
        deadline: Instant,
    ) -> Result<Reply, ControllerError> {
        let started = Instant::now();
        let body = match request {
            Request::Propose(command) => serde_json::to_vec(command),
            Request::Heartbeat(broker) => serde_json::to_vec(&HeartbeatBody {
                broker: broker.to_owned(),
            }),
        }
        .map_err(|source| ControllerError::Codec {
            action: "encode a request",
            source,
        })?;
        let mut metrics = self.raft.metrics();
        let mut last;
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            match leader {
                Some(leader) if leader == self.id => match self.here(&request, deadline).await {
                    Ok(reply) => return Ok(reply),
                    Err(Local::Stopped(source)) => return Err(ControllerError::Raft { source }),
                    Err(Local::Internal(reason)) => {
                        return Err(ControllerError::Internal { reason });
                    }
                    Err(Local::TimedOut) => last = "not committed in time".into(),
                    Err(Local::NotLeader { .. }) => last = "lost the leadership".into(),
                },
                Some(leader) => match self.forward(leader, &request, &body, deadline).await {
                    Ok(reply) => return decode_reply(&request, &reply),
                    Err(e) if e.is_retryable() => last = e.to_string(),
                    Err(source) => return Err(ControllerError::Forward { leader, source }),
                },
                None => last = "no leader".into(),
            }
            let now = Instant::now();
            if now >= deadline {
                let waited_ms = u64::try_from((now - started).as_millis()).unwrap_or(u64::MAX);
                return Err(match self.leader_id() {
                    None => ControllerError::NoLeader { waited_ms },
                    Some(leader) => ControllerError::Timeout {
                        leader,
                        waited_ms,
                        last,
                    },
                });
            }
            // Wait for another leader, or try this one again after a pause.
            let changed =
                metrics.wait_for(|m| m.current_leader.is_some() && m.current_leader != leader);
            let _ = tokio::time::timeout_at(deadline.min(now + RETRY_PAUSE), changed).await;
        }
    }

    async fn here(&self, request: &Request<'_>, deadline: Instant) -> Result<Reply, Local> {
        match request {
            Request::Propose(command) => self
                .propose_here((*command).clone(), deadline)
                .await
                .map(Reply::Applied),
            Request::Heartbeat(broker) => self.heartbeat_here(broker).map(|()| Reply::Heard),
        }
    }

    async fn forward(
        &self,
        leader: u64,
        request: &Request<'_>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, RpcError> {
        let code = match request {
            Request::Propose(_) => Code::ControllerPropose,
            Request::Heartbeat(_) => Code::ControllerHeartbeat,
        };
        let Some(endpoint) = self.config.voters.get(&leader) else {
            return Err(RpcError::Protocol {
                endpoint: format!("node {leader}"),
                reason: "the leader is not among the configured voters".into(),
            });
        };
        let timed_out = || RpcError::TimedOut {
            endpoint: endpoint.clone(),
            timeout_ms: u64::try_from(self.config.request_timeout.as_millis()).unwrap_or(u64::MAX),
        };
        // One forward at a time over the cached connection: requests are answered in order
        // on a connection anyway, and a control plane's requests are few.
        let mut cached = tokio::time::timeout_at(deadline, self.leader_peer.lock())
            .await
            .map_err(|_| timed_out())?;
        let peer = match &mut *cached {
            Some((id, peer)) if *id == leader => peer,
            slot => {
                let peer = Peer::new(endpoint.clone(), self.credentials.clone());
                &mut slot.insert((leader, peer)).1
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        peer.call(code, body, left).await
    }
}

fn decode_reply(request: &Request<'_>, reply: &[u8]) -> Result<Reply, ControllerError> {
    match request {
        Request::Propose(_) => {
            serde_json::from_slice(reply)
                .map(Reply::Applied)
                .map_err(|source| ControllerError::Codec {
                    action: "decode the leader's answer to a proposal",
                    source,
                })
        }
        Request::Heartbeat(_) => Ok(Reply::Heard),
    }
}
