//! A SGS on its own thread, for embedding (`defibus standalone`) and blocking tests.

use crate::config::SgsConfig;
use crate::error::SgsError;
use crate::server::serve;
use crate::store::Store;

/// A running SGS started by [`start`]. Dropping it shuts the SGS down and
/// waits for it, as [`SgsHandle::shutdown`] does.
pub type SgsHandle = svc::handle::ServerHandle<SgsError>;

/// Recovers the registry from `config.data_dir`, binds `config.listen_addr` and runs the SGS
/// on a new thread with a single-threaded runtime (SGS traffic is operator actions; broker
/// work runs on the runtime's blocking pool). Returns once the address is bound; the
/// metrics address is bound here too, so [`SgsHandle::metrics_addr`] says where scrapes go.
pub fn start(config: SgsConfig) -> Result<SgsHandle, SgsError> {
    config.validate()?;
    let store = Store::open(&config.data_dir)?;
    let metrics = telemetry::bind_or_warn(&config.metrics_addr);
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let handle = svc::handle::start("SGS", config.listen_addr, move |listener, shutdown| {
        serve(listener, config, store, metrics, shutdown)
    })?;
    Ok(handle.with_metrics_addr(metrics_addr))
}
