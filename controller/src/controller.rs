//! [`Controller`], a running controller node: its storage, its Raft node, its RPC server and
//! its failure detector, started together and stopped together.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;

use log::{debug, info, warn};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{ControllerConfig, MAX_CONNECTIONS};
use crate::error::ControllerError;
use crate::failover::failover;
use crate::net::Network;
use crate::node::{Local, Node, ProposeReply};
use crate::rpc::Credentials;
use crate::server::Service;
use crate::state::{ClusterState, Command, Outcome};
use crate::store::{LogStore, StateMachineStore, StoreError};
use crate::types::Raft;

/// A running controller node. Stop it with [`Controller::shutdown`]; dropping it stops the
/// server and the failure detector and asks Raft to stop, without waiting.
pub struct Controller {
    node: Arc<Node>,
    local_addr: SocketAddr,
    running: Option<Running>,
}

/// What [`Controller::shutdown`] stops.
struct Running {
    stop_detector: watch::Sender<bool>,
    detector: JoinHandle<()>,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<()>,
    /// The data directory's lock, released last.
    _lock: File,
}

impl Controller {
    /// Binds `config.listen` and starts the node (see [`Controller::start_on`]).
    pub async fn start(config: ControllerConfig) -> Result<Self, ControllerError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ControllerError::Bind { addr, source })?;
        Self::start_on(listener, config).await
    }

    /// Starts the node on a bound `listener` (tests bind port 0 first, so that every
    /// node's address is known before any starts): opens the data directory, starts Raft,
    /// the RPC server and the failure detector. The voter with the lowest id initializes
    /// the cluster with every voter when its log is empty; the others wait to hear from it.
    pub async fn start_on(
        listener: TcpListener,
        config: ControllerConfig,
    ) -> Result<Self, ControllerError> {
        config.validate()?;
        let raft_config = Arc::new(config.raft_config()?);
        let local_addr = listener
            .local_addr()
            .map_err(|source| ControllerError::Bind {
                addr: config.listen,
                source,
            })?;
        // TLS files are read before anything starts, so a bad one stops the start.
        let tls_error = |source| ControllerError::Tls { source };
        let tls_server = config
            .tls
            .as_ref()
            .map(svc::stream::TlsServer::new)
            .transpose()
            .map_err(tls_error)?;
        let credentials = Credentials::new(&config).map_err(tls_error)?;
        let dir = config.data_dir.clone();
        let lock = svc::file::open_dir(&dir).map_err(StoreError::io(&dir))?;
        let log = LogStore::open(&dir)?;
        let machine = StateMachineStore::open(&dir)?;
        let state = machine.subscribe();
        let network = Network::new(credentials.clone());
        let raft = Raft::new(config.node_id, raft_config, network, log, machine)
            .await
            .map_err(raft_stopped)?;
        let node = Arc::new(Node::new(config, raft, state, credentials));

        let (stop_server, server_stopped) = oneshot::channel::<()>();
        let (stop_connections, _) = watch::channel(false);
        let server = tokio::spawn(svc::server::serve(
            listener,
            local_addr,
            Arc::new(Service::new(Arc::clone(&node), tls_server)),
            // The default limits against hostile clients: the budget for partial frames
            // (64 MiB) holds several of the largest (`FRAME_LEN_MAX`, a snapshot chunk).
            svc::limits::Limits::new(MAX_CONNECTIONS),
            stop_connections,
            async {
                // A dropped sender stops the server as a sent stop does.
                let _ = server_stopped.await;
            },
        ));
        let (stop_detector, detector_stopped) = watch::channel(false);
        let detector = tokio::spawn(detect_failures(Arc::clone(&node), detector_stopped));
        info!(
            "controller node {} listening on {local_addr}{}, voters {:?}",
            node.id,
            if node.config.tls.is_some() {
                " (TLS)"
            } else {
                ""
            },
            node.config.voters
        );
        let controller = Self {
            node,
            local_addr,
            running: Some(Running {
                stop_detector,
                detector,
                stop_server,
                server,
                _lock: lock,
            }),
        };
        if let Err(e) = controller.bootstrap().await {
            // Already failing: what matters is the bootstrap error.
            let _ = controller.shutdown().await;
            return Err(e);
        }
        Ok(controller)
    }

    /// Initializes the cluster if this node is the lowest voter and its log is empty.
    async fn bootstrap(&self) -> Result<(), ControllerError> {
        let config = &self.node.config;
        if config.voters.keys().next() != Some(&config.node_id) {
            return Ok(());
        }
        let raft = &self.node.raft;
        let initialized = raft.is_initialized().await.map_err(raft_stopped)?;
        if initialized {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = config
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => {
                info!("controller node {} initialized the cluster", config.node_id);
                Ok(())
            }
            // Another start of this node got there first: nothing to do.
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                debug!("cluster already initialized: {e}");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(ControllerError::Config {
                    key: "voters",
                    reason: e.to_string(),
                })
            }
            Err(RaftError::Fatal(fatal)) => Err(raft_stopped(fatal)),
        }
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.node.id
    }

    /// The address the RPC server listens on (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Applies `command` to the replicated state and returns what it did, from any node: a
    /// follower forwards it to the leader, and returns once it has applied the command
    /// itself, so [`Controller::state`] shows it. Waits up to the request timeout, elections
    /// included (see [`ControllerError::NoLeader`] and [`ControllerError::Timeout`]).
    pub async fn propose(&self, command: Command) -> Result<Outcome, ControllerError> {
        self.node.propose(&command).await
    }

    /// The state this node has applied: the committed state, or a little behind it on a
    /// follower. Cheap: the same `Arc` until the next applied command.
    pub fn state(&self) -> Arc<ClusterState> {
        Arc::clone(&self.node.state.borrow())
    }

    /// Every state this node applies, as it applies it.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.node.state.clone()
    }

    /// The Raft leader this node knows of.
    pub fn leader_id(&self) -> Option<u64> {
        self.node.leader_id()
    }

    /// Whether this node is the Raft leader.
    pub fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    /// openraft's metrics of this node (state, term, leader, log and applied indexes).
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<u64, BasicNode>> {
        self.node.raft.metrics()
    }

    /// Records that `broker` is alive. Liveness is kept by the leader only, so a follower
    /// forwards the heartbeat to the leader (as a proposal is forwarded); a broker may
    /// send its heartbeats to any controller node.
    pub async fn broker_heartbeat(&self, broker: &str) -> Result<(), ControllerError> {
        self.node.broker_heartbeat(broker).await
    }

    /// Stops the failure detector, Raft and the server, and releases the data directory.
    pub async fn shutdown(mut self) -> Result<(), ControllerError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let _ = running.stop_detector.send(true);
        svc::server::log_panic("controller failure detector", running.detector.await);
        let stopped = self.node.raft.shutdown().await;
        let _ = running.stop_server.send(());
        svc::server::log_panic("controller server", running.server.await);
        info!("controller node {} stopped", self.node.id);
        stopped.map_err(|e| ControllerError::Internal {
            reason: format!("the Raft task failed: {e}"),
        })
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let _ = running.stop_detector.send(true);
        let _ = running.stop_server.send(());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let raft = self.node.raft.clone();
            runtime.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

