//! Acceptance tests of api-proxy on loopback: small TLS "API servers" signed by a test cluster
//! CA serve `/readyz`, `/id` (their name) and `/stream` (their name, then an echo), and the proxy
//! runs in-process (or as a process in `process.rs`) in front of them.

mod copy;
mod failover;
mod process;
mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use api_proxy::forward::ForwardConfig;
use api_proxy::health::HealthConfig;
use api_proxy::metrics::{ProxyMetrics, ResultLabel};
use api_proxy::pool::Health;
use api_proxy::{Proxy, ProxyOptions};
use cpm_core::config::KeyAlgorithm;
use cpm_core::pki::{Ca, CertSpec, Key, Usage};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::client::TlsStream;

/// A cluster CA and its PEM.
pub struct Cluster {
    pub ca: Ca,
    pub ca_pem: String,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn generate() -> Self {
        let now = time::OffsetDateTime::now_utc();
        let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ca_pem = CertSpec::new("test-cluster-ca", Usage::Ca, now, 1)
            .self_signed(&key)
            .unwrap();
        let ca = Ca::from_pem(&ca_pem, &key.to_pem()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cluster = Self { ca, ca_pem, dir };
        write(&cluster.ca_file(), cluster.ca_pem.as_bytes());
        cluster
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn upstreams_file(&self) -> PathBuf {
        self.dir.path().join("api-proxy/upstreams.json")
    }

    /// Writes the upstream file (atomically, as proxy-reloader does).
    pub fn set_upstreams(&self, addrs: &[SocketAddr]) {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        let text = format!("{{\"version\":1,\"upstreams\":[{}]}}\n", list.join(","));
        write(&self.upstreams_file(), text.as_bytes());
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let now = time::OffsetDateTime::now_utc();
        let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut spec = CertSpec::new("kube-apiserver", Usage::Server, now, 1);
        spec.sans = vec!["127.0.0.1".parse().unwrap()];
        let cert = self.ca.issue(&spec, &key).unwrap();
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(cfg)
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(cfg)
    }

    /// Proxy options for tests: an ephemeral loopback port, the cluster's files, a short
    /// eviction grace.
    pub fn options(&self, flags: &[SocketAddr]) -> ProxyOptions {
        ProxyOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            flags: flags.to_vec(),
            upstreams_file: self.upstreams_file(),
            node_ip: Some("192.0.2.1".parse().unwrap()),
            health: HealthConfig {
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(750),
                ca_file: self.ca_file(),
            },
            rise: 2,
            fall: 2,
            forward: ForwardConfig {
                connect_timeout: Duration::from_secs(1),
                hedge: Duration::from_millis(200),
                evict_grace: Duration::from_millis(300),
                splice: true,
                buffer_size: 16384,
                keepalive: Duration::from_secs(30),
                user_timeout: Duration::from_secs(30),
            },
            reload_interval: Duration::from_secs(30),
            workers: 2,
        }
    }

    pub async fn proxy(&self, flags: &[SocketAddr]) -> Proxy {
        api_proxy::start(&self.options(flags), ProxyMetrics::unregistered())
            .await
            .unwrap()
    }
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    cpm_core::apply::write_atomic(path, bytes, 0o644, None, None).unwrap();
}

/// A fake API server.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub ready: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
    _blackhole: Option<(socket2::Socket, Vec<std::net::TcpStream>)>,
}

