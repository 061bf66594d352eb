//! Starting the nameserver: its registry, the expiry sweep and [`svc::server::serve`], the
//! accept loop with the connection limit and shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::command::{Shared, Tls};
use crate::config::NameserverConfig;
use crate::error::NameserverError;

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
    let metrics = telemetry::bind_or_warn(&config.metrics_addr);
    serve(listener, config, metrics, shutdown).await
}

/// [`run`] with the metrics listener already bound (or `None`: none served), so
/// [`crate::start`] can report its address.
pub(crate) async fn serve(
    listener: TcpListener,
    config: NameserverConfig,
    metrics: Option<std::net::TcpListener>,
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
        "nameserver listening on {local_addr}: broker expiry {} ms, at most {} connections \
         ({} per address), frames due within {} ms, {} bytes for large partial frames",
        config.broker_expiry_ms,
        config.max_connections,
        config.connections_per_ip_max,
        config.frame_timeout_ms,
        config.partial_frame_bytes_max
    );
    let authority = config
        .security
        .authority("nameserver")
        .map_err(NameserverError::Security)?;
    if authority.is_enabled() {
        info!(
            "security on: policy version {} from {}",
            authority.version(),
            config
                .security
                .policy_file
                .as_ref()
                .map_or_else(|| "-".into(), |p| p.display().to_string())
        );
    }
    let token = config.security.token().map_err(NameserverError::Security)?;
    let controller = match &config.controller {
        Some(settings) => {
            let mut controller_config = settings.controller_config()?;
            // Raft peers and the controller API are held to the nameserver's policy, and
            // this node presents the nameserver's token to the other voters. The Raft port
            // speaks TLS when the nameserver does, with the same [tls] table: its server
            // certificate, and its client certificate towards the other voters.
            controller_config.authority = authority.clone();
            controller_config.token = token.clone();
            controller_config.tls = config.tls.clone();
            let ctl = controller::Controller::start(controller_config)
                .await
                .map_err(|e| NameserverError::ConfigInvalid {
                    key: "controller",
                    reason: format!("the controller does not start: {e}"),
                })?;
            info!(
                "controller node {} listening on {} for Raft",
                ctl.node_id(),
                ctl.local_addr()
            );
            Some(Arc::new(ctl))
        }
        None => None,
    };
    let tls = Tls {
        server: config
            .tls
            .as_ref()
            .map(svc::stream::TlsServer::new)
            .transpose()
            .map_err(NameserverError::Tls)?,
        // Only the controller's queue roles go out, to brokers that then speak TLS too.
        client: config
            .tls
            .as_ref()
            .filter(|_| controller.is_some())
            .map(svc::rpc::TlsClient::new)
            .transpose()
            .map_err(NameserverError::Tls)?,
    };
    let shared = Shared::new(config, controller.clone(), authority, token, tls);
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep(Arc::clone(&shared), stop_rx.clone()));
    let reconciler = controller
        .clone()
        .zip(shared.config.controller.clone())
        .map(|(ctl, s)| {
            tokio::spawn(crate::replication::run(
                Arc::clone(&shared),
                ctl,
                std::time::Duration::from_millis(s.reconcile_interval_ms),
                stop_rx.clone(),
            ))
        });
    let limits = shared.config.server_limits();
    let admission = Arc::new(svc::admission::Admission::new("nameserver", limits));
    // Dropped when `run` returns, which stops the endpoint's thread.
    let _metrics = crate::metrics::start(metrics, Arc::clone(&shared), Arc::clone(&admission));
    svc::server::serve_with(listener, local_addr, shared, admission, stop_tx, shutdown).await;
    svc::server::log_panic("nameserver", sweeper.await);
    if let Some(reconciler) = reconciler {
        svc::server::log_panic("controller reconciliation", reconciler.await);
    }
    if let Some(ctl) = controller.and_then(|c| Arc::try_unwrap(c).ok()) {
        if let Err(e) = ctl.shutdown().await {
            warn!("stopping the controller: {e}");
        }
    }
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
        shared.counters.expired(expired.len());
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
