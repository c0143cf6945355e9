//! What pod workers share: the cluster's context (API client, runc, directories, images,
//! tokens, network) and each node's (name, address, namespace, root).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::controllers::tokens::TokenIssuer;
use crate::image::RootfsMode;
use crate::net::ClusterNet;
use crate::runc::Runc;

/// Shared by everything of one simulated cluster.
pub struct ClusterCtx {
    /// An admin client of the store.
    pub client: kube::Client,
    /// The cluster's runc state root.
    pub runc: Runc,
    /// The cluster's work directory (pods, containers, logs, masters' roots).
    pub dir: PathBuf,
    /// Where the workspace binaries are (`target/<profile>`).
    pub bin_dir: PathBuf,
    /// The registry prefix of cpm's images in the manifests (`cpm`).
    pub cpm_prefix: String,
    /// How containers get their root filesystem.
    pub rootfs: RootfsMode,
    /// ServiceAccount tokens.
    pub tokens: Arc<dyn TokenIssuer>,
    /// The bridge and subnet.
    pub net: Arc<ClusterNet>,
    /// Host indexes taken (masters from 2, pod sandboxes from 100).
    pub taken: Mutex<std::collections::BTreeSet<u8>>,
    /// `KUBERNETES_SERVICE_HOST` and friends.
    pub service_env: Vec<(String, String)>,
    /// Set when the cluster is being torn down: nothing new starts.
    pub stopping: AtomicBool,
    /// Service addresses routed to their backend in every host and pod sandbox (kube-proxy's
    /// part): `default/kubernetes` → the store.
    pub service_routes: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
}

impl std::fmt::Debug for ClusterCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCtx")
            .field("dir", &self.dir)
            .field("tag", &self.net.tag)
            .finish_non_exhaustive()
    }
}

impl ClusterCtx {
    /// Whether teardown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Adds a host (a master, or a pod sandbox) with address index `index`: its namespace on
    /// the bridge and the Service routes.
    pub fn add_host(&self, netns: &str, index: u8) -> crate::error::Result<Ipv4Addr> {
        let ip = self.net.add_host(netns, index)?;
        for (service, target) in &self.service_routes {
            ClusterNet::route_service(netns, *service, *target)?;
        }
        Ok(ip)
    }

    /// Takes the first free host index at or above `from`.
    pub fn take_index(&self, from: u8) -> Option<u8> {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = (from..=253).find(|i| !taken.contains(i))?;
        taken.insert(index);
        Some(index)
    }

    /// Gives a host index back.
    pub fn release_index(&self, index: u8) {
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&index);
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct NodeCtx {
    /// The Node name.
    pub name: String,
    /// Its InternalIP.
    pub ip: Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
    /// Its root directory (what `/` is on that host).
    pub root: PathBuf,
    /// The cluster.
    pub cluster: Arc<ClusterCtx>,
}
