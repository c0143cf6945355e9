//! Tests of the GET client against real plain and TLS servers.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::KeyAlgorithm;
use crate::pki::{Ca, CertSpec, Key, Usage};

/// Serves one canned response per connection on a loopback port, over TLS when `tls` is given.
async fn serve(
    tls: Option<Arc<rustls::ServerConfig>>,
    status: u16,
    body: &'static str,
    delay: Duration,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tokio::time::sleep(delay).await;
                match tls {
                    Some(cfg) => {
                        let Ok(mut s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                        else {
                            return;
                        };
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(reply.as_bytes()).await;
                        let _ = s.shutdown().await;
                    }
                    None => {
                        let mut s = tcp;
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(reply.as_bytes()).await;
                    }
                }
            });
        }
    });
    format!("{}:{}", addr.ip(), addr.port())
}

fn tls_server() -> (Arc<rustls::ServerConfig>, String) {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let ca_pem = CertSpec::new("test-ca", Usage::Ca, now, 1)
        .self_signed(&ca_key)
        .unwrap();
    let ca = Ca::from_pem(&ca_pem, &ca_key.to_pem()).unwrap();
    let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let mut spec = CertSpec::new("server", Usage::Server, now, 1);
    spec.sans = vec!["127.0.0.1".parse().unwrap()];
    let cert = ca.issue(&spec, &key).unwrap();
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (Arc::new(cfg), ca_pem)
}

#[tokio::test]
async fn plain_and_verified_tls_gets() {
    let addr = serve(None, 200, "ok", Duration::ZERO).await;
    let r = get(
        &format!("http://{addr}/readyz"),
        &Verify::Insecure,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.body.as_ref()), (200, b"ok".as_ref()));

    let (cfg, ca_pem) = tls_server();
    let addr = serve(Some(cfg), 503, "not ready", Duration::ZERO).await;
    let url = format!("https://{addr}/readyz");
    let r = get(
        &url,
        &Verify::Ca(ca_pem.into_bytes()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503);
    let r = get(&url, &Verify::Insecure, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.body.as_ref(), b"not ready");
    // Another CA: refused.
    let (_, other_ca) = tls_server();
    let err = get(
        &url,
        &Verify::Ca(other_ca.into_bytes()),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(
        crate::exit::chain(&err).contains("invalid peer certificate"),
        "{}",
        crate::exit::chain(&err)
    );
}

#[tokio::test]
async fn deadlines_refusals_and_bad_urls() {
    let addr = serve(None, 200, "late", Duration::from_secs(30)).await;
    let err = get(
        &format!("http://{addr}/"),
        &Verify::Insecure,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = get(
        &format!("http://127.0.0.1:{port}/"),
        &Verify::Insecure,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HttpError::Io { .. }), "{err}");
    for bad in ["ftp://x/", "127.0.0.1:80", "https://:80/"] {
        assert!(
            matches!(
                get(bad, &Verify::Insecure, Duration::from_secs(1)).await,
                Err(HttpError::Url(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        get(
            "https://127.0.0.1:1/",
            &Verify::Ca(b"junk".to_vec()),
            Duration::from_secs(1)
        )
        .await,
        Err(HttpError::Ca(_))
    ));
}
