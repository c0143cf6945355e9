//! metrics-rbac-proxy: the authenticated HTTPS front of the control-plane metrics endpoints.
//!
//! It listens on `<node-ip>:4209` and maps `/controller-manager/metrics`, `/scheduler/metrics`
//! and `/etcd/metrics` (or configured routes) to loopback upstreams. Every request is
//! authenticated (a client certificate from `--client-ca-file`, else a bearer token through a
//! TokenReview) and authorised (a static allow rule, else a SubjectAccessReview for `get` on the
//! path, or on the route's resource attributes) before anything is sent upstream. Decisions are
//! cached (allow 5 min, deny 30 s) under sha256 digests; an API error or timeout refuses the
//! request and is not cached. Upstream answers stream through with a deadline and a size limit.
#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod cache;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod tls;
pub mod upstream;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use cpm_core::cli::{CommonArgs, Honours};
use cpm_core::exit::{Code, TERMINATION_LOG, chain, report_fatal};
use cpm_core::reconcile::Readiness;
use cpm_core::reconcile::Termination;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::{Auth, AuthOptions, Target};
use crate::cache::CacheOptions;
use crate::metrics::{ProxyMetrics, ResultLabel};
use crate::routes::{AllowRule, DEFAULT_ROUTES, RouteSpec, RoutesError, UpstreamTls};
use crate::server::{Route, State};
use crate::tls::{ServingCert, TlsError};
use crate::upstream::{SetupError, Upstream, UpstreamLimits};

/// The admin server's default address.
pub const ADMIN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9607);

/// The default HTTPS port (on the node IP).
pub const PORT: u16 = 4209;

/// The metrics-rbac-proxy command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "metrics-rbac-proxy", version = cpm_core::build::LONG_VERSION, about = "Authenticating, authorising HTTPS front of the control-plane metrics endpoints")]
pub struct Cli {
    /// Flags shared by all cpm binaries (`--once`, `--dry-run`, `--check`, `--config` and
    /// `--pki-dir` do not apply).
    #[command(flatten)]
    pub common: CommonArgs,
    /// HTTPS listen address; default `<node IP>:4209` (`--node-ip`, else env NODE_IP).
    #[arg(long, env = "CPM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serving certificate (PEM chain); without it a self-signed one is made at start.
    #[arg(long, env = "CPM_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The serving certificate's key (PEM).
    #[arg(long, env = "CPM_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Safety-net reload interval of the serving certificate files (besides file events), in
    /// seconds.
    #[arg(long, env = "CPM_TLS_RELOAD_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_reload_seconds: u64,
    /// CA bundle verifying client certificates (CN = user, O = groups); without it only bearer
    /// tokens authenticate.
    #[arg(long, env = "CPM_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// A route `NAME=URL`, served at `/NAME/metrics` (repeatable); default the control plane's
    /// three: controller-manager, scheduler, etcd.
    #[arg(
        long = "route",
        env = "CPM_ROUTE",
        value_delimiter = ',',
        conflicts_with = "routes_file"
    )]
    pub routes: Vec<String>,
    /// A YAML or JSON file with routes (per-route TLS, token, resource attributes) and static
    /// allow rules, instead of `--route` and the `--upstream-*` flags.
    #[arg(long, env = "CPM_ROUTES_FILE")]
    pub routes_file: Option<PathBuf>,
    /// CA bundle verifying https upstreams of `--route` (and built-in) routes.
    #[arg(long, env = "CPM_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Client certificate presented to https upstreams of `--route` routes.
    #[arg(
        long,
        env = "CPM_UPSTREAM_CLIENT_CERT_FILE",
        requires = "upstream_client_key_file"
    )]
    pub upstream_client_cert_file: Option<PathBuf>,
    /// Its key.
    #[arg(
        long,
        env = "CPM_UPSTREAM_CLIENT_KEY_FILE",
        requires = "upstream_client_cert_file"
    )]
    pub upstream_client_key_file: Option<PathBuf>,
    /// A bearer token file sent to the upstreams of `--route` routes.
    #[arg(long, env = "CPM_UPSTREAM_TOKEN_FILE")]
    pub upstream_token_file: Option<PathBuf>,
    /// Do not verify the certificates of https upstreams of `--route` routes (loopback
    /// components with self-signed certificates). Never the default.
    #[arg(long, env = "CPM_UPSTREAM_INSECURE_SKIP_VERIFY")]
    pub upstream_insecure_skip_verify: bool,
    /// An audience TokenReviews ask for (repeatable); none means the API server's own.
    #[arg(
        long = "auth-audience",
        env = "CPM_AUTH_AUDIENCE",
        value_delimiter = ','
    )]
    pub auth_audiences: Vec<String>,
    /// How long an allow (authenticated token, allowed review) is cached, in seconds.
    #[arg(long, env = "CPM_ALLOW_TTL_SECONDS", default_value_t = 300)]
    pub allow_ttl_seconds: u64,
    /// How long a deny (unknown token, denied review) is cached, in seconds.
    #[arg(long, env = "CPM_DENY_TTL_SECONDS", default_value_t = 30)]
    pub deny_ttl_seconds: u64,
    /// Entries per cache (tokens, decisions) at most.
    #[arg(long, env = "CPM_CACHE_MAX_ENTRIES", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub cache_max_entries: u64,
    /// Deadline of one TokenReview or SubjectAccessReview, in milliseconds.
    #[arg(long, env = "CPM_REVIEW_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub review_timeout_ms: u64,
    /// Deadline of a whole upstream exchange (connect, headers, body), in milliseconds.
    #[arg(long, env = "CPM_UPSTREAM_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_timeout_ms: u64,
    /// The largest upstream response passed on, in bytes.
    #[arg(long, env = "CPM_MAX_RESPONSE_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..=(1 << 32)))]
    pub max_response_bytes: u64,
    /// How long SIGTERM waits for open connections, in seconds.
    #[arg(long, env = "CPM_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
}

