//! `cpm-test-apiserver kube-apiserver`: the front a simulated master runs as its kube-apiserver
//! static pod.
//!
//! It serves `/livez` (the process is up), `/readyz` and `/healthz` (the store answers),
//! `/version` ([`super::VERSION_ENV`]) itself and forwards every other request to the store:
//! method, path, query, headers and body as they come (streamed), the answer likewise (a watch
//! streams until either side ends it). Who the client is, it decides first, in kube-apiserver's
//! order: a front proxy's certificate plus `--requestheader-username-headers`, then a client
//! certificate of `--client-ca-file`; that identity goes to the store in `X-Remote-User`,
//! `X-Remote-Group` and `X-Remote-Extra-*` over the front's `--proxy-client-cert-file`
//! certificate, which the store trusts as a front proxy. A bearer token passes through unchanged
//! for the store to authenticate; identity headers a client sent itself never do.
//!
//! Like kube-apiserver, it publishes `kube-system/extension-apiserver-authentication` (its
//! client and front-proxy CAs, for the components' delegated authentication) and keeps itself
//! in the `default/kubernetes` Service's endpoints ([`super::endpoints`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::cli::KubeApiserverArgs;
use super::client::{StoreClient, UpBody, store_client};
use super::endpoints;
use super::serving::{self, ClientRoots, TlsFlags};
use super::{ControlPlaneError, STORE_CA_ENV, STORE_URL_ENV, kube_version, read, terminated};
use crate::apiserver::listener::{self, Conn, Limits};
use crate::apiserver::{
    ApiError, Body, CertAuth, CertOutcome, RequestHeader, UserInfo, bearer, ca_certs,
    escape_extra_key, full, version_doc,
};

/// The identity the front uses for its own requests (kube-apiserver's loopback identity).
const SELF_USER: &str = "system:apiserver";

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// What requests share.
struct Front {
    /// `https://host:port` of the store.
    store: Uri,
    client: StoreClient,
    cert_auth: CertAuth,
    /// Identity headers clients may not send through (the configured ones and the standard
    /// ones the store reads).
    identity_headers: Vec<RequestHeader>,
    anonymous: bool,
    version: String,
    /// The data of `kube-system/extension-apiserver-authentication`.
    authentication_config: Value,
}

/// The store's URL from the environment.
fn store_url() -> Result<Uri, ControlPlaneError> {
    let raw = std::env::var(STORE_URL_ENV).map_err(|_| {
        ControlPlaneError::Usage(format!(
            "{STORE_URL_ENV} is not set: the front forwards to the store at that URL (https://host:port)"
        ))
    })?;
    let uri: Uri = raw
        .trim()
        .parse()
        .map_err(|e| ControlPlaneError::Usage(format!("{STORE_URL_ENV}={raw}: {e}")))?;
    if uri.scheme_str() != Some("https") || uri.authority().is_none() {
        return Err(ControlPlaneError::Usage(format!(
            "{STORE_URL_ENV}={raw}: an https://host:port URL"
        )));
    }
    Ok(uri)
}

fn request_header(args: &KubeApiserverArgs, ca_pem: String) -> RequestHeader {
    RequestHeader {
        client_ca_pem: ca_pem,
        allowed_names: args
            .requestheader_allowed_names
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
        username_headers: args.requestheader_username_headers.clone(),
        group_headers: args.requestheader_group_headers.clone(),
        extra_headers_prefixes: args.requestheader_extra_headers_prefix.clone(),
    }
}

