//! The accept loop, the connection limit and shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::command::Shared;
use crate::config::GslConfig;
use crate::error::GslError;
use crate::store::Store;

/// Pause after an accept error that is not about one connection (out of file descriptors,
/// out of memory), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the GSL protocol on `listener` until `shutdown` completes.
///
/// Validates `config` and recovers the directory from `config.data_dir` first (holding its
/// lock until it returns). On shutdown it stops accepting, closes every connection once
/// its current answers are written, and returns. Faults of single connections are logged and
/// never end the server; the only errors are those that keep it from starting.
pub async fn run(
    listener: TcpListener,
    config: GslConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GslError> {
    config.validate()?;
    let store = Store::open(&config.data_dir, config.limits())?;
    serve(listener, config, store, shutdown).await
}

/// [`run`] with the store already open (so [`crate::start`] reports a locked or damaged
/// state directory before it returns).
pub(crate) async fn serve(
    listener: TcpListener,
    config: GslConfig,
    store: Store,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GslError> {
    let local_addr = listener.local_addr().map_err(|source| GslError::Listener {
        addr: config.listen_addr,
        source,
    })?;
    info!(
        "GSL listening on {local_addr}: {} services from {}, at most {} connections",
        store.directory().len(),
        config.data_dir.display(),
        config.max_connections
    );
    let shared = Shared::new(config, store);
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        warn!(
                            "refusing connection from {peer}: {} connections open (max_connections)",
                            shared.config.max_connections
                        );
                        continue;
                    };
                    // Requests are small and answered at once; Nagle would only delay them.
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let stop = stop_rx.clone();
                    connections.spawn(async move {
                        svc::connection::serve(shared, stream, peer, stop).await;
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
            Some(done) = connections.join_next() => log_panic(done),
        }
    }
    info!("GSL on {local_addr} shutting down");
    // Every connection watches this; a send error only means none is left.
    let _ = stop_tx.send(true);
    while let Some(done) = connections.join_next().await {
        log_panic(done);
    }
    info!("GSL on {local_addr} stopped");
    Ok(())
}

/// Errors that concern only the connection being accepted, which the peer already dropped.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!("a GSL task panicked: {e}");
        }
    }
}
