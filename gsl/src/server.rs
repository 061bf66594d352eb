//! Starting the server: its state, its background tasks and [`svc::server::serve`], the accept
//! loop with the connection limit and shutdown.

use std::future::Future;
use std::sync::Arc;

use log::info;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::command::Shared;
use crate::config::GslConfig;
use crate::error::GslError;
use crate::store::Store;

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
    let metrics = telemetry::bind_or_warn(&config.metrics_addr);
    serve(listener, config, store, metrics, shutdown).await
}

/// [`run`] with the store already open and the metrics listener bound (`None`: none
/// served), so [`crate::start`] reports a locked or damaged state directory before it
/// returns, and where metrics are served.
pub(crate) async fn serve(
    listener: TcpListener,
    config: GslConfig,
    store: Store,
    metrics: Option<std::net::TcpListener>,
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
    let authority = config
        .security
        .authority("gsl")
        .map_err(GslError::Security)?;
    let token = config.security.token().map_err(GslError::Security)?;
    let tls_server = config
        .tls
        .as_ref()
        .map(svc::stream::TlsServer::new)
        .transpose()
        .map_err(GslError::Tls)?;
    // The policy comes from the nameservers over TLS when this GSL has TLS (and asks).
    let tls_client = config
        .tls
        .as_ref()
        .filter(|_| authority.is_enabled())
        .map(svc::rpc::TlsClient::new)
        .transpose()
        .map_err(GslError::Tls)?;
    let _policy = svc::policy::PolicyFollower::start(
        &authority,
        svc::policy::PolicySource {
            nameservers: config.security.policy_nameservers.clone(),
            token,
            tls: tls_client,
            refresh: std::time::Duration::from_millis(config.security.policy_refresh_ms),
        },
    );
    let shared = Shared::new(config, store, authority, tls_server);
    let (stop_tx, _) = watch::channel(false);
    let admission = Arc::new(svc::admission::Admission::new(
        "GSL",
        shared.config.server_limits(),
    ));
    // Dropped when `serve` returns, which stops the endpoint's thread.
    let _metrics = crate::metrics::start(metrics, Arc::clone(&shared), Arc::clone(&admission));
    svc::server::serve_with(listener, local_addr, shared, admission, stop_tx, shutdown).await;
    info!("GSL on {local_addr} stopped");
    Ok(())
}
