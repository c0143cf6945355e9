//! The benches' TLS material: a fresh ECDSA P-256 CA and one serving certificate for 127.0.0.1,
//! with the rustls configurations of both ends.

use std::sync::Arc;

use cpm_core::config::KeyAlgorithm;
use cpm_core::pki::{Ca, CertSpec, Key, Usage};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A bench CA and a serving certificate it issued.
pub struct BenchPki {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The serving certificate (PEM), SAN 127.0.0.1.
    pub cert_pem: String,
    /// Its key (PEM).
    pub key_pem: String,
}

impl BenchPki {
    /// A new CA and a serving certificate for 127.0.0.1 with common name `cn`.
    pub fn new(cn: &str) -> anyhow::Result<Self> {
        let now = time::OffsetDateTime::now_utc();
        let ca_key = Key::generate(KeyAlgorithm::EcdsaP256)?;
        let ca_pem = CertSpec::new("bench-ca", Usage::Ca, now, 1).self_signed(&ca_key)?;
        let ca = Ca::from_pem(&ca_pem, &ca_key.to_pem())?;
        let key = Key::generate(KeyAlgorithm::EcdsaP256)?;
        let mut spec = CertSpec::new(cn, Usage::Server, now, 1);
        spec.sans = vec!["127.0.0.1".parse().map_err(anyhow::Error::msg)?];
        let cert_pem = ca.issue(&spec, &key)?;
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem: key.to_pem(),
        })
    }

    /// The server end: serves the certificate.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?,
        ))
    }

    /// The client end: trusts the CA.
    pub fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    }
}
