//! The upstream side: one pooled HTTP/1.1 client per route (plain TCP or rustls), a deadline
//! over the whole exchange, and a streamed response body with a size limit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::routes::RouteSpec;
use crate::tls::{TlsError, upstream_config};

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body the proxy answers with.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// One upstream connection: plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TokioIo<TcpStream>),
    /// TLS over TCP.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Connects to an upstream: TCP, then TLS when configured.
#[derive(Clone)]
pub struct Connector {
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("upstream URL without host")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let default_port = if tls.is_some() { 443 } else { 80 };
            let port = uri.port_u16().unwrap_or(default_port);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            match tls {
                None => Ok(Conn::Plain(TokioIo::new(tcp))),
                Some((cfg, name)) => {
                    let stream = tokio_rustls::TlsConnector::from(cfg)
                        .connect(name, tcp)
                        .await?;
                    Ok(Conn::Tls(Box::new(TokioIo::new(stream))))
                }
            }
        })
    }
}

/// Limits of upstream exchanges.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamLimits {
    /// Deadline over the whole exchange: connect, headers and body.
    pub timeout: Duration,
    /// The largest response body passed on, in bytes.
    pub max_response_bytes: usize,
}

/// The upstream failed before any byte of the answer was passed on.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connect, TLS or the exchange failed.
    #[error("upstream {url}")]
    Request {
        /// The upstream URL.
        url: String,
        /// The cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No response headers in time.
    #[error("upstream {url}: no answer within {timeout:?}")]
    Timeout {
        /// The upstream URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The announced body is over the limit.
    #[error("upstream {url}: response of {length} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The upstream URL.
        url: String,
        /// Content-Length.
        length: u64,
        /// The limit.
        limit: usize,
    },
}

/// A route's upstream: its URL, client and credentials.
pub struct Upstream {
    url: Uri,
    client: Client<Connector, Empty<Bytes>>,
    bearer: Option<HeaderValue>,
    limits: UpstreamLimits,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// An upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// TLS material.
    #[error("route {route}")]
    Tls {
        /// The route.
        route: String,
        /// The cause.
        #[source]
        source: TlsError,
    },
    /// The token file.
    #[error("route {route}: cannot read tokenFile {path}")]
    Token {
        /// The route.
        route: String,
        /// The file.
        path: std::path::PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// The URL or server name.
    #[error("route {route}: {message}")]
    Invalid {
        /// The route.
        route: String,
        /// What is wrong.
        message: String,
    },
}

/// Headers passed from the client to the upstream.
const REQUEST_HEADERS: [HeaderName; 3] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    HeaderName::from_static("x-prometheus-scrape-timeout-seconds"),
];

/// Hop-by-hop headers never passed back.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Upstream {
    /// The upstream of `route` (validated by [`crate::routes::validate`]).
    pub fn new(route: &RouteSpec, limits: UpstreamLimits) -> Result<Self, SetupError> {
        let invalid = |message: String| SetupError::Invalid {
            route: route.name.clone(),
            message,
        };
        let url: Uri = route
            .upstream
            .parse()
            .map_err(|e| invalid(format!("upstream {:?}: {e}", route.upstream)))?;
        let tls = if url.scheme_str() == Some("https") {
            let cfg =
                upstream_config(&route.tls, &route.name).map_err(|source| SetupError::Tls {
                    route: route.name.clone(),
                    source,
                })?;
            let host = route
                .tls
                .server_name
                .clone()
                .or_else(|| url.host().map(str::to_string))
                .unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid(format!("invalid server name {host:?}")))?;
            Some((cfg, name))
        } else {
            None
        };
        let bearer = match &route.token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path).map_err(|source| SetupError::Token {
                    route: route.name.clone(),
                    path: path.clone(),
                    source,
                })?;
                let mut v =
                    HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                        invalid(format!("tokenFile {}: not a header value", path.display()))
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .build(Connector { tls });
        Ok(Self {
            url,
            client,
            bearer,
            limits,
        })
    }

    /// The upstream URL.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// Sends a GET (or HEAD) with the client's `query` and passable headers; the answer's body
    /// streams through, cut off at the size limit or the deadline.
    pub async fn forward(
        &self,
        method: &http::Method,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let deadline = Instant::now() + self.limits.timeout;
        let url_text = self.url.to_string();
        let uri = match query {
            Some(q) if !q.is_empty() => {
                let path = self.url.path();
                let pq = match self.url.query() {
                    Some(own) => format!("{path}?{own}&{q}"),
                    None => format!("{path}?{q}"),
                };
                let mut parts = self.url.clone().into_parts();
                parts.path_and_query = pq.parse().ok();
                Uri::from_parts(parts).unwrap_or_else(|_| self.url.clone())
            }
            _ => self.url.clone(),
        };
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        for name in &REQUEST_HEADERS {
            for v in headers.get_all(name) {
                req.headers_mut().append(name.clone(), v.clone());
            }
        }
        if let Some(b) = &self.bearer {
            req.headers_mut().insert(header::AUTHORIZATION, b.clone());
        }
        let resp = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(source)) => {
                return Err(UpstreamError::Request {
                    url: url_text,
                    source,
                });
            }
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    url: url_text,
                    timeout: self.limits.timeout,
                });
            }
        };
        let limit = self.limits.max_response_bytes;
        if let Some(length) = resp.body().size_hint().exact()
            && length > limit as u64
        {
            return Err(UpstreamError::TooLarge {
                url: url_text,
                length,
                limit,
            });
        }
        let (mut parts, body) = resp.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(h);
        }
        let body = Deadline {
            inner: Limited::new(body, limit),
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        };
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// A body that fails when its deadline passes before its end.
struct Deadline {
    inner: Limited<Incoming>,
    sleep: Pin<Box<Sleep>>,
}

/// The upstream body did not end before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("upstream response not finished before the deadline")]
pub struct BodyTimeout;

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
