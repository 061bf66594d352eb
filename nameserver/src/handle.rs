//! A nameserver on its own thread, for embedding (`defibus standalone`) and blocking tests.

use crate::config::NameserverConfig;
use crate::error::NameserverError;
use crate::server::run;

/// A running nameserver started by [`start`]. Dropping it shuts the nameserver down and
/// waits for it, as [`NameserverHandle::shutdown`] does.
pub type NameserverHandle = svc::handle::ServerHandle<NameserverError>;

/// Binds `config.listen_addr` and runs the nameserver on a new thread with a single-threaded
/// runtime (nameserver traffic is light: a registration per broker every few seconds and
/// route lookups). Returns once the address is bound, so clients can connect at once.
pub fn start(config: NameserverConfig) -> Result<NameserverHandle, NameserverError> {
    config.validate()?;
    svc::handle::start(
        "nameserver",
        config.listen_addr,
        move |listener, shutdown| run(listener, config, shutdown),
    )
}
