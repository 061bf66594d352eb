//! The principal an mTLS peer certificate names: who the ACL speaks of.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The principal `cert` names: its subject's Common Name, else its first DNS or URI subject
/// alternative name. `None` when the certificate cannot be parsed or names neither (the
/// handshake already verified it, so that means a certificate made for something else).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty());
    if let Some(cn) = common_name {
        return Some(cn.to_owned());
    }
    let names = parsed.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(name) | GeneralName::URI(name) => Some((*name).to_owned()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(params: rcgen::CertificateParams) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_common_name_else_the_first_dns_or_uri_name() {
        let mut named = rcgen::CertificateParams::new(vec!["alt.example".to_owned()]).unwrap();
        named.distinguished_name = rcgen::DistinguishedName::new();
        named
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing");
        assert_eq!(principal_of(&cert(named)).as_deref(), Some("billing"));

        let mut unnamed =
            rcgen::CertificateParams::new(vec!["alt.example".to_owned(), "b.example".to_owned()])
                .unwrap();
        unnamed.distinguished_name = rcgen::DistinguishedName::new();
        assert_eq!(principal_of(&cert(unnamed)).as_deref(), Some("alt.example"));

        let mut uri = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        uri.distinguished_name = rcgen::DistinguishedName::new();
        uri.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://bus/app".to_owned().try_into().unwrap(),
        )];
        assert_eq!(
            principal_of(&cert(uri)).as_deref(),
            Some("spiffe://bus/app")
        );

        let mut nothing = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        nothing.distinguished_name = rcgen::DistinguishedName::new();
        assert_eq!(
            principal_of(&cert(nothing)),
            None,
            "an IP address is no principal"
        );

        assert_eq!(principal_of(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
