//! An in-process Kubernetes API server for tests: HTTPS on a free loopback port with its own CA,
//! client-certificate and bearer-token authentication, discovery, generic storage with
//! kube-apiserver semantics, watches, patches, server-side apply, and fault injection.
//!
//! Tests connect exactly as production code does: through a kubeconfig (rustls, CA data in the
//! kubeconfig) turned into a [`kube::Client`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cpm_testing::apiserver::{ApiServer, Identity, UserInfo};
//! use k8s_openapi::api::core::v1::ConfigMap;
//!
//! let server = ApiServer::start().await?;
//! let client = server.client(&Identity::Cert(UserInfo::new("admin", &["system:masters"]))).await?;
//! let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
//! let list = cms.list(&Default::default()).await?;
//! assert!(list.items.is_empty());
//! # Ok(()) }
//! ```
//!
//! What differs from a real kube-apiserver is listed in `docs/testing.md`.

mod faults;
mod handler;
mod patch;
mod resources;
mod selectors;
mod status;
mod store;
mod tls;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use faults::{CutMode, Faults, RequestMatch};
pub use status::{ApiError, Details};
pub use tls::CertAndKey;

/// An authenticated user: username and groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The username (a client certificate's CN).
    pub username: String,
    /// The groups (a client certificate's O values).
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with groups.
    pub fn new(username: &str, groups: &[&str]) -> Self {
        Self {
            username: username.to_string(),
            groups: groups.iter().map(ToString::to_string).collect(),
        }
    }
}

/// How a client authenticates.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A client certificate issued by the server's CA for this user.
    Cert(UserInfo),
    /// A bearer token (registered with [`ApiServer::add_token`], or not, to test 401).
    Token(String),
    /// No credentials: answered 401, except GETs of the public-info paths (`/healthz`, `/livez`,
    /// `/readyz`, `/version`), served as `system:anonymous`.
    Anonymous,
}

/// What a request or SubjectAccessReview asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource plural (empty for non-resource requests).
    pub resource: String,
    /// Subresource (`status`) or empty.
    pub subresource: String,
    /// Namespace or empty.
    pub namespace: String,
    /// Object name or empty.
    pub name: String,
    /// Non-resource path (e.g. `/version`) or empty.
    pub path: String,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// Why (shown in SubjectAccessReview status).
    pub reason: String,
}

impl Decision {
    /// Allowed, with a reason.
    pub fn allow(reason: &str) -> Self {
        Self {
            allowed: true,
            reason: reason.into(),
        }
    }

    /// Denied (no opinion), with a reason.
    pub fn deny(reason: &str) -> Self {
        Self {
            allowed: false,
            reason: reason.into(),
        }
    }
}

/// A scripted authorizer: answers SubjectAccessReviews and, when enforced, every request.
pub type Authorizer = Arc<dyn Fn(&Attributes) -> Decision + Send + Sync>;
/// A scripted token reviewer: answers TokenReviews.
pub type TokenReviewer = Arc<dyn Fn(&str) -> Option<UserInfo> + Send + Sync>;

/// One request the server answered, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// The authenticated username, if any.
    pub user: Option<String>,
    /// The HTTP status code of the response (200 for a watch that started).
    pub code: u16,
}

/// Knobs of a test API server.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Watch events retained for resuming (like etcd's compaction window); a watch or continue
    /// token older than this is answered 410 Expired.
    pub history_window: usize,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// The CA that signs the serving certificate and verifies client certificates (a cluster
    /// CA from a cpm bundle, so kubeconfigs cpm writes work against the server); a fresh CA
    /// when `None`.
    pub ca: Option<CertAndKey>,
    /// Where to listen: `127.0.0.1:0` (a free loopback port) by default. Another address (a
    /// bridge address the node simulator's network namespaces reach) is added to the serving
    /// certificate's SANs.
    pub listen: SocketAddr,
    /// More IP addresses for the serving certificate (a Service ClusterIP that is DNATed to
    /// the server, as `kubernetes.default`'s first service IP is).
    pub serving_ips: Vec<std::net::IpAddr>,
}

