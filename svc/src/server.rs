//! The accept loop of a control server (nameserver, GSL, SGS): the connection limit, the
//! backoff on accept errors and shutdown. Each connection runs [`crate::connection::serve`]
//! with the server's [`Handler`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::connection::{self, Handler};

/// Pause after an accept error that is not about one connection (out of file descriptors,
/// out of memory), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` (bound to `local_addr`) and serves each with `handler`
/// until `shutdown` completes; at most `max_connections` are open at once, and one more is
/// closed at once. The server's [`Handler::NAME`] prefixes the log lines.
///
/// On shutdown it stops accepting, sends `true` on `stop` (which every connection, and
/// whatever background task the server started, watches) and waits for every connection to
/// close once its current answers are written. Faults of single connections are logged and
/// never end the loop.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    local_addr: SocketAddr,
    handler: Arc<H>,
    max_connections: usize,
    stop: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        warn!(
                            "refusing connection from {peer}: {max_connections} connections open (max_connections)"
                        );
                        continue;
                    };
                    // Requests are small and answered at once; Nagle would only delay them.
                    let _ = stream.set_nodelay(true);
                    let handler = Arc::clone(&handler);
                    let stop = stop.subscribe();
                    connections.spawn(async move {
                        connection::serve(handler, stream, peer, stop).await;
                        drop(permit);
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
        }
    }
    info!("{} on {local_addr} shutting down", H::NAME);
    // A send error only means no one is watching any more.
    let _ = stop.send(true);
    while let Some(done) = connections.join_next().await {
        log_panic(H::NAME, done);
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
