//! The GSL's one error type.
//!
//! Faults of a single connection (a malformed frame, a refused update) are answered where they
//! happen and never reach the caller of [`crate::run`]; what is here is what stops a GSL from
//! starting or keeps an update from being made durable, with the context to fix it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the GSL could not start, run, persist or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum GslError {
    /// The configuration file could not be read.
    #[error("cannot read GSL config {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for [`crate::GslConfig`].
    #[error("cannot parse GSL config {path}: {source}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser reported (line, column, key).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting is out of range or contradicts another.
    #[error("invalid GSL setting {key}: {reason}")]
    ConfigInvalid {
        /// The setting's key, as in the TOML file.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory of the state could not be read, written, synced or locked.
    #[error("GSL state {path}: {source}")]
    Storage {
        /// The file or directory.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The state file exists but is not a valid snapshot; the GSL refuses to start rather than
    /// forget every service (SGS re-pushes them: move the file away to start empty).
    #[error("GSL state {path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
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
    /// A bound listener could not be set up for the runtime.
    #[error("cannot set up the listener on {addr}: {source}")]
    Listener {
        /// The address it was bound to.
        addr: SocketAddr,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime or the server thread could not be started.
    #[error("cannot start the GSL runtime: {source}")]
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
    #[error("the GSL thread panicked")]
    Panicked,
    /// The `[security]` settings cannot be used, or the server would be exposed.
    #[error(transparent)]
    Security(auth::settings::SettingsError),
    /// The `[tls]` settings cannot be used (a missing setting, an unreadable file).
    #[error("TLS settings ([tls])")]
    Tls(#[source] tls::TlsError),
}

svc::server_error!(GslError);
