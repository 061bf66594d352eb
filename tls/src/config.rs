//! rustls server and client configurations built from [`TlsSettings`].

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::TlsError;
use crate::settings::{ClientAuth, TlsSettings};

/// The crypto provider of every configuration: ring (see the crate docs for why not aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    // rustls deprecates ring's provider because ring has no post-quantum key exchange; the
    // aws-lc provider that has one cannot be built where the bus must build (crate docs).
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first (ring's order puts AES-256 first): the suite TLS 1.3 requires of
    // every implementation, approved for the same uses, and its 10 rounds to AES-256's 14
    // cost a fifth less CPU per byte, which the bus's throughput feels (docs/BENCHMARKS.md).
    // Peers still agree on AES-256-GCM or ChaCha20 when they prefer them.
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS13_AND_12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The protocol versions `settings` allow: TLS 1.3, and 1.2 only when asked for.
fn versions(settings: &TlsSettings) -> &'static [&'static SupportedProtocolVersion] {
    if settings.tls12 {
        TLS13_AND_12
    } else {
        TLS13_ONLY
    }
}

/// A server configuration: presents `cert`/`key`, and verifies client certificates against
/// `ca` as `client_auth` says.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    const WHY: &str = "for a TLS server";
    let cert = required(settings.cert.as_deref(), "cert", WHY)?;
    let key = required(settings.key.as_deref(), "key", WHY)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(settings))
        .map_err(|source| TlsError::Rustls {
            what: "choosing the TLS protocol versions".into(),
            source,
        })?;
    let builder = match settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth @ (ClientAuth::Required | ClientAuth::Optional) => {
            let ca = required(
                settings.ca.as_deref(),
                "ca",
                "for a TLS server that verifies clients (or set client_auth = \"none\")",
            )?;
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: ca.to_path_buf(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(load_certs("cert", cert)?, load_key(key)?)
        .map_err(|source| TlsError::Rustls {
            what: format!("tls.cert {} with tls.key {}", cert.display(), key.display()),
            source,
        })?;
    Ok(Arc::new(config))
}

/// A client configuration: trusts servers whose certificates `ca` signed, and presents
/// `cert`/`key` when both are set (mutual TLS).
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let ca = required(
        settings.ca.as_deref(),
        "ca",
        "for a TLS client (the CA that signed the servers' certificates)",
    )?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(settings))
        .map_err(|source| TlsError::Rustls {
            what: "choosing the TLS protocol versions".into(),
            source,
        })?
        .with_root_certificates(load_roots(ca)?);
    let identity = settings.client_identity();
    let (cert_field, key_field) = identity.fields;
    let config = match (identity.cert, identity.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert_field, cert)?, load_key_as(key_field, key)?)
            .map_err(|source| TlsError::Rustls {
                what: format!(
                    "tls.{cert_field} {} with tls.{key_field} {}",
                    cert.display(),
                    key.display()
                ),
                source,
            })?,
        (Some(_), None) => {
            return Err(TlsError::Missing {
                field: key_field,
                why: if key_field == "key" {
                    "when tls.cert is set"
                } else {
                    "when tls.client_cert is set"
                },
            });
        }
        (None, Some(_)) => {
            return Err(TlsError::Missing {
                field: cert_field,
                why: if cert_field == "cert" {
                    "when tls.key is set"
                } else {
                    "when tls.client_key is set"
                },
            });
        }
    };
    Ok(Arc::new(config))
}

/// The name a client verifies the server's certificate against: `server_name` when set,
/// else the host of `endpoint` (`host:port`, `[v6]:port`, or a bare host).
pub fn server_name(
    settings: &TlsSettings,
    endpoint: &str,
) -> Result<ServerName<'static>, TlsError> {
    let name = match &settings.server_name {
        Some(name) => name.as_str(),
        None => endpoint_host(endpoint),
    };
    ServerName::try_from(name.to_owned()).map_err(|source| TlsError::ServerName {
        name: name.to_owned(),
        source,
    })
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn endpoint_host(endpoint: &str) -> &str {
    if let Some(rest) = endpoint.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match endpoint.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => endpoint,
    }
}

fn required<'a>(
    value: Option<&'a Path>,
    field: &'static str,
    why: &'static str,
) -> Result<&'a Path, TlsError> {
    value.ok_or(TlsError::Missing { field, why })
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in order; at least one.
fn load_certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            field,
            path: path.to_path_buf(),
            what: "not valid PEM".into(),
            source: Some(source),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            field,
            path: path.to_path_buf(),
            what: "no CERTIFICATE section".into(),
            source: None,
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    load_key_as("key", path)
}

