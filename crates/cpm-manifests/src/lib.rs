//! cpm-manifests: the control-plane static pods of a master node, their config files, and the
//! kube-scheduler extenders from `KubeSchedulerWebhookConfiguration` objects.
#![warn(clippy::unwrap_used)]

pub mod agent;
pub mod desired;
pub mod files;
pub mod flags;
pub mod health;
pub mod holder;
pub mod layout;
pub mod metrics;
pub mod pods;
pub mod rollout;
pub mod scheduler;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cpm_core::cli::{CommonArgs, Honours};
use cpm_core::exit::{Code, TERMINATION_LOG, report_fatal};
use cpm_core::runner::{RunnerOptions, run_agent};
use prometheus_client::registry::Registry;
use tracing::info;

use crate::agent::ManifestsAgent;

/// The admin server's default address.
pub const ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9603);

/// The cpm-manifests command line.
#[derive(Debug, Parser)]
#[command(name = "cpm-manifests", version = cpm_core::build::LONG_VERSION, about = "Renders the control-plane static pods, their config files and the scheduler extenders")]
pub struct Cli {
    /// Flags shared by all cpm binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds a component may take to become healthy after its manifest changed; 0 turns the
    /// health gate (and rollback) off.
    #[arg(
        long,
        global = true,
        env = "CPM_HEALTH_TIMEOUT_SECONDS",
        default_value_t = 300
    )]
    pub health_timeout_seconds: u64,
    /// The cpm-holder image. With it, a master takes part in a version rollout only once a
    /// holder pod on it runs every image of the new version (the images are pulled); without
    /// it, image presence is not checked.
    #[arg(long, global = true, env = "CPM_HOLDER_IMAGE")]
    pub holder_image: Option<String>,
    /// Namespace of the image-holder pods.
    #[arg(
        long,
        global = true,
        env = "CPM_HOLDER_NAMESPACE",
        default_value = "cpm-system"
    )]
    pub holder_namespace: String,
    /// What to do; without a command, reconcile the node's static pods.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Honours for Cli {
    // The node's certificates are read under --root; the CA bundle is cpm-certs' input.
    const NEVER: &'static [&'static str] = &["pki_dir"];

    fn unhonoured(&self) -> &'static [&'static str] {
        match self.command {
            // Prints two CRDs: no node, no API, no pass.
            Some(Command::Crd) => &[
                "root",
                "config",
                "node_name",
                "node_ip",
                "kubeconfig",
                "once",
                "dry_run",
                "check",
                "admin_addr",
                "resync_seconds",
                "health_timeout_seconds",
                "holder_image",
                "holder_namespace",
            ],
            None => self.common.unhonoured_in_one_pass(),
        }
    }
}

/// cpm-manifests' commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CRDs cpm-manifests uses: KubeSchedulerWebhookConfiguration and
    /// ControlPlaneNode (two YAML documents).
    Crd,
}

/// Runs the command line; returns the exit code.
pub async fn run(cli: Cli) -> Code {
    if let Some(Command::Crd) = cli.command {
        // Plain JSON data: serialising it cannot fail.
        let cpn = serde_saphyr::to_string(&cpm_core::controlplanenode::crd())
            .expect("invariant: the CRD serialises to YAML");
        return cpm_core::exit::print(&format!("{}---\n{cpn}", scheduler::crd_yaml()));
    }
    let client = match cpm_core::kube::optional_client(cli.common.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            report_fatal(&e, Path::new(TERMINATION_LOG));
            return Code::Usage;
        }
    };
    if client.is_none() {
        info!(
            "no --kubeconfig: etcd members and scheduler extenders are kept as the node has them"
        );
    }
    let mut registry = Registry::default();
    let metrics = metrics::ManifestMetrics::register(&mut registry);
    let mut agent = ManifestsAgent::new(cli.common.clone(), Some(metrics), client.clone());
    agent.gate_timeout = Duration::from_secs(cli.health_timeout_seconds);
    agent.rollout = rollout::Rollout::new(rollout::RolloutOptions {
        holders: cli.holder_image.clone().map(|image| holder::HolderOptions {
            namespace: cli.holder_namespace.clone(),
            image,
        }),
        ..rollout::RolloutOptions::default()
    });
    if let Err(e) = agent.load_inputs() {
        report_fatal(&e, Path::new(TERMINATION_LOG));
        return Code::Usage;
    }
    let mut watchers: Vec<cpm_core::runner::WatchStarter> = Vec::new();
    if let Some(c) = client {
        let c2 = c.clone();
        watchers.push(Box::new(move |tx| Box::new(scheduler::watch(c2, tx))));
        // Another master's step ending, an operator's resume, and this master's image holder
        // becoming ready each let a waiting master move now rather than at the next resync.
        let c2 = c.clone();
        watchers.push(Box::new(move |tx| {
            Box::new(cpm_core::controlplanenode::watch(c2, None, tx))
        }));
        let ns = cli.holder_namespace.clone();
        watchers.push(Box::new(move |tx| Box::new(holder::watch(c, &ns, tx))));
    }
    let opts = RunnerOptions {
        default_admin: ADMIN_ADDR,
        watch: agent.inputs(),
        watchers,
    };
    run_agent(&mut agent, &cli.common, registry, opts).await
}
