//! An async request/response connection to one peer over `protocol` frames: what the Raft
//! network and the forwarding of proposals to the leader send through.
//!
//! One call at a time per connection, each bounded by its timeout as a whole (connect,
//! TLS handshake, write, wait). A connection that failed or timed out is dropped and the
//! next call reconnects, so an answer that arrives late is never taken for the answer to a
//! later call.
//!
//! With the process's `[tls]` set, every connection runs the TLS handshake first, with
//! `svc`'s [`TlsClient`] (tokio-rustls, ring only) and over `svc`'s [`Stream`], and reports
//! its failures as `svc` does ([`svc::rpc::tls_failure`], [`svc::rpc::tls_alert_hint`]): a
//! controller peer and a blocking control client say the same thing about the same fault.

use std::time::Duration;

use bytes::BytesMut;
use protocol::codes::{Command, Status};
use protocol::control::{self, ErrorReply};
use protocol::frame::{FrameMeta, Framer, encode_frame, flag};
use svc::rpc::TlsClient;
use svc::stream::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{self, ControllerConfig};

/// Initial receive buffer; the framer reserves more once a header says how much.
const READ_BUF_INITIAL: usize = 16 << 10;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No connection could be made: the peer is down or unreachable.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The peer, `host:port`.
        endpoint: String,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading failed, or the peer closed the connection.
    #[error("{endpoint}: {source}")]
    Io {
        /// The peer, `host:port`.
        endpoint: String,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the call's timeout.
    #[error("{endpoint}: no answer within {timeout_ms} ms")]
    TimedOut {
        /// The peer, `host:port`.
        endpoint: String,
        /// The call's timeout.
        timeout_ms: u64,
    },
    /// The peer answered with an error status.
    #[error("{endpoint} refused: {status}: {message}")]
    Refused {
        /// The peer, `host:port`.
        endpoint: String,
        /// The status (an unknown code from a newer peer reads as `Internal`).
        status: Status,
        /// The peer's detail, from its `ErrorReply`.
        message: String,
    },
    /// The peer sent something that is not a valid answer.
    #[error("{endpoint}: protocol violation: {reason}")]
    Protocol {
        /// The peer, `host:port`.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// TLS failed: the handshake (a peer that does not speak TLS, a certificate of another
    /// CA), the peer refused this node's certificate, or this node's `[tls]` settings are
    /// unusable. `svc`'s error, naming the peer, a hint and rustls's reason (boxed: it is
    /// large).
    #[error(transparent)]
    Tls(Box<svc::rpc::RpcError>),
}

impl RpcError {
    /// The status, when the peer refused the call.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again may succeed: not after a refusal the status calls final, nor
    /// after a TLS failure, which a misconfiguration causes and another try repeats.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused { status, .. } => status.is_retryable(),
            Self::Tls(_) => false,
            _ => true,
        }
    }

    /// `svc`'s error from a TLS handshake: a socket failure stays an IO error.
    fn from_handshake(e: svc::rpc::RpcError) -> Self {
        match e {
            svc::rpc::RpcError::Io { endpoint, source } => Self::Io { endpoint, source },
            other => Self::Tls(Box::new(other)),
        }
    }
}

/// What a node presents when it connects to another: its token and its TLS client.
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials {
    /// Presented first on every connection (`Authenticate`), when set; with TLS the
    /// certificate names the node too, and a token then replaces that name.
    token: Option<String>,
    /// With it every connection runs the TLS handshake first.
    tls: Option<TlsClient>,
}

impl Credentials {
    /// The credentials `config` names; fails naming the TLS setting or file that is wrong.
    pub(crate) fn new(config: &ControllerConfig) -> Result<Self, tls::TlsError> {
        Ok(Self {
            token: config.token.clone(),
            tls: config.tls.as_ref().map(TlsClient::new).transpose()?,
        })
    }
}

/// A connection to one peer, made on the first call and after any failure.
#[derive(Debug)]
pub(crate) struct Peer {
    endpoint: String,
    stream: Option<Stream>,
    buf: BytesMut,
    framer: Framer,
    next_request_id: u64,
    credentials: Credentials,
}

impl Peer {
    /// A peer at `endpoint` (`host:port`), reached with `credentials`; nothing is connected
    /// yet.
    pub(crate) fn new(endpoint: String, credentials: Credentials) -> Self {
        Self {
            credentials,
            endpoint,
            stream: None,
            buf: BytesMut::new(),
            framer: Framer::new(config::frame_limits()),
            next_request_id: 1,
        }
    }

