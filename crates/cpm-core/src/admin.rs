//! The admin HTTP server of every long-running agent: `/metrics`, `/livez`, `/readyz`.
//!
//! It binds a loopback address by default (each binary's README lists its port); exposure to
//! Prometheus goes through metrics-rbac-proxy. `/readyz` answers 200 after the first successful
//! pass while the last success is recent ([`crate::reconcile::Readiness`]); 503 otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics::{CONTENT_TYPE, encode};
use crate::reconcile::Readiness;

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The accept loop; abort it to stop serving.
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves the admin endpoints in the background. `registry` holds the binary's
/// metrics; the process metrics and `cpm_build_info` ([`crate::metrics::process`]) are added
/// here, so every admin server exports them.
pub async fn spawn(
    addr: SocketAddr,
    mut registry: Registry,
    readiness: Readiness,
) -> std::io::Result<AdminServer> {
    crate::metrics::process::register(&mut registry);
    let registry = Arc::new(registry);
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let resp = respond(&req, &registry, &readiness);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(AdminServer { addr, task })
}

fn respond(
    req: &Request<Incoming>,
    registry: &Registry,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(encode(registry))));
            if let Ok(v) = CONTENT_TYPE.parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.is_ready(SystemTime::now()) => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no recent successful pass\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests;
