//! The accept loop: [`run`] resumes the stored webhook subscriptions, serves the API on a
//! listener until a shutdown future completes (each connection admitted and bounded by
//! `crate::conn`, then opened, over TLS with `[tls]`, by `crate::handshake`), then closes every WebSocket session (committing only acked messages),
//! every webhook subscription and the proxy's bus client.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::Level;
use svc::loglimit::LogLimit;

use crate::config::{ProxyConfig, RATE_LIMIT_SWEEP_INTERVAL, SHUTDOWN_DRAIN_WAIT};
use crate::conn::{Admission, Admitted, serve_connection};
use crate::error::ProxyError;
use crate::handshake::{self, ListenerTls};
use crate::routes::router;
use crate::state::AppState;

/// How long the accept loop pauses after a failed accept (out of descriptors, most often), so
/// a failing accept does not spin; connections already open go on being served.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the proxy on `listener` until `shutdown` completes; tests call it in-process on
/// port 0. Returns once everything is closed.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    let metrics = telemetry::bind_or_warn(&config.metrics_addr);
    serve(listener, config, metrics, shutdown).await
}

/// [`run`] with the metrics listener already bound (`None`: none served), so
/// [`crate::start`] can say where metrics are served.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    config: ProxyConfig,
    metrics: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    config.validate()?;
    let tls = ListenerTls::new(config.tls.as_ref())?;
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
            "proxy listening on {addr} ({}; nameservers {}; security {})",
            if tls.is_some() { "TLS" } else { "plaintext" },
            config.nameservers.join(", "),
            if state.shared.authority.is_enabled() {
                "on"
            } else {
                "off"
            }
        );
    }
    let admission = Arc::new(Admission::new(&config.limits));
    // Dropped when `serve` returns, which stops the endpoint's thread.
    let _metrics = crate::metrics::start(metrics, state.clone(), admission.clone());
    let sweeper = (lease_ms > 0).then(|| tokio::spawn(expire_leases(state.clone(), lease_ms)));
    let upkeep = tokio::spawn(upkeep(state.clone(), admission.clone()));
    let app = router(state.clone());
    // Shutdown: `closing` tells every connection to finish its request and close; each
    // connection task holds a `drained` sender, so the receiver ends once the last is done.
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let (drained, mut drained_rx) = tokio::sync::mpsc::channel::<()>(1);
    let accept_errors = LogLimit::new("proxy accept errors");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_errors.log(Level::Warn, format_args!("accepting a connection: {e}"));
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closed at once: a refused connection holds nothing.
                drop(tcp);
                admission.refused(peer, refusal);
                state.shared.metrics.connection_refused();
                continue;
            }
        };
        // Replies and pushes are small writes that must not wait for the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            log::debug!("TCP_NODELAY on an accepted connection: {e}");
        }
        let (tls, app, limits) = (tls.clone(), app.clone(), config.limits.clone());
        let admission = admission.clone();
        let (mut closing, drained) = (closing_rx.clone(), drained.clone());
        tokio::spawn(async move {
            let header_timeout = Duration::from_millis(limits.header_timeout_ms);
            // The handshake runs while the connection holds its slot, within the header
            // timeout; shutdown does not wait for it.
            let opened = tokio::select! {
                opened = handshake::open(tls.as_ref(), tcp, peer, header_timeout) => opened,
                _ = closing.changed() => return,
            };
            let opened = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    admission.cut_off(format_args!(
                        "connection from {peer} closed: {}",
                        svc::server::Chain(&e)
                    ));
                    return;
                }
            };
            let connection = serve_connection(
                Admitted::new(opened.stream, slot),
                peer,
                opened.principal,
                app,
                limits.clone(),
                admission.cut_log(),
            );
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                // Only shutdown changes it (an error: the sender is gone, which is shutdown too).
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                log_connection_end(&admission, peer, &e, limits.header_timeout_ms);
            }
            drop(drained);
        });
    }
    log::info!("proxy shutting down");
    drop(listener);
    // Upgraded WebSocket connections are not drained by the server; tell them.
    state.shared.sessions.shut_down();
    closing.send_replace(true);
    drop(drained);
    if tokio::time::timeout(SHUTDOWN_DRAIN_WAIT, drained_rx.recv())
        .await
        .is_err()
    {
        log::warn!(
            "HTTP connections still open after {} s; closing them",
            SHUTDOWN_DRAIN_WAIT.as_secs()
        );
    }
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
    Ok(())
}

/// A connection that ended with an error: a header timeout is a bound doing its work, logged
/// rate-limited; a peer that went away is routine.
fn log_connection_end(
    admission: &Admission,
    peer: SocketAddr,
    error: &hyper::Error,
    header_timeout_ms: u64,
) {
    if error.is_timeout() {
        admission.cut_off(format_args!(
            "connection from {peer} closed: no whole request head within {header_timeout_ms} \
             ms (limits.header_timeout_ms)"
        ));
    } else {
        log::debug!("connection from {peer}: {error}");
    }
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
/// [`RESUME_RETRY_INTERVAL`], and counts of suppressed connection log lines logged; idle
/// rate-limit buckets are dropped every [`RATE_LIMIT_SWEEP_INTERVAL`].
async fn upkeep(state: AppState, admission: Arc<Admission>) {
    let mut tick = tokio::time::interval(RESUME_RETRY_INTERVAL);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        admission.flush_logs();
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
