//! A proxy on its own thread and runtime, for embedding (`defibus standalone`) and tests.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::server::serve;

/// Worker threads of an embedded proxy's runtime: bus calls run on the blocking pool, so
/// two workers keep up with the JSON and socket work.
const WORKER_THREADS: usize = 2;

/// A running proxy started by [`start`]. Dropping it shuts the proxy down and waits, as
/// [`ProxyHandle::shutdown`] does.
#[derive(Debug)]
pub struct ProxyHandle {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ProxyError>>>,
}

impl ProxyHandle {
    /// The address the proxy listens on (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the `/metrics` endpoint listens, when one is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, closes every session and subscription, and waits for the thread.
    pub fn shutdown(mut self) -> Result<(), ProxyError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ProxyError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| ProxyError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            log::error!("proxy on {} stopped with an error: {e}", self.local_addr);
        }
    }
}

/// Binds `config.listen_addr` (and `config.metrics_addr`) and runs the proxy on a new thread;
/// returns once the address is bound, so clients can connect at once.
pub fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    config.validate()?;
    // A bad [tls] file stops the start here, not later on the server thread ([`run`] builds
    // its own from the same settings).
    crate::handshake::ListenerTls::new(config.tls.as_ref())?;
    let addr = config.listen_addr;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ProxyError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ProxyError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ProxyError::Bind { addr, source })?;
    let metrics = telemetry::bind_or_warn(&config.metrics_addr);
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("proxy-worker")
        .enable_all()
        .build()
        .map_err(ProxyError::Runtime)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("proxy-{}", local_addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|source| ProxyError::Bind { addr, source })?;
                let shutdown = async {
                    let _ = stopped.await;
                };
                serve(listener, config, metrics, shutdown).await
            })
        })
        .map_err(ProxyError::Runtime)?;
    Ok(ProxyHandle {
        local_addr,
        metrics_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
