//! The SGS as the console sees it: list the services, deploy one, take one offline.
//!
//! The calls are `defibus sgs service list|deploy|offline`'s, made over the same transport
//! ([`svc::rpc::Connection`]) with the same protocol types; the proxy does not link the SGS
//! crate (services share protocol types, not each other's crates). One connection per call,
//! authenticated with the proxy's own token (or its TLS client certificate): a console
//! refreshes every few seconds, so a connection kept open would mostly sit idle.

use std::time::Duration;

use protocol::codes::{Command, Status};
use protocol::control::{self, ServiceIdRequest, ServiceList, ServiceRecord};
use svc::rpc::{Connection, RpcError, TlsClient};

use crate::error::ApiError;

/// A lifecycle action of SGS that the console offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Create the service's topic in each of its areas and have GSL resolve it.
    Deploy,
    /// Take the service out of GSL, wait for its queues to drain, delete its topics.
    Offline,
}

impl Lifecycle {
    /// The action named in a route (`deploy`, `offline`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "deploy" => Some(Self::Deploy),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    fn command(self) -> Command {
        match self {
            Self::Deploy => Command::ServiceDeploy,
            Self::Offline => Command::ServiceOffline,
        }
    }

    /// The action's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Offline => "offline",
        }
    }
}

/// How to reach the SGS, fixed at start.
#[derive(Clone, Debug)]
pub struct Sgs {
    endpoint: String,
    token: Option<String>,
    tls: Option<TlsClient>,
}

impl Sgs {
    /// The SGS at `endpoint`, presenting `token` unless `tls` presents a certificate (which
    /// names the proxy already, as `defibus sgs service` does).
    pub fn new(endpoint: String, token: Option<String>, tls: Option<TlsClient>) -> Self {
        let token = token.filter(|_| !tls.as_ref().is_some_and(TlsClient::presents_certificate));
        Self {
            endpoint,
            token,
            tls,
        }
    }

    /// `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every service, by id. Blocking.
    pub fn list(&self, timeout: Duration) -> Result<Vec<ServiceRecord>, ApiError> {
        let frame = self
            .connect(timeout)?
            .call(Command::ServiceList, &[], timeout)
            .map_err(|e| self.error(&e))?;
        let list: ServiceList = control::decode(&frame.body).map_err(|e| self.bad_answer(&e))?;
        Ok(list.services)
    }

    /// Runs `action` on `service_id`; the record as SGS stored it. Blocking, up to `timeout`.
    pub fn act(
        &self,
        action: Lifecycle,
        service_id: &str,
        timeout: Duration,
    ) -> Result<ServiceRecord, ApiError> {
        let request = ServiceIdRequest {
            service_id: service_id.to_owned(),
        };
        let body = control::encode(&request).map_err(|e| self.bad_answer(&e))?;
        let frame = self
            .connect(timeout)?
            .call(action.command(), &body, timeout)
            .map_err(|e| self.error(&e))?;
        control::decode(&frame.body).map_err(|e| self.bad_answer(&e))
    }

    fn connect(&self, timeout: Duration) -> Result<Connection, ApiError> {
        // Connecting (and authenticating) is one round trip: bounded by the call's timeout.
        Connection::connect_with(
            &self.endpoint,
            self.token.as_deref(),
            self.tls.as_ref(),
            timeout,
        )
        .map_err(|e| self.error(&e))
    }

    fn bad_answer(&self, error: &control::ControlError) -> ApiError {
        ApiError::unavailable(format!("SGS {}: bad answer: {error}", self.endpoint))
    }

    /// The answer to a failed SGS call: its refusals by status, a timeout 504, anything
    /// else 503 (the SGS cannot be reached).
    fn error(&self, error: &RpcError) -> ApiError {
        let message = format!("SGS: {error}");
        match error {
            RpcError::Refused { status, .. } => match status {
                Status::InvalidArgument | Status::InvalidName => ApiError::bad_request(message),
                Status::PermissionDenied => ApiError::forbidden(message),
                // The proxy's own token was refused: its configuration is wrong.
                Status::Unauthenticated => ApiError::internal(format!(
                    "the proxy cannot authenticate to the SGS (its [security] token_file): \
                     {message}"
                )),
                status if status.is_retryable() => ApiError::unavailable(message),
                _ => ApiError::internal(message),
            },
            RpcError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                ApiError::gateway_timeout(message)
            }
            _ => ApiError::unavailable(message),
        }
    }
}
