//! The four kubeconfigs of a master, with kubeadm's names, users, subjects and servers.

/// Where the kubeconfigs live, relative to the root.
pub const KUBERNETES_DIR: &str = "etc/kubernetes";

/// The root kubeconfig symlink, relative to the root.
pub const ROOT_KUBECONFIG: &str = "root/.kube/config";

/// What the root symlink points to (a host path, as `ls -l` shows it on the node).
pub const ROOT_KUBECONFIG_TARGET: &str = "/etc/kubernetes/admin.conf";

/// Which server a kubeconfig uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `controlPlaneEndpoint` (the node-local api-proxy by default): admins.
    ControlPlaneEndpoint,
    /// `https://<node-ip>:6443`, this node's own apiserver: components, as kubeadm does.
    LocalApiserver,
}

/// One kubeconfig file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// File name under [`KUBERNETES_DIR`].
    pub file: &'static str,
    /// Client certificate CN, also the kubeconfig user name.
    pub user: &'static str,
    /// Client certificate O (groups).
    pub groups: &'static [&'static str],
    /// Server.
    pub server: Server,
}

impl Spec {
    /// The path relative to the root.
    pub fn path(&self) -> String {
        format!("{KUBERNETES_DIR}/{}", self.file)
    }
}

/// The four kubeconfigs, in the order they are written.
pub const SPECS: [Spec; 4] = [
    Spec {
        file: "admin.conf",
        user: "kubernetes-admin",
        groups: &["kubeadm:cluster-admins"],
        server: Server::ControlPlaneEndpoint,
    },
    Spec {
        file: "super-admin.conf",
        user: "kubernetes-super-admin",
        groups: &["system:masters"],
        server: Server::ControlPlaneEndpoint,
    },
    Spec {
        file: "controller-manager.conf",
        user: "system:kube-controller-manager",
        groups: &[],
        server: Server::LocalApiserver,
    },
    Spec {
        file: "scheduler.conf",
        user: "system:kube-scheduler",
        groups: &[],
        server: Server::LocalApiserver,
    },
];

/// The apiserver's secure port on every master.
pub const APISERVER_PORT: u16 = 6443;
