//! `cpm-test-apiserver kube-controller-manager | kube-scheduler`: stand-ins that serve what
//! the kubelet, cpm and Prometheus look at on the real components' secure ports.
//!
//! - `/healthz`, `/livez`, `/readyz` (and their sub-checks): `ok`, anonymously (the real
//!   components' `--authorization-always-allow-paths`).
//! - `/metrics`: authenticated as the real components delegate: a front proxy's certificate with
//!   identity headers, a client certificate of `--client-ca-file`, or a bearer token checked by
//!   TokenReview through `--authentication-kubeconfig`; the CAs also come from
//!   `kube-system/extension-apiserver-authentication`, read through that kubeconfig. Then
//!   authorised: `system:masters` always, anyone else by SubjectAccessReview through
//!   `--authorization-kubeconfig`. No credentials: 401 (the real components answer 403 to
//!   `system:anonymous` through RBAC, which the test store does not evaluate). A few metric
//!   families of the real components are served.
//! - With `--leader-elect` (the scheduler: `leaderElection.leaderElect` in `--config`), the
//!   component's Lease in `kube-system` is held and renewed through `--kubeconfig` (the
//!   scheduler: `clientConnection.kubeconfig`), with client-go's timings unless the flags set
//!   others.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cpm_core::lease::{LeaseConfig, LeaseLock};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::cli::StandInArgs;
use super::serving::{self, ClientRoots, TlsFlags};
use super::{ControlPlaneError, kube_version, read, terminated};
use crate::apiserver::listener::{self, Conn, Limits};
use crate::apiserver::{Body, CertAuth, CertOutcome, RequestHeader, UserInfo, bearer, ca_certs};

/// Which component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Component {
    /// With the PEM of `--root-ca-file`, which its leader publishes.
    ControllerManager {
        root_ca: Option<String>,
    },
    Scheduler,
}

impl Component {
    fn name(&self) -> &'static str {
        match self {
            Self::ControllerManager { .. } => "kube-controller-manager",
            Self::Scheduler => "kube-scheduler",
        }
    }

    fn default_port(&self) -> u16 {
        match self {
            Self::ControllerManager { .. } => 10257,
            Self::Scheduler => 10259,
        }
    }
}

/// Leader election, resolved from the flags or the scheduler's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Election {
    pub(crate) enabled: bool,
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) lease_duration: Duration,
    pub(crate) renew_deadline: Duration,
    pub(crate) retry_period: Duration,
    pub(crate) name: String,
    pub(crate) namespace: String,
}

/// The election of a component from its flags and, for the scheduler, its configuration file
/// (whose `clientConnection` and `leaderElection` win, as with the real scheduler; an absolute
/// kubeconfig path in it is taken under `root`, [`super::ROOT_ENV`]).
pub(crate) fn election(
    component: &Component,
    args: &StandInArgs,
    config: Option<&Value>,
    root: Option<&Path>,
) -> Result<Election, ControlPlaneError> {
    let mut e = Election {
        enabled: args.leader_elect.unwrap_or(true),
        kubeconfig: args.kubeconfig.clone(),
        lease_duration: args
            .leader_elect_lease_duration
            .unwrap_or(Duration::from_secs(15)),
        renew_deadline: args
            .leader_elect_renew_deadline
            .unwrap_or(Duration::from_secs(10)),
        retry_period: args
            .leader_elect_retry_period
            .unwrap_or(Duration::from_secs(2)),
        name: args
            .leader_elect_resource_name
            .clone()
            .unwrap_or_else(|| component.name().to_string()),
        namespace: args
            .leader_elect_resource_namespace
            .clone()
            .unwrap_or_else(|| "kube-system".to_string()),
    };
    let Some(config) = config else {
        return Ok(e);
    };
    let s = |p: &str| config.pointer(p).and_then(Value::as_str);
    if let Some(k) = s("/clientConnection/kubeconfig").filter(|k| !k.is_empty()) {
        e.kubeconfig = Some(match (root, k.strip_prefix('/')) {
            (Some(root), Some(relative)) => root.join(relative),
            _ => PathBuf::from(k),
        });
    }
    if let Some(on) = config
        .pointer("/leaderElection/leaderElect")
        .and_then(Value::as_bool)
    {
        e.enabled = on;
    }
    let duration = |p: &str| -> Result<Option<Duration>, ControlPlaneError> {
        s(p).map(super::parse_go_duration)
            .transpose()
            .map_err(|why| ControlPlaneError::Usage(format!("--config: {p}: {why}")))
    };
    if let Some(d) = duration("/leaderElection/leaseDuration")? {
        e.lease_duration = d;
    }
    if let Some(d) = duration("/leaderElection/renewDeadline")? {
        e.renew_deadline = d;
    }
    if let Some(d) = duration("/leaderElection/retryPeriod")? {
        e.retry_period = d;
    }
    if let Some(n) = s("/leaderElection/resourceName").filter(|n| !n.is_empty()) {
        e.name = n.to_string();
    }
    if let Some(n) = s("/leaderElection/resourceNamespace").filter(|n| !n.is_empty()) {
        e.namespace = n.to_string();
    }
    Ok(e)
}

