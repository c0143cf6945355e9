//! api-proxy: the node-local L4 proxy every kubelet uses to reach the API servers.
//!
//! It listens on `127.0.0.1:6445` and forwards TCP (TLS passes through untouched) to the API
//! servers listed in `etc/kubernetes/api-proxy/upstreams.json` (kept by proxy-reloader) plus any
//! `--upstream` flags. Upstreams on this node go first, then least connections among healthy ones;
//! a refused or timed-out connect fails over to the next upstream within the same client
//! connection, and a slow one races the next upstream after a hedge delay. Health is checked actively (`GET /readyz`, cluster CA verified, rise/fall
//! hysteresis); connections to an upstream that goes down or is removed are closed after a grace
//! period so long-lived watches move. The set is never empty: with nothing healthy every known
//! upstream is still tried, and the last good list survives restarts.
#![warn(clippy::unwrap_used)]

pub mod forward;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod upstreams;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use clap::Parser;
use cpm_core::cli::{CommonArgs, Honours};
use cpm_core::config::{ConfigError, ControlPlaneConfiguration};
use cpm_core::exit::{Code, TERMINATION_LOG, chain, report_fatal};
use cpm_core::reconcile::Readiness;
use cpm_core::reconcile::Termination;
use prometheus_client::registry::Registry;
use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::forward::ForwardConfig;
use crate::health::HealthConfig;
use crate::metrics::ProxyMetrics;
use crate::pool::{Change, Pool};
use crate::upstreams::{Source, UpstreamsError};

/// The admin server's default address.
pub const ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9606);

/// The default upstream file, relative to `--root`.
pub const UPSTREAMS_FILE: &str = "etc/kubernetes/api-proxy/upstreams.json";

/// The api-proxy command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "api-proxy", version = cpm_core::build::LONG_VERSION, about = "Node-local L4 proxy to the Kubernetes API servers")]
pub struct Cli {
    /// Flags shared by all cpm binaries (`--once`, `--dry-run` and `--check` do not apply).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Listen address; default `apiProxy.listen` from `--config` when that file exists, else
    /// 127.0.0.1:6445.
    #[arg(long, env = "CPM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A bootstrap upstream `IP:PORT`, added to the file's list (repeatable).
    #[arg(long = "upstream", env = "CPM_UPSTREAM", value_delimiter = ',')]
    pub upstreams: Vec<SocketAddr>,
    /// The upstream file kept by proxy-reloader (relative paths are under `--root`).
    #[arg(long, env = "CPM_UPSTREAMS_FILE", default_value = UPSTREAMS_FILE)]
    pub upstreams_file: PathBuf,
    /// The cluster CA that health checks verify (relative paths are under `--root`).
    #[arg(long, env = "CPM_CA_FILE", default_value = "etc/kubernetes/pki/ca.crt")]
    pub ca_file: PathBuf,
    /// Connect timeout per upstream attempt, in milliseconds.
    #[arg(long, env = "CPM_CONNECT_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,
    /// A connect still pending after this many milliseconds races the next upstream.
    #[arg(long, env = "CPM_CONNECT_HEDGE_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_hedge_ms: u64,
    /// Time between health checks, in milliseconds.
    #[arg(long, env = "CPM_HEALTH_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub health_interval_ms: u64,
    /// Health check timeout, in milliseconds.
    #[arg(long, env = "CPM_HEALTH_TIMEOUT_MS", default_value_t = 750, value_parser = clap::value_parser!(u64).range(1..))]
    pub health_timeout_ms: u64,
    /// Consecutive successful checks that make an upstream healthy.
    #[arg(long, env = "CPM_RISE", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rise: u32,
    /// Consecutive failed checks that make an upstream unhealthy.
    #[arg(long, env = "CPM_FALL", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub fall: u32,
    /// How long connections to an upstream that went down or was removed stay open, in
    /// milliseconds.
    #[arg(long, env = "CPM_EVICT_GRACE_MS", default_value_t = 5000)]
    pub evict_grace_ms: u64,
    /// How bytes move between the two sockets of a connection: `splice` (zero-copy, through a
    /// pipe) or `buffer` (read and write through a user-space buffer).
    #[arg(long, env = "CPM_COPY", value_enum, default_value_t = CopyMode::Splice)]
    pub copy: CopyMode,
    /// Pipe or copy buffer per active direction of a connection, in bytes.
    #[arg(long, env = "CPM_BUFFER_SIZE", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(4096..=(16 << 20)))]
    pub buffer_size: u64,
    /// How long SIGTERM waits for open connections before closing them, in seconds.
    #[arg(long, env = "CPM_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// IO worker threads, each with its own listener (SO_REUSEPORT) and single-threaded runtime;
    /// 0 means one per available CPU.
    #[arg(long, env = "CPM_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Safety-net reload interval of the upstream file (besides file events), in seconds.
    #[arg(long, env = "CPM_RELOAD_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub reload_seconds: u64,
}

