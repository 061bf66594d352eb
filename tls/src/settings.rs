//! The `[tls]` table: which files hold this process's identity and whom it trusts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A server process's own certificate when it connects to other servers (a broker to
    /// the nameservers and its leader, the SGS to the GSL, a controller to the other
    /// voters), for mutual TLS: a certificate with the client-auth usage naming the
    /// process's principal (`defibus certs dev` writes `broker.pem`, `sgs.pem`, ...).
    /// Default: `cert`, which then needs both the server- and client-auth usages.
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert`; set exactly when `client_cert` is. Default: `key`.
    pub client_key: Option<PathBuf>,
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

impl TlsSettings {
    /// The certificate and key presented when connecting out: `client_cert`/`client_key`
    /// when set, else `cert`/`key`, each with the name of the setting it came from.
    pub fn client_identity(&self) -> ClientIdentity<'_> {
        if self.client_cert.is_some() || self.client_key.is_some() {
            ClientIdentity {
                cert: self.client_cert.as_deref(),
                key: self.client_key.as_deref(),
                fields: ("client_cert", "client_key"),
            }
        } else {
            ClientIdentity {
                cert: self.cert.as_deref(),
                key: self.key.as_deref(),
                fields: ("cert", "key"),
            }
        }
    }
}

/// The certificate and key a process presents as a TLS client ([`TlsSettings::client_identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdentity<'a> {
    /// The certificate chain's PEM file, if any.
    pub cert: Option<&'a std::path::Path>,
    /// Its private key's PEM file, if any.
    pub key: Option<&'a std::path::Path>,
    /// The names of the two settings they came from, for error messages.
    pub fields: (&'static str, &'static str),
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
        let settings: TlsSettings = toml::from_str(
            "cert = \"s.pem\"\nkey = \"s.key\"\nclient_cert = \"b.pem\"\nclient_key = \"b.key\"\n",
        )
        .unwrap();
        let identity = settings.client_identity();
        assert_eq!(identity.cert, Some(std::path::Path::new("b.pem")));
        assert_eq!(identity.fields, ("client_cert", "client_key"));
        let settings: TlsSettings = toml::from_str("cert = \"s.pem\"\nkey = \"s.key\"\n").unwrap();
        assert_eq!(
            settings.client_identity().key,
            Some(std::path::Path::new("s.key"))
        );
        let err = toml::from_str::<TlsSettings>("certificate = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        let err = toml::from_str::<TlsSettings>("client_auth = \"maybe\"\n").unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }
}
