//! The HTTPS side: accept, TLS (with optional client certificates), and the request path:
//! authenticate → route → authorise → forward. Nothing reaches an upstream without a positive
//! authentication and authorisation decision.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_core::exit::chain;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::auth::{Auth, Target, User};
use crate::metrics::{ProxyMetrics, RequestLabels, RouteLabel};
use crate::tls::cert_identity;
use crate::upstream::{ProxyBody, Upstream, UpstreamError};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One route at run time.
#[derive(Debug)]
pub struct Route {
    /// Name (metrics label).
    pub name: String,
    /// What the authoriser is asked.
    pub target: Target,
    /// Where it goes.
    pub upstream: Upstream,
}

/// Everything requests share.
#[derive(Debug)]
pub struct State {
    /// Routes by path.
    pub routes: HashMap<String, Arc<Route>>,
    /// Authentication and authorisation.
    pub auth: Auth,
    /// Metrics.
    pub metrics: ProxyMetrics,
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unauthorized() -> Response<ProxyBody> {
    let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"metrics-rbac-proxy\""),
    );
    r
}

/// The bearer token of a request, if any.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Answers one request.
pub async fn handle(
    state: &State,
    cert_user: Option<&User>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let route = state.routes.get(req.uri().path()).cloned();
    let resp = decide_and_forward(state, cert_user, route.as_deref(), &req).await;
    let name = match (&route, resp.status()) {
        (Some(r), s) if s != StatusCode::UNAUTHORIZED => r.name.clone(),
        _ => "none".to_string(),
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: name,
            code: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn decide_and_forward(
    state: &State,
    cert_user: Option<&User>,
    route: Option<&Route>,
    req: &Request<Incoming>,
) -> Response<ProxyBody> {
    // 1. Who: a verified client certificate first (as kube-apiserver), then a bearer token.
    let token_user;
    let user = match cert_user {
        Some(u) => u,
        None => {
            let Some(token) = bearer(req) else {
                return unauthorized();
            };
            match state.auth.authenticate_token(token).await {
                Ok(Some(u)) => {
                    token_user = u;
                    &token_user
                }
                Ok(None) => return unauthorized(),
                Err(e) => {
                    warn!(error = %chain(&e), "cannot authenticate: refusing the request");
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "authentication unavailable\n",
                    );
                }
            }
        }
    };
    // 2. Where.
    let Some(route) = route else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    // 3. May they.
    match state.auth.authorize(user, &route.target).await {
        Ok(true) => {}
        Ok(false) => {
            debug!(user = %user.name, route = %route.name, "forbidden");
            return text(StatusCode::FORBIDDEN, "Forbidden\n");
        }
        Err(e) => {
            warn!(error = %chain(&e), "cannot authorise: refusing the request");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "authorization unavailable\n",
            );
        }
    }
    // 4. Forward, streaming the answer.
    let start = Instant::now();
    let result = route
        .upstream
        .forward(req.method(), req.uri().query(), req.headers())
        .await;
    state
        .metrics
        .upstream_duration
        .get_or_create(&RouteLabel {
            route: route.name.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    match result {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %chain(&e), route = %route.name, "upstream failed");
            match e {
                UpstreamError::Timeout { .. } => {
                    text(StatusCode::GATEWAY_TIMEOUT, "upstream timeout\n")
                }
                _ => text(StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
            }
        }
    }
}

/// Serves one accepted connection: TLS handshake, then HTTP/1.1 or HTTP/2.
pub async fn serve_connection(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| cert_identity(c))
        .map(|(name, groups)| Arc::new(User::from_cert(name, groups)));
    let svc = service_fn(move |req| {
        let state = state.clone();
        let cert_user = cert_user.clone();
        async move { Ok::<_, Infallible>(handle(&state, cert_user.as_deref(), req).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

/// Accepts until `stop` carries a drain period, then waits that long for open connections and
/// closes the rest.
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let mut conns = JoinSet::new();
    let drain = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    conns.spawn(serve_connection(tcp, acceptor.clone(), state.clone()));
                }
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = stop.changed() => {
                let drain = *stop.borrow();
                match (changed, drain) {
                    (Ok(()), Some(d)) => break d,
                    (Ok(()), None) => {}
                    (Err(_), _) => break Duration::ZERO,
                }
            }
        }
    };
    drop(listener);
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    conns.abort_all();
}
