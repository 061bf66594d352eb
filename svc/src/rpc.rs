//! A blocking request/response connection to a control server (GSL, SGS), over the frames
//! of `protocol`: one call at a time, each waiting for the response with its request id.
//!
//! With a [`TlsClient`] the connection runs the TLS handshake first (rustls's blocking
//! `StreamOwned`: one call at a time needs no sharing of its state). Async clients (the
//! controller's Raft peers) take the same [`TlsClient`] through
//! [`TlsClient::handshake_async`] (tokio-rustls), and read their errors through
//! [`tls_failure`] and [`tls_alert_hint`], so that both kinds of client say the same thing.
//!
//! (The client SDK's connection pool is the long-term home of these calls.)

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tls::rustls::{self, ClientConnection, StreamOwned};

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
    /// The TLS handshake failed, or the server refused the certificate, or a record was bad.
    #[error("{endpoint}: TLS{hint}")]
    Tls {
        /// The peer, `host:port`.
        endpoint: String,
        /// A hint when the cause is plain (the peer does not speak TLS), else empty.
        hint: &'static str,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The TLS settings are unusable (a file, a setting, the server name).
    #[error("TLS settings for {endpoint}")]
    TlsConfig {
        /// The peer, `host:port`.
        endpoint: String,
        /// What is wrong, naming the setting or the file.
        #[source]
        source: tls::TlsError,
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

/// What a process needs to open TLS connections to control servers: the rustls client
/// configuration built once from its `[tls]` table, and the settings (for the server name).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    settings: tls::TlsSettings,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client trusting servers signed by `ca` and presenting the process's own
    /// certificate ([`tls::TlsSettings::client_identity`]); fails naming what is wrong.
    pub fn new(settings: &tls::TlsSettings) -> Result<Self, tls::TlsError> {
        Ok(Self {
            config: tls::client_config(settings)?,
            settings: settings.clone(),
        })
    }

    /// True when the client presents a certificate, which names it to a server that
    /// verifies it (mutual TLS): a token would only name it again.
    pub fn presents_certificate(&self) -> bool {
        self.settings.client_identity().cert.is_some()
    }

    /// Runs the handshake with `endpoint` over `socket` within `deadline`.
    fn handshake(
        &self,
        endpoint: &str,
        mut socket: TcpStream,
        deadline: Instant,
    ) -> Result<StreamOwned<ClientConnection, TcpStream>, RpcError> {
        let config_error = |source| RpcError::TlsConfig {
            endpoint: endpoint.to_owned(),
            source,
        };
        let name = tls::server_name(&self.settings, endpoint).map_err(config_error)?;
        let mut tls = ClientConnection::new(self.config.clone(), name)
            .map_err(|source| tls_error(endpoint, source))?;
        let io = |source| RpcError::Io {
            endpoint: endpoint.to_owned(),
            source,
        };
        while tls.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io(std::io::ErrorKind::TimedOut.into()));
            }
            socket
                .set_read_timeout(Some(left))
                .and_then(|()| socket.set_write_timeout(Some(left)))
                .map_err(io)?;
            if let Err(e) = tls.complete_io(&mut socket) {
                return Err(match tls_failure(endpoint, &e) {
                    Some(failure) => failure,
                    None if e.kind() == std::io::ErrorKind::WouldBlock => {
                        io(std::io::ErrorKind::TimedOut.into())
                    }
                    None => io(e),
                });
            }
        }
        Ok(StreamOwned::new(tls, socket))
    }

    /// Runs the handshake with `endpoint` over an async `socket` (tokio-rustls), for clients
    /// on a tokio runtime; the caller bounds it in time. A refused client certificate is
    /// not seen here with TLS 1.3 (the server's alert answers the first request): read
    /// errors go through [`tls_failure`] too.
    pub async fn handshake_async(
        &self,
        endpoint: &str,
        socket: tokio::net::TcpStream,
    ) -> Result<crate::stream::Stream, RpcError> {
        let name =
            tls::server_name(&self.settings, endpoint).map_err(|source| RpcError::TlsConfig {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        match connector.connect(name, socket).await {
            Ok(stream) => Ok(crate::stream::Stream::Tls(Box::new(stream.into()))),
            Err(e) => Err(tls_failure(endpoint, &e).unwrap_or_else(|| RpcError::Io {
                endpoint: endpoint.to_owned(),
                source: e,
            })),
        }
    }
}

/// The TLS error `e` (from reading, writing or a handshake over TLS) stands for, when rustls
/// refused something (the peer's certificate, ours in the peer's alert, a peer that does not
/// speak TLS); `None` for a socket error.
pub fn tls_failure(endpoint: &str, e: &std::io::Error) -> Option<RpcError> {
    rustls_cause(e).map(|cause| tls_error(endpoint, cause.clone()))
}

/// A hint for a plaintext client whose server answered `answer`, when it is a TLS alert:
/// the server speaks TLS.
pub fn tls_alert_hint(answer: &[u8]) -> Option<&'static str> {
    answer.starts_with(&TLS_ALERT_PREFIX).then_some(
        "the answer is a TLS alert, so the server speaks TLS: set [tls] (its ca, and a \
         certificate if it demands one)",
    )
}

