//! A SGS on its own thread, for embedding (`defibus standalone`) and blocking tests.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::config::SgsConfig;
use crate::error::SgsError;
use crate::server::serve;
use crate::store::Store;

/// A running SGS started by [`start`]. Dropping it shuts the SGS down and
/// waits for it, as [`SgsHandle::shutdown`] does.
#[derive(Debug)]
pub struct SgsHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), SgsError>>>,
}

impl SgsHandle {
    /// The address the SGS listens on (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection and waits for the server thread.
    pub fn shutdown(mut self) -> Result<(), SgsError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), SgsError> {
        if let Some(stop) = self.stop.take() {
            // The server may have stopped already; then there is nothing to tell it.
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| SgsError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for SgsHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            log::error!("SGS on {} stopped with an error: {e}", self.local_addr);
        }
    }
}

/// Recovers the registry from `config.data_dir`, binds `config.listen_addr` and runs the SGS
/// on a new thread with a single-threaded runtime (SGS traffic is operator actions; broker
/// work runs on the runtime's blocking pool). Returns once the address is bound.
pub fn start(config: SgsConfig) -> Result<SgsHandle, SgsError> {
    config.validate()?;
    let store = Store::open(&config.data_dir)?;
    let addr = config.listen_addr;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| SgsError::Bind { addr, source })?;
    let setup = move |source| SgsError::Listener { addr, source };
    listener.set_nonblocking(true).map_err(setup)?;
    let local_addr = listener.local_addr().map_err(setup)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SgsError::Runtime { source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("sgs-{}", local_addr.port()))
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
        .map_err(|source| SgsError::Runtime { source })?;
    Ok(SgsHandle {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
