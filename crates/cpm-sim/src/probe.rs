//! Probes as the kubelet runs them: `httpGet` (HTTP, or HTTPS without certificate
//! verification, success on 200–399), `tcpSocket` (a connection opens), `exec` (`runc exec`
//! exits 0), each bounded by `timeoutSeconds`. Connections are made inside the pod's network
//! namespace ([`crate::net::connect_in_async`]), to `host` or the pod IP. `grpc` is not
//! modelled (a failure that says so).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::runc::Runc;

/// Where a probe runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's network namespace.
    pub netns: String,
    /// The pod IP (the default host).
    pub pod_ip: IpAddr,
    /// The container's runc state root.
    pub runc: Runc,
    /// The container id.
    pub container_id: String,
}

/// A probe's result: `Ok` or why it failed.
pub type Outcome = Result<(), String>;

fn port_of(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("port {p} out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("named port {name:?} not found")),
    }
}

/// Runs `probe` of `container` once.
pub async fn run(probe: &Probe, container: &Container, target: &Target) -> Outcome {
    let timeout =
        Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    let attempt = async {
        if let Some(h) = &probe.http_get {
            let host: IpAddr = match &h.host {
                Some(host) => host
                    .parse()
                    .map_err(|_| format!("host {host:?} is not an IP (DNS is not modelled)"))?,
                None => target.pod_ip,
            };
            let port = port_of(&h.port, container)?;
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            let headers: Vec<(String, String)> = h
                .http_headers
                .iter()
                .flatten()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect();
            let https = h.scheme.as_deref() == Some("HTTPS");
            http_get(
                &target.netns,
                SocketAddr::new(host, port),
                &path,
                &headers,
                https,
                timeout,
            )
            .await
        } else if let Some(t) = &probe.tcp_socket {
            let host: IpAddr = match &t.host {
                Some(host) => host
                    .parse()
                    .map_err(|_| format!("host {host:?} is not an IP"))?,
                None => target.pod_ip,
            };
            let port = port_of(&t.port, container)?;
            crate::net::connect_in_async(&target.netns, SocketAddr::new(host, port), timeout)
                .await
                .map(|_| ())
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else if let Some(e) = &probe.exec {
            let argv = e.command.clone().unwrap_or_default();
            let out = target
                .runc
                .exec(&target.container_id, &argv, timeout)
                .await
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "command {argv:?} exited with {:?}: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout)
                ))
            }
        } else {
            Err("probe handler not modelled (grpc)".to_string())
        }
    };
    match tokio::time::timeout(timeout + Duration::from_millis(500), attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}

/// `GET <path>` at `addr` from inside namespace `netns`, with extra `headers` (HTTPS without
/// verification when `https`), as the kubelet's probes send it: the status code and up to
/// 1 MiB of the body.
pub async fn http_get_in(
    netns: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    https: bool,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let scheme = if https { "https" } else { "http" };
    let tcp = crate::net::connect_in_async(netns, addr, timeout)
        .await
        .map_err(|e| format!("Get \"{scheme}://{addr}{path}\": dial tcp {addr}: {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    if https {
        let connector = tokio_rustls::TlsConnector::from(insecure_client_config());
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls handshake with {addr}: {e}"))?;
        exchange(tls, &request).await
    } else {
        exchange(tcp, &request).await
    }
}

/// The status code of [`http_get_in`].
pub async fn http_status(
    netns: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    https: bool,
    timeout: Duration,
) -> Result<u16, String> {
    http_get_in(netns, addr, path, headers, https, timeout)
        .await
        .map(|(s, _)| s)
}

async fn http_get(
    netns: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    https: bool,
    timeout: Duration,
) -> Outcome {
    let status = http_status(netns, addr, path, headers, https, timeout).await?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> Result<(u16, String), String> {
    const LIMIT: usize = 1 << 20;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while buf.len() < LIMIT {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A peer that closes without TLS close_notify still sent its answer.
            Err(e) if !buf.is_empty() => {
                tracing::trace!(error = %e, "connection ended");
                break;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "malformed HTTP response {:?}",
                text.lines().next().unwrap_or_default()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A TLS client that accepts any server certificate, as the kubelet's HTTPS probes do.
fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AcceptAny(provider.clone()));
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("invariant: aws-lc-rs supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