/// A TLS failure with `endpoint`, with a hint when the peer plainly does not speak TLS.
fn tls_error(endpoint: &str, source: rustls::Error) -> RpcError {
    let hint = match source {
        rustls::Error::InvalidMessage(_) => " (the server does not speak TLS: is its [tls] set?)",
        _ => "",
    };
    RpcError::Tls {
        endpoint: endpoint.to_owned(),
        hint,
        source,
    }
}

/// The rustls error an IO error from a rustls stream carries, if any.
fn rustls_cause(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
}

/// The connection's bytes: plain TCP or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Plain",
            Self::Tls(_) => "Tls",
        })
    }
}

impl Transport {
    fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(socket) => socket,
            Self::Tls(tls) => tls.get_ref(),
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.socket().set_write_timeout(timeout)
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(socket) => socket.read(buf),
            Self::Tls(tls) => match tls.read(buf) {
                // The server closed without close_notify: frames delimit themselves, so the
                // framer judges what came; either way the stream ended.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(socket) => socket.write_all(bytes),
            Self::Tls(tls) => tls.write_all(bytes).and_then(|()| tls.flush()),
        }
    }
}

/// The first bytes of a TLS alert record (content type 21, version 3.x): what a TLS server
/// answers a plaintext request with.
const TLS_ALERT_PREFIX: [u8; 2] = [0x15, 0x03];

/// One connection to a control server.
#[derive(Debug)]
pub struct Connection {
    endpoint: String,
    stream: Transport,
    framer: Framer,
    buf: BytesMut,
    next_request_id: u64,
}

impl Connection {
    /// Connects to `endpoint` (`host:port`), trying each address it resolves to within
    /// `timeout`.
    pub fn connect(endpoint: &str, timeout: Duration) -> Result<Self, RpcError> {
        Self::connect_tls(endpoint, None, timeout)
    }

    /// Connects to `endpoint` and, with `tls`, runs the TLS handshake, all within `timeout`.
    pub fn connect_tls(
        endpoint: &str,
        tls: Option<&TlsClient>,
        timeout: Duration,
    ) -> Result<Self, RpcError> {
        let deadline = Instant::now() + timeout;
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
                    let stream = match tls {
                        Some(tls) => {
                            Transport::Tls(Box::new(tls.handshake(endpoint, stream, deadline)?))
                        }
                        None => Transport::Plain(stream),
                    };
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
        Self::connect_with(endpoint, token, None, timeout)
    }

    /// Connects to `endpoint`, over TLS with `tls` (presenting the process's certificate,
    /// which names its principal to a server that verifies it), and, when `token` is
    /// given, authenticates with it.
    pub fn connect_with(
        endpoint: &str,
        token: Option<&str>,
        tls: Option<&TlsClient>,
        timeout: Duration,
    ) -> Result<Self, RpcError> {
        let mut connection = Self::connect_tls(endpoint, tls, timeout)?;
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
                Err(e) => {
                    return Err(self.protocol(match tls_alert_hint(&self.buf) {
                        Some(hint) => format!("{e}: {hint}"),
                        None => e.to_string(),
                    }));
                }
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
                Err(e) => {
                    // A refused client certificate arrives as an alert after the client's side
                    // of a TLS 1.3 handshake finished: in answer to the first call.
                    return Err(tls_failure(&self.endpoint, &e).unwrap_or_else(|| self.io(e)));
                }
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