impl ApiServerOptions {
    /// 10 000 retained events, a bookmark every second.
    pub fn standard() -> Self {
        Self {
            history_window: 10_000,
            bookmark_interval: Duration::from_secs(1),
            ca: None,
            listen: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            serving_ips: Vec::new(),
        }
    }
}

/// The test API server could not start or make a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// Binding the listener failed.
    #[error("cannot bind the test API server")]
    Bind(#[source] std::io::Error),
    /// Certificate or TLS setup failed.
    #[error("tls setup: {0}")]
    Tls(String),
    /// Building a kube config or client failed.
    #[error("kube client: {0}")]
    Kube(String),
}

pub(crate) struct Auth {
    tokens: HashMap<String, UserInfo>,
    reviewer: Option<TokenReviewer>,
    authorizer: Authorizer,
    enforce: bool,
}

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) store: Mutex<store::Store>,
    pub(crate) changed: tokio::sync::watch::Sender<u64>,
    pub(crate) faults: Faults,
    pub(crate) auth: Mutex<Auth>,
    pub(crate) addr: SocketAddr,
    pub(crate) bookmark_interval: Duration,
    pub(crate) requests: Mutex<Vec<RequestRecord>>,
    /// Bumped on every answered request, so tests can await one.
    pub(crate) answered: tokio::sync::watch::Sender<usize>,
    /// Watches answered with a 410 Expired ERROR event.
    pub(crate) expired_watches: std::sync::atomic::AtomicUsize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.store)
    }

    /// Wakes watches after a commit.
    pub(crate) fn notify(&self) {
        let rv = self.store().rv;
        self.changed.send_replace(rv);
    }

    pub(crate) fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        lock(&self.auth).tokens.get(token).cloned()
    }

    pub(crate) fn review_token(&self, token: &str) -> Option<UserInfo> {
        let (reviewer, known) = {
            let a = lock(&self.auth);
            (a.reviewer.clone(), a.tokens.get(token).cloned())
        };
        match reviewer {
            Some(r) => r(token),
            None => known,
        }
    }

    pub(crate) fn authorize(&self, attrs: &Attributes) -> Decision {
        let authorizer = lock(&self.auth).authorizer.clone();
        authorizer(attrs)
    }

    pub(crate) fn enforcing(&self) -> bool {
        lock(&self.auth).enforce
    }
}

