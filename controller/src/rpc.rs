//! An async request/response connection to one peer over `protocol` frames: what the Raft
//! network and the forwarding of proposals to the leader send through.
//!
//! One call at a time per connection, each bounded by its timeout as a whole (connect,
//! write, wait). A connection that failed or timed out is dropped and the next call
//! reconnects, so an answer that arrives late is never taken for the answer to a later call.

use std::time::Duration;

use bytes::BytesMut;
use protocol::codes::{Command, Status};
use protocol::control::{self, ErrorReply};
use protocol::frame::{FrameMeta, Framer, encode_frame, flag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config;

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
}

impl RpcError {
    /// The status, when the peer refused the call.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A connection to one peer, made on the first call and after any failure.
#[derive(Debug)]
pub(crate) struct Peer {
    endpoint: String,
    stream: Option<TcpStream>,
    buf: BytesMut,
    framer: Framer,
    next_request_id: u64,
    /// Presented first on every connection, when set.
    token: Option<String>,
}

impl Peer {
    /// A peer at `endpoint` (`host:port`), authenticated with `token` when given; nothing is
    /// connected yet.
    pub(crate) fn new(endpoint: String, token: Option<String>) -> Self {
        Self {
            token,
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
            if let Some(token) = self.token.clone() {
                let request = control::encode(&control::Authenticate { token })
                    .map_err(|e| protocol_error(&self.endpoint, e.to_string()))?;
                self.round_trip(Command::Authenticate, &request).await?;
            }
        }
        self.round_trip(command, body).await
    }

    async fn connect(&mut self) -> Result<(), RpcError> {
        let stream =
            TcpStream::connect(&self.endpoint)
                .await
                .map_err(|source| RpcError::Connect {
                    endpoint: self.endpoint.clone(),
                    source,
                })?;
        // One small request at a time: Nagle would only delay it.
        stream
            .set_nodelay(true)
            .map_err(|e| io_error(&self.endpoint, e))?;
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
        stream
            .write_all(&out)
            .await
            .map_err(|e| io_error(endpoint, e))?;
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
                Err(e) => return Err(protocol_error(endpoint, e.to_string())),
            }
            match stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    let eof = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed by the peer",
                    );
                    return Err(io_error(endpoint, eof));
                }
                Ok(_) => {}
                Err(e) => return Err(io_error(endpoint, e)),
            }
        }
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
