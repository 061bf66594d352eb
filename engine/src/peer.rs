//! A connection from a broker to another server: one request at a time, each answered in
//! order, over the protocol's frames. A follower fetches from its leader through it
//! (`replica::follower`), and shard 0 registers with the nameservers through it
//! (`register`).
//!
//! With the broker's `[tls]` set the connection speaks TLS (futures-rustls, ring only),
//! trusting `ca` and presenting the broker's client certificate (`client_cert`, else
//! `cert`), which names it to the peer. The client configuration is built at each connect,
//! so replaced certificate files take effect at the next reconnect.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use protocol::codes::{Command, Status};
use protocol::control::{self, Authenticate, ErrorReply};
use protocol::frame::{FrameBytes, FrameLimits, FrameMeta, Framer, encode_frame};

use crate::rt::TcpStream;
use crate::shard::Shard;

/// What a broker presents when it connects out: its token and its TLS settings.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Credentials<'a> {
    /// Sent as `Authenticate` first, when set.
    pub token: Option<&'a str>,
    /// TLS to the peer, when set.
    pub tls: Option<&'a tls::TlsSettings>,
}

impl<'a> Credentials<'a> {
    /// The credentials of `shard`'s broker.
    pub fn of(shard: &'a Shard) -> Self {
        Self {
            token: shard.security.token(),
            tls: shard.config.tls.as_ref(),
        }
    }
}

/// A connection's bytes: plain TCP or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<crate::rt::TlsTcpStream>>),
}

impl Transport {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buf).await,
            Self::Tls(stream) => match stream.read(buf).await {
                // The peer closed without close_notify: frames delimit themselves.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(stream) => stream.write_all(bytes).await,
            // rustls may hold sealed records while the socket is full: flush sends them.
            Self::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }
}

/// Bytes read per `read` call: a fetch answer is up to a megabyte.
const READ_CHUNK: usize = 64 << 10;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// Connecting, writing or reading failed, or took too long: reconnect.
    #[error("{endpoint}: {reason}")]
    Io {
        /// The peer, `host:port`.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// The peer closed the connection (it is stopping, or restarting).
    #[error("{endpoint}: the peer closed the connection")]
    Closed {
        /// The peer, `host:port`.
        endpoint: String,
    },
    /// The peer answered with an error status.
    #[error("{endpoint} refused: {status}: {message}")]
    Refused {
        /// The peer, `host:port`.
        endpoint: String,
        /// The status.
        status: Status,
        /// The peer's detail.
        message: String,
    },
}

/// One connection to a server.
pub(crate) struct Peer {
    endpoint: String,
    stream: Transport,
    framer: Framer,
    buf: BytesMut,
    request_id: u64,
}

impl Peer {
    /// Connects to `endpoint`, over TLS when `credentials` has TLS settings, and
    /// authenticates with its token when it has one; every later read or write fails after
    /// `timeout` (a fetch's `max_wait` stays well below it), the handshake's included.
    pub async fn connect(
        endpoint: &str,
        timeout: Duration,
        limits: FrameLimits,
        credentials: Credentials<'_>,
    ) -> Result<Self, PeerError> {
        let io = |reason: String| PeerError::Io {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let stream = TcpStream::connect_timeout(endpoint, timeout)
            .await
            .map_err(|e| io(format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| io(format!("set timeouts: {e}")))?;
        let _ = stream.set_nodelay(true);
        let stream = match credentials.tls {
            Some(settings) => {
                let tls_config = |e: tls::TlsError| io(format!("TLS settings: {}", chain(&e)));
                let config: Arc<_> = tls::client_config(settings).map_err(tls_config)?;
                let name = tls::server_name(settings, endpoint).map_err(tls_config)?;
                let stream = futures_rustls::TlsConnector::from(config)
                    .connect(name, crate::rt::buffered_for_tls(stream))
                    .await
                    .map_err(|e| io(format!("TLS handshake: {}", chain(&e))))?;
                Transport::Tls(Box::new(stream))
            }
            None => Transport::Plain(stream),
        };
        let mut peer = Self {
            endpoint: endpoint.to_owned(),
            stream,
            framer: Framer::new(limits),
            buf: BytesMut::with_capacity(READ_CHUNK),
            request_id: 0,
        };
        if let Some(token) = credentials.token {
            let body = control::encode(&Authenticate {
                token: token.to_owned(),
            })
            .map_err(|e| peer.io(format!("encode: {e}")))?;
            peer.call(Command::Authenticate, &body).await?;
        }
        Ok(peer)
    }

    /// Sends `command` with `body` and returns the response frame when its status is `Ok`.
    pub async fn call(&mut self, command: Command, body: &[u8]) -> Result<FrameBytes, PeerError> {
        self.request_id += 1;
        let mut out = Vec::with_capacity(64 + body.len());
        encode_frame(
            &FrameMeta::request(command, self.request_id),
            &[],
            body,
            &mut out,
        )
        .map_err(|e| self.io(format!("encode: {e}")))?;
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| self.io(format!("write: {}", chain(&e))))?;
        let response = self.read_frame().await?;
        if response.header.request_id != self.request_id {
            return Err(self.io(format!(
                "answer to request {} where {} was expected",
                response.header.request_id, self.request_id
            )));
        }
        match response.header.status() {
            Ok(Status::Ok) => Ok(response),
            status => {
                let message = control::decode::<ErrorReply>(&response.body)
                    .map(|e| e.message)
                    .unwrap_or_default();
                Err(PeerError::Refused {
                    endpoint: self.endpoint.clone(),
                    status: status.unwrap_or(Status::Internal),
                    message,
                })
            }
        }
    }

    async fn read_frame(&mut self) -> Result<FrameBytes, PeerError> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            if let Some(frame) = self
                .framer
                .split_frame(&mut self.buf)
                .map_err(|e| self.io(format!("bad answer: {e}")))?
            {
                return Ok(frame);
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| self.io(format!("read: {}", chain(&e))))?;
            if n == 0 {
                return Err(PeerError::Closed {
                    endpoint: self.endpoint.clone(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn io(&self, reason: String) -> PeerError {
        PeerError::Io {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }
}

/// An error and its causes on one line, each once: `a: b`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
