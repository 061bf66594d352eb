//! The proxy's errors: [`ProxyError`] for starting and running the server, [`ApiError`] for
//! what one HTTP call or WebSocket command answers, with its HTTP status and stable code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use client::ClientError;
use protocol::codes::Status;

/// Why the proxy could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for [`crate::ProxyConfig`].
    #[error("parsing {path}: {source}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting is out of range.
    #[error("invalid setting {field}: {reason}")]
    InvalidConfig {
        /// The setting's key.
        field: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The tokio runtime or the server thread could not be created.
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A signal handler could not be installed.
    #[error("installing the {signal} handler: {source}")]
    Signal {
        /// The signal.
        signal: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The durable state in `data_dir` could not be opened, read or parsed.
    #[error("subscription store {path}: {reason}")]
    Store {
        /// The directory or file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The proxy's own bus client could not be created.
    #[error("creating the bus client: {0}")]
    Client(#[source] ClientError),
    /// The `[security]` settings cannot be used: a file is unreadable, a value out of range,
    /// or the listen address is exposed without protection.
    #[error("security: {0}")]
    Security(#[source] auth::settings::SettingsError),
    /// The `[tls]` settings cannot be used: a file is missing or unreadable, a certificate
    /// or key is invalid, or a setting the listener or the bus connections need is unset.
    #[error("tls: {0}")]
    Tls(#[source] tls::TlsError),
    /// The server thread panicked.
    #[error("the proxy thread panicked")]
    Panicked,
}

/// A failed API call: the HTTP status, a stable machine-readable code and a message for
/// humans. Serialized as `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// Stable code: `bad_request`, `unauthenticated`, `permission_denied`,
    /// `request_timeout`, `payload_too_large`, `not_found`, `unknown_topic`, `no_requester`,
    /// `conflict`, `held_settled`, `not_held`, `timeout`, `unavailable`, `too_many`, `rate_limited`, `storage`,
    /// `data_damaged`, `internal`.
    pub code: &'static str,
    /// What went wrong, for humans.
    pub message: String,
    /// When a retry may succeed (`rate_limited`): HTTP `Retry-After` (whole seconds, rounded
    /// up) and `retry_after_ms` in the body.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// 400: the request is malformed or an argument is out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: the named resource does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the route exists, with other methods.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 409: the resource exists already.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413: the body is over `body_bytes_max`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body over the limit of {limit} bytes"),
        )
    }

    /// 429: a bound (subscriptions, sessions) is reached.
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many", message)
    }

    /// 429: the caller's rate limit is spent; `retry_after` says when a token is back.
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// 503: the durable subscription store failed; changes are refused until a restart.
    pub fn storage(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage", message)
    }

    /// 408: the request body did not arrive whole within `limits.body_timeout_ms`.
    pub fn request_timeout(after: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive whole within {} ms",
                after.as_millis()
            ),
        )
    }

    /// 504: no reply came before the deadline.
    pub fn timeout(after: Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no reply within {} ms", after.as_millis()),
        )
    }

    /// 403: the caller's principal has no grant for this (the message names principal,
    /// action and resource).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }

    /// 401: no credentials, or credentials the proxy does not accept.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 503: a server behind the proxy (broker, nameserver, SGS) cannot be reached or is
    /// busy, or is not configured.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 504: a server behind the proxy did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    /// 500: a bug or an unexpected failure inside the proxy.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The answer to a failed bus call: unknown topic or service → 404, a timeout → 504, a
    /// refused or malformed argument → 400, an unreachable or unavailable broker → 503.
    pub fn from_client(error: &ClientError) -> Self {
        let message = error.to_string();
        match error {
            ClientError::NoRoute { .. }
            | ClientError::Status {
                status: Status::UnknownTopic,
                ..
            } => Self::new(StatusCode::NOT_FOUND, "unknown_topic", message),
            ClientError::NotDeployed { .. } => {
                Self::new(StatusCode::NOT_FOUND, "unknown_service", message)
            }
            // Only a reply is refused so: its requester left the broker (or timed out and
            // closed), so nobody waits for it.
            ClientError::Status {
                status: Status::NoResponder,
                ..
            } => Self::new(StatusCode::NOT_FOUND, "no_requester", message),
            ClientError::Timeout { after } => Self::timeout(*after),
            // An idempotent send given up in doubt: like a timeout, the outcome is unknown
            // (stored once, or not at all); sending it again could store it twice.
            ClientError::MaybeStored { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "maybe_stored", message)
            }
            ClientError::Denied { .. } => Self::forbidden(message),
            // The proxy's own credentials were refused by the bus: its configuration is wrong.
            ClientError::Unauthenticated { .. } => Self::internal(format!(
                "the proxy cannot authenticate to the bus (its [security] token_file): {message}"
            )),
            ClientError::InvalidName(_)
            | ClientError::InvalidArgument(_)
            | ClientError::Encode(_) => Self::bad_request(message),
            ClientError::MessageTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "message_too_large", message)
            }
            ClientError::Status {
                status: Status::InvalidName | Status::InvalidArgument | Status::FrameTooLarge,
                ..
            } => Self::bad_request(message),
            // Stored data the bus will not serve until an operator repairs the queue.
            ClientError::Status {
                status: Status::DataDamaged,
                ..
            } => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "data_damaged", message),
            // A delayed message already delivered or cancelled, a half already committed or
            // rolled back: the caller's request conflicts with the message's state.
            ClientError::Status {
                status: Status::HeldSettled,
                ..
            } => Self::new(StatusCode::CONFLICT, "held_settled", message),
            ClientError::Status {
                status: Status::NotHeld,
                ..
            } => Self::new(StatusCode::NOT_FOUND, "not_held", message),
            ClientError::Status { status, .. } if !status.is_retryable() => Self::internal(message),
            ClientError::Status { .. }
            | ClientError::Io { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Protocol { .. }
            | ClientError::ServiceUnavailable { .. }
            // The proxy's own TLS to the brokers failed: its operator's problem, not the
            // HTTP caller's.
            | ClientError::Tls { .. }
            | ClientError::TlsConfig(_)
            | ClientError::Closed => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
        }
    }

    /// The JSON body: `{"error": {"code", "message"}}`, plus `retry_after_ms` when set.
    pub fn body(&self) -> serde_json::Value {
        let mut body =
            serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(after) = self.retry_after {
            body["error"]["retry_after_ms"] = retry_after_ms(after).into();
        }
        body
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        Self::from_client(&error)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            log::debug!("answering {self}");
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            let seconds = retry_after_ms(after).div_ceil(1000).max(1);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

/// A wait in whole milliseconds, rounded up so a caller waiting it is never early.
pub fn retry_after_ms(after: Duration) -> u64 {
    after.as_micros().div_ceil(1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_documented_statuses() {
        let no_route = ClientError::NoRoute {
            topic: "A10-1".into(),
        };
        assert_eq!(
            ApiError::from_client(&no_route).status,
            StatusCode::NOT_FOUND
        );
        let timeout = ClientError::Timeout {
            after: Duration::from_millis(5),
        };
        assert_eq!(
            ApiError::from_client(&timeout).status,
            StatusCode::GATEWAY_TIMEOUT
        );
        let gone = ClientError::Disconnected {
            endpoint: "h:1".into(),
        };
        assert_eq!(
            ApiError::from_client(&gone).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let bad = ClientError::InvalidArgument("x".into());
        assert_eq!(ApiError::from_client(&bad).status, StatusCode::BAD_REQUEST);
        let body = ApiError::from_client(&bad).body();
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(body["error"].get("retry_after_ms").is_none());
        let limited = ApiError::rate_limited("slow down", Duration::from_micros(1500));
        assert_eq!(limited.body()["error"]["retry_after_ms"], 2);
        let response = limited.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
