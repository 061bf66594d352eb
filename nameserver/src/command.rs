//! What the nameserver answers to each request: decoding, the registry call, the reply.
//!
//! No IO here: [`handle`] turns one parsed request into one [`Answer`], and the connection
//! decides what to write and whether to go on (see [`crate::connection`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use log::{debug, error, info};
use protocol::codes::{Command, Status};
use protocol::control::{
    self, BrokerId, BrokerRegistration, ControlError, ErrorReply, RegisterAck, TopicName,
};
use protocol::frame::{FrameHeader, Framer, flag};

use crate::config::NameserverConfig;
use crate::registry::{Registered, Registry, Timestamp};

/// State every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    registry: Mutex<Registry>,
    pub(crate) config: NameserverConfig,
    pub(crate) framer: Framer,
}

impl Shared {
    pub(crate) fn new(config: NameserverConfig) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry::new(config.broker_expiry())),
            framer: Framer::new(config.frame_limits()),
            config,
        })
    }

    /// The registry. A panic while it was held cannot leave it half-updated (every update is
    /// one map insert or removal), so a poisoned lock is used as is rather than spreading
    /// the panic to every connection.
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answer to one request.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The response status.
    pub(crate) status: Status,
    /// The response body: the reply archive, or an [`ErrorReply`] when `status` is not `Ok`.
    pub(crate) body: Vec<u8>,
    /// The request showed the peer does not speak this protocol as we do (unknown command,
    /// undecodable body): answer, then close the connection.
    pub(crate) close: bool,
}

impl Answer {
    fn ok(body: Vec<u8>) -> Self {
        Self {
            status: Status::Ok,
            body,
            close: false,
        }
    }

    /// An error the peer can correct and retry on the same connection.
    pub(crate) fn refused(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            body: error_body(status, message.into()),
            close: false,
        }
    }

    /// An error after which the connection is closed.
    pub(crate) fn fatal(status: Status, message: impl Into<String>) -> Self {
        Self {
            close: true,
            ..Self::refused(status, message)
        }
    }

    /// A payload that could not be decoded closes the connection; one that decoded but was
    /// refused (a bad name, an inconsistent count) is answered and the connection kept.
    fn from_control_error(error: &ControlError) -> Self {
        let status = error.status();
        match error {
            ControlError::Decode { .. } | ControlError::Misaligned { .. } => {
                Self::fatal(status, error.to_string())
            }
            ControlError::Encode { .. } => {
                // Our own reply could not be archived: a bug or a reply past 4 GiB.
                error!("cannot encode a reply: {error}");
                Self::refused(status, error.to_string())
            }
            _ => Self::refused(status, error.to_string()),
        }
    }
}

/// Archives an [`ErrorReply`]; an empty body if even that fails, since the status alone
/// still tells the peer what happened.
pub(crate) fn error_body(status: Status, message: String) -> Vec<u8> {
    control::encode(&ErrorReply::new(status, message)).unwrap_or_else(|e| {
        error!("cannot encode an error reply: {e}");
        Vec::new()
    })
}

/// Answers one request frame.
pub(crate) fn handle(shared: &Shared, header: &FrameHeader, body: &[u8]) -> Answer {
    if header.flags & flag::RESPONSE != 0 {
        return Answer::fatal(
            Status::MalformedFrame,
            "the nameserver sends no requests, so it takes no responses",
        );
    }
    let command = match header.command() {
        Ok(command) => command,
        Err(unknown) => return Answer::fatal(Status::UnknownCommand, unknown.to_string()),
    };
    let result = match command {
        Command::BrokerRegister => register(shared, body),
        Command::BrokerUnregister => unregister(shared, body),
        Command::TopicRoute => topic_route(shared, body),
        Command::ClusterInfo => cluster_info(shared),
        other => {
            return Answer::fatal(
                Status::UnknownCommand,
                format!("{other} is not served by the nameserver"),
            );
        }
    };
    result.unwrap_or_else(|e| Answer::from_control_error(&e))
}

fn register(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let registration: BrokerRegistration = control::decode(body)?;
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
