//! cpm-etcd: the etcd static pod of a master node, and (next stage) safe membership changes.
//!
//! This stage renders `etc/kubernetes/manifests/etcd.yaml` from the config and the version map
//! (a new single-member cluster on the first master; an existing member keeps its membership
//! flags) and refuses any silent change of a member's name, advertise IP or data directory.
#![warn(clippy::unwrap_used)]

pub mod agent;
pub mod defrag;
pub mod departures;
pub mod manifest;
pub mod membership;
pub mod metrics;

use std::net::SocketAddr;
use std::path::Path;

use clap::Parser;
use cpm_core::cli::{CommonArgs, Honours};
use cpm_core::exit::{Code, TERMINATION_LOG, report_fatal};
use cpm_core::runner::{RunnerOptions, run_agent};
use prometheus_client::registry::Registry;

use crate::agent::EtcdAgent;

/// The admin server's default address.
pub const ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9604);

/// The cpm-etcd command line.
#[derive(Debug, Parser)]
#[command(name = "cpm-etcd", version = cpm_core::build::LONG_VERSION, about = "Renders the etcd static pod of a master node")]
pub struct Cli {
    /// Flags shared by all cpm binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds a master's Node must be gone before its etcd member is removed.
    #[arg(long, env = "CPM_DEPARTED_GRACE_SECONDS", default_value_t = 300)]
    pub departed_grace_seconds: u64,
    /// The etcd backup directory whose status file is exported as metrics, as given (default:
    /// the config's `etcd.backup.directory` under `--root` when `etcd.backup.enabled`).
    #[arg(long, env = "CPM_BACKUP_DIR")]
    pub backup_dir: Option<std::path::PathBuf>,
}

impl Honours for Cli {
    // etcd's certificates are read under --root; the CA bundle is cpm-certs' input.
    const NEVER: &'static [&'static str] = &["pki_dir"];

    fn unhonoured(&self) -> &'static [&'static str] {
        self.common.unhonoured_in_one_pass()
    }
}

/// Runs the command line; returns the exit code.
pub async fn run(cli: Cli) -> Code {
    let kube = match cpm_core::kube::optional_client(cli.common.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            report_fatal(&e, Path::new(TERMINATION_LOG));
            return Code::Usage;
        }
    };
    let mut agent = EtcdAgent::new(cli.common.clone(), kube.clone());
    agent.departed_grace = std::time::Duration::from_secs(cli.departed_grace_seconds);
    let mut registry = Registry::default();
    agent.metrics = Some(metrics::EtcdMetrics::register(&mut registry));
    let (config, this) = match agent.load_inputs() {
        Ok(inputs) => inputs,
        Err(e) => {
            report_fatal(&e, Path::new(TERMINATION_LOG));
            return Code::Usage;
        }
    };
    let backup_dir = match &cli.backup_dir {
        Some(d) => Some(d.clone()),
        None if config.etcd.backup.enabled => {
            match cli.common.node_root().host(&config.etcd.backup.directory) {
                Ok(d) => Some(d),
                Err(e) => {
                    report_fatal(&e, Path::new(TERMINATION_LOG));
                    return Code::Usage;
                }
            }
        }
        None => None,
    };
    if let Some(dir) = backup_dir {
        metrics::BackupStatusCollector::register(&mut registry, &dir, &this.name);
    }
    let mut watchers: Vec<cpm_core::runner::WatchStarter> = Vec::new();
    if let Some(c) = kube {
        // A version step recorded on this master's ControlPlaneNode moves etcd first: react at
        // once (cpm-manifests waits for it before the apiserver).
        let node = this.name.clone();
        watchers.push(Box::new(move |tx| {
            Box::new(cpm_core::controlplanenode::watch(c, Some(&node), tx))
        }));
    }
    let opts = RunnerOptions {
        default_admin: ADMIN_ADDR,
        watch: agent.inputs(),
        watchers,
    };
    run_agent(&mut agent, &cli.common, registry, opts).await
}