    /// Sends `command` with `body` and returns the body of an `Ok` answer, all within
    /// `timeout`.
    pub(crate) async fn call(
        &mut self,
        command: Command,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let result = match tokio::time::timeout(timeout, self.exchange(command, body)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(RpcError::TimedOut {
                endpoint: self.endpoint.clone(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        if matches!(&result, Err(e) if e.status().is_none()) {
            // The stream may hold half a frame, or an answer still to come: start afresh.
            self.stream = None;
            self.buf.clear();
        }
        result
    }

    /// Connects if needed (authenticating first), then makes one request.
    async fn exchange(&mut self, command: Command, body: &[u8]) -> Result<Vec<u8>, RpcError> {
        if self.stream.is_none() {
            self.connect().await?;
            if let Some(token) = self.credentials.token.clone() {
                let request = control::encode(&control::Authenticate { token })
                    .map_err(|e| protocol_error(&self.endpoint, e.to_string()))?;
                self.round_trip(Command::Authenticate, &request).await?;
            }
        }
        self.round_trip(command, body).await
    }

    async fn connect(&mut self) -> Result<(), RpcError> {
        let socket =
            TcpStream::connect(&self.endpoint)
                .await
                .map_err(|source| RpcError::Connect {
                    endpoint: self.endpoint.clone(),
                    source,
                })?;
        // One small request at a time: Nagle would only delay it.
        socket
            .set_nodelay(true)
            .map_err(|e| io_error(&self.endpoint, e))?;
        let stream = match &self.credentials.tls {
            Some(tls) => tls
                .handshake_async(&self.endpoint, socket)
                .await
                .map_err(RpcError::from_handshake)?,
            None => Stream::Plain(socket),
        };
        self.buf.reserve(READ_BUF_INITIAL);
        self.stream = Some(stream);
        Ok(())
    }

    async fn round_trip(&mut self, command: Command, body: &[u8]) -> Result<Vec<u8>, RpcError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let mut out = Vec::new();
        encode_frame(
            &FrameMeta::request(command, request_id),
            &[],
            body,
            &mut out,
        )
        .map_err(|e| protocol_error(&self.endpoint, format!("cannot frame the request: {e}")))?;
        let endpoint = &self.endpoint;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| protocol_error(endpoint, "not connected".into()))?;
        // Over TLS, rustls may keep sealed records until flushed; on TCP flushing is free.
        let written = match stream.write_all(&out).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| read_or_write_error(endpoint, e))?;
        loop {
            match self.framer.split_frame(&mut self.buf) {
                Ok(Some(frame)) => {
                    let header = frame.header;
                    if header.flags & flag::RESPONSE == 0 || header.request_id != request_id {
                        return Err(protocol_error(
                            endpoint,
                            format!(
                                "expected the response to request {request_id}, got request id \
                                 {} (command {:#06x})",
                                header.request_id, header.command
                            ),
                        ));
                    }
                    if header.status == Status::Ok.code() {
                        return Ok(frame.body.to_vec());
                    }
                    let status = Status::try_from(header.status).unwrap_or(Status::Internal);
                    let message = control::decode::<ErrorReply>(&frame.body)
                        .map(|reply| reply.message)
                        .unwrap_or_else(|_| format!("status {}", header.status));
                    return Err(RpcError::Refused {
                        endpoint: endpoint.clone(),
                        status,
                        message,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(protocol_error(endpoint, with_alert_hint(e, &self.buf))),
            }
            let read = match stream.read_buf(&mut self.buf).await {
                // A TLS peer that closed without close_notify: the stream ended all the same.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            };
            match read {
                // A TLS server answers a plaintext request with an alert, shorter than a
                // frame header, and closes.
                Ok(0) if svc::rpc::tls_alert_hint(&self.buf).is_some() => {
                    let closed = "connection closed after a partial answer";
                    return Err(protocol_error(endpoint, with_alert_hint(closed, &self.buf)));
                }
                Ok(0) => {
                    let eof = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed by the peer",
                    );
                    return Err(io_error(endpoint, eof));
                }
                Ok(_) => {}
                Err(e) => return Err(read_or_write_error(endpoint, e)),
            }
        }
    }
}

/// `what` went wrong reading `answer`, with the hint that the peer speaks TLS when the
/// answer is a TLS alert.
fn with_alert_hint(what: impl std::fmt::Display, answer: &[u8]) -> String {
    match svc::rpc::tls_alert_hint(answer) {
        Some(hint) => format!("{what}: {hint}"),
        None => what.to_string(),
    }
}

/// A failed read or write: a TLS error when rustls refused something (with TLS 1.3 a
/// refused client certificate arrives in answer to the first request), else an IO error.
fn read_or_write_error(endpoint: &str, e: std::io::Error) -> RpcError {
    match svc::rpc::tls_failure(endpoint, &e) {
        Some(failure) => RpcError::Tls(Box::new(failure)),
        None => io_error(endpoint, e),
    }
}

fn io_error(endpoint: &str, source: std::io::Error) -> RpcError {
    RpcError::Io {
        endpoint: endpoint.to_owned(),
        source,
    }
}

fn protocol_error(endpoint: &str, reason: String) -> RpcError {
    RpcError::Protocol {
        endpoint: endpoint.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::error::Error;

    use tokio::net::TcpListener;

    use super::*;
    use crate::Controller;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A one-voter node on port 0 with `tls`, its data under `dir`.
    async fn node(dir: &tempfile::TempDir, tls: Option<tls::TlsSettings>) -> Controller {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let voters = BTreeMap::from([(1, addr.to_string())]);
        let mut config = ControllerConfig::new(1, addr, voters, dir.path().join("node"));
        config.tls = tls;
        Controller::start_on(listener, config).await.unwrap()
    }

    /// A peer of `node`, with TLS when `tls` is given, without a token.
    fn peer(node: &Controller, tls: Option<&tls::TlsSettings>) -> Peer {
        let credentials = Credentials {
            token: None,
            tls: tls.map(|settings| TlsClient::new(settings).unwrap()),
        };
        Peer::new(node.local_addr().to_string(), credentials)
    }

    /// `e` and its causes, as one line.
    fn chain(e: &dyn Error) -> String {
        let mut line = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            line.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        line
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_node_serves_a_tls_peer_and_refuses_plaintext_and_foreign_peers() {
        let dir = tempfile::tempdir().unwrap();
        let certs = tls::dev::generate(&dir.path().join("certs"), &["nameserver"]).unwrap();
        let settings = certs.server_settings_as("nameserver");
        let node = node(&dir, Some(settings.clone())).await;

        let mut good = peer(&node, Some(&settings));
        good.call(Command::ControllerState, &[], TIMEOUT)
            .await
            .unwrap();

        let plaintext = peer(&node, None)
            .call(Command::ControllerState, &[], TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(plaintext, RpcError::Protocol { .. })
                && plaintext.to_string().contains("the server speaks TLS"),
            "{}",
            chain(&plaintext)
        );

        // Another CA: each side refuses the other's certificate; the client sees it first.
        let other = tls::dev::generate(&dir.path().join("other"), &["nameserver"]).unwrap();
        let foreign = peer(&node, Some(&other.server_settings_as("nameserver")))
            .call(Command::ControllerState, &[], TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(foreign, RpcError::Tls(_)) && !foreign.is_retryable(),
            "{}",
            chain(&foreign)
        );
        assert!(
            chain(&foreign).contains("UnknownIssuer"),
            "{}",
            chain(&foreign)
        );

        // Served still, after the refusals.
        good.call(Command::ControllerState, &[], TIMEOUT)
            .await
            .unwrap();
        node.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_peer_of_a_plaintext_node_is_told_the_node_does_not_speak_tls() {
        let dir = tempfile::tempdir().unwrap();
        let certs = tls::dev::generate(&dir.path().join("certs"), &["nameserver"]).unwrap();
        let node = node(&dir, None).await;
        let err = peer(&node, Some(&certs.server_settings_as("nameserver")))
            .call(Command::ControllerState, &[], TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RpcError::Tls(_))
                && err.to_string().contains("the server does not speak TLS"),
            "{}",
            chain(&err)
        );
        node.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_with_an_unreadable_tls_file_does_not_start_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let voters = BTreeMap::from([(1, addr.to_string())]);
        let mut config = ControllerConfig::new(1, addr, voters, dir.path().join("node"));
        let missing = dir.path().join("missing.pem");
        config.tls = Some(tls::TlsSettings::server(&missing, &missing, &missing));
        let Err(err) = Controller::start_on(listener, config).await else {
            panic!("a node started without its certificate");
        };
        assert!(
            matches!(err, crate::ControllerError::Tls { .. })
                && chain(&err).contains("missing.pem"),
            "{}",
            chain(&err)
        );
    }
}
