//! What the GSL answers to each request: decoding, the directory call, the reply.
//!
//! No network IO here: [`handle`] turns one parsed request into one [`Answer`], and the
//! connection decides what to write and whether to go on. An update writes the snapshot
//! inline, under the store's lock: updates are rare (operator actions via SGS), the lock keeps
//! the file's order that of memory, and resolves are not slowed beyond that one write.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use log::{debug, error, info};
use protocol::codes::{Command, Status};
use protocol::control::{
    self, ControlError, ErrorReply, GslResolveReply, GslResolveRequest, GslUpdate,
};
use protocol::frame::{FrameHeader, Framer, flag};

use crate::config::GslConfig;
use crate::store::{Store, Updated};

/// State every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    pub(crate) config: GslConfig,
    pub(crate) framer: Framer,
}

impl Shared {
    pub(crate) fn new(config: GslConfig, store: Store) -> Arc<Self> {
        Arc::new(Self {
            store: Mutex::new(store),
            framer: Framer::new(config.frame_limits()),
            config,
        })
    }

    /// The store. A panic while it was held cannot leave the directory half-updated (an
    /// update is undone unless it was persisted), so a poisoned lock is used as is.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answer to one request.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The response status.
    pub(crate) status: Status,
    /// The reply archive, or an [`ErrorReply`] when `status` is not `Ok`.
    pub(crate) body: Vec<u8>,
    /// The peer does not speak this protocol as we do: answer, then close.
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

    fn from_control_error(error: &ControlError) -> Self {
        let status = error.status();
        match error {
            ControlError::Decode { .. } | ControlError::Misaligned { .. } => {
                Self::fatal(status, error.to_string())
            }
            ControlError::Encode { .. } => {
                error!("cannot encode a reply: {error}");
                Self::refused(status, error.to_string())
            }
            _ => Self::refused(status, error.to_string()),
        }
    }
}

/// Archives an [`ErrorReply`]; an empty body if even that fails.
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
            "the GSL sends no requests, so it takes no responses",
        );
    }
    let command = match header.command() {
        Ok(command) => command,
        Err(unknown) => return Answer::fatal(Status::UnknownCommand, unknown.to_string()),
    };
    let result = match command {
        Command::GslResolve => resolve(shared, body),
        Command::GslUpdate => update(shared, body),
        other => {
            return Answer::fatal(
                Status::UnknownCommand,
                format!("{other} is not served by the GSL"),
            );
        }
    };
    result.unwrap_or_else(|e| Answer::from_control_error(&e))
}

fn resolve(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let request: GslResolveRequest = control::decode(body)?;
    let (service, caller) = request.parse()?;
    let deployments = shared.store().directory().resolve(&service, caller);
    debug!(
        "resolve {service} from {caller}: {} deployments",
        deployments.len()
    );
    Ok(Answer::ok(control::encode(&GslResolveReply {
        deployments,
    })?))
}

fn update(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let update: GslUpdate = control::decode(body)?;
    let service = update.service_id.clone();
    let areas: Vec<String> = update.deployments.iter().map(|d| d.area.clone()).collect();
    match shared.store().update(update) {
        Ok(Updated::Changed) if areas.is_empty() => {
            info!("service {service} no longer resolves");
        }
        Ok(Updated::Changed) => info!("service {service} resolves to areas {areas:?}"),
        Ok(Updated::Unchanged) => debug!("service {service} unchanged"),
        Err(refusal) => {
            info!("update of service {service:?} refused: {refusal}");
            return Ok(Answer::refused(refusal.status, refusal.message));
        }
    }
    Ok(Answer::ok(Vec::new()))
}