/// The scheduler's `--config` (a `KubeSchedulerConfiguration`).
pub(crate) fn scheduler_config(path: &Path) -> Result<Value, ControlPlaneError> {
    let text = read(path)?;
    let value: Value = serde_saphyr::from_str(&text).map_err(|e| {
        ControlPlaneError::Usage(format!("--config {}: not YAML: {e}", path.display()))
    })?;
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !api_version.starts_with("kubescheduler.config.k8s.io/")
        || kind != "KubeSchedulerConfiguration"
    {
        return Err(ControlPlaneError::Usage(format!(
            "--config {}: not a KubeSchedulerConfiguration (apiVersion {api_version:?}, kind {kind:?})",
            path.display()
        )));
    }
    Ok(value)
}

/// What requests share.
struct StandIn {
    component: Component,
    version: String,
    started: SystemTime,
    /// CAs from the flags.
    flag_client_cas: Vec<rustls_pki_types::CertificateDer<'static>>,
    flag_rh_cas: Vec<rustls_pki_types::CertificateDer<'static>>,
    request_header: RequestHeader,
    /// The current authenticators (flags plus the ConfigMap).
    cert_auth: Mutex<Arc<CertAuth>>,
    roots: Arc<ClientRoots>,
    authn: Option<kube::Client>,
    authz: Option<kube::Client>,
    electing: bool,
    leader: AtomicBool,
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

impl StandIn {
    /// Replaces the authenticators with the flags' CAs plus `cm_client` and `cm_rh`.
    fn set_cas(
        &self,
        cm_client: &[rustls_pki_types::CertificateDer<'static>],
        cm_rh: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Result<(), ControlPlaneError> {
        let union = |a: &[rustls_pki_types::CertificateDer<'static>],
                     b: &[rustls_pki_types::CertificateDer<'static>]| {
            let mut out = a.to_vec();
            out.extend(b.iter().filter(|c| !a.contains(c)).cloned());
            out
        };
        let rh = union(&self.flag_rh_cas, cm_rh);
        let auth = CertAuth {
            client_cas: union(&self.flag_client_cas, cm_client),
            request_header: (!rh.is_empty()).then(|| (rh, self.request_header.clone())),
        };
        self.roots.set(&auth.roots())?;
        *crate::apiserver::lock(&self.cert_auth) = Arc::new(auth);
        Ok(())
    }

    /// Reads `kube-system/extension-apiserver-authentication` and adds its CAs.
    async fn load_authentication_config(&self, client: &kube::Client) -> Result<(), String> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
        let cm = api
            .get("extension-apiserver-authentication")
            .await
            .map_err(|e| e.to_string())?;
        let data = cm.data.unwrap_or_default();
        let cas = |key: &str| {
            data.get(key)
                .map(|pem| ca_certs(pem).map_err(|e| e.to_string()))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        self.set_cas(
            &cas("client-ca-file")?,
            &cas("requestheader-client-ca-file")?,
        )
        .map_err(|e| e.to_string())
    }

    /// The user of a request to `/metrics`, or the refusal.
    async fn authenticate(
        &self,
        conn: &Conn,
        headers: &http::HeaderMap,
    ) -> Result<UserInfo, Response<Body>> {
        let unauthorized = || text(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
        let auth = crate::apiserver::lock(&self.cert_auth).clone();
        match auth.authenticate(conn.peer_certs.first(), headers) {
            CertOutcome::User { user, .. } => return Ok(user),
            CertOutcome::Refused => return Err(unauthorized()),
            CertOutcome::Next => {}
        }
        let Some(Some(token)) = bearer(headers) else {
            return Err(unauthorized());
        };
        let Some(client) = &self.authn else {
            return Err(unauthorized());
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(client.clone());
        match api.create(&PostParams::default(), &review).await {
            Ok(r) => {
                let status = r.status.unwrap_or_default();
                let user = status.user.unwrap_or_default();
                match (status.authenticated, user.username) {
                    (Some(true), Some(username)) => Ok(UserInfo {
                        username,
                        groups: user.groups.unwrap_or_default(),
                        extra: user.extra.unwrap_or_default().into_iter().collect(),
                    }),
                    _ => Err(unauthorized()),
                }
            }
            Err(e) => {
                warn!(error = %e, "TokenReview failed");
                Err(unauthorized())
            }
        }
    }

    /// Whether `user` may GET `path`.
    async fn authorize(&self, user: &UserInfo, path: &str) -> Result<bool, String> {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Ok(true);
        }
        let Some(client) = &self.authz else {
            return Ok(false);
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some("get".into()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(client.clone());
        let r = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.status.is_some_and(|s| s.allowed))
    }

    fn metrics(&self) -> String {
        let v = crate::apiserver::version_doc(&self.version);
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP kubernetes_build_info [ALPHA] A metric with a constant '1' value labeled by major, minor, git version, git commit, git tree state, build date, Go version, and compiler from which Kubernetes was built, and platform on which it is running."
        );
        let _ = writeln!(out, "# TYPE kubernetes_build_info gauge");
        let _ = writeln!(
            out,
            "kubernetes_build_info{{build_date=\"{}\",compiler=\"{}\",git_commit=\"{}\",git_tree_state=\"{}\",git_version=\"{}\",go_version=\"{}\",major=\"{}\",minor=\"{}\",platform=\"{}\"}} 1",
            s("buildDate"),
            s("compiler"),
            s("gitCommit"),
            s("gitTreeState"),
            s("gitVersion"),
            s("goVersion"),
            s("major"),
            s("minor"),
            s("platform"),
        );
        if self.electing {
            let _ = writeln!(
                out,
                "# HELP leader_election_master_status [ALPHA] Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name."
            );
            let _ = writeln!(out, "# TYPE leader_election_master_status gauge");
            let _ = writeln!(
                out,
                "leader_election_master_status{{name=\"{}\"}} {}",
                self.component.name(),
                u8::from(self.leader.load(Ordering::SeqCst))
            );
        }
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let _ = writeln!(
            out,
            "# HELP process_start_time_seconds [STABLE] Start time of the process since unix epoch in seconds."
        );
        let _ = writeln!(out, "# TYPE process_start_time_seconds gauge");
        let _ = writeln!(out, "process_start_time_seconds {started}");
        out
    }
}

/// One request.
async fn handle(s: Arc<StandIn>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    let health = ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if health {
        return text(StatusCode::OK, "ok".into());
    }
    let user = match s.authenticate(&conn, req.headers()).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    match s.authorize(&user, &path).await {
        Ok(true) => {}
        Ok(false) => {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: User \"{}\" cannot get path \"{path}\"\n",
                    user.username
                ),
            );
        }
        Err(e) => {
            warn!(error = %e, "SubjectAccessReview failed");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "authorization failed\n".into(),
            );
        }
    }
    if path == "/metrics" {
        let mut resp = text(StatusCode::OK, s.metrics());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return resp;
    }
    text(StatusCode::NOT_FOUND, "404 page not found\n".into())
}

/// A client from an optional kubeconfig.
async fn client(path: Option<&Path>) -> Result<Option<kube::Client>, ControlPlaneError> {
    cpm_core::kube::optional_client(path)
        .await
        .map_err(ControlPlaneError::Kube)
}

/// This contender's identity: `<hostname>_<random>`, as client-go names it.
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}_{:032x}", rand::random::<u128>())
}

