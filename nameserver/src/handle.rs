//! A nameserver on its own thread, for embedding (`defibus standalone`) and blocking tests.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::config::NameserverConfig;
use crate::error::NameserverError;
use crate::server::run;

/// A running nameserver started by [`start`]. Dropping it shuts the nameserver down and
/// waits for it, as [`NameserverHandle::shutdown`] does.
#[derive(Debug)]
pub struct NameserverHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), NameserverError>>>,
}

impl NameserverHandle {
    /// The address the nameserver listens on (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection and waits for the server thread.
    pub fn shutdown(mut self) -> Result<(), NameserverError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), NameserverError> {
        if let Some(stop) = self.stop.take() {
            // The server may have stopped already; then there is nothing to tell it.
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| NameserverError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for NameserverHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            log::error!(
                "nameserver on {} stopped with an error: {e}",
                self.local_addr
            );
        }
    }
}

/// Binds `config.listen_addr` and runs the nameserver on a new thread with a single-threaded
/// runtime (nameserver traffic is light: a registration per broker every few seconds and
/// route lookups). Returns once the address is bound, so clients can connect at once.
pub fn start(config: NameserverConfig) -> Result<NameserverHandle, NameserverError> {
    config.validate()?;
    let addr = config.listen_addr;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|source| NameserverError::Bind { addr, source })?;
    let setup = move |source| NameserverError::Listener { addr, source };
    listener.set_nonblocking(true).map_err(setup)?;
    let local_addr = listener.local_addr().map_err(setup)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NameserverError::Runtime { source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("nameserver-{}", local_addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).map_err(setup)?;
                // A dropped handle ends the server as a sent stop does.
                let shutdown = async {
                    let _ = stopped.await;
                };
                run(listener, config, shutdown).await
            })
        })
        .map_err(|source| NameserverError::Runtime { source })?;
    Ok(NameserverHandle {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
