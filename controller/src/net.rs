//! openraft's network: Raft RPCs to the other controller nodes over `protocol` frames.
//!
//! Each RPC is one frame whose body is the `serde_json` of openraft's request; the answer's
//! body is the `serde_json` of the peer's `Result<response, RaftError>`, so an error the
//! peer's Raft returned comes back as openraft's `RemoteError`. openraft makes one client
//! per target and per purpose (each replication stream, each election) and calls it one RPC
//! at a time, so a client is one [`Peer`] connection.
//!
//! Every RPC is bounded by the deadline openraft passes (`RPCOption::hard_ttl`, derived from
//! the heartbeat and election timeouts), and each target has its own connection and its own
//! openraft task: a dead or hung peer delays only the RPCs addressed to it. A peer that
//! refuses the connection is reported `Unreachable`, which makes openraft back off before
//! trying it again, and so is a TLS failure (a peer without TLS, a certificate it refuses),
//! which retrying at once would only repeat; other failures are `Network` errors, retried at
//! once. The first TLS failure of a client is logged as a warning: it needs a human.

use std::error::Error;
use std::fmt::Write as _;
use std::time::Duration;

use log::{debug, warn};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use protocol::codes::Command;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::rpc::{Credentials, Peer, RpcError};
use crate::types::TypeConfig;

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

/// Makes a [`PeerNetwork`] per target.
#[derive(Clone, Debug, Default)]
pub(crate) struct Network {
    /// What this node presents on every connection to a peer.
    credentials: Credentials,
}

impl Network {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            target,
            peer: Peer::new(node.addr.clone(), self.credentials.clone()),
            tls_failed: false,
        }
    }
}

/// The Raft RPCs to one peer.
#[derive(Debug)]
pub(crate) struct PeerNetwork {
    target: u64,
    peer: Peer,
    /// Whether a TLS failure was logged as a warning already: later ones are debug lines,
    /// as openraft tries again after every back-off.
    tls_failed: bool,
}

impl PeerNetwork {
    async fn send<Req, Resp, E>(
        &mut self,
        command: Command,
        request: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let body =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .peer
            .call(command, &body, timeout)
            .await
            .map_err(|e| match e {
                RpcError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                RpcError::Tls(_) => {
                    self.log_tls_failure(&e);
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn log_tls_failure(&mut self, e: &RpcError) {
        // The cause (rustls's reason) is the useful part: print the chain.
        let mut chain = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            let _ = write!(chain, ": {cause}");
            source = cause.source();
        }
        if std::mem::replace(&mut self.tls_failed, true) {
            debug!("controller node {}: {chain}", self.target);
        } else {
            warn!("Raft RPCs to controller node {}: {chain}", self.target);
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        self.send(Command::RaftAppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.send(Command::RaftInstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        self.send(Command::RaftVote, &rpc, option.hard_ttl()).await
    }
}
