//! A nameserver on its own thread, for embedding (`defibus standalone`) and blocking tests.

use crate::config::NameserverConfig;
use crate::error::NameserverError;
use crate::server::serve;

/// A running nameserver started by [`start`]. Dropping it shuts the nameserver down and
/// waits for it, as [`NameserverHandle::shutdown`] does.
pub type NameserverHandle = svc::handle::ServerHandle<NameserverError>;

/// Binds `config.listen_addr` and runs the nameserver on a new thread with a single-threaded
/// runtime (nameserver traffic is light: a registration per broker every few seconds and
/// route lookups). Returns once the address is bound, so clients can connect at once.
///
/// The metrics address is bound here too, so [`NameserverHandle::metrics_addr`] says where
/// scrapes go (`None`: metrics off, or the address was taken, which is logged).
pub fn start(config: NameserverConfig) -> Result<NameserverHandle, NameserverError> {
    config.validate()?;
    let metrics = telemetry::bind_or_warn(&config.metrics_addr);
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let handle = svc::handle::start(
        "nameserver",
        config.listen_addr,
        move |listener, shutdown| serve(listener, config, metrics, shutdown),
    )?;
    Ok(handle.with_metrics_addr(metrics_addr))
}
