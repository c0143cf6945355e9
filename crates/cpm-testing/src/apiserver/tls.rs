//! The test API server's own CA, its serving certificate, client certificates, and the mapping
//! from a verified client certificate to a user (CN → username, O → groups).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{ApiServerError, UserInfo};

/// A CA that issues the serving certificate and client certificates.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> ApiServerError {
    ApiServerError::Tls(format!("{what}: {e}"))
}

impl Ca {
    pub(crate) fn generate() -> Result<Self, ApiServerError> {
        let key = KeyPair::generate().map_err(|e| tls_err("ca key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "cpm-test-apiserver-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|e| tls_err("ca cert", e))?;
        let (pem, der) = (cert.pem(), cert.der().clone());
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
            der,
        })
    }

    /// A given CA (certificate and key PEM), e.g. the cluster CA of a cpm bundle.
    pub(crate) fn from_pem(given: &CertAndKey) -> Result<Self, ApiServerError> {
        let key = KeyPair::from_pem(&given.key_pem).map_err(|e| tls_err("ca key", e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&given.cert_pem, key).map_err(|e| tls_err("ca cert", e))?;
        let der = CertificateDer::from_pem_slice(given.cert_pem.as_bytes())
            .map_err(|e| tls_err("ca cert pem", e))?;
        Ok(Self {
            issuer,
            pem: given.cert_pem.clone(),
            der,
        })
    }

    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    fn der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// The serving certificate for 127.0.0.1, localhost and `extra_ips` (the listen address
    /// when it is not loopback, and any other address asked for).
    pub(crate) fn serving(
        &self,
        extra_ips: &[std::net::IpAddr],
    ) -> Result<CertAndKey, ApiServerError> {
        let key = KeyPair::generate().map_err(|e| tls_err("serving key", e))?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])
            .map_err(|e| tls_err("serving params", e))?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        for ip in extra_ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_err("serving cert", e))?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for `user`: CN = username, one O per group (as kube-apiserver reads
    /// them). rcgen keeps one value per attribute type, so the second group is written under the
    /// same OID (2.5.4.10) spelled as a custom type; more than two groups are refused (use a
    /// bearer token for those).
    pub(crate) fn client(&self, user: &UserInfo) -> Result<CertAndKey, ApiServerError> {
        if user.groups.len() > 2 {
            return Err(ApiServerError::Tls(
                "test client certificates carry at most two groups; use a bearer token".into(),
            ));
        }
        let key = KeyPair::generate().map_err(|e| tls_err("client key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user.username.as_str());
        for (i, g) in user.groups.iter().enumerate() {
            let ty = if i == 0 {
                DnType::OrganizationName
            } else {
                DnType::CustomDnType(vec![2, 5, 4, 10])
            };
            dn.push(ty, g.as_str());
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_err("client cert", e))?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The rustls server config: the serving certificate, optional client certificates verified
    /// against this CA, ALPN h2 and http/1.1; `extra_ips` are added to the serving certificate.
    pub(crate) fn server_config(
        &self,
        extra_ips: &[std::net::IpAddr],
    ) -> Result<Arc<rustls::ServerConfig>, ApiServerError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(self.der())
            .map_err(|e| tls_err("root store", e))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_err("client verifier", e))?;
        let serving = self.serving(extra_ips)?;
        let certs = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_err("serving cert pem", e))?;
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
            .map_err(|e| tls_err("serving key pem", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| tls_err("server config", e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The user a verified client certificate names: CN → username, each O → a group.
pub(crate) fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo { username, groups })
}