impl Honours for Cli {
    // A proxy runs until stopped (no pass to run once, dry-run or check) and talks to no API.
    const NEVER: &'static [&'static str] = &[
        "once",
        "dry_run",
        "check",
        "resync_seconds",
        "pki_dir",
        "node_name",
        "kubeconfig",
    ];
}

/// How the data path moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CopyMode {
    /// `splice(2)` through a pipe: the bytes never enter user space.
    Splice,
    /// `read(2)`/`write(2)` through a buffer.
    Buffer,
}

/// Everything the proxy runs with, resolved from the command line.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bootstrap upstreams.
    pub flags: Vec<SocketAddr>,
    /// The upstream file.
    pub upstreams_file: PathBuf,
    /// Node IP, for "upstream on this node".
    pub node_ip: Option<std::net::IpAddr>,
    /// Health checks.
    pub health: HealthConfig,
    /// Rise threshold.
    pub rise: u32,
    /// Fall threshold.
    pub fall: u32,
    /// Data path.
    pub forward: ForwardConfig,
    /// Safety-net reload interval.
    pub reload_interval: Duration,
    /// IO worker threads (0: one per available CPU).
    pub workers: usize,
}

/// Bad command line or config.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A path under `--root`.
    #[error(transparent)]
    Path(#[from] cpm_core::node::PathError),
}

