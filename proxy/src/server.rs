//! The accept loop: [`run`] resumes the stored webhook subscriptions, serves the API on a
//! listener until a shutdown future completes, then closes every WebSocket session
//! (committing only acked messages), every webhook subscription and the proxy's bus client.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;

use crate::config::{ProxyConfig, RATE_LIMIT_SWEEP_INTERVAL};
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
        tokio::task::spawn_blocking(move || {
            let (state, stored) = AppState::new(config.clone())?;
            state.shared.webhooks.resume(stored, &config);
            Ok::<_, ProxyError>(state)
        })
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
    let upkeep = tokio::spawn(upkeep(state.clone()));
    let stopping = state.clone();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // Replies and pushes are small writes that must not wait for the peer's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            log::debug!("TCP_NODELAY on an accepted connection: {e}");
        }
    });
    let served = axum::serve(listener, app)
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
    upkeep.abort();
    state.shared.sessions.close_all().await;
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

/// Periodic chores: restored subscriptions still waiting for a route are retried every
/// [`RESUME_RETRY_INTERVAL`]; idle rate-limit buckets are dropped every
/// [`RATE_LIMIT_SWEEP_INTERVAL`].
async fn upkeep(state: AppState) {
    let mut tick = tokio::time::interval(RESUME_RETRY_INTERVAL);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let shared = state.shared.clone();
        let config = state.config.clone();
        let sweep = last_sweep.elapsed() >= RATE_LIMIT_SWEEP_INTERVAL;
        if sweep {
            last_sweep = tokio::time::Instant::now();
        }
        let _ = tokio::task::spawn_blocking(move || {
            shared.webhooks.retry_resuming(&config);
            if sweep {
                shared.limits.sweep();
            }
        })
        .await;
    }
}

/// How often a restored subscription that could not start is tried again.
const RESUME_RETRY_INTERVAL: Duration = Duration::from_secs(1);
