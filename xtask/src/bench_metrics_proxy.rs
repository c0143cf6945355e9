//! `cargo xtask bench metrics-proxy`: a Prometheus scrape of a ~200 KiB metrics payload, directly
//! from a fake upstream (plain http, like etcd's 2381; and HTTPS with the same certificate as the
//! proxy, like kube-controller-manager's 10257 scraped directly) and through metrics-rbac-proxy
//! (release build, a real process, HTTPS with a bearer token, warm decision cache), in the same
//! run on loopback: closed-loop throughput (scrapes/s) and p50/p99 latency at a fixed rate, plus
//! the TokenReview and SubjectAccessReview calls the test API server answered. The HTTPS direct
//! scrape is the fair peer: same TLS, no proxy.
//!
//! Clients speak minimal HTTP/1.1 with keep-alive (one connection per worker, as Prometheus keeps
//! one per target), so the figures are the proxy's per-scrape cost, not TLS handshakes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use cpm_testing::apiserver::{ApiServer, Identity, UserInfo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::bench_pki::BenchPki;
use crate::cmd::{self};

const TOKEN: &str = "bench-scraper-token";
const TOKENREVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SARS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
/// Closed-loop workers in the throughput phase.
const WORKERS: usize = 4;
/// Connections sharing the fixed-rate phase.
const RATE_CONNS: u32 = 4;

/// Runs the benchmark: `seconds` per timed phase, `rate` scrapes/s in the latency phase.
pub fn run(seconds: u64, rate: u32) -> anyhow::Result<()> {
    let bin = cmd::release_binary("metrics-rbac-proxy")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(&bin, Duration::from_secs(seconds), rate))
}

/// A realistic Prometheus text payload of about 200 KiB: histograms and counters with labels,
/// as kube-controller-manager exposes them.
fn payload() -> Vec<u8> {
    let mut out = String::new();
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    let mut i = 0u64;
    while out.len() < 200 * 1024 {
        let name = format!("workqueue_queue_duration_seconds_{i}");
        out.push_str(&format!(
            "# HELP {name} How long in seconds an item stays in workqueue before being requested.\n# TYPE {name} histogram\n"
        ));
        for (k, le) in les.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{name=\"controller-{i}\",le=\"{le}\"}} {}\n",
                i * 31 + k as u64 * 7
            ));
        }
        out.push_str(&format!(
            "{name}_sum{{name=\"controller-{i}\"}} {}.{}\n{name}_count{{name=\"controller-{i}\"}} {}\n",
            i * 3,
            i % 1000,
            i * 97
        ));
        out.push_str(&format!(
            "# TYPE rest_client_requests_total counter\nrest_client_requests_total{{code=\"200\",host=\"127.0.0.1:6445\",method=\"GET\",series=\"{i}\"}} {}\n",
            i * 1013
        ));
        i += 1;
    }
    out.into_bytes()
}