impl ProxyOptions {
    /// Resolves `cli`: relative paths under `--root`, the listen address from the config file
    /// when not given.
    pub fn from_cli(cli: &Cli) -> Result<Self, OptionsError> {
        let root = cli.common.node_root();
        let under = |p: &Path| -> Result<PathBuf, OptionsError> {
            Ok(if p.is_absolute() {
                p.to_path_buf()
            } else {
                root.join(p)?
            })
        };
        let listen = match cli.listen {
            Some(l) => l,
            None if cli.common.config.exists() => {
                ControlPlaneConfiguration::load(&cli.common.config)?
                    .api_proxy
                    .listen
            }
            None => SocketAddr::from(([127, 0, 0, 1], 6445)),
        };
        let buffer_size = usize::try_from(cli.buffer_size).unwrap_or(262_144);
        Ok(Self {
            listen,
            flags: cli.upstreams.clone(),
            upstreams_file: under(&cli.upstreams_file)?,
            node_ip: cli.common.node_ip().ok(),
            health: HealthConfig {
                interval: Duration::from_millis(cli.health_interval_ms),
                timeout: Duration::from_millis(cli.health_timeout_ms),
                ca_file: under(&cli.ca_file)?,
            },
            rise: cli.rise,
            fall: cli.fall,
            forward: ForwardConfig {
                connect_timeout: Duration::from_millis(cli.connect_timeout_ms),
                hedge: Duration::from_millis(cli.connect_hedge_ms),
                evict_grace: Duration::from_millis(cli.evict_grace_ms),
                splice: cli.copy == CopyMode::Splice,
                buffer_size,
                keepalive: Duration::from_secs(30),
                user_timeout: Duration::from_secs(30),
            },
            reload_interval: Duration::from_secs(cli.reload_seconds),
            workers: cli.workers,
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
    /// An IO worker thread could not start.
    #[error("cannot start an IO worker thread")]
    Worker(#[source] std::io::Error),
    /// Watching the upstream file failed.
    #[error(transparent)]
    Watch(#[from] cpm_core::watch::WatchError),
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// The bound listen address.
    pub addr: SocketAddr,
    /// The upstreams.
    pub pool: Arc<Pool>,
    stop_accept: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    clients: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _watch: cpm_core::watch::FileWatch,
}

impl Proxy {
    /// Open client connections.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Stops accepting, waits up to `drain` for open connections to finish, then closes the
    /// rest and stops every task.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop_accept.send(true);
        let deadline = tokio::time::Instant::now() + drain;
        while self.clients() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
        }
        // The IO workers end on the stop signal; wait for them off the async threads.
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// A non-blocking listener on `addr` with SO_REUSEPORT, so each IO worker has its own accept
/// queue on the same port (the kernel spreads connections; only the same user can join). The
/// client-side socket options are set here once: Linux copies them to every accepted socket.
fn listen(addr: SocketAddr, cfg: &ForwardConfig) -> std::io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    forward::tune(&SockRef::from(&sock), cfg)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Everything an IO worker thread needs.
struct Worker {
    listener: std::net::TcpListener,
    pool: Arc<Pool>,
    forward: Arc<ForwardConfig>,
    stop_accept: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    clients: Arc<AtomicUsize>,
}

/// Runs one IO worker: a single-threaded runtime accepting on its own listener and running its
/// connections, like one nginx worker process: no work stealing, no cross-thread wake-ups on the
/// data path. It ends when `stop` turns true (its connections close with its runtime).
fn spawn_worker(i: usize, w: Worker) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("api-proxy-io-{i}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "cannot start an IO worker");
                    return;
                }
            };
            rt.block_on(async move {
                let mut stop = w.stop.clone();
                match TcpListener::from_std(w.listener) {
                    Ok(listener) => {
                        forward::accept_loop(
                            listener,
                            w.pool,
                            w.forward,
                            w.stop_accept,
                            w.stop,
                            w.clients,
                        )
                        .await;
                    }
                    Err(e) => warn!(error = %e, "cannot register a listener"),
                }
                // Keep serving open connections until the hard stop.
                let _ = stop.wait_for(|s| *s).await;
            });
        })
}

/// Applies the upstream file to the pool and starts monitors for new upstreams.
#[derive(Debug, Clone)]
struct Reloader {
    pool: Arc<Pool>,
    file: PathBuf,
    flags: Vec<SocketAddr>,
    health: Arc<HealthConfig>,
    stop: watch::Receiver<bool>,
}

impl Reloader {
    fn apply_list(&self, list: &[SocketAddr]) -> Change {
        let change = self.pool.set(list);
        for up in &change.added {
            health::spawn_monitor(up.clone(), self.health.clone(), self.stop.clone());
        }
        change
    }

    /// Re-reads the file; an invalid one is rejected and the current list kept.
    fn reload(&self) {
        let metrics = &self.pool.metrics;
        let list = match upstreams::load(&self.file) {
            Ok(l) => l,
            Err(UpstreamsError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return;
            }
            Err(e) => {
                metrics.reload("rejected");
                warn!(error = %chain(&e), "upstream file rejected, keeping the current list");
                return;
            }
        };
        self.save(&list);
        let merged = upstreams::merge(&list, &self.flags);
        if merged == self.pool.addrs() {
            metrics.reload("unchanged");
            return;
        }
        let change = self.apply_list(&merged);
        metrics.reload("applied");
        info!(
            upstreams = ?merged,
            added = change.added.len(),
            removed = change.removed.len(),
            "upstream list applied"
        );
    }

