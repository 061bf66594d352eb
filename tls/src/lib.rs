//! TLS for DeFiBus: the settings every process reads, the rustls configurations built from
//! them, the principal an mTLS peer certificate names, and development certificates.
//!
//! Only rustls's **ring** provider is used, never aws-lc-rs: aws-lc needs cmake and nasm to
//! build, which a fresh CI machine with only a C compiler lacks. Every config is built with
//! that provider explicitly ([`provider`]), so no process-wide default has to be installed.
//!
//! - [`TlsSettings`]: the `[tls]` table of a server's or client's configuration;
//! - [`server_config`] / [`client_config`]: rustls configurations from it;
//! - [`principal_of`]: who a peer certificate names (the mTLS principal);
//! - [`dev`]: a throwaway CA with server and client certificates (`defibus certs dev`).

mod config;
pub mod dev;
mod error;
mod principal;
mod settings;

pub use config::{client_config, provider, server_config, server_name};
pub use error::TlsError;
pub use principal::principal_of;
pub use settings::{ClientAuth, ClientIdentity, TlsSettings};

/// The rustls crate, re-exported so users name the same version as this crate builds with.
pub use rustls;
/// Certificate and name types (`CertificateDer`, `ServerName`), as rustls uses them.
pub use rustls_pki_types as pki_types;
