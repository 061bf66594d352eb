//! Development certificates: a throwaway CA, a server certificate for loopback and one
//! client certificate per principal, all ECDSA P-256 and valid for a year.
//!
//! For trying TLS and for tests, never for production: the CA key sits beside the
//! certificates it signed. `defibus certs dev` writes them.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::error::TlsError;
use crate::settings::TlsSettings;

/// The principals `defibus certs dev` issues client certificates for by default: the admin
/// tool, the processes of the bus, and one application.
pub const DEFAULT_PRINCIPALS: &[&str] = &[
    "admin",
    "broker",
    "nameserver",
    "sgs",
    "gsl",
    "proxy",
    "app",
];
/// How long generated certificates are valid.
pub const VALIDITY_DAYS: i64 = 365;
/// The server certificate's Common Name.
pub const SERVER_COMMON_NAME: &str = "defibus-server";
/// The names the server certificate is valid for: loopback, by name and address.
pub const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Whether [`generate_to`] may replace files that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse, naming the first file that exists, before writing anything.
    No,
    /// Replace them.
    Yes,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Not before this instant.
    pub not_before: OffsetDateTime,
    /// Not after this instant.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a minute ago (a little clock skew between hosts) for `days`.
    pub fn days_from_now(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(days),
        }
    }

    /// Expired yesterday: for testing that expired certificates are refused.
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::days(2),
            not_after: now - Duration::days(1),
        }
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A certificate authority that signs development certificates.
pub struct DevCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl DevCa {
    /// A new self-signed CA named `common_name` followed by a fingerprint of its key.
    ///
    /// The fingerprint keeps two dev CAs apart: verifiers find a certificate's issuer by
    /// name, so a certificate from another CA of the same name would fail as a bad
    /// signature rather than as the unknown issuer it is.
    pub fn new(common_name: &str, validity: Validity) -> Result<Self, TlsError> {
        let key = new_key("the CA key")?;
        let fingerprint: String = key
            .public_key_raw()
            .iter()
            .rev()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let common_name = format!("{common_name} {fingerprint}");
        let mut params = params(&common_name, &[], validity, "the CA certificate")?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(generating("the CA certificate"))?;
        Ok(Self { cert, key })
    }

