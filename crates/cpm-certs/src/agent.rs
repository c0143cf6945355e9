//! The cpm-certs reconcile agent: load inputs, observe the node, decide, converge, report.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use cpm_core::apply::{ApplyOptions, BackupPolicy, BeforeRename};
use cpm_core::cli::{CommonArgs, MissingFlag};
use cpm_core::config::{ConfigError, ControlPlaneConfiguration, San};
use cpm_core::node::NodeRoot;
use cpm_core::pki::Key;
use cpm_core::pki::bundle::{BundleError, CaBundle};
use cpm_core::reconcile::{Agent, Mode, PassError, PassOutcome, converge};
use time::OffsetDateTime;
use tracing::info;

use crate::catalogue::{NodeIdentity, leaves};
use crate::desired::{Inputs, Observed, desired};
use crate::metrics::CertMetrics;

/// The agent's name in logs and metrics.
pub const AGENT: &str = "cpm-certs";

/// Where replaced certificates and keys are kept.
pub const BACKUP_DIR: &str = "etc/kubernetes/cpm/backup/cpm-certs";

/// How many backup generations are kept.
pub const BACKUP_KEEP: usize = 5;

/// A source of the current time (injected in tests).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Bad operator input: config, node identity or CA bundle.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The CA bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A required identity flag.
    #[error(transparent)]
    Identity(#[from] MissingFlag),
    /// The node name cannot be a certificate SAN.
    #[error("--node-name: {0}")]
    NodeName(String),
}

/// A runtime failure reading the node.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}")]
pub struct ObserveError {
    /// The file.
    pub path: PathBuf,
    /// The IO error.
    #[source]
    pub source: io::Error,
}

/// The cpm-certs agent.
pub struct CertsAgent {
    args: CommonArgs,
    clock: Clock,
    metrics: Option<CertMetrics>,
    /// Leaves to reissue on the next pass (by kubeadm name; `cpm-certs renew`).
    pub forced: Vec<String>,
    /// Failure injection between write and rename, for crash-safety tests.
    pub before_rename: Option<Box<BeforeRename>>,
}

impl CertsAgent {
    /// An agent for `args`, reading time from `clock`, exporting to `metrics` when given.
    pub fn new(args: CommonArgs, clock: Clock, metrics: Option<CertMetrics>) -> Self {
        Self {
            args,
            clock,
            metrics,
            forced: Vec::new(),
            before_rename: None,
        }
    }

    /// Init: loads and validates every input. Any error here is bad operator input (exit 2).
    pub fn load_inputs(
        &self,
    ) -> Result<(ControlPlaneConfiguration, CaBundle, NodeIdentity), InputError> {
        let config = ControlPlaneConfiguration::load(&self.args.config)?;
        let node = node_identity(&self.args)?;
        let bundle = CaBundle::load(&self.args.pki_dir)?;
        Ok((config, bundle, node))
    }

    /// Paths whose change should trigger a pass.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let root = self.args.node_root();
        let mut paths = vec![self.args.config.clone(), self.args.pki_dir.clone()];
        for rel in [crate::catalogue::PKI_DIR, "etc/kubernetes/pki/etcd"] {
            if let Ok(p) = root.join(rel) {
                paths.push(p);
            }
        }
        paths
    }
}

/// The node identity from the flags.
pub fn node_identity(args: &CommonArgs) -> Result<NodeIdentity, InputError> {
    let name = args.node_name()?;
    let ip = args.node_ip()?;
    let name = match name.parse::<San>() {
        Ok(san @ San::Dns(_)) => san,
        _ => {
            return Err(InputError::NodeName(format!(
                "{name:?} is not a valid DNS name"
            )));
        }
    };
    Ok(NodeIdentity { name, ip })
}

/// Reads the node's current leaf files.
pub fn observe(
    root: &NodeRoot,
    config: &ControlPlaneConfiguration,
    node: &NodeIdentity,
) -> Result<Observed, ObserveError> {
    let mut observed = Observed::new();
    for leaf in leaves(config, node) {
        for rel in [leaf.cert_path(), leaf.key_path()] {
            let path = root.join(&rel).map_err(|e| ObserveError {
                path: rel.clone().into(),
                source: io::Error::other(e),
            })?;
            match std::fs::read(&path) {
                Ok(bytes) => {
                    observed.insert(rel, bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(ObserveError { path, source }),
            }
        }
    }
    Ok(observed)
}

impl Agent for CertsAgent {
    fn name(&self) -> &'static str {
        AGENT
    }

    async fn pass(&mut self, mode: Mode) -> Result<PassOutcome, PassError> {
        let (config, bundle, node) = self.load_inputs().map_err(PassError::input)?;
        let root = self.args.node_root();
        let observed = observe(&root, &config, &node).map_err(PassError::runtime)?;
        let now = (self.clock)();
        let inputs = Inputs {
            config: &config,
            bundle: &bundle,
            node: &node,
            now,
            forced: &self.forced,
        };
        let d = desired(&inputs, &observed, &mut Key::generate).map_err(PassError::runtime)?;
        let generation = now
            .format(&time::format_description::well_known::Iso8601::DEFAULT)
            .unwrap_or_else(|_| now.unix_timestamp().to_string());
        let opts = ApplyOptions {
            backup: Some(BackupPolicy {
                dir: BACKUP_DIR.into(),
                generation,
                keep: BACKUP_KEEP,
            }),
            before_rename: self.before_rename.as_deref(),
        };
        let outcome = converge(&root, &d.set, mode, &opts)?;
        if mode == Mode::Apply {
            for (name, reason) in &d.renewals {
                info!(certificate = name, reason = reason.as_str(), "issued");
            }
            if let Some(m) = &self.metrics {
                m.record(&d.expiry, &d.renewals);
            }
            self.forced.clear();
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
