//! Host paths the static pods reference (absolute, as the kubelet and the components see them)
//! and the files cpm-manifests owns. Node paths are these without the leading `/`.

/// Where the static pod manifests live.
pub const MANIFESTS: &str = "/etc/kubernetes/manifests";
/// cpm's component config files.
pub const CPM_DIR: &str = "/etc/kubernetes/cpm";
/// The node PKI.
pub const PKI: &str = "/etc/kubernetes/pki";
/// The audit policy file.
pub const AUDIT_POLICY: &str = "/etc/kubernetes/cpm/audit-policy.yaml";
/// The admission configuration (EventRateLimit).
pub const ADMISSION_CONFIG: &str = "/etc/kubernetes/cpm/admission-config.yaml";
/// The encryption-at-rest configuration.
pub const ENCRYPTION_CONFIG: &str = "/etc/kubernetes/cpm/encryption-config.yaml";
/// The kube-scheduler configuration.
pub const SCHEDULER_CONFIG: &str = "/etc/kubernetes/cpm/kube-scheduler-config.yaml";
/// Where the apiserver writes audit logs.
pub const AUDIT_LOG_DIR: &str = "/var/log/kube-audit";
/// Replaced manifests and config files (relative to the root).
pub const BACKUP_DIR: &str = "etc/kubernetes/cpm/backup/cpm-manifests";

/// `/etc/kubernetes/pki/<name>`.
pub fn pki(name: &str) -> String {
    format!("{PKI}/{name}")
}

/// The node path (relative to `--root`) of a host path.
pub fn node_path(host: &str) -> String {
    host.trim_start_matches('/').to_string()
}

/// The three control-plane components this binary renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// kube-apiserver.
    Apiserver,
    /// kube-controller-manager.
    ControllerManager,
    /// kube-scheduler.
    Scheduler,
}

impl Component {
    /// Every component, in rollout order.
    pub const ALL: [Component; 3] = [Self::Apiserver, Self::ControllerManager, Self::Scheduler];

    /// The component's name (binary, image and pod name).
    pub fn name(self) -> &'static str {
        match self {
            Self::Apiserver => "kube-apiserver",
            Self::ControllerManager => "kube-controller-manager",
            Self::Scheduler => "kube-scheduler",
        }
    }

    /// The static pod manifest's host path.
    pub fn manifest(self) -> String {
        format!("{MANIFESTS}/{}.yaml", self.name())
    }

    /// The secure port the component serves health on.
    pub fn port(self) -> u16 {
        match self {
            Self::Apiserver => 6443,
            Self::ControllerManager => 10257,
            Self::Scheduler => 10259,
        }
    }
}