impl Honours for Cli {
    // A proxy runs until stopped (no pass to run once, dry-run or check) and reads no node files
    // under a root, no config and no CA bundle.
    const NEVER: &'static [&'static str] = &[
        "once",
        "dry_run",
        "check",
        "resync_seconds",
        "root",
        "config",
        "pki_dir",
    ];
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum Serving {
    /// PEM files, reloaded when they change.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// Self-signed at start for these names.
    SelfSigned {
        /// IP SANs.
        ips: Vec<IpAddr>,
        /// DNS SANs.
        dns: Vec<String>,
    },
}

/// Everything the proxy runs with, resolved from the command line.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Serving certificate.
    pub serving: Serving,
    /// Safety-net reload interval of the serving files.
    pub tls_reload_interval: Duration,
    /// Client CA bundle.
    pub client_ca_file: Option<PathBuf>,
    /// Routes (validated).
    pub routes: Vec<RouteSpec>,
    /// Authentication and authorisation.
    pub auth: AuthOptions,
    /// Upstream limits.
    pub limits: UpstreamLimits,
}

/// Bad command line or routes.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// No `--listen` and no node IP.
    #[error("no --listen and no node IP")]
    Listen(#[source] cpm_core::cli::MissingFlag),
    /// Routes.
    #[error(transparent)]
    Routes(#[from] RoutesError),
}

impl ProxyOptions {
    /// Resolves `cli`: the listen address, routes (flags, built-in or file), caches, limits.
    pub fn from_cli(cli: &Cli) -> Result<Self, OptionsError> {
        let node_ip = cli.common.node_ip().ok();
        let listen = match cli.listen {
            Some(l) => l,
            None => SocketAddr::new(cli.common.node_ip().map_err(OptionsError::Listen)?, PORT),
        };
        let (routes, allow) = match &cli.routes_file {
            Some(path) => {
                let file = routes::load(path)?;
                (file.routes, file.allow)
            }
            None => {
                let flags: Vec<String> = if cli.routes.is_empty() {
                    DEFAULT_ROUTES
                        .iter()
                        .map(|(n, u)| format!("{n}={u}"))
                        .collect()
                } else {
                    cli.routes.clone()
                };
                let mut routes = Vec::new();
                for f in &flags {
                    let mut r = routes::parse_flag(f)?;
                    if r.upstream.starts_with("https://") {
                        r.tls = UpstreamTls {
                            ca_file: cli.upstream_ca_file.clone(),
                            cert_file: cli.upstream_client_cert_file.clone(),
                            key_file: cli.upstream_client_key_file.clone(),
                            server_name: None,
                            insecure_skip_verify: cli.upstream_insecure_skip_verify,
                        };
                    }
                    r.token_file = cli.upstream_token_file.clone();
                    routes.push(r);
                }
                routes::validate(&routes, "flags")?;
                (routes, Vec::<AllowRule>::new())
            }
        };
        let serving = match (&cli.tls_cert_file, &cli.tls_key_file) {
            (Some(cert), Some(key)) => Serving::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => {
                let mut ips = vec![listen.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST)];
                if let Some(ip) = node_ip {
                    ips.push(ip);
                }
                ips.retain(|ip| !ip.is_unspecified());
                ips.sort();
                ips.dedup();
                let mut dns = vec!["localhost".to_string()];
                dns.extend(cli.common.node_name().ok());
                Serving::SelfSigned { ips, dns }
            }
        };
        Ok(Self {
            listen,
            serving,
            tls_reload_interval: Duration::from_secs(cli.tls_reload_seconds),
            client_ca_file: cli.client_ca_file.clone(),
            routes,
            auth: AuthOptions {
                audiences: cli.auth_audiences.clone(),
                review_timeout: Duration::from_millis(cli.review_timeout_ms),
                allow,
                cache: CacheOptions {
                    allow_ttl: Duration::from_secs(cli.allow_ttl_seconds),
                    deny_ttl: Duration::from_secs(cli.deny_ttl_seconds),
                    max_entries: usize::try_from(cli.cache_max_entries).unwrap_or(10_000),
                },
            },
            limits: UpstreamLimits {
                timeout: Duration::from_millis(cli.upstream_timeout_ms),
                max_response_bytes: usize::try_from(cli.max_response_bytes).unwrap_or(64 << 20),
            },
        })
    }
}

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding the listener failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// Serving or client-CA TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An upstream.
    #[error(transparent)]
    Upstream(#[from] SetupError),
    /// Watching the serving certificate files failed.
    #[error(transparent)]
    Watch(#[from] cpm_core::watch::WatchError),
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// The bound HTTPS address.
    pub addr: SocketAddr,
    /// The served certificate.
    pub cert: Arc<ServingCert>,
    /// The metrics.
    pub metrics: ProxyMetrics,
    stop: watch::Sender<Option<Duration>>,
    accept: JoinHandle<()>,
    reload: Option<JoinHandle<()>>,
    _watch: Option<cpm_core::watch::FileWatch>,
}

impl Proxy {
    /// Stops accepting, waits up to `drain` for open connections, then closes the rest.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(Some(drain));
        if let Some(r) = &self.reload {
            r.abort();
        }
        let _ = self.accept.await;
    }
}

