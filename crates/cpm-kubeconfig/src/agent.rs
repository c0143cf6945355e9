//! The cpm-kubeconfig agent: load inputs, observe the node, decide, converge, ensure the
//! `kubeadm:cluster-admins` ClusterRoleBinding, report.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cpm_core::apply::ApplyOptions;
use cpm_core::cli::{CommonArgs, MissingFlag};
use cpm_core::config::{ConfigError, ControlPlaneConfiguration};
use cpm_core::node::NodeRoot;
use cpm_core::pki::Key;
use cpm_core::pki::bundle::{BundleError, CaBundle};
use cpm_core::reconcile::{Agent, Mode, PassError, PassOutcome, converge};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, PostParams};
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use crate::catalogue::{ROOT_KUBECONFIG, SPECS};
use crate::desired::{Inputs, LinkObserved, LinkState, Observed, desired};
use crate::metrics::KubeconfigMetrics;

/// The agent's name in logs and metrics.
pub const AGENT: &str = "cpm-kubeconfig";

/// The ClusterRoleBinding that gives admin.conf's group cluster-admin (Kubernetes ≥ 1.29).
pub const CLUSTER_ADMINS: &str = "kubeadm:cluster-admins";

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
}

/// A runtime failure reading the node.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}")]
pub struct ObserveError {
    /// The path.
    pub path: PathBuf,
    /// The IO error.
    #[source]
    pub source: io::Error,
}

/// The cpm-kubeconfig agent.
pub struct KubeconfigAgent {
    args: CommonArgs,
    clock: Clock,
    metrics: Option<KubeconfigMetrics>,
    /// Ensure the `kubeadm:cluster-admins` binding through super-admin.conf after each applied
    /// pass (off with `--no-rbac`).
    pub ensure_rbac: bool,
}

impl KubeconfigAgent {
    /// An agent for `args`, reading time from `clock`, exporting to `metrics` when given.
    pub fn new(args: CommonArgs, clock: Clock, metrics: Option<KubeconfigMetrics>) -> Self {
        Self {
            args,
            clock,
            metrics,
            ensure_rbac: true,
        }
    }

    /// Init: loads and validates every input (exit 2 on failure).
    pub fn load_inputs(
        &self,
    ) -> Result<(ControlPlaneConfiguration, CaBundle, std::net::IpAddr), InputError> {
        let config = ControlPlaneConfiguration::load(&self.args.config)?;
        let ip = self.args.node_ip()?;
        let bundle = CaBundle::load(&self.args.pki_dir)?;
        Ok((config, bundle, ip))
    }

    /// Paths whose change should trigger a pass.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let root = self.args.node_root();
        let mut paths = vec![self.args.config.clone(), self.args.pki_dir.clone()];
        paths.extend(
            ["etc/kubernetes", "root/.kube"]
                .iter()
                .filter_map(|rel| root.join(rel).ok()),
        );
        paths
    }
}

/// Reads the kubeconfigs and the root symlink.
pub fn observe(root: &NodeRoot) -> Result<Observed, ObserveError> {
    let err = |path: PathBuf| move |source| ObserveError { path, source };
    let full = |rel: &str| {
        root.join(rel).map_err(|e| ObserveError {
            path: rel.into(),
            source: io::Error::other(e),
        })
    };
    let mut observed = Observed::default();
    for spec in &SPECS {
        let path = full(&spec.path())?;
        match std::fs::read(&path) {
            Ok(b) => {
                observed.files.insert(spec.file, b);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(path)(e)),
        }
    }
    let link = full(ROOT_KUBECONFIG)?;
    observed.link = Some(match std::fs::symlink_metadata(&link) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => LinkObserved::Absent,
        Err(e) => return Err(err(link)(e)),
        Ok(md) if md.file_type().is_symlink() => {
            let target = std::fs::read_link(&link).map_err(err(link.clone()))?;
            // The target is a host path: resolve it under the root, as the node would.
            let resolved = if target.is_absolute() {
                root.host(&target).ok()
            } else {
                link.parent().map(|p| p.join(&target))
            };
            LinkObserved::Symlink {
                dangling: !resolved.is_some_and(|p| p.exists()),
                target,
            }
        }
        Ok(_) => LinkObserved::NotASymlink,
    });
    observed.kube_dir_exists = full("root/.kube")?.is_dir();
    Ok(observed)
}

impl Agent for KubeconfigAgent {
    fn name(&self) -> &'static str {
        AGENT
    }

    async fn pass(&mut self, mode: Mode) -> Result<PassOutcome, PassError> {
        let (config, bundle, node_ip) = self.load_inputs().map_err(PassError::input)?;
        let root = self.args.node_root();
        let observed = observe(&root).map_err(PassError::runtime)?;
        let inputs = Inputs {
            config: &config,
            ca: &bundle.kubernetes.ca,
            node_ip,
            now: (self.clock)(),
        };
        let d = desired(&inputs, &observed, &mut Key::generate).map_err(PassError::runtime)?;
        let outcome = converge(&root, &d.set, mode, &ApplyOptions::default())?;
        if mode != Mode::Apply {
            return Ok(outcome);
        }
        for (file, reason) in &d.renewals {
            info!(kubeconfig = file, reason = reason.as_str(), "written");
        }
        match d.link {
            LinkState::ForeignFile => warn!(
                path = ROOT_KUBECONFIG,
                "a regular file is in place of the root kubeconfig symlink; left alone"
            ),
            LinkState::ForeignSymlink => warn!(
                path = ROOT_KUBECONFIG,
                "the root kubeconfig symlink points elsewhere; left alone"
            ),
            LinkState::Ok | LinkState::Disabled => {}
        }
        let rbac = if self.ensure_rbac {
            Some(ensure_cluster_admins(&root).await)
        } else {
            None
        };
        if let Some(m) = &self.metrics {
            m.record(&d.expiry, &d.renewals, d.link, rbac);
        }
        Ok(outcome)
    }
}

/// Ensures the ClusterRoleBinding `kubeadm:cluster-admins` → ClusterRole `cluster-admin` exists,
/// with super-admin.conf's credentials. Returns whether it exists; an unreachable API is not an
/// error (it is retried on the next pass).
pub async fn ensure_cluster_admins(root: &NodeRoot) -> bool {
    let Ok(kubeconfig) = root.join("etc/kubernetes/super-admin.conf") else {
        return false;
    };
    let opts = cpm_core::kube::ClientOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
    };
    let client = match cpm_core::kube::client(&opts).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %cpm_core::exit::chain(&e), "cannot build a client from super-admin.conf");
            return false;
        }
    };
    let api: Api<ClusterRoleBinding> = Api::all(client);
    match api.get_opt(CLUSTER_ADMINS).await {
        Ok(Some(_)) => return true,
        Ok(None) => {}
        Err(e) => {
            debug!(error = %e, "API not reachable; the ClusterRoleBinding is checked again next pass");
            return false;
        }
    }
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(CLUSTER_ADMINS.into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "cpm".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: CLUSTER_ADMINS.into(),
            namespace: None,
        }]),
    };
    match api.create(&PostParams::default(), &binding).await {
        Ok(_) => {
            info!(name = CLUSTER_ADMINS, "created ClusterRoleBinding");
            true
        }
        Err(kube::Error::Api(s)) if s.code == 409 => true,
        Err(e) => {
            warn!(error = %e, name = CLUSTER_ADMINS, "cannot create ClusterRoleBinding");
            false
        }
    }
}