    /// The CA [`generate`] wrote to `cert`/`key`, to issue more certificates with.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |field, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Read {
                field,
                path: path.to_path_buf(),
                source,
            })
        };
        let key = KeyPair::from_pem(&read("key", key)?).map_err(generating("the CA key"))?;
        let params = CertificateParams::from_ca_cert_pem(&read("ca", cert)?)
            .map_err(generating("the CA certificate"))?;
        // Re-signed with the same key and name: certificates it issues verify against the
        // original, which is what a verifier holds.
        let cert = params
            .self_signed(&key)
            .map_err(generating("the CA certificate"))?;
        Ok(Self { cert, key })
    }

    /// The CA certificate.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A server certificate named [`SERVER_COMMON_NAME`], valid for [`SERVER_NAMES`].
    pub fn issue_server(&self, validity: Validity) -> Result<Issued, TlsError> {
        self.issue(
            SERVER_COMMON_NAME,
            SERVER_NAMES,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    /// A client certificate whose Common Name is `principal`.
    pub fn issue_client(&self, principal: &str, validity: Validity) -> Result<Issued, TlsError> {
        self.issue(
            principal,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<Issued, TlsError> {
        let what = format!("the certificate of {common_name}");
        let key = new_key(&what)?;
        let mut params = params(common_name, names, validity, &what)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(generating(&what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn new_key(what: &str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generating(what))
}

fn params(
    common_name: &str,
    names: &[&str],
    validity: Validity,
    what: &str,
) -> Result<CertificateParams, TlsError> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).map_err(generating(what))?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(params)
}

fn generating(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |source| TlsError::Generate {
        what: what.to_owned(),
        source,
    }
}

/// Where [`generate`] wrote each file.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The directory.
    pub dir: PathBuf,
    /// The CA certificate (`ca.pem`): every process's `tls.ca`.
    pub ca: PathBuf,
    /// The CA key (`ca.key`), to issue more certificates.
    pub ca_key: PathBuf,
    /// The server certificate (`server.pem`).
    pub server_cert: PathBuf,
    /// The server key (`server.key`).
    pub server_key: PathBuf,
    /// Per principal: its name, certificate (`<name>.pem`) and key (`<name>.key`).
    pub clients: Vec<(String, PathBuf, PathBuf)>,
}

impl DevCerts {
    /// The files `generate(dir, principals)` writes, without writing them.
    pub fn plan(dir: &Path, principals: &[&str]) -> Result<Self, TlsError> {
        let mut clients = Vec::with_capacity(principals.len());
        for principal in principals {
            check_principal(principal)?;
            clients.push((
                (*principal).to_owned(),
                dir.join(format!("{principal}.pem")),
                dir.join(format!("{principal}.key")),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            clients,
        })
    }

    /// Every file, certificates and keys.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![
            self.ca.as_path(),
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
        ];
        for (_, cert, key) in &self.clients {
            files.push(cert);
            files.push(key);
        }
        files
    }

    /// Settings for a server with these certificates, demanding client certificates.
    pub fn server_settings(&self) -> TlsSettings {
        TlsSettings::server(&self.server_cert, &self.server_key, &self.ca)
    }

    /// Settings for a server process that also connects to other servers as `principal`
    /// (a broker, the SGS): it serves with the server certificate and presents
    /// `principal`'s client certificate when it connects out. Without `client_cert` when
    /// `principal` was not generated.
    pub fn server_settings_as(&self, principal: &str) -> TlsSettings {
        let own = self.clients.iter().find(|(name, ..)| name == principal);
        TlsSettings {
            client_cert: own.map(|(_, cert, _)| cert.clone()),
            client_key: own.map(|(_, _, key)| key.clone()),
            ..self.server_settings()
        }
    }

    /// Settings for a client presenting `principal`'s certificate; without a certificate
    /// when `principal` was not generated.
    pub fn client_settings(&self, principal: &str) -> TlsSettings {
        let own = self.clients.iter().find(|(name, ..)| name == principal);
        TlsSettings {
            cert: own.map(|(_, cert, _)| cert.clone()),
            key: own.map(|(_, _, key)| key.clone()),
            ca: Some(self.ca.clone()),
            ..TlsSettings::default()
        }
    }
}

/// Writes a new CA, a server certificate and one client certificate per principal to `out`
/// (created if missing), refusing to replace files that exist. See [`generate_to`].
pub fn generate(out: &Path, principals: &[&str]) -> Result<DevCerts, TlsError> {
    generate_to(out, principals, Overwrite::No)
}

/// Writes `ca.pem`/`ca.key`, `server.pem`/`server.key` and `<principal>.pem`/`.key` per
/// principal to `out`. Keys are written mode 0600. With [`Overwrite::No`] nothing is written
/// when any of the files exists.
pub fn generate_to(
    out: &Path,
    principals: &[&str],
    overwrite: Overwrite,
) -> Result<DevCerts, TlsError> {
    let plan = DevCerts::plan(out, principals)?;
    if overwrite == Overwrite::No {
        if let Some(path) = plan.files().into_iter().find(|p| p.exists()) {
            return Err(TlsError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    std::fs::create_dir_all(out).map_err(|source| TlsError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let validity = Validity::days_from_now(VALIDITY_DAYS);
    let ca = DevCa::new("defibus dev CA", validity)?;
    let server = ca.issue_server(validity)?;
    write(&plan.ca, &ca.cert_pem(), Secret::No)?;
    write(&plan.ca_key, &ca.key_pem(), Secret::Yes)?;
    write(&plan.server_cert, &server.cert_pem, Secret::No)?;
    write(&plan.server_key, &server.key_pem, Secret::Yes)?;
    for (principal, cert, key) in &plan.clients {
        let issued = ca.issue_client(principal, validity)?;
        write(cert, &issued.cert_pem, Secret::No)?;
        write(key, &issued.key_pem, Secret::Yes)?;
    }
    Ok(plan)
}

/// Whether a file holds a private key, readable by its owner only.
#[derive(PartialEq)]
enum Secret {
    No,
    Yes,
}

fn write(path: &Path, text: &str, secret: Secret) -> Result<(), TlsError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mode = if secret == Secret::Yes { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    // `mode` applies only to a file created now; one being overwritten keeps its own.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// A principal names two files in the output directory: keep it a plain file name that
/// does not collide with the CA's or the server's.
fn check_principal(name: &str) -> Result<(), TlsError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain && name != "ca" && name != "server" {
        Ok(())
    } else {
        Err(TlsError::InvalidPrincipal {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_every_file_keys_private_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let certs = generate(&out, &["admin", "app"]).unwrap();
        assert_eq!(certs.files().len(), 8);
        for file in certs.files() {
            let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
            let is_key = file.extension().is_some_and(|e| e == "key");
            assert_eq!(
                mode,
                if is_key { 0o600 } else { 0o644 },
                "{}",
                file.display()
            );
        }
        let ca = std::fs::read_to_string(&certs.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        let err = generate(&out, &["app"]).unwrap_err();
        assert!(matches!(err, TlsError::Exists { .. }), "{err}");
        let before = std::fs::read(&certs.ca).unwrap();
        generate_to(&out, &["app"], Overwrite::Yes).unwrap();
        assert_ne!(std::fs::read(&certs.ca).unwrap(), before, "a new CA");
    }

    #[test]
    fn principals_must_be_plain_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "ca", "server", "a b"] {
            let err = generate(dir.path(), &[bad]).unwrap_err();
            assert!(
                matches!(err, TlsError::InvalidPrincipal { .. }),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }
}
