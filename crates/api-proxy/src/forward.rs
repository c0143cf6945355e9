//! The data path: accept, pick an upstream (failing over on refused or timed-out connects, and
//! racing the next upstream when a connect is slow), then copy bytes both ways until either side closes or the upstream is evicted.
//!
//! Copying is a readiness loop per direction over the two sockets, with a buffer taken only
//! while data flows (from a small per-thread pool), so an idle connection holds no buffer at
//! all: 10 000 idle watches cost the kernel's socket memory and a small task each.

use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prometheus_client::metrics::counter::Counter;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::pool::{ActiveGuard, Pool, UpState, Upstream};

mod splice;

/// Data path settings.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Deadline of one connect attempt.
    pub connect_timeout: Duration,
    /// A connect still pending after this long races the next upstream.
    pub hedge: Duration,
    /// How long connections to an upstream that went down or away stay open.
    pub evict_grace: Duration,
    /// Move bytes with `splice(2)` through a pipe instead of copying them through a buffer.
    pub splice: bool,
    /// Pipe or copy buffer size per active direction.
    pub buffer_size: usize,
    /// TCP keepalive idle time (interval is a third of it, 3 probes).
    pub keepalive: Duration,
    /// TCP_USER_TIMEOUT: unacknowledged data older than this kills the connection.
    pub user_timeout: Duration,
}

/// Upper bound on connect attempts for one client connection.
const MAX_ATTEMPTS: usize = 16;

/// Sets keepalive, TCP_USER_TIMEOUT and TCP_NODELAY on a socket.
pub fn tune(sock: &SockRef<'_>, cfg: &ForwardConfig) -> io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    let ka = TcpKeepalive::new()
        .with_time(cfg.keepalive)
        .with_interval((cfg.keepalive / 3).max(Duration::from_secs(1)))
        .with_retries(3);
    sock.set_tcp_keepalive(&ka)?;
    sock.set_tcp_user_timeout(Some(cfg.user_timeout))
}

