//! cpm-kubeconfig: the admin and component kubeconfigs of a master node, and the root
//! kubeconfig symlink.
//!
//! It keeps `admin.conf`, `super-admin.conf`, `controller-manager.conf` and `scheduler.conf`
//! under `etc/kubernetes` valid (client certificates from the cluster CA, the right server and
//! subject), points `/root/.kube/config` at `admin.conf` without ever taking a path it does not
//! own, and makes sure the `kubeadm:cluster-admins` ClusterRoleBinding exists.
#![warn(clippy::unwrap_used)]

pub mod agent;
pub mod catalogue;
pub mod desired;
pub mod metrics;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use cpm_core::cli::{CommonArgs, Honours};
use cpm_core::exit::{Code, TERMINATION_LOG, report_fatal};
use cpm_core::runner::{RunnerOptions, run_agent};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::agent::{Clock, KubeconfigAgent};

/// The admin server's default address.
pub const ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9602);

/// The cpm-kubeconfig command line.
#[derive(Debug, Parser)]
#[command(name = "cpm-kubeconfig", version = cpm_core::build::LONG_VERSION, about = "Generates and renews the kubeconfigs of a master node and the root kubeconfig symlink")]
pub struct Cli {
    /// Flags shared by all cpm binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Do not ensure the kubeadm:cluster-admins ClusterRoleBinding.
    #[arg(long, env = "CPM_NO_RBAC")]
    pub no_rbac: bool,
}

impl Honours for Cli {
    // Kubeconfigs name the cluster, not the node; the binding goes through super-admin.conf.
    const NEVER: &'static [&'static str] = &["kubeconfig", "node_name"];

    fn unhonoured(&self) -> &'static [&'static str] {
        self.common.unhonoured_in_one_pass()
    }
}

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Runs the command line with the given clock; returns the exit code.
pub async fn run(cli: Cli, clock: Clock) -> Code {
    let mut registry = Registry::default();
    let metrics = metrics::KubeconfigMetrics::register(&mut registry);
    let mut agent = KubeconfigAgent::new(cli.common.clone(), clock, Some(metrics));
    agent.ensure_rbac = !cli.no_rbac;
    if let Err(e) = agent.load_inputs() {
        report_fatal(&e, Path::new(TERMINATION_LOG));
        return Code::Usage;
    }
    let opts = RunnerOptions {
        default_admin: ADMIN_ADDR,
        watch: agent.inputs(),
        watchers: Vec::new(),
    };
    run_agent(&mut agent, &cli.common, registry, opts).await
}
