//! TLS on the proxy's listener (docs/ARCHITECTURE.md §7): each admitted connection runs the
//! TLS handshake in its own task before hyper reads a request, bounded by
//! `limits.header_timeout_ms`, so a peer that stalls the handshake holds its socket and its
//! connection slot (`crate::conn::Admission`) no longer than a slow request head would.
//!
//! The handshake is `svc::stream::TlsServer`'s (tokio-rustls, ring provider), as on the
//! nameserver, GSL and SGS; a verified client certificate names the caller
//! ([`tls::principal_of`]), which then needs no bearer token (`crate::caller`).
//!
//! A client that speaks plaintext HTTP to the TLS port would otherwise see its connection
//! reset by a TLS alert it cannot read. Its first byte tells it apart (a TLS handshake
//! record starts with 22, an HTTP request with the method's first letter), so it is answered
//! `400 tls_required` in plaintext instead, saying to use `https://` or `wss://`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use svc::stream::{HandshakeError, Stream, TlsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::ProxyError;

/// The first byte of a TLS record carrying a handshake message (RFC 8446 §5.1).
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// Bytes of a plaintext request read and dropped after its refusal, so that closing the
/// socket with them unread does not reset the connection before the client read the answer.
const PLAINTEXT_DRAIN_BYTES_MAX: usize = 64 << 10;

/// The plaintext answer to plaintext HTTP on the TLS port, in the API's error shape.
const PLAINTEXT_REFUSAL: &str = "HTTP/1.1 400 Bad Request\r\n\
     content-type: application/json\r\n\
     connection: close\r\n\
     content-length: 115\r\n\
     \r\n\
     {\"error\":{\"code\":\"tls_required\",\"message\":\"this port speaks TLS: \
     use https:// or wss:// and trust the proxy's CA\"}}";

/// The listener's TLS side, built once at start from `[tls]` (a bad file stops the start).
#[derive(Clone, Debug)]
pub struct ListenerTls {
    server: TlsServer,
}

impl ListenerTls {
    /// The TLS side for `settings`; `None` without `[tls]`.
    pub fn new(settings: Option<&tls::TlsSettings>) -> Result<Option<Self>, ProxyError> {
        settings
            .map(|settings| {
                TlsServer::new(settings)
                    .map(|server| Self { server })
                    .map_err(ProxyError::Tls)
            })
            .transpose()
    }
}

/// An opened connection: its byte stream, and the principal its client certificate names.
pub struct Opened {
    /// Plain TCP, or TLS after a finished handshake.
    pub stream: Stream,
    /// The verified client certificate's principal, if the client presented one.
    pub principal: Option<Arc<str>>,
}

/// Why an admitted connection was closed before its first request.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The client sent plaintext HTTP to the TLS port; it was answered `400 tls_required`.
    #[error("plaintext HTTP on the TLS port (answered 400 tls_required)")]
    Plaintext,
    /// The handshake did not finish within the header timeout.
    #[error("TLS handshake not finished within {} ms (limits.header_timeout_ms)", .timeout.as_millis())]
    TimedOut {
        /// The header timeout.
        timeout: Duration,
    },
    /// rustls refused the client (no certificate where one is required, one from another
    /// CA, no common protocol version) or the socket failed.
    #[error("TLS handshake failed")]
    Failed {
        /// rustls's reason (inside the IO error) or the socket's.
        #[source]
        source: io::Error,
    },
}

/// Opens `tcp` from `peer`: as is without TLS, else after the handshake, all within
/// `timeout`.
pub async fn open(
    tls: Option<&ListenerTls>,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<Opened, OpenError> {
    let Some(tls) = tls else {
        return Ok(Opened {
            stream: Stream::Plain(tcp),
            principal: None,
        });
    };
    let deadline = Instant::now() + timeout;
    let timed_out = |_| OpenError::TimedOut { timeout };
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut first))
        .await
        .map_err(timed_out)?
        .map_err(|source| OpenError::Failed { source })?;
    if peeked == 1 && first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_uppercase() {
        // Bounded by the same deadline: a refused client holds its slot no longer.
        let _ = tokio::time::timeout_at(deadline, refuse_plaintext(tcp)).await;
        return Err(OpenError::Plaintext);
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let (stream, caller) = tls
        .server
        .accept(tcp, peer, remaining)
        .await
        .map_err(|e| match e {
            HandshakeError::TimedOut { .. } => OpenError::TimedOut { timeout },
            HandshakeError::Failed { source } => OpenError::Failed { source },
        })?;
    Ok(Opened {
        stream,
        principal: caller.principal().map(Arc::from),
    })
}

/// Answers plaintext HTTP with [`PLAINTEXT_REFUSAL`], then drains what the client sent until
/// it closes, so the answer is not lost to a reset.
async fn refuse_plaintext(mut tcp: TcpStream) -> io::Result<()> {
    tcp.write_all(PLAINTEXT_REFUSAL.as_bytes()).await?;
    tcp.shutdown().await?;
    let mut drained = 0;
    let mut buffer = [0u8; 4096];
    while drained < PLAINTEXT_DRAIN_BYTES_MAX {
        match tcp.read(&mut buffer).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_refusal_is_well_formed_json_of_the_declared_length() {
        let (head, body) = PLAINTEXT_REFUSAL.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "tls_required");
    }
}