/// Accepts until `stop_accept` turns true; each connection runs until it ends or `stop` turns
/// true. `clients` counts open client connections.
pub async fn accept_loop(
    listener: TcpListener,
    pool: Arc<Pool>,
    cfg: Arc<ForwardConfig>,
    mut stop_accept: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    clients: Arc<AtomicUsize>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop_accept.wait_for(|s| *s) => return,
        };
        let client = match accepted {
            Ok((c, _)) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let pool = pool.clone();
        let cfg = cfg.clone();
        let mut stop = stop.clone();
        let clients = clients.clone();
        clients.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::select! {
                () = handle(client, &pool, &cfg) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Connects to `addr` within `cfg.connect_timeout`, socket options set.
pub async fn connect(addr: SocketAddr, cfg: &ForwardConfig) -> io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    tune(&SockRef::from(&sock), cfg)?;
    match tokio::time::timeout(cfg.connect_timeout, sock.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Serves one client connection (its socket options come from the listener).
async fn handle(client: TcpStream, pool: &Pool, cfg: &Arc<ForwardConfig>) {
    let candidates = pool.candidates();
    match connect_any(pool, &candidates, cfg).await {
        Some((server, up, active)) => {
            up.counters.connections.inc();
            proxy(&client, &server, &up, active, pool, cfg).await;
        }
        None => {
            pool.metrics.unserved.inc();
            warn!(
                upstreams = candidates.len(),
                "no upstream accepted the connection"
            );
        }
    }
}

/// One connect attempt. It counts as a connection of its upstream from the start, so least
/// connections steers new clients away from an upstream whose connects hang.
async fn attempt(
    i: usize,
    up: Arc<Upstream>,
    cfg: Arc<ForwardConfig>,
) -> (usize, io::Result<TcpStream>, Duration, ActiveGuard) {
    let active = up.acquire();
    let start = Instant::now();
    let r = connect(up.addr, &cfg).await;
    (i, r, start.elapsed(), active)
}

/// Connects to the first candidate that answers. A refused or timed-out connect marks its
/// upstream down and moves on to the next candidate at once; a connect still pending after
/// `cfg.hedge` races the next candidate, and the first to connect wins. Attempts that lost a race
/// finish in the background: one that then fails marks its upstream down, so a blackholed
/// upstream costs a client at most the hedge delay and is excluded after one connect timeout even
/// before the health checks notice.
async fn connect_any(
    pool: &Pool,
    candidates: &[Arc<Upstream>],
    cfg: &Arc<ForwardConfig>,
) -> Option<(TcpStream, Arc<Upstream>, ActiveGuard)> {
    let n = candidates.len().min(MAX_ATTEMPTS);
    let first = candidates.first()?;
    let mut pending = FuturesUnordered::new();
    pending.push(attempt(0, first.clone(), cfg.clone()));
    let mut next = 1;
    let hedge = tokio::time::sleep(cfg.hedge);
    tokio::pin!(hedge);
    let won = loop {
        tokio::select! {
            Some((i, result, took, active)) = pending.next() => match result {
                Ok(server) => {
                    pool.metrics.connect_duration.observe(took.as_secs_f64());
                    break Some((server, candidates[i].clone(), active));
                }
                Err(e) => {
                    debug!(upstream = %candidates[i].addr, error = %e, "connect failed, trying the next upstream");
                    candidates[i].record_connect_failure();
                    if next < n {
                        pool.metrics.failovers.inc();
                        pending.push(attempt(next, candidates[next].clone(), cfg.clone()));
                        next += 1;
                        hedge.as_mut().reset(tokio::time::Instant::now() + cfg.hedge);
                    } else if pending.is_empty() {
                        break None;
                    }
                }
            },
            () = &mut hedge, if next < n => {
                pool.metrics.failovers.inc();
                debug!(upstream = %candidates[next - 1].addr, "connect slow, racing the next upstream");
                pending.push(attempt(next, candidates[next].clone(), cfg.clone()));
                next += 1;
                hedge.as_mut().reset(tokio::time::Instant::now() + cfg.hedge);
            }
        }
    };
    if !pending.is_empty() {
        let losers: Vec<Arc<Upstream>> = candidates.to_vec();
        tokio::spawn(async move {
            while let Some((i, result, _, _active)) = pending.next().await {
                if result.is_err() {
                    losers[i].record_connect_failure();
                }
            }
        });
    }
    won
}

async fn proxy(
    client: &TcpStream,
    server: &TcpStream,
    up: &Arc<Upstream>,
    _active: ActiveGuard,
    pool: &Pool,
    cfg: &ForwardConfig,
) {
    let evicted = doomed(up, pool, cfg.evict_grace);
    let copy = async {
        tokio::try_join!(
            one_way(client, server, cfg, &up.counters.tx),
            one_way(server, client, cfg, &up.counters.rx),
        )
    };
    tokio::select! {
        r = copy => if let Err(e) = r {
            debug!(upstream = %up.addr, error = %e, "connection ended");
        },
        () = evicted => {
            up.counters.evicted.inc();
            debug!(upstream = %up.addr, "connection closed: upstream down or removed");
        }
    }
}

/// Resolves once connections to `up` should close: it was removed, or it is down while another
/// upstream is up, for a whole grace period.
async fn doomed(up: &Upstream, pool: &Pool, grace: Duration) {
    let mut rx = up.subscribe();
    loop {
        if rx.wait_for(|s| s.evicting()).await.is_err() {
            return std::future::pending().await;
        }
        let recovered = tokio::select! {
            r = rx.wait_for(|s: &UpState| !s.evicting()) => r.is_ok(),
            () = tokio::time::sleep(grace) => false,
        };
        if recovered {
            continue;
        }
        let s = up.state();
        if s.removed || (s.evicting() && pool.any_up_except(up.addr)) {
            return;
        }
        // Down, but nothing better to move to: keep the connection and look again later.
        tokio::time::sleep(grace).await;
    }
}

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers kept per thread, at most.
const POOLED: usize = 16;

fn take_buffer(size: usize) -> Vec<u8> {
    BUFFERS
        .with(|b| {
            let mut b = b.borrow_mut();
            match b.pop() {
                Some(buf) if buf.len() == size => Some(buf),
                _ => None,
            }
        })
        .unwrap_or_else(|| vec![0; size])
}

fn give_back(buf: Vec<u8>) {
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < POOLED {
            b.push(buf);
        }
    });
}

/// Copies `src` to `dst` until end of stream, then half-closes `dst`: through a pipe with
/// `splice(2)` (the bytes never enter user space) unless configured otherwise or no pipe can be
/// had, through a buffer otherwise.
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    cfg: &ForwardConfig,
    bytes: &Counter,
) -> io::Result<()> {
    if cfg.splice {
        match splice::one_way(src, dst, cfg.buffer_size, bytes).await {
            Err(splice::NoPipe(e)) => {
                debug!(error = %e, "no pipe for splice, copying through a buffer");
            }
            Ok(r) => return finish(dst, r),
        }
    }
    let r = copy_buffered(src, dst, cfg.buffer_size, bytes).await;
    finish(dst, r)
}

/// Half-closes `dst` after a clean end of stream.
fn finish(dst: &TcpStream, copied: io::Result<()>) -> io::Result<()> {
    copied?;
    match SockRef::from(dst).shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// Copies `src` to `dst` through a pooled buffer until end of stream.
async fn copy_buffered(
    src: &TcpStream,
    dst: &TcpStream,
    size: usize,
    bytes: &Counter,
) -> io::Result<()> {
    let mut buf: Option<Vec<u8>> = None;
    let result = async {
        loop {
            let b = buf.get_or_insert_with(|| take_buffer(size));
            let n = match src.try_read(b) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Idle: hold no buffer while waiting.
                    if let Some(b) = buf.take() {
                        give_back(b);
                    }
                    src.readable().await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            write_all(dst, &b[..n]).await?;
            bytes.inc_by(n as u64);
        }
        Ok(())
    }
    .await;
    if let Some(b) = buf.take() {
        give_back(b);
    }
    result
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
