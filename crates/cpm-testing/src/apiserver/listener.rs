//! Serving HTTPS connections with the limits every listener of the project has: a TLS handshake
//! timeout, a header-read timeout, an idle timeout and a cap on open connections. Used by the
//! test API server and by every process of `cpm-test-apiserver`.
//!
//! A connection is idle when no request is in flight (a watch or any streamed response counts
//! as in flight until its body ends) and no byte moved for [`Limits::idle`]; it is then shut
//! down gracefully. At [`Limits::max_connections`] open connections the listener stops
//! accepting until one closes (new clients wait in the kernel's backlog).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::handler::Body;

/// The limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a TLS handshake may take.
    pub handshake: Duration,
    /// How long a client may take to send a request's headers (HTTP/1.1).
    pub header_read: Duration,
    /// How long a connection may stay open with no request in flight and no traffic.
    pub idle: Duration,
    /// How many connections may be open at once.
    pub max_connections: usize,
}

impl Limits {
    /// 10 s handshake, 10 s header read, 90 s idle (Go's `http.Server` idle timeout in
    /// kube-apiserver), 1024 connections.
    pub fn standard() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(90),
            max_connections: 1024,
        }
    }
}

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    /// The client's certificate chain as verified by rustls (leaf first), empty without one.
    pub(crate) peer_certs: Vec<CertificateDer<'static>>,
    /// The client's address.
    pub(crate) remote: SocketAddr,
}

/// Activity of one connection: the last time a byte moved and the requests in flight.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// An IO stream that records activity.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request as in flight until its response body is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// A response body that keeps its request in flight while it streams.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Accepts TLS connections on `listener` until the task is dropped, answering each request
/// with `handler`, within `limits`.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    limits: Limits,
    handler: H,
) where
    H: Fn(Arc<Conn>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((tcp, remote)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        conns.spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) = tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await
            else {
                return;
            };
            let conn = Arc::new(Conn {
                peer_certs: tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(<[CertificateDer<'_>]>::to_vec)
                    .unwrap_or_default()
                    .into_iter()
                    .map(CertificateDer::into_owned)
                    .collect(),
                remote,
            });
            serve_connection(TokioIo::new(tls), conn, limits, handler).await;
        });
    }
}

async fn serve_connection<I, H, F>(io: I, conn: Arc<Conn>, limits: Limits, handler: H)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Arc<Conn>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = Tracked {
        inner: io,
        activity: activity.clone(),
    };
    let svc_activity = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let guard = InFlight::new(svc_activity.clone());
        let fut = handler(conn.clone(), req);
        async move {
            let resp = fut.await;
            Ok::<_, std::convert::Infallible>(resp.map(|inner| {
                http_body_util::BodyExt::boxed(Guarded {
                    inner,
                    _guard: guard,
                })
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    builder.http2().timer(TokioTimer::new());
    let served = builder.serve_connection(io, svc);
    tokio::pin!(served);
    let mut shutting_down = false;
    let mut next = Instant::now() + limits.idle;
    loop {
        tokio::select! {
            _ = served.as_mut() => return,
            () = tokio::time::sleep_until(next), if !shutting_down => {
                let (now, due) = (Instant::now(), activity.last() + limits.idle);
                if activity.in_flight.load(Ordering::SeqCst) == 0 && due <= now {
                    served.as_mut().graceful_shutdown();
                    shutting_down = true;
                } else {
                    next = if due > now { due } else { now + limits.idle };
                }
            }
        }
    }
}