/// Starts the proxy: TLS, routes, the listener; `client` answers the reviews (build it with
/// `default_retry = false`, so an API outage refuses requests at once instead of retrying).
pub async fn start(
    opts: &ProxyOptions,
    client: kube::Client,
    metrics: ProxyMetrics,
) -> Result<Proxy, StartError> {
    let first = match &opts.serving {
        Serving::Files { cert, key } => tls::load_pair(cert, key)?,
        Serving::SelfSigned { ips, dns } => tls::self_signed(ips, dns)?,
    };
    let cert = Arc::new(ServingCert::new(first));
    let config = tls::server_config(cert.clone(), opts.client_ca_file.as_deref())?;
    let mut routes = HashMap::new();
    for spec in &opts.routes {
        let route = Route {
            name: spec.name.clone(),
            target: Target {
                path: spec.path(),
                resource: spec.resource_attributes.clone(),
            },
            upstream: Upstream::new(spec, opts.limits)?,
        };
        routes.insert(spec.path(), Arc::new(route));
    }
    let state = Arc::new(State {
        routes,
        auth: Auth::new(client, opts.auth.clone(), metrics.clone()),
        metrics: metrics.clone(),
    });
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: opts.listen,
        source,
    })?;
    let (reload, file_watch) = match &opts.serving {
        Serving::Files { cert: c, key: k } => {
            let (tx, rx) = mpsc::unbounded_channel();
            let w = cpm_core::watch::watch_files(&[c.clone(), k.clone()], tx)?;
            let task = tokio::spawn(reload_loop(
                cert.clone(),
                c.clone(),
                k.clone(),
                rx,
                opts.tls_reload_interval,
                metrics.clone(),
            ));
            (Some(task), Some(w))
        }
        Serving::SelfSigned { .. } => (None, None),
    };
    let (stop, stop_rx) = watch::channel(None);
    let accept = tokio::spawn(server::accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(config),
        state,
        stop_rx,
    ));
    info!(%addr, routes = ?opts.routes.iter().map(RouteSpec::path).collect::<Vec<_>>(), "metrics-rbac-proxy listening");
    Ok(Proxy {
        addr,
        cert,
        metrics,
        stop,
        accept,
        reload,
        _watch: file_watch,
    })
}