/// The first private key of a PEM file named by setting `field`.
fn load_key_as(field: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| {
        let (what, source) = match source {
            rustls_pki_types::pem::Error::NoItemsFound => ("no PRIVATE KEY section", None),
            other => ("not valid PEM", Some(other)),
        };
        TlsError::Pem {
            field,
            path: path.to_path_buf(),
            what: what.into(),
            source,
        }
    })
}

/// The trust anchors of a CA bundle; at least one.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in load_certs("ca", path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: format!(
                "tls.ca {}: certificate {} is not a usable trust anchor",
                path.display(),
                index + 1
            ),
            source,
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    //! Handshakes between the configs in memory: rustls connections pumping bytes to each
    //! other, no sockets.

    use std::error::Error as _;

    use rustls::{ClientConnection, ServerConnection};

    use super::*;
    use crate::dev::{self, DevCa, DevCerts, Validity};

    fn certs(dir: &Path) -> DevCerts {
        dev::generate(dir, &["app"]).unwrap()
    }

    /// Pumps bytes between the two ends until both finished the handshake (and the server
    /// verified the client), or one fails; the error is the first side's to fail.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client, name)?;
        let mut server = ServerConnection::new(server)?;
        let mut wire = Vec::new();
        // A round of writes from each side; TLS 1.3 with a client certificate needs three
        // flights, so a few rounds more than that bound a handshake that goes nowhere.
        for _ in 0..8 {
            wire.clear();
            client.write_tls(&mut wire).unwrap();
            let mut bytes = &wire[..];
            while !bytes.is_empty() {
                server.read_tls(&mut bytes).unwrap();
            }
            server.process_new_packets()?;
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            let mut bytes = &wire[..];
            while !bytes.is_empty() {
                client.read_tls(&mut bytes).unwrap();
            }
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
                return Ok((client, server));
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn a_client_with_the_ca_and_its_certificate_is_served_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path());
        let server = server_config(&certs.server_settings()).unwrap();
        let client = client_config(&certs.client_settings("app")).unwrap();
        let (client, server) = handshake(client, server).unwrap();
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3),
            "TLS 1.3 only by default"
        );
        let peer = server.peer_certificates().unwrap();
        assert_eq!(principal_of_first(peer).as_deref(), Some("app"));
        let server_cert = client.peer_certificates().unwrap();
        assert_eq!(
            principal_of_first(server_cert).as_deref(),
            Some("defibus-server")
        );
    }

    #[test]
    fn a_server_process_connects_out_with_its_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev::generate(dir.path(), &["broker"]).unwrap();
        let server = server_config(&certs.server_settings()).unwrap();
        // The broker's own [tls]: it serves with server.pem and presents broker.pem.
        let broker = certs.server_settings_as("broker");
        let (_, server) = handshake(client_config(&broker).unwrap(), server.clone()).unwrap();
        let peer = server.peer_certificates().unwrap();
        assert_eq!(principal_of_first(peer).as_deref(), Some("broker"));
        // Without client_cert it presents server.pem, which lacks the client-auth usage.
        let err = handshake(
            client_config(&certs.server_settings()).unwrap(),
            server_config(&certs.server_settings()).unwrap(),
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("Purpose"), "{err:?}");
        let half = TlsSettings {
            client_key: None,
            ..broker
        };
        let err = client_config(&half).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tls.client_key is required when tls.client_cert is set"
        );
    }

    fn principal_of_first(certs: &[CertificateDer<'_>]) -> Option<String> {
        crate::principal_of(certs.first()?)
    }

    #[test]
    fn a_client_certificate_from_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path());
        let other = tempfile::tempdir().unwrap();
        let other = dev::generate(other.path(), &["app"]).unwrap();
        // Trusts our server, but presents a certificate the server's CA never signed.
        let settings = TlsSettings {
            ca: Some(certs.ca.clone()),
            ..other.client_settings("app")
        };
        let err = handshake(
            client_config(&settings).unwrap(),
            server_config(&certs.server_settings()).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err}"
        );
    }

    #[test]
    fn an_expired_client_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path());
        let ca = DevCa::load(&certs.ca, &certs.ca_key).unwrap();
        let expired = ca.issue_client("late", Validity::expired()).unwrap();
        let cert = dir.path().join("late.pem");
        let key = dir.path().join("late.key");
        std::fs::write(&cert, &expired.cert_pem).unwrap();
        std::fs::write(&key, &expired.key_pem).unwrap();
        let settings = TlsSettings {
            cert: Some(cert),
            key: Some(key),
            ..certs.client_settings("app")
        };
        let err = handshake(
            client_config(&settings).unwrap(),
            server_config(&certs.server_settings()).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredContext { .. }
                    )
            ),
            "{err}"
        );
    }

    #[test]
    fn no_client_certificate_is_refused_when_required_and_anonymous_when_optional() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path());
        let anonymous = TlsSettings {
            ca: Some(certs.ca.clone()),
            ..TlsSettings::default()
        };
        let err = handshake(
            client_config(&anonymous).unwrap(),
            server_config(&certs.server_settings()).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(err, rustls::Error::NoCertificatesPresented),
            "{err}"
        );
        let optional = TlsSettings {
            client_auth: ClientAuth::Optional,
            ..certs.server_settings()
        };
        let (_, server) = handshake(
            client_config(&anonymous).unwrap(),
            server_config(&optional).unwrap(),
        )
        .unwrap();
        assert!(server.peer_certificates().is_none());
    }

    #[test]
    fn a_server_not_signed_by_the_trusted_ca_is_refused_by_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path());
        let other = tempfile::tempdir().unwrap();
        let other = dev::generate(other.path(), &["app"]).unwrap();
        let err = handshake(
            client_config(&other.client_settings("app")).unwrap(),
            server_config(&certs.server_settings()).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err}"
        );
    }

    #[test]
    fn tls12_is_spoken_only_when_both_allow_it() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path());
        let tls12 = |s: TlsSettings| TlsSettings { tls12: true, ..s };
        let (client, _) = handshake(
            client_config(&tls12(certs.client_settings("app"))).unwrap(),
            server_config(&tls12(certs.server_settings())).unwrap(),
        )
        .unwrap();
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3),
            "1.3 is still preferred"
        );
        let only12 = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(load_roots(&certs.ca).unwrap())
            .with_no_client_auth();
        let err = handshake(
            Arc::new(only12),
            server_config(&certs.server_settings()).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(err, rustls::Error::PeerIncompatible(_)),
            "a 1.2-only client meets a 1.3-only server: {err}"
        );
    }

    #[test]
    fn errors_name_the_setting_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path());
        let missing = dir.path().join("nope.pem");
        let settings = TlsSettings {
            cert: Some(missing.clone()),
            ..certs.server_settings()
        };
        let err = server_config(&settings).unwrap_err();
        assert!(matches!(err, TlsError::Read { field: "cert", .. }), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");
        assert!(err.source().is_some(), "the OS error is the source");
        // A certificate where the key should be.
        let settings = TlsSettings {
            key: Some(certs.ca.clone()),
            ..certs.server_settings()
        };
        let err = server_config(&settings).unwrap_err();
        assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");
        // A key that is not the certificate's.
        let settings = TlsSettings {
            key: Some(certs.ca_key.clone()),
            ..certs.server_settings()
        };
        let err = server_config(&settings).unwrap_err();
        assert!(matches!(err, TlsError::Rustls { .. }), "{err}");
        assert!(err.to_string().contains("server.pem"), "{err}");
        let err = server_config(&TlsSettings::default()).unwrap_err();
        assert_eq!(err.to_string(), "tls.cert is required for a TLS server");
        let err = client_config(&TlsSettings::default()).unwrap_err();
        assert!(
            matches!(err, TlsError::Missing { field: "ca", .. }),
            "{err}"
        );
    }

    #[test]
    fn the_server_name_comes_from_the_setting_or_the_endpoint_host() {
        let none = TlsSettings::default();
        let name = |s: &TlsSettings, e: &str| server_name(s, e).unwrap().to_str().into_owned();
        assert_eq!(name(&none, "localhost:10911"), "localhost");
        assert_eq!(name(&none, "127.0.0.1:10911"), "127.0.0.1");
        assert_eq!(name(&none, "[::1]:10911"), "::1");
        assert_eq!(name(&none, "broker.example"), "broker.example");
        let named = TlsSettings {
            server_name: Some("broker-a".into()),
            ..TlsSettings::default()
        };
        assert_eq!(name(&named, "10.0.0.1:1"), "broker-a");
        assert!(server_name(&none, "bad name:1").is_err());
    }
}
