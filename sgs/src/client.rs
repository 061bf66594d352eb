//! `SgsClient`: the blocking client of an SGS, for `defibus sgs service ...` and tests.

use std::time::Duration;

use protocol::codes::Command;
use protocol::control::{self, ServiceIdRequest, ServiceList, ServiceRecord};

use crate::rpc::{Connection, RpcError, TlsClient};

/// Default timeout of apply, list and show.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default timeout of deploy and offline, which wait for brokers in every area (with retries)
/// and, for offline, for the queues to drain: above the SGS's default drain timeout (30 s)
/// plus its retries.
pub const OPERATION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);

/// One connection to an SGS.
#[derive(Debug)]
pub struct SgsClient {
    connection: Connection,
    /// Timeout of apply, list and show.
    pub request_timeout: Duration,
    /// Timeout of deploy and offline.
    pub operation_timeout: Duration,
}

impl SgsClient {
    /// Connects to the SGS at `endpoint` (`host:port`), authenticating with `token` when
    /// given.
    pub fn connect(endpoint: &str, token: Option<&str>) -> Result<Self, RpcError> {
        Self::connect_with(endpoint, token, None)
    }

    /// Connects to the SGS at `endpoint`, over TLS with `tls`; a client certificate `tls`
    /// presents names the caller (mutual TLS), otherwise `token`, when given, does.
    pub fn connect_with(
        endpoint: &str,
        token: Option<&str>,
        tls: Option<&TlsClient>,
    ) -> Result<Self, RpcError> {
        let token = token.filter(|_| !tls.is_some_and(TlsClient::presents_certificate));
        Ok(Self {
            connection: Connection::connect_with(endpoint, token, tls, REQUEST_TIMEOUT_DEFAULT)?,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            operation_timeout: OPERATION_TIMEOUT_DEFAULT,
        })
    }

    /// Registers `record` (or changes a service not deployed); returns it as stored, in
    /// state `Applied`.
    pub fn apply(&mut self, record: &ServiceRecord) -> Result<ServiceRecord, RpcError> {
        let body = control::encode(record).map_err(|e| self.protocol(e.to_string()))?;
        self.record_call(Command::ServiceApply, &body, self.request_timeout)
    }

    /// Creates the service's topic in each of its areas and has GSL resolve it.
    pub fn deploy(&mut self, service_id: &str) -> Result<ServiceRecord, RpcError> {
        let body = self.id_body(service_id)?;
        self.record_call(Command::ServiceDeploy, &body, self.operation_timeout)
    }

    /// Takes the service out of GSL, drains and deletes its topics.
    pub fn offline(&mut self, service_id: &str) -> Result<ServiceRecord, RpcError> {
        let body = self.id_body(service_id)?;
        self.record_call(Command::ServiceOffline, &body, self.operation_timeout)
    }

    /// One service's record.
    pub fn show(&mut self, service_id: &str) -> Result<ServiceRecord, RpcError> {
        let body = self.id_body(service_id)?;
        self.record_call(Command::ServiceShow, &body, self.request_timeout)
    }

    /// Every service, by id.
    pub fn list(&mut self) -> Result<Vec<ServiceRecord>, RpcError> {
        let frame = self
            .connection
            .call(Command::ServiceList, &[], self.request_timeout)?;
        let list: ServiceList =
            control::decode(&frame.body).map_err(|e| self.protocol(e.to_string()))?;
        Ok(list.services)
    }

    fn id_body(&self, service_id: &str) -> Result<Vec<u8>, RpcError> {
        let request = ServiceIdRequest {
            service_id: service_id.to_owned(),
        };
        control::encode(&request).map_err(|e| self.protocol(e.to_string()))
    }

    fn record_call(
        &mut self,
        command: Command,
        body: &[u8],
        timeout: Duration,
    ) -> Result<ServiceRecord, RpcError> {
        let frame = self.connection.call(command, body, timeout)?;
        control::decode(&frame.body).map_err(|e| self.protocol(e.to_string()))
    }

    fn protocol(&self, reason: String) -> RpcError {
        RpcError::Protocol {
            endpoint: self.connection.endpoint().to_owned(),
            reason,
        }
    }
}
