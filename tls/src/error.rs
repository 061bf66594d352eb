//! The one error type of the crate: each names the file or setting involved and keeps its
//! cause as the source, so a chain prints every cause once.

use std::path::PathBuf;

/// Why TLS settings could not be turned into a configuration, or dev certificates written.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A setting the role needs is missing.
    #[error("tls.{field} is required {why}")]
    Missing {
        /// The setting, as in the `[tls]` table.
        field: &'static str,
        /// For what, e.g. "for a server".
        why: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read tls.{field} {path}")]
    Read {
        /// The setting that named the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM, or holds no item of the kind expected.
    #[error("tls.{field} {path}: {what}")]
    Pem {
        /// The setting that named the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong, e.g. "no CERTIFICATE section".
        what: String,
        /// The PEM decoder's error, when it reported one.
        #[source]
        source: Option<rustls_pki_types::pem::Error>,
    },
    /// rustls refused the material (a key that does not match its certificate, a CA that is
    /// not a valid trust anchor, no usable protocol version).
    #[error("{what}")]
    Rustls {
        /// What was being built, naming the files.
        what: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from `ca`.
    #[error("tls.ca {path}: cannot verify client certificates with it")]
    ClientVerifier {
        /// The CA bundle.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The name to verify the server by is neither a DNS name nor an IP address.
    #[error("{name:?} is not a valid server name (tls.server_name or the endpoint's host)")]
    ServerName {
        /// The name.
        name: String,
        /// Why it is invalid.
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// A development certificate could not be generated.
    #[error("generating {what}")]
    Generate {
        /// Which certificate or key.
        what: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A principal cannot name a certificate file.
    #[error(
        "principal {name:?}: use letters, digits, '.', '_' and '-' (not first), and not \
         \"ca\" or \"server\""
    )]
    InvalidPrincipal {
        /// The principal.
        name: String,
    },
    /// A file to write exists and overwriting was not asked for.
    #[error("{path} exists (pass --force to overwrite)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file or directory could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
