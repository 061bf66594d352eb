//! The byte stream of one control connection: plain TCP, or TLS over it (tokio-rustls, ring
//! provider only), and the server side of the TLS handshake. Async clients of control
//! servers (the controller's Raft peers) use the same [`Stream`], made by
//! [`crate::rpc::TlsClient::handshake_async`].
//!
//! The frame loop ([`crate::connection`]) reads and writes a [`Stream`] and never learns
//! which it has: plaintext pays one `match` per poll. The handshake runs in the connection's
//! own task, before its first frame is read, bounded by `frame_timeout`, so a peer that
//! stalls it holds only its socket and its connection slot, as a slow first frame would.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::connection::Caller;

/// A connection's bytes: plaintext, or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, after a finished handshake, as the server or as the client. Boxed:
    /// rustls's state is about a kilobyte, which plaintext connections need not carry.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A server's TLS side: the rustls server configuration built once from its `[tls]` table.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

impl TlsServer {
    /// The TLS side of a server configured with `settings`; fails naming the setting or the
    /// file that is wrong.
    pub fn new(settings: &tls::TlsSettings) -> Result<Self, tls::TlsError> {
        let config = tls::server_config(settings)?;
        Ok(Self::from_config(config))
    }

    /// The TLS side of a server with a rustls configuration built elsewhere.
    pub fn from_config(config: Arc<tls::rustls::ServerConfig>) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
        }
    }

    /// Runs the handshake with the peer at `peer` over `stream` within `timeout`. Returns the
    /// stream and the caller: authenticated as the principal of the client's certificate
    /// when it presented one (the handshake verified it against `ca`), else anonymous.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<(Stream, Caller), HandshakeError> {
        let accepted = tokio::time::timeout(timeout, self.acceptor.accept(stream))
            .await
            .map_err(|_| HandshakeError::TimedOut { timeout })?
            .map_err(|source| HandshakeError::Failed { source })?;
        let principal = accepted
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(tls::principal_of);
        let caller = match principal {
            Some(principal) => Caller::authenticated(peer, principal),
            None => Caller::anonymous(peer),
        };
        Ok((Stream::Tls(Box::new(accepted.into())), caller))
    }
}

/// Why a TLS handshake with a client did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish its side within the frame timeout (a stalled or
    /// plaintext-silent peer).
    #[error("TLS handshake not finished within {} ms (frame_timeout_ms)", timeout.as_millis())]
    TimedOut {
        /// The frame timeout.
        timeout: Duration,
    },
    /// rustls refused the peer (no or a foreign certificate, a plaintext peer, no common
    /// protocol version) or the socket failed.
    #[error("TLS handshake failed")]
    Failed {
        /// rustls's reason (inside the IO error) or the socket's.
        #[source]
        source: io::Error,
    },
}
