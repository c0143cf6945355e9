//! The front's connection to the store: pooled HTTP/1.1 over TLS (the store's CA verified,
//! the front-proxy client certificate presented), connect and handshake bounded, bodies
//! streamed both ways.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

use super::ControlPlaneError;

/// How long connecting (TCP and TLS) to the store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request body towards the store.
pub(crate) type UpBody = BoxBody<Bytes, hyper::Error>;

/// One TLS connection to the store.
pub(crate) struct StoreConn(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl hyper::rt::Read for StoreConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for StoreConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connection for StoreConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Connects to the host and port of the request's URI, with TLS.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: tokio_rustls::TlsConnector,
}

impl tower::Service<Uri> for Connector {
    type Response = StoreConn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<StoreConn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other("store URL without a host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(io::Error::other)?;
            let connect = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                tls.connect(name, tcp).await
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            Ok(StoreConn(TokioIo::new(stream)))
        })
    }
}

/// The pooled client to the store.
pub(crate) type StoreClient = Client<Connector, UpBody>;

/// A client verifying the store against `ca_pem` and presenting `identity` (certificate and key
/// PEM) when given.
pub(crate) fn store_client(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<StoreClient, ControlPlaneError> {
    let tls =
        |what: &str, e: &dyn std::fmt::Display| ControlPlaneError::Tls(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| tls("store CA", &e))?;
        roots.add(c).map_err(|e| tls("store CA", &e))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", &e))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls("proxy client certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| tls("proxy client key", &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls("proxy client certificate", &e))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = Connector {
        tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector))
}