fn raft_stopped(fatal: openraft::error::Fatal<u64>) -> ControllerError {
    ControllerError::Raft {
        source: Box::new(fatal),
    }
}

/// The failure detector: on the leader, five times per broker-heartbeat interval, proposes the
/// commands that move queues away from dead brokers (see `failover`). A new leadership
/// (a new term in which this node leads) starts with a grace period for every broker.
async fn detect_failures(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(node.config.detector_interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut leading_term = None;
    let mut reported_dead = Default::default();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let term = node.raft.metrics().borrow().current_term;
        if !node.is_leader() {
            leading_term = None;
            continue;
        }
        let now = std::time::Instant::now();
        if leading_term != Some(term) {
            info!(
                "controller node {} leads in term {term}: every broker gets {} ms of grace",
                node.id,
                node.config.broker_timeout.as_millis()
            );
            node.liveness().grace_all(now);
            leading_term = Some(term);
        }
        let state = Arc::clone(&node.state.borrow());
        let dead = node.liveness().dead(state.brokers.keys(), now);
        for broker in dead.difference(&reported_dead) {
            warn!(
                "broker {broker} is silent for over {} ms: moving its queues",
                node.config.broker_timeout.as_millis()
            );
        }
        reported_dead = dead;
        let deadline = Instant::now() + node.config.request_timeout;
        for command in failover(&state, &reported_dead) {
            match node.propose_here(command.clone(), deadline).await {
                Ok(ProposeReply {
                    result: Ok(outcome),
                    ..
                }) => info!("failover: {command:?}: {outcome:?}"),
                // Decided on a state that has moved on; the next look decides again.
                Ok(ProposeReply {
                    result: Err(rejected),
                    ..
                }) => debug!("failover: {command:?} refused: {rejected}"),
                Err(Local::NotLeader { .. }) => break,
                Err(e) => {
                    warn!("failover: {command:?} not applied: {e:?}");
                    break;
                }
            }
        }
    }
}