impl Front {
    fn new(args: &KubeApiserverArgs) -> Result<Self, ControlPlaneError> {
        let store = store_url()?;
        let client_ca = args.client_ca_file.as_deref().map(read).transpose()?;
        let store_ca = match std::env::var_os(STORE_CA_ENV) {
            Some(path) => read(std::path::Path::new(&path))?,
            None => client_ca.clone().ok_or_else(|| {
                ControlPlaneError::Usage(format!(
                    "{STORE_CA_ENV} is not set and there is no --client-ca-file to verify the store with"
                ))
            })?,
        };
        let (Some(cert), Some(key)) = (&args.proxy_client_cert_file, &args.proxy_client_key_file)
        else {
            return Err(ControlPlaneError::Usage(
                "--proxy-client-cert-file and --proxy-client-key-file are needed: the front \
                 forwards identities to the store with that certificate"
                    .into(),
            ));
        };
        let client = store_client(&store_ca, Some((&read(cert)?, &read(key)?)))?;
        let tls = |e: crate::apiserver::ApiServerError| ControlPlaneError::Tls(e.to_string());
        let rh_ca = args
            .requestheader_client_ca_file
            .as_deref()
            .map(read)
            .transpose()?;
        let cert_auth = CertAuth {
            client_cas: match &client_ca {
                Some(pem) => ca_certs(pem).map_err(tls)?,
                None => Vec::new(),
            },
            request_header: match &rh_ca {
                Some(pem) => Some((
                    ca_certs(pem).map_err(tls)?,
                    request_header(args, pem.clone()),
                )),
                None => None,
            },
        };
        let mut identity_headers = vec![RequestHeader::standard("")];
        if let Some((_, rh)) = &cert_auth.request_header {
            identity_headers.push(rh.clone());
        }
        let list = |v: &[String]| json!(v).to_string();
        let mut data = serde_json::Map::new();
        if let Some(pem) = &client_ca {
            data.insert("client-ca-file".into(), json!(pem));
        }
        if let Some((_, rh)) = &cert_auth.request_header {
            data.insert(
                "requestheader-client-ca-file".into(),
                json!(rh.client_ca_pem),
            );
            data.insert(
                "requestheader-allowed-names".into(),
                json!(list(&rh.allowed_names)),
            );
            data.insert(
                "requestheader-username-headers".into(),
                json!(list(&rh.username_headers)),
            );
            data.insert(
                "requestheader-group-headers".into(),
                json!(list(&rh.group_headers)),
            );
            data.insert(
                "requestheader-extra-headers-prefix".into(),
                json!(list(&rh.extra_headers_prefixes)),
            );
        }
        Ok(Self {
            store,
            client,
            cert_auth,
            identity_headers,
            anonymous: args.anonymous_auth.unwrap_or(true),
            version: kube_version(),
            authentication_config: Value::Object(data),
        })
    }

    fn store_uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let mut parts = self.store.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse()?);
        Ok(Uri::from_parts(parts)?)
    }

    /// A request of the front itself (as `system:apiserver`, `system:masters`).
    async fn own_request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let uri = self.store_uri(path_and_query).map_err(|e| e.to_string())?;
        let mut req = Request::new(Full::new(body).map_err(|never| match never {}).boxed());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        set_identity(
            req.headers_mut(),
            &UserInfo::new(SELF_USER, &["system:masters"]),
        );
        if let Some(ct) = content_type {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(ct).map_err(|e| e.to_string())?,
            );
        }
        let resp = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// Whether the store answers its `/readyz`.
    async fn store_ready(&self) -> bool {
        matches!(
            self.own_request(Method::GET, "/readyz", None, Bytes::new())
                .await,
            Ok((StatusCode::OK, _))
        )
    }

    /// Server-side applies `obj` at `path` as kube-apiserver.
    async fn apply(&self, path: &str, obj: &Value) -> Result<(), String> {
        let (status, body) = self
            .own_request(
                Method::PATCH,
                &format!("{path}?fieldManager=kube-apiserver&force=true"),
                Some("application/apply-patch+yaml"),
                Bytes::from(obj.to_string()),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
        }
    }

    /// The fronts alive now, from their identity Leases.
    async fn alive(&self) -> Result<Vec<(std::net::IpAddr, u16)>, String> {
        let (status, body) = self
            .own_request(
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases?labelSelector=apiserver.kubernetes.io%2Fidentity%3Dkube-apiserver",
                None,
                Bytes::new(),
            )
            .await?;
        if !status.is_success() {
            return Err(format!("listing leases: {status}"));
        }
        let list: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let items = list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(endpoints::alive(&items, std::time::SystemTime::now()))
    }

    /// Renews this front's Lease and writes the `kubernetes` Service and EndpointSlice.
    async fn reconcile_endpoints(
        &self,
        me: &endpoints::Identity,
        service_ip: Option<std::net::IpAddr>,
    ) -> Result<(), String> {
        let lease = endpoints::lease(me, std::time::SystemTime::now());
        self.apply(
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{}",
                me.lease
            ),
            &lease,
        )
        .await?;
        self.apply(
            "/api/v1/namespaces/default/services/kubernetes",
            &endpoints::service(service_ip, me.port),
        )
        .await?;
        let alive = self.alive().await?;
        self.apply(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
            &endpoints::endpoint_slice(&alive),
        )
        .await
    }

    /// Removes this front's Lease and its address from the EndpointSlice.
    async fn leave(&self, me: &endpoints::Identity) -> Result<(), String> {
        self.own_request(
            Method::DELETE,
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{}",
                me.lease
            ),
            None,
            Bytes::new(),
        )
        .await?;
        let alive: Vec<_> = self
            .alive()
            .await?
            .into_iter()
            .filter(|(ip, port)| (*ip, *port) != (me.address, me.port))
            .collect();
        self.apply(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
            &endpoints::endpoint_slice(&alive),
        )
        .await
    }

    /// Writes `kube-system/extension-apiserver-authentication` (server-side apply).
    async fn publish_authentication_config(&self) -> Result<(), String> {
        let cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": self.authentication_config,
        });
        self.apply(
            "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
            &cm,
        )
        .await
    }
}

