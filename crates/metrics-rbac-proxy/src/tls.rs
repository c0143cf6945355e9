//! TLS: the serving certificate (from files, reloaded when they change, or self-signed at start),
//! client-certificate verification against `--client-ca-file`, the identity in a client
//! certificate, and client configurations towards the upstreams.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use cpm_core::http::NoVerify;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;

use crate::routes::UpstreamTls;

/// TLS material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not fit the certificate, or rustls refused the configuration.
    #[error("{what}: {message}")]
    Config {
        /// Which configuration.
        what: String,
        /// rustls' message.
        message: String,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot make a self-signed serving certificate")]
    SelfSigned(#[source] cpm_core::pki::PkiError),
}

/// The process's one crypto provider: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM certificates in `path`.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        message: format!("no private key: {e}"),
    })
}

fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    CertifiedKey::from_der(certs, key, &provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Config {
            what: what.to_string(),
            message: e.to_string(),
        })
}

/// Loads a certificate chain and its key from PEM files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let what = format!("{} with {}", cert.display(), key.display());
    certified_key(load_certs(cert)?, load_key(key)?, &what)
}

/// A self-signed ECDSA P-256 serving certificate for `ips` and `dns` names, valid one year.
pub fn self_signed(ips: &[IpAddr], dns: &[String]) -> Result<Arc<CertifiedKey>, TlsError> {
    use cpm_core::config::{KeyAlgorithm, San};
    use cpm_core::pki::{CertSpec, Key, Usage};
    let now = time::OffsetDateTime::now_utc();
    let key = Key::generate(KeyAlgorithm::EcdsaP256).map_err(TlsError::SelfSigned)?;
    let mut spec = CertSpec::new("metrics-rbac-proxy", Usage::Server, now, 365);
    spec.sans = ips.iter().copied().map(San::Ip).collect();
    spec.sans
        .extend(dns.iter().filter_map(|d| d.parse::<San>().ok()));
    let pem = spec.self_signed(&key).map_err(TlsError::SelfSigned)?;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Config {
            what: "self-signed certificate".into(),
            message: e.to_string(),
        })?;
    let key =
        PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes()).map_err(|e| TlsError::Config {
            what: "self-signed key".into(),
            message: e.to_string(),
        })?;
    certified_key(certs, key, "self-signed certificate")
}

/// The serving certificate, swappable while serving.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    /// Serves `key` until replaced.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// Replaces the served certificate (new handshakes use it).
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }

    /// The served certificate.
    pub fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The server configuration: `cert` served, client certificates verified against
/// `client_ca` when given (optional: token clients send none).
pub fn server_config(
    cert: Arc<ServingCert>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let cfg_err = |what: &str| {
        let what = what.to_string();
        move |e: rustls::Error| TlsError::Config {
            what,
            message: e.to_string(),
        }
    };
    let verifier = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(path)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Pem {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(cfg_err("server TLS"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The user in a verified client certificate: CN is the username, each O a group.
pub fn cert_identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((name, groups))
}

/// A client configuration for one upstream, as its route's TLS settings say.
pub fn upstream_config(
    t: &UpstreamTls,
    route: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            what: format!("route {route}"),
            message: e.to_string(),
        })?;
    let builder = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify::new(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if let Some(path) = &t.ca_file {
            for c in load_certs(path)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut cfg = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(load_certs(c)?, load_key(k)?)
            .map_err(|e| TlsError::Config {
                what: format!("route {route}: {} with {}", c.display(), k.display()),
                message: e.to_string(),
            })?,
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