/// A keep-alive HTTP/1.1 server answering every request with `body`, over TLS with `tls`.
async fn upstream(
    body: Arc<Vec<u8>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let head = Arc::new(head.into_bytes());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (head, body, tls) = (head.clone(), body.clone(), tls.clone());
            tokio::spawn(async move {
                let io: Io = match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(s) => Box::new(s),
                        Err(_) => return,
                    },
                    None => Box::new(tcp),
                };
                let mut io = BufReader::new(io);
                let mut line = String::new();
                loop {
                    // Read one request head.
                    loop {
                        line.clear();
                        match io.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let w = io.get_mut();
                    if w.write_all(&head).await.is_err() || w.write_all(&body).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

/// One keep-alive client connection.
struct Conn<S> {
    io: BufReader<S>,
    request: Vec<u8>,
    body: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S, path: &str, token: Option<&str>) -> Self {
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/plain\r\n{auth}\r\n")
                .into_bytes();
        Self {
            io: BufReader::new(io),
            request,
            body: Vec::new(),
        }
    }

    /// One scrape; returns the body length.
    async fn scrape(&mut self) -> anyhow::Result<usize> {
        self.io.get_mut().write_all(&self.request).await?;
        self.io.get_mut().flush().await?;
        let mut line = String::new();
        let mut status = None;
        let mut length = None;
        loop {
            line.clear();
            if self.io.read_line(&mut line).await? == 0 {
                bail!("connection closed");
            }
            if line == "\r\n" {
                break;
            }
            if status.is_none() {
                status = line.split_whitespace().nth(1).map(str::to_string);
                continue;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = Some(v.trim().parse::<usize>()?);
            }
        }
        ensure!(
            status.as_deref() == Some("200"),
            "status {status:?}, not 200"
        );
        let length = length.context("no content-length")?;
        self.body.resize(length, 0);
        self.io.read_exact(&mut self.body).await?;
        Ok(length)
    }
}

/// Where the scrapes go.
#[derive(Clone)]
enum Target {
    Direct(SocketAddr),
    DirectTls(SocketAddr, Arc<rustls::ClientConfig>),
    Proxy(SocketAddr, Arc<rustls::ClientConfig>),
}

type Io = Box<dyn AsyncReadWrite>;
trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

impl Target {
    async fn connect(&self) -> anyhow::Result<Conn<Io>> {
        match self {
            Target::Direct(addr) => {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok(Conn::new(Box::new(tcp) as Io, "/metrics", None))
            }
            Target::DirectTls(addr, tls) | Target::Proxy(addr, tls) => {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(ServerName::try_from("127.0.0.1")?, tcp)
                    .await?;
                Ok(match self {
                    Target::Proxy(..) => {
                        Conn::new(Box::new(tls) as Io, "/etcd/metrics", Some(TOKEN))
                    }
                    _ => Conn::new(Box::new(tls) as Io, "/metrics", None),
                })
            }
        }
    }
}

/// Closed-loop scrapes/s with `WORKERS` connections for `dur`.
async fn throughput(target: &Target, dur: Duration) -> anyhow::Result<f64> {
    let end = Instant::now() + dur;
    let mut set = JoinSet::new();
    for _ in 0..WORKERS {
        let target = target.clone();
        set.spawn(async move {
            let mut c = target.connect().await?;
            let mut n = 0u64;
            while Instant::now() < end {
                c.scrape().await?;
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        });
    }
    let mut total = 0u64;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    Ok(total as f64 / dur.as_secs_f64())
}

/// p50 and p99 scrape latency at `rate` scrapes/s for `dur`, measured from the scheduled time.
async fn latency(
    target: &Target,
    rate: u32,
    dur: Duration,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now() + Duration::from_millis(100);
    let total = rate.saturating_mul(u32::try_from(dur.as_secs()).unwrap_or(u32::MAX));
    let mut set = JoinSet::new();
    for j in 0..RATE_CONNS {
        let target = target.clone();
        set.spawn(async move {
            let mut c = target.connect().await?;
            let mut lats = Vec::new();
            let mut k = j;
            while k < total {
                let at = start + Duration::from_secs_f64(f64::from(k) / f64::from(rate));
                tokio::time::sleep_until(at).await;
                c.scrape().await?;
                lats.push(at.elapsed());
                k += RATE_CONNS;
            }
            Ok::<_, anyhow::Error>(lats)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    ensure!(!all.is_empty(), "no latency sample");
    all.sort();
    let pct = |permille: usize| all[(all.len() - 1) * permille / 1000];
    Ok((pct(500), pct(990)))
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The proxy's serving certificate written into `dir`: (cert file, key file).
fn serving_files(pki: &BenchPki, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    cpm_core::apply::write_atomic(&c, pki.cert_pem.as_bytes(), 0o644, None, None)?;
    cpm_core::apply::write_atomic(&k, pki.key_pem.as_bytes(), 0o600, None, None)?;
    Ok((c, k))
}

async fn bench(bin: &Path, dur: Duration, rate: u32) -> anyhow::Result<()> {
    let body = Arc::new(payload());
    let size = body.len();
    let (up_addr, _up) = upstream(body.clone(), None).await?;
    let api = ApiServer::start().await?;
    api.add_token(
        TOKEN,
        UserInfo::new("system:serviceaccount:monitoring:prometheus", &[]),
    );
    let work = tempfile::Builder::new()
        .prefix("cpm-bench-metrics-proxy-")
        .tempdir()?;
    let kubeconfig = work.path().join("kubeconfig");
    let yaml = api.kubeconfig_yaml(&Identity::Cert(UserInfo::new("metrics-rbac-proxy", &[])))?;
    cpm_core::apply::write_atomic(&kubeconfig, yaml.as_bytes(), 0o600, None, None)?;
    let pki = BenchPki::new("metrics-rbac-proxy")?;
    let (cert, key) = serving_files(&pki, work.path())?;
    let tls = pki.client_config()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
    let (tls_addr, _tls_up) = upstream(body, Some(acceptor)).await?;
    let port = free_port()?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let _proxy = Proc(
        Command::new(bin)
            .args(["--listen", &listen.to_string(), "--admin-addr", &admin])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args(["--route", &format!("etcd=http://{up_addr}/metrics")])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .context("start metrics-rbac-proxy")?,
    );
    let direct_tls = Target::DirectTls(tls_addr, tls.clone());
    let proxy = Target::Proxy(listen, tls);
    let direct = Target::Direct(up_addr);
    // Wait for the listener, then warm the cache with one scrape.
    let mut warm = None;
    for _ in 0..100 {
        if let Ok(mut c) = proxy.connect().await {
            warm = Some(c.scrape().await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warm = warm.context("metrics-rbac-proxy never listened")?;
    ensure!(warm? == size, "the proxy changed the payload size");

    let (d_tp, t_tp, p_tp) = (
        throughput(&direct, dur).await?,
        throughput(&direct_tls, dur).await?,
        throughput(&proxy, dur).await?,
    );
    let (d_p50, d_p99) = latency(&direct, rate, dur).await?;
    let (t_p50, t_p99) = latency(&direct_tls, rate, dur).await?;
    let (p_p50, p_p99) = latency(&proxy, rate, dur).await?;
    let requests = api.requests();
    let count = |p: &str| requests.iter().filter(|r| r.path == p).count();
    let (tr, sar) = (count(TOKENREVIEWS), count(SARS));
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);

    println!(
        "payload {} bytes ({:.0} KiB); {WORKERS} keep-alive connections for {}s (throughput), {rate} scrapes/s on {RATE_CONNS} connections for {}s (latency)",
        size,
        size as f64 / 1024.0,
        dur.as_secs(),
        dur.as_secs()
    );
    println!();
    println!(
        "| figure | direct (http) | direct (https) | through metrics-rbac-proxy (https + token) | proxy / direct https | proxy / direct http |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| throughput | {d_tp:.0} scrapes/s | {t_tp:.0} scrapes/s | {p_tp:.0} scrapes/s | {:.2}× | {:.2}× |",
        p_tp / t_tp,
        p_tp / d_tp
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "| p50 latency at {rate}/s | {} | {} | {} | {:.2}× | {:.2}× |",
        ms(d_p50),
        ms(t_p50),
        ms(p_p50),
        ratio(p_p50, t_p50),
        ratio(p_p50, d_p50)
    );
    println!(
        "| p99 latency at {rate}/s | {} | {} | {} | {:.2}× | {:.2}× |",
        ms(d_p99),
        ms(t_p99),
        ms(p_p99),
        ratio(p_p99, t_p99),
        ratio(p_p99, d_p99)
    );
    println!();
    println!(
        "TokenReview calls: {tr}; SubjectAccessReview calls: {sar} (for every scrape through the proxy)"
    );
    Ok(())
}