/// Success, or a conflict with an object that is already there.
fn created_or_exists<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Ensures a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in `namespace`.
async fn publish_to(
    client: &kube::Client,
    namespace: &str,
    root_ca: &str,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let meta = |name: &str| kube::api::ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..kube::api::ObjectMeta::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let sa = ServiceAccount {
        metadata: meta("default"),
        ..ServiceAccount::default()
    };
    created_or_exists(sas.create(&PostParams::default(), &sa).await)?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let data: std::collections::BTreeMap<String, String> =
        [("ca.crt".to_string(), root_ca.to_string())].into();
    match cms.get_opt("kube-root-ca.crt").await? {
        Some(cm) if cm.data.as_ref() == Some(&data) => Ok(()),
        Some(mut cm) => {
            cm.data = Some(data);
            cms.replace("kube-root-ca.crt", &PostParams::default(), &cm)
                .await
                .map(|_| ())
        }
        None => {
            let cm = ConfigMap {
                metadata: meta("kube-root-ca.crt"),
                data: Some(data),
                ..ConfigMap::default()
            };
            created_or_exists(cms.create(&PostParams::default(), &cm).await)
        }
    }
}

/// The controller manager leader's chores, for every namespace as namespaces come (a watch).
async fn publish(client: kube::Client, root_ca: String) {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::runtime::watcher;
    let api: Api<Namespace> = Api::all(client.clone());
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let ns = match event {
            Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => ns,
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "namespace watch");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(name) = ns.metadata.name else {
            continue;
        };
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Err(e) = publish_to(&client, &name, &root_ca).await {
            warn!(namespace = %name, error = %e, "cannot publish kube-root-ca.crt or the default ServiceAccount");
        }
    }
}

