//! The accept loop, the connection limit, the expiry sweep and shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::command::Shared;
use crate::config::NameserverConfig;
use crate::error::NameserverError;

/// Pause after an accept error that is not about one connection (out of file descriptors,
/// out of memory), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the nameserver protocol on `listener` until `shutdown` completes.
///
/// Validates `config` first. On shutdown it stops accepting, closes every connection once
/// its current answers are written, and returns. Faults of single connections are logged and
/// never end the server; the only errors are those that keep it from starting.
pub async fn run(
    listener: TcpListener,
    config: NameserverConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NameserverError> {
    config.validate()?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| NameserverError::Listener {
            addr: config.listen_addr,
            source,
        })?;
    info!(
        "nameserver listening on {local_addr}: broker expiry {} ms, at most {} connections",
        config.broker_expiry_ms, config.max_connections
    );
    let shared = Shared::new(config);
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep(Arc::clone(&shared), stop_rx.clone()));
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
    info!("nameserver on {local_addr} shutting down");
    // Every connection and the sweeper watch this; a send error only means none is left.
    let _ = stop_tx.send(true);
    while let Some(done) = connections.join_next().await {
        log_panic(done);
    }
    log_panic(sweeper.await);
    info!("nameserver on {local_addr} stopped");
    Ok(())
}

/// Removes expired brokers every sweep interval, logging each one.
async fn sweep(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(shared.config.sweep_interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let expired = shared.registry().sweep(Instant::now());
        for broker in expired {
            warn!(
                "broker {} (cluster {}, {}) expired: no registration for {} ms (expiry {} ms)",
                broker.broker_id,
                broker.cluster,
                broker.address,
                broker.silent_for.as_millis(),
                shared.config.broker_expiry_ms
            );
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

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!("a nameserver task panicked: {e}");
        }
    }
}