impl Upstream {
    pub async fn start(cluster: &Cluster, name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(AtomicBool::new(true));
        let acceptor = tokio_rustls::TlsAcceptor::from(cluster.server_config());
        let r = ready.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let ready = r.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    serve(tls, name, &ready).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            name,
            addr,
            ready,
            task: Some(task),
            _blackhole: None,
        }
    }

    /// Kills the server: the listener and every connection close. Returns once the server's
    /// task is gone, so its listener is closed (an abort alone takes effect later, and a connect
    /// in between would be accepted and then reset).
    pub async fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Kills the server, then puts a blackhole at its address: a listener with a full accept
    /// queue that is never accepted from, so the kernel drops new SYNs (connects hang).
    pub async fn blackhole(&mut self) {
        self.kill().await;
        let mut socket = None;
        for _ in 0..100 {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_reuse_address(true).unwrap();
            if s.bind(&self.addr.into()).is_ok() {
                socket = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let socket = socket.expect("rebind the upstream's address");
        socket.listen(0).unwrap();
        // Fill the accept queue until a connect hangs.
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        assert!(
            std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(300)).is_err(),
            "the blackhole accepts connections"
        );
        self._blackhole = Some((socket, fillers));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    name: &str,
    ready: &AtomicBool,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match tls.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let reply = |status: u16, body: &str| {
        format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match path {
        "/readyz" if ready.load(Ordering::SeqCst) => {
            let _ = tls.write_all(reply(200, "ok").as_bytes()).await;
        }
        "/readyz" => {
            let _ = tls.write_all(reply(503, "not ready").as_bytes()).await;
        }
        "/id" => {
            let _ = tls.write_all(reply(200, name).as_bytes()).await;
        }
        "/stream" => {
            if tls
                .write_all(format!("HTTP/1.1 200 OK\r\n\r\n{name}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut buf = [0u8; 4096];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        _ => {
            let _ = tls.write_all(reply(404, "").as_bytes()).await;
        }
    }
    let _ = tls.shutdown().await;
}

/// A TLS connection to the API server behind the proxy.
pub async fn connect(proxy: SocketAddr, cluster: &Cluster) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(proxy))
        .await
        .context("connect timed out")??;
    let name = ServerName::try_from("127.0.0.1")?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(cluster.client_config()).connect(name, tcp),
    )
    .await
    .context("TLS handshake timed out")??;
    Ok(tls)
}

/// Which upstream answers a new connection through the proxy.
pub async fn id(proxy: SocketAddr, cluster: &Cluster) -> anyhow::Result<String> {
    let mut tls = connect(proxy, cluster).await?;
    tls.write_all(b"GET /id HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .context("read timed out")??;
    let text = String::from_utf8(out)?;
    match text.split_once("\r\n\r\n") {
        Some((h, body)) if h.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!("unexpected answer {text:?}"),
    }
}

/// A long-lived echo connection (like a watch) and the upstream that serves it.
pub struct Stream {
    pub upstream: String,
    io: BufReader<TlsStream<TcpStream>>,
}

impl Stream {
    pub async fn open(proxy: SocketAddr, cluster: &Cluster) -> anyhow::Result<Self> {
        let mut tls = connect(proxy, cluster).await?;
        tls.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut io = BufReader::new(tls);
        let mut line = String::new();
        let mut upstream = String::new();
        for _ in 0..4 {
            line.clear();
            tokio::time::timeout(Duration::from_secs(10), io.read_line(&mut line))
                .await
                .context("read timed out")??;
            if line.trim().is_empty() || line.starts_with("HTTP/") {
                continue;
            }
            upstream = line.trim().to_string();
            break;
        }
        anyhow::ensure!(!upstream.is_empty(), "no upstream name");
        Ok(Self { upstream, io })
    }

    /// Sends a line and reads it back: true when the connection still works.
    pub async fn echo(&mut self, msg: &str) -> bool {
        let line = format!("{msg}\n");
        let io = self.io.get_mut();
        if io.write_all(line.as_bytes()).await.is_err() || io.flush().await.is_err() {
            return false;
        }
        let mut back = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut back)).await,
            Ok(Ok(n)) if n > 0 && back == line
        )
    }

    /// Sends `data` in 64 KiB chunks, reading each chunk's echo back before the next; returns
    /// what came back. (Sending and reading at once through `tokio::io::split` of the TLS stream
    /// stalled now and then in the client, with every byte already delivered by the proxy.)
    pub async fn roundtrip(&mut self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut back = vec![0u8; data.len()];
        for (sent, got) in data.chunks(64 << 10).zip(back.chunks_mut(64 << 10)) {
            self.io.get_mut().write_all(sent).await.context("send")?;
            self.io.get_mut().flush().await.context("send")?;
            self.io.read_exact(got).await.context("read back")?;
        }
        Ok(back)
    }

    /// Waits up to `limit` for the connection to be closed; true when it was.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut buf = String::new();
        match tokio::time::timeout(limit, self.io.read_line(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}

/// Waits up to `limit` for `cond`, polling.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn health(proxy: &Proxy, addr: SocketAddr) -> Option<Health> {
    proxy.pool.get(addr).map(|u| u.state().health)
}

/// Waits until every address is up.
pub async fn all_up(proxy: &Proxy, addrs: &[SocketAddr]) {
    let ok = eventually(Duration::from_secs(10), || {
        addrs.iter().all(|a| health(proxy, *a) == Some(Health::Up))
    })
    .await;
    assert!(ok, "upstreams not up: {:?}", proxy.pool.addrs());
}

pub fn reloads(proxy: &Proxy, result: &str) -> u64 {
    proxy
        .pool
        .metrics
        .reloads
        .get_or_create(&ResultLabel {
            result: result.into(),
        })
        .get()
}
