//! proxy-reloader: keeps api-proxy's upstream file in line with the ready endpoints of Service
//! `default/kubernetes`.
//!
//! It watches the EndpointSlices labelled `kubernetes.io/service-name=kubernetes` in `default`
//! (through api-proxy itself, with the kubelet's kubeconfig), and writes
//! `etc/kubernetes/api-proxy/upstreams.json` atomically with the ready endpoints. An endpoint that
//! stops being ready stays listed for a grace period, so a flapping master does not churn the
//! list; the list is never written empty; an unreachable API leaves the last list in place.
#![warn(clippy::unwrap_used)]

pub mod agent;
pub mod desired;
pub mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use cpm_core::cli::{CommonArgs, Honours};
use cpm_core::exit::{Code, TERMINATION_LOG, report_fatal};
use cpm_core::kube::ClientOptions;
use cpm_core::runner::{RunnerOptions, WatchStarter, run_agent};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus_client::registry::Registry;

use crate::agent::{NAMESPACE, ReloaderAgent, SELECTOR};

/// The admin server's default address.
pub const ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9605);

/// The upstream file, relative to `--root`.
pub const UPSTREAMS_FILE: &str = "etc/kubernetes/api-proxy/upstreams.json";

/// The kubelet's kubeconfig, relative to `--root` (the default of `--kubeconfig`).
pub const KUBELET_CONF: &str = "etc/kubernetes/kubelet.conf";

/// The proxy-reloader command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "proxy-reloader", version = cpm_core::build::LONG_VERSION, about = "Writes api-proxy's upstream file from the endpoints of Service default/kubernetes")]
pub struct Cli {
    /// Flags shared by all cpm binaries (`--kubeconfig` defaults to the kubelet's
    /// `etc/kubernetes/kubelet.conf` under `--root`).
    #[command(flatten)]
    pub common: CommonArgs,
    /// The upstream file, relative to `--root`.
    #[arg(long, env = "CPM_UPSTREAMS_FILE", default_value = UPSTREAMS_FILE)]
    pub upstreams_file: PathBuf,
    /// How long an endpoint stays listed after it stopped being ready, in seconds.
    #[arg(long, env = "CPM_GRACE_SECONDS", default_value_t = 60)]
    pub grace_seconds: u64,
}

impl Honours for Cli {
    // The upstream list comes from the API alone: no config, CA bundle or node identity.
    const NEVER: &'static [&'static str] = &["config", "pki_dir", "node_name", "node_ip"];

    fn unhonoured(&self) -> &'static [&'static str] {
        self.common.unhonoured_in_one_pass()
    }
}

/// Bad command line.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A path under `--root`.
    #[error(transparent)]
    Path(#[from] cpm_core::node::PathError),
    /// The kubeconfig.
    #[error(transparent)]
    Kube(#[from] cpm_core::kube::KubeError),
}

/// The client options for `cli`.
pub fn client_options(cli: &Cli) -> Result<ClientOptions, InputError> {
    let kubeconfig = match &cli.common.kubeconfig {
        Some(k) => k.clone(),
        None => cli.common.node_root().join(KUBELET_CONF)?,
    };
    Ok(ClientOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(295),
    })
}

/// Runs the command line; returns the exit code.
pub async fn run(cli: Cli) -> Code {
    let fatal = |e: &(dyn std::error::Error + 'static)| {
        report_fatal(e, std::path::Path::new(TERMINATION_LOG));
        Code::Usage
    };
    let opts = match client_options(&cli) {
        Ok(o) => o,
        Err(e) => return fatal(&e),
    };
    if let Err(e) = cpm_core::node::check_relative(&cli.upstreams_file) {
        return fatal(&e);
    }
    // Init: the kubeconfig must be usable (no network yet).
    let client = match cpm_core::kube::client(&opts).await {
        Ok(c) => c,
        Err(e) => return fatal(&e),
    };
    let mut registry = Registry::default();
    let metrics = metrics::ReloaderMetrics::register(&mut registry);
    let mut agent = ReloaderAgent::new(
        cli.common.node_root(),
        cli.upstreams_file.clone(),
        opts,
        Duration::from_secs(cli.grace_seconds),
        metrics,
    );
    let slot = agent.wake_slot();
    let wake: WatchStarter = Box::new(move |tx| {
        *slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        Box::new(())
    });
    let kube_watch: WatchStarter = Box::new(move |tx| {
        let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, NAMESPACE);
        let config = kube::runtime::watcher::Config::default().labels(SELECTOR);
        Box::new(cpm_core::kube::watch_triggers(api, config, tx))
    });
    let opts = RunnerOptions {
        default_admin: ADMIN_ADDR,
        watch: Vec::new(),
        watchers: vec![wake, kube_watch],
    };
    run_agent(&mut agent, &cli.common, registry, opts).await
}
