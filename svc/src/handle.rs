//! A control server on its own thread with a single-threaded runtime, for embedding
//! (`defibus standalone`) and blocking tests: [`start`] binds and returns a [`ServerHandle`].

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// The errors a server reports for what [`start`], its [`ServerHandle`] and
/// [`crate::signal::run_until_terminated`] do.
pub trait ServerError: fmt::Display + Send + 'static {
    /// The listen address could not be bound.
    fn bind(addr: SocketAddr, source: std::io::Error) -> Self;
    /// The bound listener (at `addr`) could not be set up.
    fn listener(addr: SocketAddr, source: std::io::Error) -> Self;
    /// The runtime or the server thread could not be created.
    fn runtime(source: std::io::Error) -> Self;
    /// The server thread panicked.
    fn panicked() -> Self;
    /// Installing the handler for `signal` (e.g. `"SIGTERM"`) failed.
    fn signal(signal: &'static str, source: std::io::Error) -> Self;
}

/// Completes when the [`ServerHandle`] is shut down or dropped: the server's shutdown
/// future.
#[derive(Debug)]
pub struct Shutdown(oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped handle ends the server as a sent stop does.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A running server started by [`start`]. Dropping it shuts the server down and waits for
/// it, as [`ServerHandle::shutdown`] does.
pub struct ServerHandle<E: ServerError> {
    name: &'static str,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), E>>>,
}

impl<E: ServerError> fmt::Debug for ServerHandle<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("stop", &self.stop)
            .field("thread", &self.thread)
            .finish()
    }
}

impl<E: ServerError> ServerHandle<E> {
    /// The address the server listens on (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the server's Prometheus `/metrics` endpoint listens, when it serves one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The handle, saying that the server serves metrics on `addr` (its starter bound it).
    pub fn with_metrics_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.metrics_addr = addr;
        self
    }

    /// Stops accepting, closes every connection and waits for the server thread.
    pub fn shutdown(mut self) -> Result<(), E> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), E> {
        if let Some(stop) = self.stop.take() {
            // The server may have stopped already; then there is nothing to tell it.
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| E::panicked())?,
            None => Ok(()),
        }
    }
}

impl<E: ServerError> Drop for ServerHandle<E> {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            log::error!(
                "{} on {} stopped with an error: {e}",
                self.name,
                self.local_addr
            );
        }
    }
}

/// Binds `addr` and runs `run(listener, shutdown)` on a new thread (named after `name` and
/// the port) with a single-threaded runtime. Returns once the address is bound, so clients
/// can connect at once. `name` (e.g. `"GSL"`) also prefixes the handle's log lines.
pub fn start<E, F, Fut>(name: &'static str, addr: SocketAddr, run: F) -> Result<ServerHandle<E>, E>
where
    E: ServerError,
    F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>>,
{
    let listener = std::net::TcpListener::bind(addr).map_err(|source| E::bind(addr, source))?;
    let setup = move |source| E::listener(addr, source);
    listener.set_nonblocking(true).map_err(setup)?;
    let local_addr = listener.local_addr().map_err(setup)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(E::runtime)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("{}-{}", name.to_lowercase(), local_addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).map_err(setup)?;
                run(listener, Shutdown(stopped)).await
            })
        })
        .map_err(E::runtime)?;
    Ok(ServerHandle {
        name,
        local_addr,
        metrics_addr: None,
        stop: Some(stop),
        thread: Some(thread),
    })
}
