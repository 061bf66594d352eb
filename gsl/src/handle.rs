//! A GSL on its own thread, for embedding (`defibus standalone`) and blocking tests.

use crate::config::GslConfig;
use crate::error::GslError;
use crate::server::serve;
use crate::store::Store;

/// A running GSL started by [`start`]. Dropping it shuts the GSL down and
/// waits for it, as [`GslHandle::shutdown`] does.
pub type GslHandle = svc::handle::ServerHandle<GslError>;

/// Recovers the directory from `config.data_dir`, binds `config.listen_addr` and runs the GSL
/// on a new thread with a single-threaded runtime (GSL traffic is light: resolves on client
/// cache misses and refreshes, updates on operator actions). Returns once the address is
/// bound, so clients can connect at once; the metrics address is bound here too, so
/// [`GslHandle::metrics_addr`] says where scrapes go.
pub fn start(config: GslConfig) -> Result<GslHandle, GslError> {
    config.validate()?;
    let store = Store::open(&config.data_dir, config.limits())?;
    let metrics = telemetry::bind_or_warn(&config.metrics_addr);
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let handle = svc::handle::start("GSL", config.listen_addr, move |listener, shutdown| {
        serve(listener, config, store, metrics, shutdown)
    })?;
    Ok(handle.with_metrics_addr(metrics_addr))
}
