//! A blocking request/response connection to a control server (GSL, SGS), over the frames
//! of `protocol`: one call at a time, each waiting for the response with its request id.
//!
//! (The client SDK's connection pool is the long-term home of these calls.)

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use protocol::codes::{Command, Status};
use protocol::control::{self, Authenticate, Authenticated, ErrorReply};
use protocol::frame::{FrameBytes, FrameLimits, FrameMeta, Framer, encode_frame, flag};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 << 10;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Connecting, writing or reading failed, or the deadline passed (`TimedOut`).
    #[error("{endpoint}: {source}")]
    Io {
        /// The peer, `host:port`.
        endpoint: String,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The server answered with an error status.
    #[error("{endpoint} refused: {status}: {message}")]
    Refused {
        /// The peer, `host:port`.
        endpoint: String,
        /// The status (an unknown code from a newer server maps to `Internal`).
        status: Status,
        /// The server's detail, from its `ErrorReply`.
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
    /// The status, when the server refused the call.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One connection to a control server.
#[derive(Debug)]
pub struct Connection {
    endpoint: String,
    stream: TcpStream,
    framer: Framer,
    buf: BytesMut,
    next_request_id: u64,
}

impl Connection {
    /// Connects to `endpoint` (`host:port`), trying each address it resolves to within
    /// `timeout`.
    pub fn connect(endpoint: &str, timeout: Duration) -> Result<Self, RpcError> {
        let io = |source| RpcError::Io {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "resolves to nothing");
        for addr in endpoint.to_socket_addrs().map_err(io)? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    // One small request at a time: Nagle would only delay it.
                    stream.set_nodelay(true).map_err(io)?;
                    return Ok(Self {
                        endpoint: endpoint.to_owned(),
                        stream,
                        framer: Framer::new(FrameLimits::default()),
                        buf: BytesMut::with_capacity(READ_CHUNK),
                        next_request_id: 1,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(io(last))
    }

    /// Connects to `endpoint` and, when `token` is given, authenticates with it; the
    /// connection then acts as the token's principal.
    pub fn connect_as(
        endpoint: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, RpcError> {
        let mut connection = Self::connect(endpoint, timeout)?;
        if let Some(token) = token {
            connection.authenticate(token, timeout)?;
        }
        Ok(connection)
    }

    /// Presents `token` (`Authenticate`); returns the principal the server took it for.
    pub fn authenticate(&mut self, token: &str, timeout: Duration) -> Result<String, RpcError> {
        let request = Authenticate {
            token: token.to_owned(),
        };
        let body = control::encode(&request)
            .map_err(|e| self.protocol(format!("cannot encode Authenticate: {e}")))?;
        let frame = self.call(Command::Authenticate, &body, timeout)?;
        let reply: Authenticated = control::decode(&frame.body)
            .map_err(|e| self.protocol(format!("bad Authenticated reply: {e}")))?;
        Ok(reply.principal)
    }

    /// The peer, `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `command` with `body` and waits up to `timeout` for its response; returns the
    /// response body of an `Ok` answer.
    pub fn call(
        &mut self,
        command: Command,
        body: &[u8],
        timeout: Duration,
    ) -> Result<FrameBytes, RpcError> {
        let deadline = Instant::now() + timeout;
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let mut out = Vec::new();
        encode_frame(
            &FrameMeta::request(command, request_id),
            &[],
            body,
            &mut out,
        )
        .map_err(|e| self.protocol(format!("cannot frame the request: {e}")))?;
        self.stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .and_then(|()| self.stream.write_all(&out))
            .map_err(|source| self.io(source))?;
        loop {
            let frame = self.read_frame(deadline)?;
            let header = frame.header;
            if header.flags & flag::RESPONSE == 0 || header.request_id != request_id {
                // A stale answer to an earlier call that timed out: skip it.
                if header.request_id < request_id && header.flags & flag::RESPONSE != 0 {
                    continue;
                }
                return Err(self.protocol(format!(
                    "expected the response to request {request_id}, got request id {} \
                     (command {:#06x})",
                    header.request_id, header.command
                )));
            }
            if header.status == Status::Ok.code() {
                return Ok(frame);
            }
            let status = Status::try_from(header.status).unwrap_or(Status::Internal);
            let message = control::decode::<ErrorReply>(&frame.body)
                .map(|reply| reply.message)
                .unwrap_or_else(|_| format!("status {}", header.status));
            return Err(RpcError::Refused {
                endpoint: self.endpoint.clone(),
                status,
                message,
            });
        }
    }

    fn read_frame(&mut self, deadline: Instant) -> Result<FrameBytes, RpcError> {
        loop {
            match self.framer.split_frame(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.io(std::io::ErrorKind::TimedOut.into()));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|source| self.io(source))?;
            let mut chunk = [0u8; READ_CHUNK];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(self.io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed by the peer",
                    )));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(self.io(std::io::ErrorKind::TimedOut.into()));
                }
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    fn io(&self, source: std::io::Error) -> RpcError {
        RpcError::Io {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn protocol(&self, reason: String) -> RpcError {
        RpcError::Protocol {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }
}
