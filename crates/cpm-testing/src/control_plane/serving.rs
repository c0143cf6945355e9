//! TLS of the control-plane commands from the components' flags: the serving certificate from
//! `--tls-cert-file`/`--tls-private-key-file` (re-read when either file changes, as the real
//! components reload it) or a self-signed one, `--tls-min-version`, `--tls-cipher-suites` by
//! their Go names, and client certificates verified against CAs that may change at run time
//! (the stand-ins learn theirs from a ConfigMap).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::ControlPlaneError;

fn tls(what: &str, e: impl std::fmt::Display) -> ControlPlaneError {
    ControlPlaneError::Tls(format!("{what}: {e}"))
}

/// The TLS flags of a component.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsFlags<'a> {
    pub(crate) cert: Option<&'a Path>,
    pub(crate) key: Option<&'a Path>,
    pub(crate) min_version: Option<&'a str>,
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The protocol versions `--tls-min-version` allows (rustls serves TLS 1.2 and 1.3 only).
pub(crate) fn versions(
    min: Option<&str>,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], ControlPlaneError> {
    match min {
        None | Some("" | "VersionTLS10" | "VersionTLS11" | "VersionTLS12") => {
            Ok(rustls::ALL_VERSIONS)
        }
        Some("VersionTLS13") => Ok(TLS13_ONLY),
        Some(other) => Err(ControlPlaneError::Usage(format!(
            "--tls-min-version: unknown TLS version {other:?}"
        ))),
    }
}

/// The provider's suites for `--tls-cipher-suites` (Go names; TLS 1.3 suites always stay, as
/// Go does not let them be configured). A name rustls does not implement is refused.
pub(crate) fn provider(names: &[String]) -> Result<Arc<CryptoProvider>, ControlPlaneError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if names.is_empty() {
        return Ok(Arc::new(provider));
    }
    let all = provider.cipher_suites.clone();
    let name_of = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    let mut chosen: Vec<rustls::SupportedCipherSuite> = all
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for name in names {
        // Go also knows the CHACHA20 suites without the `_SHA256` suffix.
        let canonical = match name.as_str() {
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
                format!("{name}_SHA256")
            }
            _ => name.clone(),
        };
        let suite = all
            .iter()
            .find(|s| name_of(s) == canonical)
            .ok_or_else(|| {
                ControlPlaneError::Usage(format!(
                    "--tls-cipher-suites: {name} is unknown or not served by cpm-test-apiserver"
                ))
            })?;
        if !chosen.contains(suite) {
            chosen.push(*suite);
        }
    }
    provider.cipher_suites = chosen;
    Ok(Arc::new(provider))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ControlPlaneError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("serving certificate", e))?;
    if certs.is_empty() {
        return Err(ControlPlaneError::Tls(
            "serving certificate: no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls("serving key", e))?;
    CertifiedKey::from_der(certs, key, provider)
        .map(Arc::new)
        .map_err(|e| tls("serving certificate and key", e))
}

/// A serving certificate from files, re-read on the next handshake after either file changes
/// (a broken pair keeps the last good one).
#[derive(Debug)]
struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl FileCert {
    fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ControlPlaneError> {
        let stamps = (modified(cert), modified(key));
        let ck = certified_key(
            super::read(cert)?.as_bytes(),
            super::read(key)?.as_bytes(),
            &provider,
        )?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            state: Mutex::new((stamps.0, stamps.1, ck)),
        })
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut state = crate::apiserver::lock(&self.state);
        let stamps = (modified(&self.cert), modified(&self.key));
        if (stamps.0, stamps.1) != (state.0, state.1) {
            let fresh = std::fs::read(&self.cert)
                .ok()
                .zip(std::fs::read(&self.key).ok())
                .and_then(|(c, k)| certified_key(&c, &k, &self.provider).ok());
            if let Some(ck) = fresh {
                *state = (stamps.0, stamps.1, ck);
            }
        }
        Some(state.2.clone())
    }
}

/// A fixed certificate.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A self-signed serving certificate for `names` (IP addresses or DNS names), as the real
/// components make one when given no certificate (kept in memory, not in `--cert-dir`).
fn self_signed(
    names: &[String],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ControlPlaneError> {
    let key = rcgen::KeyPair::generate().map_err(|e| tls("self-signed key", e))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| tls("self-signed certificate", e))?;
    for n in names {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|e| tls("self-signed name", e))?,
            ),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let mut dn = rcgen::DistinguishedName::new();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    dn.push(rcgen::DnType::CommonName, format!("localhost@{now}"));
    params.distinguished_name = dn;
    let cert = params
        .self_signed(&key)
        .map_err(|e| tls("self-signed certificate", e))?;
    certified_key(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        provider,
    )
}

/// The CAs in use and the verifier built from them.
type Verifying = (Vec<CertificateDer<'static>>, Arc<dyn ClientCertVerifier>);

/// Client certificates verified against CAs that can be replaced while serving. Without CAs no
/// certificate is asked for.
#[derive(Debug)]
pub(crate) struct ClientRoots {
    provider: Arc<CryptoProvider>,
    current: Mutex<Option<Verifying>>,
}

impl ClientRoots {
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            provider,
            current: Mutex::new(None),
        }
    }

    /// Replaces the CAs (no-op when they are the same).
    pub(crate) fn set(&self, cas: &[CertificateDer<'static>]) -> Result<(), ControlPlaneError> {
        let mut current = crate::apiserver::lock(&self.current);
        if current.as_ref().is_some_and(|(have, _)| have == cas) {
            return Ok(());
        }
        if cas.is_empty() {
            *current = None;
            return Ok(());
        }
        let mut roots = RootCertStore::empty();
        for c in cas {
            roots.add(c.clone()).map_err(|e| tls("client CA", e))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls("client CA", e))?;
        *current = Some((cas.to_vec(), verifier));
        Ok(())
    }

    fn verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        crate::apiserver::lock(&self.current)
            .as_ref()
            .map(|(_, v)| v.clone())
    }
}

impl ClientCertVerifier for ClientRoots {
    fn offer_client_auth(&self) -> bool {
        self.verifier().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients then offer whatever certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.verifier() {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General("no client CA configured".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server config of a component: its flags' certificate (or a self-signed one for
/// `self_signed_names`), versions and suites, client certificates through `roots`, ALPN h2 and
/// http/1.1.
pub(crate) fn server_config(
    flags: TlsFlags<'_>,
    self_signed_names: &[String],
    provider: &Arc<CryptoProvider>,
    roots: Arc<ClientRoots>,
) -> Result<Arc<rustls::ServerConfig>, ControlPlaneError> {
    let resolver: Arc<dyn ResolvesServerCert> = match (flags.cert, flags.key) {
        (Some(cert), Some(key)) => Arc::new(FileCert::load(cert, key, provider.clone())?),
        (None, None) => Arc::new(FixedCert(self_signed(self_signed_names, provider)?)),
        _ => {
            return Err(ControlPlaneError::Usage(
                "--tls-cert-file and --tls-private-key-file go together".into(),
            ));
        }
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(flags.min_version)?)
        .map_err(|e| tls("protocol versions", e))?
        .with_client_cert_verifier(roots)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file (a CA bundle).
pub(crate) fn read_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, ControlPlaneError> {
    crate::apiserver::ca_certs(&super::read(path)?)
        .map_err(|e| tls(&format!("{}", path.display()), e))
}
