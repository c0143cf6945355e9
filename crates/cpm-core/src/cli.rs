//! `CommonArgs`: the flags every cpm binary shares, flattened into each binary's CLI.
//!
//! Every flag also reads `CPM_<FLAG>` from the environment (flag > env > default). Node identity
//! falls back to the downward-API variables `NODE_NAME` and `NODE_IP`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::node::NodeRoot;
use crate::reconcile::{Mode, RunOptions};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for containers).
    Json,
}

/// Flags shared by all binaries (PRODUCT.md §5).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Directory every node path is relative to.
    #[arg(long, global = true, env = "CPM_ROOT", default_value = "/")]
    pub root: PathBuf,
    /// The ControlPlaneConfiguration file.
    #[arg(
        long,
        global = true,
        env = "CPM_CONFIG",
        default_value = "/config/config.yaml"
    )]
    pub config: PathBuf,
    /// The CA bundle directory (Secret cpm-pki).
    #[arg(long, global = true, env = "CPM_PKI_DIR", default_value = "/pki")]
    pub pki_dir: PathBuf,
    /// This node's name (else env NODE_NAME).
    #[arg(long, global = true, env = "CPM_NODE_NAME")]
    pub node_name: Option<String>,
    /// This node's IP address (else env NODE_IP).
    #[arg(long, global = true, env = "CPM_NODE_IP")]
    pub node_ip: Option<IpAddr>,
    /// Kubeconfig for the Kubernetes API (else in-cluster config).
    #[arg(long, global = true, env = "CPM_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run one pass and exit with its result.
    #[arg(long, global = true, env = "CPM_ONCE")]
    pub once: bool,
    /// Print the plan as unified diffs (secrets as hashes) and write nothing.
    #[arg(long, global = true, env = "CPM_DRY_RUN", conflicts_with = "check")]
    pub dry_run: bool,
    /// Like --dry-run, but exit 3 when anything would change.
    #[arg(long, global = true, env = "CPM_CHECK")]
    pub check: bool,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "CPM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(long, global = true, env = "CPM_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Admin server address (/metrics, /livez, /readyz); default per binary.
    #[arg(long, global = true, env = "CPM_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Periodic resync interval in seconds.
    #[arg(long, global = true, env = "CPM_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,
}

/// A required identity flag is missing.
#[derive(Debug, thiserror::Error)]
#[error("--{flag} is required (or env {env})")]
pub struct MissingFlag {
    /// The flag.
    pub flag: &'static str,
    /// The fallback environment variable.
    pub env: &'static str,
}

impl CommonArgs {
    /// The node root.
    pub fn node_root(&self) -> NodeRoot {
        NodeRoot::new(&self.root)
    }

    /// The pass mode from `--dry-run` / `--check`.
    pub fn mode(&self) -> Mode {
        if self.check {
            Mode::Check
        } else if self.dry_run {
            Mode::DryRun
        } else {
            Mode::Apply
        }
    }

    /// Run options from `--once`, the mode and `--resync-seconds`.
    pub fn run_options(&self) -> RunOptions {
        let mut opts = RunOptions::new(self.once, self.mode());
        opts.resync = std::time::Duration::from_secs(self.resync_seconds);
        opts
    }

    /// This node's name: `--node-name`, `CPM_NODE_NAME`, then `NODE_NAME`.
    pub fn node_name(&self) -> Result<String, MissingFlag> {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|s| !s.is_empty()))
            .ok_or(MissingFlag {
                flag: "node-name",
                env: "NODE_NAME",
            })
    }

    /// This node's IP: `--node-ip`, `CPM_NODE_IP`, then `NODE_IP`.
    pub fn node_ip(&self) -> Result<IpAddr, MissingFlag> {
        self.node_ip
            .or_else(|| std::env::var("NODE_IP").ok().and_then(|s| s.parse().ok()))
            .ok_or(MissingFlag {
                flag: "node-ip",
                env: "NODE_IP",
            })
    }
}

#[cfg(test)]
mod tests;
