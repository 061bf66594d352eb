//! Starting the server: its state, its background tasks and [`svc::server::serve`], the accept
//! loop with the connection limit and shutdown.

use std::future::Future;
use std::sync::Arc;

use log::{debug, error, info, warn};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::command::Shared;
use crate::config::SgsConfig;
use crate::error::SgsError;
use crate::gsl_push;
use crate::store::Store;

/// Serves the SGS protocol on `listener` until `shutdown` completes.
///
/// Validates `config` and recovers the registry from `config.data_dir` first (holding its
/// lock until it returns). On shutdown it stops accepting, closes every connection once
/// its current answers are written, and returns. Faults of single connections are logged and
/// never end the server; the only errors are those that keep it from starting.
pub async fn run(
    listener: TcpListener,
    config: SgsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SgsError> {
    config.validate()?;
    let store = Store::open(&config.data_dir)?;
    let metrics = telemetry::bind_or_warn(&config.metrics_addr);
    serve(listener, config, store, metrics, shutdown).await
}

/// [`run`] with the store already open and the metrics listener bound (`None`: none
/// served), so [`crate::start`] reports a locked or damaged registry before it returns, and
/// where metrics are served.
pub(crate) async fn serve(
    listener: TcpListener,
    config: SgsConfig,
    store: Store,
    metrics: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SgsError> {
    let local_addr = listener.local_addr().map_err(|source| SgsError::Listener {
        addr: config.listen_addr,
        source,
    })?;
    info!(
        "SGS listening on {local_addr}: {} services from {}, at most {} connections",
        store.len(),
        config.data_dir.display(),
        config.max_connections
    );
    let authority = config
        .security
        .authority("sgs")
        .map_err(SgsError::Security)?;
    let token = config.security.token().map_err(SgsError::Security)?;
    let own: Vec<String> = config
        .areas
        .values()
        .flat_map(|area| area.nameservers.iter().cloned())
        .collect();
    let tls_server = config
        .tls
        .as_ref()
        .map(svc::stream::TlsServer::new)
        .transpose()
        .map_err(SgsError::Tls)?;
    let tls_client = config
        .tls
        .as_ref()
        .map(svc::rpc::TlsClient::new)
        .transpose()
        .map_err(SgsError::Tls)?;
    let _policy = svc::policy::PolicyFollower::start(
        &authority,
        svc::policy::PolicySource {
            nameservers: config.security.policy_sources(&own).to_vec(),
            token,
            tls: tls_client,
            refresh: std::time::Duration::from_millis(config.security.policy_refresh_ms),
        },
    );
    let shared = Shared::new(config, store, authority, tls_server);
    let (stop_tx, stop_rx) = watch::channel(false);
    let syncer = tokio::spawn(sync_gsl(Arc::clone(&shared), stop_rx.clone()));
    let admission = Arc::new(svc::admission::Admission::new(
        "SGS",
        shared.config.server_limits(),
    ));
    // Dropped when `serve` returns, which stops the endpoint's thread.
    let _metrics = crate::metrics::start(metrics, Arc::clone(&shared), Arc::clone(&admission));
    svc::server::serve_with(listener, local_addr, shared, admission, stop_tx, shutdown).await;
    svc::server::log_panic("SGS", syncer.await);
    info!("SGS on {local_addr} stopped");
    Ok(())
}

/// Pushes every service to GSL at start and every `gsl_sync_interval_ms`, so a GSL that
/// lost its state, missed an update or was replaced converges without an operator. Updates
/// that change nothing cost GSL no write.
async fn sync_gsl(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(SgsConfig::ms(shared.config.gsl_sync_interval_ms));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        // Under the operations lock, so a sync never sends GSL an older state after a change.
        let _operation = tokio::select! {
            guard = shared.operations.lock() => guard,
            _ = stop.changed() => return,
        };
        let config = Arc::clone(&shared.config);
        let updates: Vec<_> = shared
            .store()
            .records()
            .iter()
            .map(|record| gsl_push::update_for(record, &config))
            .collect();
        let count = updates.len();
        let pushed =
            tokio::task::spawn_blocking(move || gsl_push::push(&config, &updates, 1)).await;
        shared.counters.synced(matches!(pushed, Ok(Ok(()))));
        match pushed {
            Ok(Ok(())) => debug!("pushed {count} services to GSL"),
            Ok(Err(e)) => warn!(
                "GSL sync of {count} services failed, next in {} ms: {e}",
                shared.config.gsl_sync_interval_ms
            ),
            Err(e) => error!("the GSL sync panicked: {e}"),
        }
    }
}