/// Holds the Lease while it can, and tries again when it is lost; the controller manager's
/// leader does its chores while it leads.
async fn elect(s: Arc<StandIn>, client: kube::Client, e: Election) {
    let cfg = LeaseConfig {
        namespace: e.namespace,
        name: e.name,
        identity: identity(),
        lease_duration: e.lease_duration,
        renew_deadline: e.renew_deadline,
        retry_period: e.retry_period,
    };
    let never = CancellationToken::new();
    loop {
        let lock = match LeaseLock::new(client.clone(), cfg.clone()) {
            Ok(l) => l,
            Err(err) => {
                warn!(error = %err, "leader election disabled");
                return;
            }
        };
        match lock.acquire(&never).await {
            Ok(guard) => {
                s.leader.store(true, Ordering::SeqCst);
                info!(lease = %cfg.name, "became leader");
                let chores = match &s.component {
                    Component::ControllerManager {
                        root_ca: Some(root_ca),
                    } => Some(tokio::spawn(publish(client.clone(), root_ca.clone()))),
                    _ => None,
                };
                guard.lost().await;
                if let Some(task) = chores {
                    task.abort();
                }
                s.leader.store(false, Ordering::SeqCst);
                warn!(lease = %cfg.name, "leader election lost");
            }
            Err(err) => {
                debug!(error = %err, "cannot acquire the lease");
                tokio::time::sleep(cfg.retry_period).await;
            }
        }
    }
}

/// Serves until SIGTERM or SIGINT.
pub(crate) async fn run(
    component: Component,
    args: StandInArgs,
    config: Option<PathBuf>,
) -> Result<(), ControlPlaneError> {
    let config = config.as_deref().map(scheduler_config).transpose()?;
    let root = std::env::var_os(super::ROOT_ENV).map(PathBuf::from);
    let election = election(&component, &args, config.as_ref(), root.as_deref())?;
    let provider = serving::provider(&args.tls_cipher_suites)?;
    let roots = Arc::new(ClientRoots::new(provider.clone()));
    let cas = |p: &Option<PathBuf>| -> Result<Vec<_>, ControlPlaneError> {
        p.as_deref()
            .map(serving::read_cas)
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let name = component.name();
    let port = args.secure_port.unwrap_or(component.default_port());
    let standin = Arc::new(StandIn {
        component,
        version: kube_version(),
        started: SystemTime::now(),
        flag_client_cas: cas(&args.client_ca_file)?,
        flag_rh_cas: cas(&args.requestheader_client_ca_file)?,
        request_header: RequestHeader {
            client_ca_pem: String::new(),
            allowed_names: args
                .requestheader_allowed_names
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            username_headers: args.requestheader_username_headers.clone(),
            group_headers: args.requestheader_group_headers.clone(),
            extra_headers_prefixes: args.requestheader_extra_headers_prefix.clone(),
        },
        cert_auth: Mutex::new(Arc::new(CertAuth {
            client_cas: Vec::new(),
            request_header: None,
        })),
        roots: roots.clone(),
        authn: client(args.authentication_kubeconfig.as_deref()).await?,
        authz: client(args.authorization_kubeconfig.as_deref()).await?,
        electing: election.enabled,
        leader: AtomicBool::new(false),
    });
    standin.set_cas(&[], &[])?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !args.bind_address.is_unspecified() {
        names.push(args.bind_address.to_string());
    }
    let tls = serving::server_config(
        TlsFlags {
            cert: args.tls_cert_file.as_deref(),
            key: args.tls_private_key_file.as_deref(),
            min_version: args.tls_min_version.as_deref(),
        },
        &names,
        &provider,
        roots,
    )?;
    let addr = SocketAddr::new(args.bind_address, port);
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| ControlPlaneError::Bind { addr, source })?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(authn) = standin.authn.clone() {
        let s = standin.clone();
        tasks.spawn(async move {
            // Until the front has published it, then once a minute for rotations.
            loop {
                let wait = match s.load_authentication_config(&authn).await {
                    Ok(()) => Duration::from_secs(60),
                    Err(e) => {
                        debug!(error = %e, "extension-apiserver-authentication not readable yet");
                        Duration::from_secs(5)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
    }
    if election.enabled {
        match client(election.kubeconfig.as_deref()).await? {
            Some(c) => {
                tasks.spawn(elect(standin.clone(), c, election.clone()));
            }
            None => warn!("leader election asked for but no kubeconfig: not electing"),
        }
    }
    {
        let s = standin.clone();
        tasks.spawn(listener::serve(
            tcp,
            tokio_rustls::TlsAcceptor::from(tls),
            Limits::standard(),
            move |conn, req| handle(s.clone(), conn, req),
        ));
    }
    info!(component = name, %addr, "stand-in serving");
    let result = terminated().await;
    tasks.abort_all();
    info!(component = name, "stand-in stopping");
    result
}
