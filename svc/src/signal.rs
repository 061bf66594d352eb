//! Running a server in the foreground until SIGTERM or SIGINT, as each server's `cli_main`
//! does.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use log::info;
use tokio::signal::unix::{SignalKind, signal};

use crate::handle::ServerError;

/// Completes on the first SIGTERM or SIGINT.
pub type Termination = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Builds a single-threaded runtime, binds `addr`, installs the SIGTERM and SIGINT handlers
/// and runs `run(listener, termination)` on it until it returns.
pub fn run_until_terminated<E, F, Fut>(addr: SocketAddr, run: F) -> Result<(), E>
where
    E: ServerError,
    F: FnOnce(tokio::net::TcpListener, Termination) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(E::runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| E::bind(addr, source))?;
        let shutdown = termination()?;
        run(listener, shutdown).await
    })
}

/// Completes on the first SIGTERM or SIGINT. The handlers are installed before this returns,
/// so a failure to install them stops startup instead of leaving an unkillable server.
pub fn termination<E: ServerError>() -> Result<Termination, E> {
    let install = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| E::signal(name, source))
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    Ok(Box::pin(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("{name} received, shutting down");
    }))
}