    fn save(&self, list: &[SocketAddr]) {
        if let Err(e) = upstreams::save_last_good(&upstreams::last_good_path(&self.file), list) {
            warn!(error = %chain(&e), "cannot save the last good upstream list");
        }
    }
}

/// Starts the proxy: listener, upstreams (file, else last good list, plus flags), health
/// monitors, and the upstream file watch.
pub async fn start(opts: &ProxyOptions, metrics: ProxyMetrics) -> Result<Proxy, StartError> {
    let listen_err = |source| StartError::Listen {
        addr: opts.listen,
        source,
    };
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    } else {
        opts.workers
    };
    let first = listen(opts.listen, &opts.forward).map_err(listen_err)?;
    let addr = first.local_addr().map_err(listen_err)?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(listen(addr, &opts.forward).map_err(listen_err)?);
    }
    let pool = Arc::new(Pool::new(opts.node_ip, opts.rise, opts.fall, metrics));
    let (stop_accept, stop_accept_rx) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let reloader = Reloader {
        pool: pool.clone(),
        file: opts.upstreams_file.clone(),
        flags: opts.flags.clone(),
        health: Arc::new(opts.health.clone()),
        stop: stop_rx.clone(),
    };
    let (list, source, error) = upstreams::initial(&opts.upstreams_file, &opts.flags);
    if let Some(e) = &error {
        warn!(error = %chain(e), "upstream file not usable");
    }
    match source {
        Source::File => {
            if let Ok(l) = upstreams::load(&opts.upstreams_file) {
                reloader.save(&l);
            }
        }
        Source::LastGood => warn!("starting from the last good upstream list"),
        Source::Flags => {}
    }
    if list.is_empty() {
        warn!("no upstream known yet: waiting for the upstream file");
    }
    reloader.apply_list(&list);
    info!(%addr, upstreams = ?list, "api-proxy listening");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let file_watch = cpm_core::watch::watch_files(std::slice::from_ref(&opts.upstreams_file), tx)?;
    let clients = Arc::new(AtomicUsize::new(0));
    let forward = Arc::new(opts.forward.clone());
    let mut threads = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let w = Worker {
            listener,
            pool: pool.clone(),
            forward: forward.clone(),
            stop_accept: stop_accept_rx.clone(),
            stop: stop_rx.clone(),
            clients: clients.clone(),
        };
        match spawn_worker(i, w) {
            Ok(t) => threads.push(t),
            Err(source) => {
                let _ = stop.send(true);
                return Err(StartError::Worker(source));
            }
        }
    }
    let interval = opts.reload_interval;
    let mut stop_reload = stop_rx;
    let reload = tokio::spawn(async move {
        loop {
            tokio::select! {
                t = rx.recv() => if t.is_none() { return },
                () = tokio::time::sleep(interval) => {}
                _ = stop_reload.wait_for(|s| *s) => return,
            }
            while rx.try_recv().is_ok() {}
            reloader.reload();
        }
    });
    Ok(Proxy {
        addr,
        pool,
        stop_accept,
        stop,
        clients,
        tasks: vec![reload],
        threads,
        _watch: file_watch,
    })
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
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(&mut registry);
    let proxy = match start(&opts, metrics).await {
        Ok(p) => p,
        Err(e) => return fatal(&e, Code::Failure),
    };
    let readiness = Readiness::new(Duration::from_secs(3));
    let admin_addr = cli.common.admin_addr.unwrap_or(ADMIN_ADDR);
    match cpm_core::admin::spawn(admin_addr, Arc::new(registry), readiness.clone()).await {
        Ok(srv) => info!(addr = %srv.addr, "admin server listening"),
        Err(e) => return fatal(&e, Code::Failure),
    }
    // Ready while listening with at least one known upstream.
    let pool = proxy.pool.clone();
    let ready = tokio::spawn(async move {
        loop {
            if !pool.is_empty() {
                readiness.mark_success(SystemTime::now());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let sig = termination.recv().await;
    info!("{sig}: draining");
    ready.abort();
    proxy.shutdown(Duration::from_secs(cli.drain_seconds)).await;
    Code::Ok
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The data path relies on accepted sockets inheriting the listener's options.
    #[test]
    fn accepted_sockets_inherit_the_tuned_options() {
        let cfg = ForwardConfig {
            connect_timeout: Duration::from_secs(1),
            hedge: Duration::from_millis(200),
            evict_grace: Duration::from_secs(5),
            splice: true,
            buffer_size: 65536,
            keepalive: Duration::from_secs(42),
            user_timeout: Duration::from_secs(17),
        };
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)), &cfg).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let s = SockRef::from(&accepted);
        assert!(s.tcp_nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(42));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(14));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_secs(17)));
    }
}
