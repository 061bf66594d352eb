//! The accept loop of a control server (nameserver, GSL, SGS): the connection limits (overall
//! and per peer address, see [`crate::admission`]), the backoff on accept errors and shutdown.
//! Each connection runs [`crate::connection::serve`] with the server's [`Handler`], after
//! the TLS handshake when the server has TLS ([`Handler::tls`], [`crate::stream`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{Level, error, info, warn};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::admission::Admission;
use crate::connection::{self, Caller, Handler};
use crate::limits::Limits;
use crate::loglimit;
use crate::stream::Stream;

/// Pause after an accept error that is not about one connection (out of file descriptors,
/// out of memory), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` (bound to `local_addr`) and serves each with `handler`
/// until `shutdown` completes, under `limits`: at most `max_connections` open at once and
/// `connections_per_ip_max` from one address (one more is closed at once), each frame due
/// within `frame_timeout`, large partial frames within `partial_frame_bytes_max`. The
/// server's [`Handler::NAME`] prefixes the log lines.
///
/// On shutdown it stops accepting, sends `true` on `stop` (which every connection, and
/// whatever background task the server started, watches) and waits for every connection to
/// close once its current answers are written. Faults of single connections are logged,
/// a few lines a second at most, and never end the loop.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    local_addr: SocketAddr,
    handler: Arc<H>,
    limits: Limits,
    stop: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let admission = Arc::new(Admission::new(H::NAME, limits));
    serve_with(listener, local_addr, handler, admission, stop, shutdown).await;
}

/// [`serve`] with an [`Admission`] the caller keeps, to watch what the limits hold (tests).
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    local_addr: SocketAddr,
    handler: Arc<H>,
    admission: Arc<Admission>,
    stop: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    // Summarises the log lines suppressed during a flood once it stops.
    let mut log_flush = tokio::time::interval(loglimit::WINDOW);
    log_flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let admitted = match admission.admit(peer.ip()) {
                        Ok(admitted) => admitted,
                        Err(refusal) => {
                            admission.log_refusal(format_args!(
                                "{}: refusing connection from {peer}: {refusal}", H::NAME
                            ));
                            // Dropping the stream closes it at once.
                            continue;
                        }
                    };
                    // Requests are small and answered at once; Nagle would only delay them.
                    let _ = stream.set_nodelay(true);
                    let handler = Arc::clone(&handler);
                    let admission = Arc::clone(&admission);
                    let stop = stop.subscribe();
                    connections.spawn(async move {
                        if let Some((stream, caller)) =
                            open(&*handler, stream, peer, &admission).await
                        {
                            connection::serve(handler, stream, caller, admission, stop).await;
                        }
                        drop(admitted);
                    });
                }
                Err(e) if is_connection_error(&e) => {
                    info!("accept on {local_addr}: {e}");
                }
                Err(e) => {
                    warn!("accept on {local_addr} failed, pausing: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            Some(done) = connections.join_next() => log_panic(H::NAME, done),
            _ = log_flush.tick() => admission.flush_logs(),
        }
    }
    info!("{} on {local_addr} shutting down", H::NAME);
    // A send error only means no one is watching any more.
    let _ = stop.send(true);
    while let Some(done) = connections.join_next().await {
        log_panic(H::NAME, done);
    }
}

/// The connection's stream and caller: plaintext and anonymous, or after the TLS handshake
/// (bounded by the frame timeout) with the certificate's principal. `None` when the
/// handshake failed, which is logged (rate-limited) and closes the connection.
async fn open<H: Handler>(
    handler: &H,
    stream: TcpStream,
    peer: SocketAddr,
    admission: &Admission,
) -> Option<(Stream, Caller)> {
    let Some(tls) = handler.tls() else {
        return Some((Stream::Plain(stream), Caller::anonymous(peer)));
    };
    match tls
        .accept(stream, peer, admission.limits().frame_timeout)
        .await
    {
        Ok(opened) => Some(opened),
        Err(e) => {
            admission.log_fault(
                Level::Info,
                format_args!("{}: closing connection from {peer}: {}", H::NAME, Chain(&e)),
            );
            None
        }
    }
}

/// An error and its causes on one line, each once: `a: b: c`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Logs a task of server `name` that panicked; a task that ended or was cancelled is not
/// news.
pub fn log_panic(name: &str, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!("a {name} task panicked: {e}");
        }
    }
}

/// Errors that concern only the connection being accepted, which the peer already dropped.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}
