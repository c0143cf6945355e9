//! Acceptance tests of metrics-rbac-proxy over real TLS on loopback: the project's test API
//! server answers TokenReviews and SubjectAccessReviews (and counts them), fake metrics upstreams
//! count the requests that reach them, and the proxy runs in-process (or as a process in
//! `process.rs`).

mod authn;
mod authz;
mod process;
mod upstreams;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use cpm_core::config::KeyAlgorithm;
use cpm_core::pki::{Ca, CertSpec, Key, Usage};
use cpm_testing::apiserver::{ApiServer, Attributes, CertAndKey, Decision};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_rbac_proxy::auth::AuthOptions;
use metrics_rbac_proxy::cache::CacheOptions;
use metrics_rbac_proxy::metrics::ProxyMetrics;
use metrics_rbac_proxy::routes::{AllowRule, RouteSpec, UpstreamTls};
use metrics_rbac_proxy::upstream::UpstreamLimits;
use metrics_rbac_proxy::{Proxy, ProxyOptions, Serving};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const TOKENREVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
pub const SARS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// A test CA made with cpm's own PKI code, and a directory for files.
pub struct Pki {
    pub ca: Ca,
    pub ca_pem: String,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn generate(name: &str) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ca_pem = CertSpec::new(name, Usage::Ca, now, 1)
            .self_signed(&key)
            .unwrap();
        let ca = Ca::from_pem(&ca_pem, &key.to_pem()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = Self { ca, ca_pem, dir };
        write(&pki.path("ca.crt"), pki.ca_pem.as_bytes());
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a leaf (`127.0.0.1` SAN) and writes `<stem>.crt` and `<stem>.key`.
    pub fn issue(&self, stem: &str, cn: &str, orgs: &[&str], usage: Usage) -> (PathBuf, PathBuf) {
        let now = time::OffsetDateTime::now_utc();
        let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut spec = CertSpec::new(cn, usage, now, 1);
        spec.organizations = orgs.iter().map(ToString::to_string).collect();
        spec.sans = vec!["127.0.0.1".parse().unwrap()];
        let cert = self.ca.issue(&spec, &key).unwrap();
        let (c, k) = (
            self.path(&format!("{stem}.crt")),
            self.path(&format!("{stem}.key")),
        );
        write(&c, cert.as_bytes());
        write(&k, key.to_pem().as_bytes());
        (c, k)
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    cpm_core::apply::write_atomic(path, bytes, 0o600, None, None).unwrap();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client TLS configuration trusting `roots`, optionally with a client certificate.
pub fn client_tls(
    roots: rustls::RootCertStore,
    cert: Option<(&Path, &Path)>,
) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match cert {
        Some((c, k)) => {
            let certs = CertificateDer::pem_file_iter(c)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            b.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(k).unwrap())
                .unwrap()
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// Writes a test API server client certificate as files.
pub fn cert_files(dir: &Path, stem: &str, ck: &CertAndKey) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    write(&c, ck.cert_pem.as_bytes());
    write(&k, ck.key_pem.as_bytes());
    (c, k)
}

/// One keep-alive HTTPS connection to the proxy.
pub struct Scraper {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Scraper {
    pub async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await
            .context("TLS handshake")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    /// GETs `path`; returns status and body.
    pub async fn get(&mut self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut req = hyper::Request::get(path).header("host", "127.0.0.1");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self.sender.send_request(req.body(Empty::new())?).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One request on a new connection.
pub async fn get_once(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, Bytes)> {
    Scraper::connect(addr, tls).await?.get(path, token).await
}

/// A fake metrics endpoint: counts requests, remembers the Authorization headers it got.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub authorization: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    /// Plain http, answering every path with `body`.
    pub async fn start(body: &'static str) -> Self {
        Self::start_with(body, None).await
    }

    /// With `tls`: https (client certificates as the config says).
    pub async fn start_with(body: &'static str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let authorization = Arc::new(Mutex::new(Vec::new()));
        let (h, a) = (hits.clone(), authorization.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (h, a, tls) = (h.clone(), a.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        a.lock().unwrap().push(
                            req.headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap_or_default().to_string()),
                        );
                        async move {
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(body.as_bytes()),
                            )))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(cfg) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            hits,
            authorization,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub const PAYLOAD: &str = "# TYPE up gauge\nup 1\n";

/// A plain-http route.
pub fn route(name: &str, upstream: &str) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        upstream: upstream.into(),
        path: None,
        tls: UpstreamTls::default(),
        token_file: None,
        resource_attributes: None,
    }
}

/// The proxy, its test API server, its serving PKI and its upstream.
pub struct Env {
    pub api: ApiServer,
    pub pki: Pki,
    pub upstream: FakeUpstream,
    pub proxy: Proxy,
    /// Every SubjectAccessReview the API server answered.
    pub reviews: Arc<Mutex<Vec<Attributes>>>,
}

/// Options for a proxy in front of `routes`, serving a certificate from `pki`.
pub fn options(pki: &Pki, routes: Vec<RouteSpec>, allow: Vec<AllowRule>) -> ProxyOptions {
    let (cert, key) = pki.issue("serving", "metrics-rbac-proxy", &[], Usage::Server);
    ProxyOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        serving: Serving::Files { cert, key },
        tls_reload_interval: Duration::from_secs(60),
        client_ca_file: None,
        routes,
        auth: AuthOptions {
            audiences: Vec::new(),
            review_timeout: Duration::from_secs(5),
            allow,
            cache: CacheOptions {
                allow_ttl: Duration::from_secs(300),
                deny_ttl: Duration::from_secs(30),
                max_entries: 1000,
            },
        },
        limits: UpstreamLimits {
            timeout: Duration::from_secs(10),
            max_response_bytes: 1 << 20,
        },
    }
}

impl Env {
    /// A proxy with one route `/etcd/metrics`; the API server knows token `good` (user `prom`)
    /// and `bad` (user `intruder`), and allows everything but `intruder`.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`Env::start`], with `tweak` applied to the options.
    pub async fn start_with(tweak: impl FnOnce(&mut ProxyOptions)) -> Self {
        let api = ApiServer::start().await.unwrap();
        api.add_token(
            "good",
            cpm_testing::apiserver::UserInfo::new("prom", &["monitoring"]),
        );
        api.add_token(
            "bad",
            cpm_testing::apiserver::UserInfo::new("intruder", &[]),
        );
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let r = reviews.clone();
        api.set_authorizer(move |attrs: &Attributes| {
            r.lock().unwrap().push(attrs.clone());
            if attrs.user.username == "intruder" {
                Decision::deny("no")
            } else {
                Decision::allow("yes")
            }
        });
        let pki = Pki::generate("serving-ca");
        let upstream = FakeUpstream::start(PAYLOAD).await;
        let mut opts = options(&pki, vec![route("etcd", &upstream.url())], Vec::new());
        tweak(&mut opts);
        let mut config = api
            .config(&cpm_testing::apiserver::Identity::Cert(
                cpm_testing::apiserver::UserInfo::new("metrics-rbac-proxy", &[]),
            ))
            .await
            .unwrap();
        config.default_retry = false;
        let client = kube::Client::try_from(config).unwrap();
        let proxy = metrics_rbac_proxy::start(&opts, client, ProxyMetrics::unregistered())
            .await
            .unwrap();
        Self {
            api,
            pki,
            upstream,
            proxy,
            reviews,
        }
    }

    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        client_tls(self.pki.roots(), None)
    }

    /// One GET on a new connection.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Bytes) {
        get_once(self.proxy.addr, self.tls(), path, token)
            .await
            .unwrap()
    }

    /// How many requests on `path` the API server answered.
    pub fn api_calls(&self, path: &str) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}