/// Reloads the serving certificate on file events and every `interval`; a bad pair is rejected
/// and the current one kept.
async fn reload_loop(
    cert: Arc<ServingCert>,
    cert_file: PathBuf,
    key_file: PathBuf,
    mut events: mpsc::UnboundedReceiver<cpm_core::reconcile::Trigger>,
    interval: Duration,
    metrics: ProxyMetrics,
) {
    loop {
        tokio::select! {
            e = events.recv() => if e.is_none() { return },
            () = tokio::time::sleep(interval) => {}
        }
        while events.try_recv().is_ok() {}
        match tls::load_pair(&cert_file, &key_file) {
            Ok(new) => {
                if new.cert != cert.get().cert {
                    cert.set(new);
                    metrics
                        .tls_reloads
                        .get_or_create(&ResultLabel { result: "applied" })
                        .inc();
                    info!(cert = %cert_file.display(), "serving certificate reloaded");
                }
            }
            Err(e) => {
                metrics
                    .tls_reloads
                    .get_or_create(&ResultLabel { result: "rejected" })
                    .inc();
                warn!(error = %chain(&e), "serving certificate not reloaded, keeping the current one");
            }
        }
    }
}

/// Runs the command line until SIGTERM or SIGINT; returns the exit code.
pub async fn run(cli: Cli) -> Code {
    let fatal = |e: &(dyn std::error::Error + 'static), code| {
        report_fatal(e, Path::new(TERMINATION_LOG));
        code
    };
    let opts = match ProxyOptions::from_cli(&cli) {
        Ok(o) => o,
        Err(e) => return fatal(&e, Code::Usage),
    };
    let mut termination = match Termination::install() {
        Ok(t) => t,
        Err(e) => return fatal(&e, Code::Failure),
    };
    let client_opts = cpm_core::kube::ClientOptions {
        kubeconfig: cli.common.kubeconfig.clone(),
        context: None,
        connect_timeout: Duration::from_secs(5),
        read_timeout: opts.auth.review_timeout,
    };
    let client = match cpm_core::kube::config(&client_opts)
        .await
        .and_then(|mut config| {
            // No retries inside the client: a failed review refuses this request at once, and the
            // next scrape asks again (failures are not cached).
            config.default_retry = false;
            kube::Client::try_from(config).map_err(cpm_core::kube::KubeError::Client)
        }) {
        Ok(c) => c,
        Err(e) => return fatal(&e, Code::Failure),
    };
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(&mut registry);
    let proxy = match start(&opts, client, metrics).await {
        Ok(p) => p,
        Err(e) => return fatal(&e, Code::Failure),
    };
    let readiness = Readiness::new(Duration::from_secs(3));
    readiness.mark_success(SystemTime::now());
    let admin_addr = cli.common.admin_addr.unwrap_or(ADMIN_ADDR);
    match cpm_core::admin::spawn(admin_addr, Arc::new(registry), readiness.clone()).await {
        Ok(srv) => info!(addr = %srv.addr, "admin server listening"),
        Err(e) => return fatal(&e, Code::Failure),
    }
    // Ready while the listener is up.
    let ready = tokio::spawn(async move {
        loop {
            readiness.mark_success(SystemTime::now());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let sig = termination.recv().await;
    info!("{sig}: draining");
    ready.abort();
    proxy.shutdown(Duration::from_secs(cli.drain_seconds)).await;
    Code::Ok
}
