//! A GSL on its own thread, for embedding (`defibus standalone`) and blocking tests.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::config::GslConfig;
use crate::error::GslError;
use crate::server::serve;
use crate::store::Store;

/// A running GSL started by [`start`]. Dropping it shuts the GSL down and
/// waits for it, as [`GslHandle::shutdown`] does.
#[derive(Debug)]
pub struct GslHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), GslError>>>,
}

impl GslHandle {
    /// The address the GSL listens on (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection and waits for the server thread.
    pub fn shutdown(mut self) -> Result<(), GslError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), GslError> {
        if let Some(stop) = self.stop.take() {
            // The server may have stopped already; then there is nothing to tell it.
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| GslError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for GslHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            log::error!("GSL on {} stopped with an error: {e}", self.local_addr);
        }
    }
}

/// Recovers the directory from `config.data_dir`, binds `config.listen_addr` and runs the GSL
/// on a new thread with a single-threaded runtime (GSL traffic is light: resolves on client
/// cache misses and refreshes, updates on operator actions). Returns once the address is
/// bound, so clients can connect at once.
pub fn start(config: GslConfig) -> Result<GslHandle, GslError> {
    config.validate()?;
    let store = Store::open(&config.data_dir, config.limits())?;
    let addr = config.listen_addr;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| GslError::Bind { addr, source })?;
    let setup = move |source| GslError::Listener { addr, source };
    listener.set_nonblocking(true).map_err(setup)?;
    let local_addr = listener.local_addr().map_err(setup)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| GslError::Runtime { source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("gsl-{}", local_addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).map_err(setup)?;
                // A dropped handle ends the server as a sent stop does.
                let shutdown = async {
                    let _ = stopped.await;
                };
                serve(listener, config, store, shutdown).await
            })
        })
        .map_err(|source| GslError::Runtime { source })?;
    Ok(GslHandle {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