/// A running test API server; stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    ca: Arc<tls::Ca>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// Starts a server with [`ApiServerOptions::standard`].
    pub async fn start() -> Result<Self, ApiServerError> {
        Self::start_with(ApiServerOptions::standard()).await
    }

    /// Starts a server on `opts.listen` (127.0.0.1 with a free port by default).
    pub async fn start_with(opts: ApiServerOptions) -> Result<Self, ApiServerError> {
        let ca = Arc::new(match &opts.ca {
            Some(given) => tls::Ca::from_pem(given)?,
            None => tls::Ca::generate()?,
        });
        let extra_ips: Vec<std::net::IpAddr> = Some(opts.listen.ip())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .into_iter()
            .chain(opts.serving_ips.iter().copied())
            .collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&extra_ips)?);
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(ApiServerError::Bind)?;
        let addr = listener.local_addr().map_err(ApiServerError::Bind)?;
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new(opts.history_window)),
            changed: tokio::sync::watch::channel(1).0,
            faults: Faults::new(),
            auth: Mutex::new(Auth {
                tokens: HashMap::new(),
                reviewer: None,
                authorizer: Arc::new(|_: &Attributes| Decision::allow("allowed by default")),
                enforce: false,
            }),
            addr,
            bookmark_interval: opts.bookmark_interval,
            requests: Mutex::new(Vec::new()),
            answered: tokio::sync::watch::channel(0).0,
            expired_watches: std::sync::atomic::AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, acceptor, shared.clone()));
        Ok(Self { shared, ca, task })
    }

    /// `https://<listen address>:<port>` (`https://127.0.0.1:<port>` by default).
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    /// Issues a client certificate for `user` (CN = username, O = groups).
    pub fn issue_client_cert(&self, user: &UserInfo) -> Result<CertAndKey, ApiServerError> {
        self.ca.client(user)
    }

    /// Registers a bearer token for `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        lock(&self.shared.auth)
            .tokens
            .insert(token.to_string(), user);
    }

    /// Scripts TokenReview answers (default: the registered bearer tokens).
    pub fn set_token_reviewer(
        &self,
        reviewer: impl Fn(&str) -> Option<UserInfo> + Send + Sync + 'static,
    ) {
        lock(&self.shared.auth).reviewer = Some(Arc::new(reviewer));
    }

    /// Scripts SubjectAccessReview answers (default: allow everything); with
    /// [`ApiServer::enforce_authorization`] it also decides every request (403 when denied).
    pub fn set_authorizer(
        &self,
        authorizer: impl Fn(&Attributes) -> Decision + Send + Sync + 'static,
    ) {
        lock(&self.shared.auth).authorizer = Arc::new(authorizer);
    }

    /// Turns request authorization through the scripted authorizer on or off (default off).
    pub fn enforce_authorization(&self, on: bool) {
        lock(&self.shared.auth).enforce = on;
    }

    /// The fault switches.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The current resourceVersion (the global revision).
    pub fn revision(&self) -> u64 {
        self.shared.store().rv
    }

    /// Drops all retained watch history, so every older resourceVersion is now 410 Expired.
    pub fn compact(&self) {
        self.shared.store().compact();
        self.shared.notify();
    }

    /// Changes how many events are retained.
    pub fn set_history_window(&self, events: usize) {
        self.shared.store().set_window(events);
        self.shared.notify();
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// Waits until a request matching `pred` has been answered (including earlier ones).
    pub async fn wait_for_request(&self, pred: impl Fn(&RequestRecord) -> bool) {
        let mut answered = self.shared.answered.subscribe();
        loop {
            if lock(&self.shared.requests).iter().any(&pred) {
                return;
            }
            if answered.changed().await.is_err() {
                return;
            }
        }
    }

    /// How many watches were answered with a `410 Expired` ERROR event.
    pub fn expired_watches(&self) -> usize {
        self.shared
            .expired_watches
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A kubeconfig YAML document for `identity`, with the CA (and client certificate) inline.
    pub fn kubeconfig_yaml(&self, identity: &Identity) -> Result<String, ApiServerError> {
        let user = match identity {
            Identity::Cert(u) => {
                let ck = self.issue_client_cert(u)?;
                format!(
                    "    client-certificate-data: {}\n    client-key-data: {}\n",
                    B64.encode(&ck.cert_pem),
                    B64.encode(&ck.key_pem)
                )
            }
            Identity::Token(t) => format!("    token: {t:?}\n"),
            Identity::Anonymous => "    {}\n".to_string(),
        };
        let user = if matches!(identity, Identity::Anonymous) {
            "  user: {}\n".to_string()
        } else {
            format!("  user:\n{user}")
        };
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: test\n{user}contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\n",
            self.url(),
            B64.encode(self.ca_pem()),
        ))
    }

    /// A [`kube::Config`] for `identity`, built from [`ApiServer::kubeconfig_yaml`].
    pub async fn config(&self, identity: &Identity) -> Result<kube::Config, ApiServerError> {
        let yaml = self.kubeconfig_yaml(identity)?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)
            .map_err(|e| ApiServerError::Kube(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| ApiServerError::Kube(e.to_string()))
    }

    /// A [`kube::Client`] for `identity`.
    pub async fn client(&self, identity: &Identity) -> Result<kube::Client, ApiServerError> {
        let config = self.config(identity).await?;
        kube::Client::try_from(config).map_err(|e| ApiServerError::Kube(e.to_string()))
    }

    /// A client in `system:masters`.
    pub async fn admin_client(&self) -> Result<kube::Client, ApiServerError> {
        self.client(&Identity::Cert(UserInfo::new(
            "test-admin",
            &["system:masters"],
        )))
        .await
    }
}

async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let cert_user = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|c| tls::user_from_cert(c));
                    let svc = hyper::service::service_fn(move |req| {
                        handler::handle(shared.clone(), cert_user.clone(), req)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
