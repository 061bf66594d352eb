//! The one error type of the SDK.

use std::time::Duration;

use protocol::codes::Status;
use protocol::control::ControlError;
use protocol::names::NameError;
use protocol::record::BuildError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer came before the deadline; for a request-reply call, no reply.
    #[error("timed out after {after:?}")]
    Timeout {
        /// How long the call waited.
        after: Duration,
    },
    /// The server answered with an error status.
    #[error("server refused: {status}: {message}")]
    Status {
        /// The status (unknown codes from a newer server map to [`Status::Internal`]; the
        /// message then names the code).
        status: Status,
        /// The server's detail, from its `ErrorReply`.
        message: String,
    },
    /// A socket operation failed.
    #[error("{endpoint}: {source}")]
    Io {
        /// The peer, `host:port`.
        endpoint: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The connection closed while the call was in flight, or is waiting to be re-established.
    #[error("{endpoint}: disconnected")]
    Disconnected {
        /// The peer, `host:port`.
        endpoint: String,
    },
    /// No nameserver knows the topic, or the route has no usable queue.
    #[error("no route to topic {topic}")]
    NoRoute {
        /// The topic.
        topic: String,
    },
    /// GSL knows no deployment of the service: it was never deployed, or is offline.
    #[error("service {service} is not deployed in any area")]
    NotDeployed {
        /// The service id.
        service: String,
    },
    /// The service cannot be reached now: no GSL answered and nothing is cached, or none of
    /// its deployments is routable.
    #[error("service {service} unavailable: {reason}")]
    ServiceUnavailable {
        /// The service id.
        service: String,
        /// Why, for each deployment tried.
        reason: String,
    },
    /// A topic, group, area or client id is not well formed. Boxed: a rare error need not
    /// make every `Result` of the client larger.
    #[error(transparent)]
    InvalidName(Box<NameError>),
    /// A message cannot be encoded (key or property too large).
    #[error("cannot encode message: {0}")]
    Encode(BuildError),
    /// One message is larger than a batch may be: it can never be sent as it is.
    #[error(
        "message too large: {len} bytes with its key, properties and record header, over the \
         {max}-byte limit of one message (ClientConfig::batch_bytes_max, at most the broker's \
         storage.batch_len_max)"
    )]
    MessageTooLarge {
        /// The message's encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An idempotent send gave up while its last attempts failed without an answer (a
    /// timeout, a lost connection, a broker restarting): the batch may or may not have been
    /// stored, exactly once if it was. Not retryable: sending the message again could store
    /// it twice.
    #[error(
        "the batch may or may not have been stored (gave up after {attempts} attempts on its \
         queue): {last}"
    )]
    MaybeStored {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<ClientError>,
    },
    /// The peer sent something this client cannot read: a bad frame, batch or control body.
    #[error("{endpoint}: protocol violation: {reason}")]
    Protocol {
        /// The peer, `host:port`.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// TLS with a broker failed: it refused this client's certificate (or its absence), its
    /// own certificate is not signed by the trusted CA, or it does not speak TLS. Not
    /// retryable: the same certificates fail the same way.
    #[error("{endpoint}: TLS failed{hint}")]
    Tls {
        /// The peer, `host:port`.
        endpoint: String,
        /// What the cause suggests, when it suggests something (e.g. a plaintext peer).
        hint: &'static str,
        /// rustls's reason, e.g. `received fatal alert: UnknownCA` (boxed: it is large, and
        /// every `Result` of the SDK carries this enum).
        #[source]
        source: Box<tls::rustls::Error>,
    },
    /// The client's TLS settings cannot be used (a file missing, a key not matching its
    /// certificate, a bad server name).
    #[error("TLS settings")]
    TlsConfig(#[source] std::sync::Arc<tls::TlsError>),
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client, producer or consumer was closed.
    #[error("closed")]
    Closed,
    /// The server requires authentication and the client presented no token, or one that
    /// is unknown, expired or revoked (status `Unauthenticated`). Not retryable: the
    /// credentials must change.
    #[error("not authenticated: {message}")]
    Unauthenticated {
        /// The server's detail.
        message: String,
    },
    /// The client's principal has no grant for what it asked (status `PermissionDenied`);
    /// the message names the principal, the action and the resource. Not retryable: an
    /// operator must grant the permission.
    #[error("permission denied: {message}")]
    Denied {
        /// The server's detail.
        message: String,
    },
}

impl ClientError {
    /// The error a server's status and `ErrorReply` message stand for.
    pub(crate) fn from_status(code: u16, message: String) -> Self {
        match Status::try_from(code) {
            Ok(Status::PermissionDenied) => Self::Denied { message },
            Ok(Status::Unauthenticated) => Self::Unauthenticated { message },
            Ok(status) => Self::Status { status, message },
            Err(unknown) => Self::Status {
                status: Status::Internal,
                message: format!("{unknown}: {message}"),
            },
        }
    }

    /// True when the same call may succeed if made again, perhaps on another queue or broker.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => status.is_retryable(),
            Self::Io { .. } | Self::Disconnected { .. } | Self::Timeout { .. } => true,
            Self::NoRoute { .. } | Self::ServiceUnavailable { .. } => true,
            _ => false,
        }
    }

    /// The status, when the server refused the call.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Denied { .. } => Some(Status::PermissionDenied),
            Self::Unauthenticated { .. } => Some(Status::Unauthenticated),
            _ => None,
        }
    }

    pub(crate) fn protocol(endpoint: &str, reason: impl ToString) -> Self {
        Self::Protocol {
            endpoint: endpoint.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn control(endpoint: &str, error: ControlError) -> Self {
        Self::protocol(endpoint, error)
    }

    /// A copy for fanning one failure out to several waiters; `io::Error` is not `Clone`, so
    /// its kind and message are kept.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Timeout { after } => Self::Timeout { after: *after },
            Self::MaybeStored { attempts, last } => Self::MaybeStored {
                attempts: *attempts,
                last: Box::new(last.duplicate()),
            },
            Self::Status { status, message } => Self::Status {
                status: *status,
                message: message.clone(),
            },
            Self::Io { endpoint, source } => Self::Io {
                endpoint: endpoint.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Self::Disconnected { endpoint } => Self::Disconnected {
                endpoint: endpoint.clone(),
            },
            Self::NoRoute { topic } => Self::NoRoute {
                topic: topic.clone(),
            },
            Self::NotDeployed { service } => Self::NotDeployed {
                service: service.clone(),
            },
            Self::ServiceUnavailable { service, reason } => Self::ServiceUnavailable {
                service: service.clone(),
                reason: reason.clone(),
            },
            Self::InvalidName(e) => Self::InvalidName(e.clone()),
            Self::Encode(e) => Self::Encode(e.clone()),
            Self::MessageTooLarge { len, max } => Self::MessageTooLarge {
                len: *len,
                max: *max,
            },
            Self::Protocol { endpoint, reason } => Self::Protocol {
                endpoint: endpoint.clone(),
                reason: reason.clone(),
            },
            Self::Tls {
                endpoint,
                hint,
                source,
            } => Self::Tls {
                endpoint: endpoint.clone(),
                hint,
                source: source.clone(),
            },
            Self::TlsConfig(e) => Self::TlsConfig(e.clone()),
            Self::InvalidArgument(s) => Self::InvalidArgument(s.clone()),
            Self::Closed => Self::Closed,
            Self::Unauthenticated { message } => Self::Unauthenticated {
                message: message.clone(),
            },
            Self::Denied { message } => Self::Denied {
                message: message.clone(),
            },
        }
    }
}

/// The result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl From<protocol::trace::TraceContextError> for ClientError {
    fn from(e: protocol::trace::TraceContextError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl From<NameError> for ClientError {
    fn from(e: NameError) -> Self {
        Self::InvalidName(Box::new(e))
    }
}

/// A batch over its limit here always holds one message (the producer starts a new batch
/// before one would overflow), so it is that message that is too large.
impl From<BuildError> for ClientError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::BatchTooLarge { len, max } => Self::MessageTooLarge { len, max },
            other => Self::Encode(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_and_classify() {
        let err = ClientError::from_status(301, "queue 3 full".into());
        assert_eq!(err.status(), Some(Status::QueueDepthExceeded));
        assert!(err.is_retryable());
        let err = ClientError::from_status(9999, "new".into());
        assert_eq!(err.status(), Some(Status::Internal));
        assert!(err.to_string().contains("9999"), "{err}");
        assert!(!ClientError::Closed.is_retryable());
        let io = ClientError::Io {
            endpoint: "h:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        };
        assert!(matches!(io.duplicate(), ClientError::Io { .. }));
    }
}
