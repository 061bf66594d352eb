//! The `[tls]` table: which files hold this process's identity and whom it trusts.

use std::path::PathBuf;

use serde::Deserialize;

/// TLS settings of one process, for its servers and its clients alike (TOML table `[tls]`).
///
/// A server needs `cert` and `key`, and `ca` unless `client_auth = "none"`. A client needs
/// `ca`; with `cert` and `key` it also presents its own certificate (mutual TLS), which a
/// server with `client_auth = "required"` demands.
///
/// ```toml
/// [tls]
/// cert = "certs/server.pem"
/// key = "certs/server.key"
/// ca = "certs/ca.pem"
/// client_auth = "required"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with this process's certificate chain, leaf first. Required for a server;
    /// for a client, presented to the server when set (with `key`). Default none.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key of `cert` (PKCS#8, PKCS#1 or SEC1). Required whenever
    /// `cert` is set. Default none.
    pub key: Option<PathBuf>,
    /// PEM bundle of the CA certificates trusted to sign peers' certificates: the servers'
    /// for a client, the clients' for a server (unless `client_auth = "none"`). No system
    /// roots are used: a bus trusts its own CA, not the web's. Default none.
    pub ca: Option<PathBuf>,
    /// Servers only: whether clients must present a certificate signed by `ca`. Default
    /// `"required"`.
    pub client_auth: ClientAuth,
    /// Also offer TLS 1.2; by default only TLS 1.3 is spoken (one round trip fewer, and no
    /// legacy cipher suites). Default false.
    pub tls12: bool,
    /// Clients only: the name the server's certificate must carry. Default: the host part of
    /// the endpoint connected to (a DNS name or an IP address).
    pub server_name: Option<String>,
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client must present a certificate signed by `ca` (mutual TLS); one without is
    /// refused during the handshake. The default: a client's principal is then always known.
    #[default]
    Required,
    /// A client may present a certificate; if it does, it must be signed by `ca`. One without
    /// has no principal (and must authenticate some other way, e.g. a token).
    Optional,
    /// No client certificate is asked for; the connection is encrypted but the client
    /// anonymous at the TLS layer.
    None,
}

impl TlsSettings {
    /// Settings for a server presenting `cert`/`key` and demanding client certificates
    /// signed by `ca`.
    pub fn server(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert: Some(cert.into()),
            key: Some(key.into()),
            ca: Some(ca.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_fields_and_defaults() {
        let settings: TlsSettings = toml::from_str("ca = \"ca.pem\"\n").unwrap();
        assert_eq!(settings.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(settings.client_auth, ClientAuth::Required);
        assert!(!settings.tls12);
        assert_eq!(settings.server_name, None);
        let settings: TlsSettings =
            toml::from_str("client_auth = \"optional\"\ntls12 = true\nserver_name = \"b\"\n")
                .unwrap();
        assert_eq!(settings.client_auth, ClientAuth::Optional);
        assert!(settings.tls12);
        assert_eq!(settings.server_name.as_deref(), Some("b"));
        let err = toml::from_str::<TlsSettings>("certificate = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        let err = toml::from_str::<TlsSettings>("client_auth = \"maybe\"\n").unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }
}
