//! What the nameserver answers to each request: decoding, the registry call, the reply.
//!
//! No IO here: [`handle`] turns one parsed request into one [`Answer`], and the connection
//! decides what to write and whether to go on (see [`svc::connection`]).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, info};
use protocol::codes::{Command, Status};
use protocol::control::{self, BrokerId, BrokerRegistration, ControlError, RegisterAck, TopicName};
use protocol::frame::Framer;
use svc::connection::{Answer, Handler};

use crate::config::NameserverConfig;
use crate::registry::{Registered, Registry, Timestamp};

/// State every connection shares.
pub(crate) struct Shared {
    registry: Mutex<Registry>,
    pub(crate) config: NameserverConfig,
    pub(crate) framer: Framer,
    /// The replication controller this nameserver runs, if configured.
    pub(crate) controller: Option<Arc<controller::Controller>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("controller", &self.controller.as_ref().map(|c| c.node_id()))
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        config: NameserverConfig,
        controller: Option<Arc<controller::Controller>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry::new(config.broker_expiry())),
            framer: Framer::new(config.frame_limits()),
            config,
            controller,
        })
    }

    /// The registry. A panic while it was held cannot leave it half-updated (every update is
    /// one map insert or removal), so a poisoned lock is used as is rather than spreading
    /// the panic to every connection.
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handler for Shared {
    const NAME: &'static str = "nameserver";

    fn framer(&self) -> &Framer {
        &self.framer
    }

    fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout()
    }

    /// A nameserver answer needs no waiting (it is computed before the future is returned),
    /// except a proposal to the controller, which waits for the Raft group.
    fn handle(
        self: &Arc<Self>,
        command: Command,
        body: &[u8],
    ) -> impl Future<Output = Answer> + Send {
        let proposal = (command == Command::ControllerPropose).then(|| body.to_vec());
        let ready = proposal.is_none().then(|| handle(self, command, body));
        let shared = Arc::clone(self);
        async move {
            match (ready, proposal) {
                (Some(answer), _) => answer,
                (None, Some(body)) => propose(&shared, &body).await,
                (None, None) => Answer::refused(Status::Internal, "no answer"),
            }
        }
    }
}

/// Answers one request.
pub(crate) fn handle(shared: &Shared, command: Command, body: &[u8]) -> Answer {
    let result = match command {
        Command::BrokerRegister => register(shared, body),
        Command::BrokerUnregister => unregister(shared, body),
        Command::BrokerHeartbeat => heartbeat(shared, body),
        Command::TopicRoute => topic_route(shared, body),
        Command::ClusterInfo => cluster_info(shared),
        other => return Answer::not_served::<Shared>(other),
    };
    result.unwrap_or_else(|e| Answer::from_control_error(&e))
}

fn register(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let registration: BrokerRegistration = control::decode(body)?;
    if let Some(ctl) = &shared.controller {
        registration.validate()?;
        crate::replication::on_register(ctl, &registration);
    }
    let broker_id = registration.broker_id.clone();
    let cluster = registration.cluster.clone();
    let address = registration.address.clone();
    let shard_count = registration.shard_ports.len();
    let topic_count = registration.topics.len();
    let outcome = shared
        .registry()
        .register(registration, Timestamp::now())
        .inspect_err(|e| info!("registration of broker {broker_id:?} refused: {e}"))?;
    match outcome {
        Registered::New => info!(
            "broker {broker_id} registered: cluster {cluster}, {address}, \
             {shard_count} shards, {topic_count} topics"
        ),
        Registered::Changed => info!(
            "broker {broker_id} changed its registration: cluster {cluster}, {address}, \
             {shard_count} shards, {topic_count} topics"
        ),
        Registered::Refreshed => debug!("broker {broker_id} refreshed its registration"),
    }
    let ack = RegisterAck {
        expiry_ms: shared.config.broker_expiry_ms,
    };
    Ok(Answer::ok(control::encode(&ack)?))
}

/// `ControllerPropose`: a JSON `controller::Command` proposed to this nameserver's controller
/// (a follower forwards it to the Raft leader); answered with the JSON `Outcome`.
async fn propose(shared: &Shared, body: &[u8]) -> Answer {
    let Some(ctl) = &shared.controller else {
        return Answer::refused(
            Status::UnknownCommand,
            "this nameserver runs no controller (see [controller] in nameserver.toml)",
        );
    };
    let command: controller::Command = match serde_json::from_slice(body) {
        Ok(command) => command,
        Err(e) => {
            return Answer::refused(
                Status::InvalidArgument,
                format!("not a controller command: {e}"),
            );
        }
    };
    match ctl.propose(command).await {
        Ok(outcome) => match serde_json::to_vec(&outcome) {
            Ok(body) => Answer::ok(body),
            Err(e) => Answer::refused(Status::Internal, e.to_string()),
        },
        Err(controller::ControllerError::Rejected(rejected)) => {
            Answer::refused(Status::InvalidArgument, rejected.to_string())
        }
        Err(e) => Answer::refused(Status::SystemBusy, e.to_string()),
    }
}

/// `BrokerHeartbeat`: passed on to the controller's failure detector (a follower node
/// forwards it to the Raft leader), without waiting. A nameserver without a controller has
/// no use for it and says all is well: heartbeats go to every nameserver a broker knows.
fn heartbeat(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let BrokerId { broker_id } = control::decode(body)?;
    if let Some(ctl) = &shared.controller {
        crate::replication::on_heartbeat(ctl, broker_id);
    }
    Ok(Answer::ok(Vec::new()))
}

fn unregister(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let BrokerId { broker_id } = control::decode(body)?;
    if shared.registry().unregister(&broker_id) {
        info!("broker {broker_id} unregistered");
    } else {
        // Unregistering is idempotent: a broker retrying after a lost response, or one that
        // had already expired, is told all is well.
        debug!("unregister of unknown broker {broker_id:?}");
    }
    Ok(Answer::ok(Vec::new()))
}

fn topic_route(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let request: TopicName = control::decode(body)?;
    request.topic()?;
    let route = shared
        .registry()
        .topic_route(&request.topic, Instant::now());
    match route {
        Some(route) => Ok(Answer::ok(control::encode(&route)?)),
        None => Ok(Answer::refused(
            Status::UnknownTopic,
            format!("no live broker holds topic {}", request.topic),
        )),
    }
}

fn cluster_info(shared: &Shared) -> Result<Answer, ControlError> {
    let info = shared.registry().cluster_info(Instant::now());
    Ok(Answer::ok(control::encode(&info)?))
}