/// Sets the identity headers the store reads from a front proxy.
fn set_identity(headers: &mut HeaderMap, user: &UserInfo) -> bool {
    let value = |s: &str| HeaderValue::from_str(s).ok();
    let Some(name) = value(&user.username) else {
        return false;
    };
    headers.insert("x-remote-user", name);
    for g in &user.groups {
        if let Some(v) = value(g) {
            headers.append("x-remote-group", v);
        }
    }
    for (k, vs) in &user.extra {
        let Ok(h) = HeaderName::try_from(format!("x-remote-extra-{}", escape_extra_key(k))) else {
            continue;
        };
        for v in vs {
            if let Some(v) = value(v) {
                headers.append(h.clone(), v);
            }
        }
    }
    true
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
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

fn status(e: &ApiError) -> Response<Body> {
    full(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.body(),
    )
}

/// One request: health and version here, everything else to the store.
async fn handle(front: Arc<Front>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let local = matches!(*req.method(), Method::GET | Method::HEAD)
        && (path == "/version"
            || ["/livez", "/readyz", "/healthz"]
                .iter()
                .any(|p| path == *p || path.starts_with(&format!("{p}/"))));
    if !local {
        return forward(&front, &conn, req).await;
    }
    let credentials = !conn.peer_certs.is_empty() || bearer(req.headers()).is_some();
    if !front.anonymous && !credentials {
        return status(&ApiError::unauthorized());
    }
    if path == "/version" {
        return full(StatusCode::OK, &version_doc(&front.version));
    }
    let verbose = req.uri().query().is_some_and(|q| q.contains("verbose"));
    let check = path.rsplit_once('/').map(|(_, c)| c).unwrap_or_default();
    let store = match (path.as_str(), check) {
        ("/livez" | "/livez/ping" | "/readyz/ping" | "/healthz/ping", _) => None,
        (_, "livez" | "readyz" | "healthz" | "etcd") => Some(front.store_ready().await),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    match (store, verbose) {
        (Some(false), _) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "[+]ping ok\n[-]etcd failed: reason withheld\nhealthz check failed\n",
        ),
        (Some(true), true) => text(StatusCode::OK, "[+]ping ok\n[+]etcd ok\ncheck passed\n"),
        (None, true) => text(StatusCode::OK, "[+]ping ok\ncheck passed\n"),
        _ => text(StatusCode::OK, "ok"),
    }
}

/// Authenticates the client and forwards the request to the store, streaming both bodies.
async fn forward(front: &Front, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let outcome = front
        .cert_auth
        .authenticate(conn.peer_certs.first(), &parts.headers);
    for rh in &front.identity_headers {
        rh.strip(&mut parts.headers);
    }
    match outcome {
        CertOutcome::User { user, .. } => {
            parts.headers.remove(header::AUTHORIZATION);
            if !set_identity(&mut parts.headers, &user) {
                return status(&ApiError::unauthorized());
            }
        }
        CertOutcome::Refused => return status(&ApiError::unauthorized()),
        CertOutcome::Next => {
            if bearer(&parts.headers).is_none() && !front.anonymous {
                return status(&ApiError::unauthorized());
            }
        }
    }
    let connection_listed: Vec<String> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for h in HOP_BY_HOP
        .iter()
        .map(|h| (*h).to_string())
        .chain(connection_listed)
    {
        parts.headers.remove(h.as_str());
    }
    parts.headers.remove(header::HOST);
    if let Ok(v) = HeaderValue::from_str(&conn.remote.ip().to_string()) {
        parts.headers.append("x-forwarded-for", v);
    }
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    parts.uri = match front.store_uri(&pq) {
        Ok(u) => u,
        Err(_) => return status(&ApiError::bad_request("invalid request URI")),
    };
    parts.version = Version::HTTP_11;
    let up: UpBody = body.boxed();
    let method = parts.method.clone();
    match front.client.request(Request::from_parts(parts, up)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(h);
            }
            Response::from_parts(parts, body.map_err(std::io::Error::other).boxed())
        }
        Err(e) => {
            debug!(%method, path = %pq, error = %e, "store unreachable");
            let mut err = ApiError::injected(503);
            err.message = "the store of the test API server is unreachable".into();
            status(&err)
        }
    }
}

