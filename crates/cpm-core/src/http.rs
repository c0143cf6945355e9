//! A small HTTP(S) GET client for health gates and health checks: one request per connection,
//! a deadline over the whole exchange, and explicit TLS verification (a CA bundle, or none for
//! loopback endpoints that serve self-signed certificates).
//!
//! ```no_run
//! # async fn f() -> Result<(), cpm_core::http::HttpError> {
//! use cpm_core::http::{Verify, get};
//! let r = get("https://127.0.0.1:10259/healthz", &Verify::Insecure, std::time::Duration::from_secs(2)).await?;
//! assert_eq!(r.status, 200);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;

/// How to verify an HTTPS server.
#[derive(Debug, Clone)]
pub enum Verify {
    /// Against these CA certificates (PEM bundle).
    Ca(Vec<u8>),
    /// Not at all: only for loopback endpoints with self-signed certificates.
    Insecure,
}

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The whole body.
    pub body: Bytes,
}

/// A GET failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http(s)://host:port/path`.
    #[error("invalid URL {0:?}")]
    Url(String),
    /// Connecting, TLS, or the exchange failed.
    #[error("GET {url}")]
    Io {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The deadline passed.
    #[error("GET {url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The CA bundle is not PEM certificates.
    #[error("invalid CA bundle")]
    Ca(String),
}

struct Target {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse(url: &str) -> Result<Target, HttpError> {
    let bad = || HttpError::Url(url.to_string());
    let (https, rest) = match url.split_once("://") {
        Some(("https", r)) => (true, r),
        Some(("http", r)) => (false, r),
        _ => return Err(bad()),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse().map_err(|_| bad())?)
        }
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad());
    }
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    };
    Ok(Target {
        https,
        host,
        port,
        path,
    })
}

/// GETs `url` within `timeout`.
pub async fn get(url: &str, verify: &Verify, timeout: Duration) -> Result<Response, HttpError> {
    Client::new(verify)?.get(url, timeout).await
}

/// A client that keeps its TLS configuration between requests, so repeated requests to the same
/// server (health checks) resume TLS sessions instead of verifying the chain each time.
#[derive(Debug, Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// A client verifying servers as `verify` says.
    pub fn new(verify: &Verify) -> Result<Self, HttpError> {
        Ok(Self {
            tls: client_config(verify)?,
        })
    }

    /// GETs `url` within `timeout`.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Response, HttpError> {
        let target = parse(url)?;
        let tls = target.https.then(|| self.tls.clone());
        fetch(url, &target, tls, timeout).await
    }
}

async fn fetch(
    url: &str,
    target: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    match tokio::time::timeout(timeout, exchange(target, tls)).await {
        Ok(r) => r.map_err(|source| HttpError::Io {
            url: url.to_string(),
            source,
        }),
        Err(_) => Err(HttpError::Timeout {
            url: url.to_string(),
            timeout,
        }),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn exchange(
    t: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Response, BoxError> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
    let request = hyper::Request::get(&t.path)
        .header(hyper::header::HOST, format!("{}:{}", t.host, t.port))
        .body(Empty::<Bytes>::new())?;
    let response = match tls {
        Some(config) => {
            let name = ServerName::try_from(t.host.clone())?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            send(TokioIo::new(stream), request).await?
        }
        None => send(TokioIo::new(tcp), request).await?,
    };
    Ok(response)
}

async fn send<I>(io: I, request: hyper::Request<Empty<Bytes>>) -> Result<Response, BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(request).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(Response { status, body })
}

fn client_config(verify: &Verify) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Ca(e.to_string()))?;
    let config = match verify {
        Verify::Ca(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| HttpError::Ca(e.to_string()))?)
                    .map_err(|e| HttpError::Ca(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(HttpError::Ca("no certificate in the bundle".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (handshake signatures still checked): for loopback endpoints
/// with self-signed certificates, or where an operator explicitly skips verification.
#[derive(Debug)]
pub struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl NoVerify {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self(provider)
    }
}

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
