//! The accept loop: [`run`] serves the API on a listener until a shutdown future completes,
//! then closes every WebSocket session (committing only acked messages), every webhook
//! subscription and the proxy's bus client.

use std::future::Future;
use std::time::Duration;

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::routes::router;
use crate::state::AppState;

/// Serves the proxy on `listener` until `shutdown` completes; tests call it in-process on
/// port 0. Returns once everything is closed.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    config.validate()?;
    let lease_ms = config.subscription_lease_ms;
    let state = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || AppState::new(config))
            .await
            .map_err(|_| ProxyError::Panicked)??
    };
    if let Ok(addr) = listener.local_addr() {
        log::info!(
            "proxy listening on {addr} (nameservers {})",
            config.nameservers.join(", ")
        );
    }
    let sweeper = (lease_ms > 0).then(|| tokio::spawn(expire_leases(state.clone(), lease_ms)));
    let stopping = state.clone();
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            log::info!("proxy shutting down");
            // Upgraded WebSocket connections are not drained by the server; tell them.
            stopping.shared.sessions.shut_down();
        })
        .await
        .map_err(ProxyError::Serve);
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    let closing = state.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|_| ProxyError::Panicked)?;
    log::info!("proxy stopped");
    served
}

/// Removes webhook subscriptions whose owner stopped sending heartbeats.
async fn expire_leases(state: AppState, lease_ms: u64) {
    let lease = Duration::from_millis(lease_ms);
    let mut tick = tokio::time::interval((lease / 4).max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        let shared = state.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.webhooks.expire(lease)).await;
    }
}