/// Serves until SIGTERM or SIGINT.
pub(crate) async fn run(args: KubeApiserverArgs) -> Result<(), ControlPlaneError> {
    let front = Arc::new(Front::new(&args)?);
    let provider = serving::provider(&args.tls_cipher_suites)?;
    let roots = Arc::new(ClientRoots::new(provider.clone()));
    roots.set(&front.cert_auth.roots())?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for ip in [Some(args.bind_address), args.advertise_address]
        .into_iter()
        .flatten()
        .filter(|ip| !ip.is_unspecified())
    {
        names.push(ip.to_string());
    }
    let config = serving::server_config(
        TlsFlags {
            cert: args.tls_cert_file.as_deref(),
            key: args.tls_private_key_file.as_deref(),
            min_version: args.tls_min_version.as_deref(),
        },
        &names,
        &provider,
        roots,
    )?;
    let addr = SocketAddr::new(args.bind_address, args.secure_port);
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| ControlPlaneError::Bind { addr, source })?;
    let publisher = {
        let front = front.clone();
        tokio::spawn(async move {
            loop {
                match front.publish_authentication_config().await {
                    Ok(()) => break,
                    Err(e) => {
                        debug!(error = %e, "cannot publish extension-apiserver-authentication yet");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        })
    };
    let me = endpoints::Identity::new(
        args.advertise_address
            .or(Some(args.bind_address).filter(|ip| !ip.is_unspecified()))
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        args.secure_port,
    );
    let service_ip = args
        .service_cluster_ip_range
        .as_deref()
        .and_then(endpoints::first_service_ip);
    let reconciler = {
        let front = front.clone();
        let me = me.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = front.reconcile_endpoints(&me, service_ip).await {
                    debug!(error = %e, "cannot reconcile the kubernetes endpoints yet");
                }
                tokio::time::sleep(endpoints::PERIOD).await;
            }
        })
    };
    let served = {
        let front = front.clone();
        tokio::spawn(listener::serve(
            tcp,
            tokio_rustls::TlsAcceptor::from(config),
            Limits::standard(),
            move |conn, req| handle(front.clone(), conn, req),
        ))
    };
    info!(%addr, store = %front.store, "kube-apiserver front serving");
    if !front.store_ready().await {
        warn!(store = %front.store, "the store does not answer yet: not ready until it does");
    }
    let result = terminated().await;
    reconciler.abort();
    if let Err(e) = front.leave(&me).await {
        warn!(error = %e, "cannot remove this front from the kubernetes endpoints");
    }
    publisher.abort();
    served.abort();
    info!("kube-apiserver front stopping");
    result
}
