//! The nameserver's one error type.
//!
//! Faults of a single connection (a malformed frame, a peer that vanished) are answered or
//! logged where they happen and never reach the caller of [`crate::run`]; what is here is
//! what stops a nameserver from starting or running, with the context to fix it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the nameserver could not start, run or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NameserverError {
    /// The configuration file could not be read.
    #[error("cannot read nameserver config {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for [`crate::NameserverConfig`].
    #[error("cannot parse nameserver config {path}: {source}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser reported (line, column, key).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting is out of range or contradicts another.
    #[error("invalid nameserver setting {key}: {reason}")]
    ConfigInvalid {
        /// The setting's key, as in the TOML file.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// A bound listener could not be set up for the runtime (non-blocking mode, local address).
    #[error("cannot set up the listener on {addr}: {source}")]
    Listener {
        /// The address it was bound to.
        addr: SocketAddr,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime or the server thread could not be started.
    #[error("cannot start the nameserver runtime: {source}")]
    Runtime {
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// Installing a handler for SIGTERM or SIGINT failed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The server thread panicked; the panic message was printed by the panic hook.
    #[error("the nameserver thread panicked")]
    Panicked,
    /// The `[security]` settings cannot be used, or the server would be exposed.
    #[error(transparent)]
    Security(auth::settings::SettingsError),
    /// The `[tls]` settings cannot be used (a missing setting, an unreadable file).
    #[error("TLS settings ([tls])")]
    Tls(#[source] tls::TlsError),
}

svc::server_error!(NameserverError);
