//! The RPC server of a controller node, on [`svc::server::serve`] (the accept loop, the
//! connection limit, shutdown, the TLS handshake when the process has `[tls]`) and
//! [`svc::connection`] (the frame loop). This module is only the dispatch: which command
//! goes where.
//!
//! Bodies are `serde_json` (a control plane's messages are small and rare, and JSON keeps
//! them readable in a capture):
//!
//! | command | request body | answer body |
//! |---|---|---|
//! | `RaftAppendEntries` | openraft `AppendEntriesRequest` | `Result<AppendEntriesResponse, RaftError>` |
//! | `RaftVote` | openraft `VoteRequest` | `Result<VoteResponse, RaftError>` |
//! | `RaftInstallSnapshot` | openraft `InstallSnapshotRequest` (one chunk) | `Result<InstallSnapshotResponse, RaftError>` |
//! | `ControllerPropose` | a [`Command`] | `{"log_index": n, "result": Result<Outcome, Rejected>}` |
//! | `ControllerState` | empty | the node's applied [`crate::ClusterState`] |
//! | `ControllerHeartbeat` | `{"broker": id}` | empty |
//!
//! `ControllerPropose` and `ControllerHeartbeat` are served by the leader only; any other
//! node answers [`Status::NotLeader`], naming the leader it knows, and never forwards them
//! itself (the sender does, see `node`). A body that does not decode closes the connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use protocol::codes::{Command as Code, Status};
use protocol::frame::Framer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use svc::connection::{Answer, Handler};
use svc::stream::TlsServer;
use tokio::time::Instant;

use crate::config::{self, IDLE_TIMEOUT};
use crate::node::{HeartbeatBody, Local, Node};
use crate::state::Command;

/// The controller's [`Handler`].
pub(crate) struct Service {
    node: Arc<Node>,
    framer: Framer,
    /// With it, every connection is TLS: a voter, a nameserver or a tool without TLS is
    /// refused at the handshake.
    tls: Option<TlsServer>,
}

impl Service {
    pub(crate) fn new(node: Arc<Node>, tls: Option<TlsServer>) -> Self {
        Self {
            node,
            framer: Framer::new(config::frame_limits()),
            tls,
        }
    }

    async fn answer(&self, code: Code, body: &[u8]) -> Answer {
        let raft = &self.node.raft;
        match code {
            Code::RaftAppendEntries => match decode(code, body) {
                Ok(request) => reply(&raft.append_entries(request).await),
                Err(refusal) => refusal,
            },
            Code::RaftVote => match decode(code, body) {
                Ok(request) => reply(&raft.vote(request).await),
                Err(refusal) => refusal,
            },
            Code::RaftInstallSnapshot => match decode(code, body) {
                Ok(request) => reply(&raft.install_snapshot(request).await),
                Err(refusal) => refusal,
            },
            Code::ControllerPropose => match decode::<Command>(code, body) {
                Ok(command) => {
                    let deadline = Instant::now() + self.node.config.request_timeout;
                    match self.node.propose_here(command, deadline).await {
                        Ok(proposed) => reply(&proposed),
                        Err(local) => self.refuse(local),
                    }
                }
                Err(refusal) => refusal,
            },
            Code::ControllerState => {
                let state = Arc::clone(&self.node.state.borrow());
                reply(&*state)
            }
            Code::ControllerHeartbeat => match decode::<HeartbeatBody>(code, body) {
                Ok(heartbeat) => match self.node.heartbeat_here(&heartbeat.broker) {
                    Ok(()) => Answer::ok(Vec::new()),
                    Err(local) => self.refuse(local),
                },
                Err(refusal) => refusal,
            },
            other => Answer::not_served::<Self>(other),
        }
    }

    fn refuse(&self, local: Local) -> Answer {
        let id = self.node.id;
        match local {
            Local::NotLeader { leader } => {
                let leader = leader.map_or("unknown".into(), |l| format!("node {l}"));
                Answer::refused(
                    Status::NotLeader,
                    format!("node {id} is not the controller leader; the leader is {leader}"),
                )
            }
            Local::TimedOut => Answer::refused(
                Status::RequestExpired,
                format!("node {id}: not committed within the request timeout"),
            ),
            Local::Stopped(fatal) => Answer::refused(
                Status::ShuttingDown,
                format!("node {id}: the Raft node stopped: {fatal}"),
            ),
            Local::Internal(reason) => Answer::refused(Status::Internal, reason),
        }
    }
}

impl Handler for Service {
    const NAME: &'static str = "controller";

    fn framer(&self) -> &Framer {
        &self.framer
    }

    fn idle_timeout(&self) -> Duration {
        IDLE_TIMEOUT
    }

    fn authority(&self) -> &auth::Authority {
        &self.node.config.authority
    }

    fn tls(&self) -> Option<&TlsServer> {
        self.tls.as_ref()
    }

    fn handle(
        self: &Arc<Self>,
        caller: &svc::connection::Caller,
        code: Code,
        body: &[u8],
    ) -> impl Future<Output = Answer> + Send {
        // Raft traffic and the controller API are for the nameservers (and admins) only.
        let allowed = caller.check(
            &self.node.config.authority,
            auth::Action::Broker,
            "controller",
            None,
        );
        let service = Arc::clone(self);
        let body = body.to_vec();
        async move {
            match allowed {
                Ok(()) => service.answer(code, &body).await,
                Err(denied) => denied,
            }
        }
    }
}

fn decode<T: DeserializeOwned>(code: Code, body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| {
        Answer::fatal(
            Status::MalformedFrame,
            format!("cannot decode the {code} body: {e}"),
        )
    })
}

fn reply<T: Serialize + ?Sized>(value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => Answer::ok(body),
        Err(e) => Answer::refused(Status::Internal, format!("cannot encode the answer: {e}")),
    }
}
