//! The etcd static pod: flags, mounts, probes, the checksum over the certificates it reads, and
//! the backend quota policy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cpm_core::config::{ControlPlaneConfiguration, Quota};
use cpm_core::staticpod::{Probes, StaticPod, checksum, dir, pod, with_checksum};
use cpm_core::versions::{self, EtcdMove, etcd_tag};

/// The manifest's host path.
pub const MANIFEST: &str = "/etc/kubernetes/manifests/etcd.yaml";
/// etcd's data directory.
pub const DATA_DIR: &str = "/var/lib/etcd";
/// The etcd PKI directory.
pub const PKI: &str = "/etc/kubernetes/pki/etcd";
/// Plain-HTTP metrics and health on loopback.
pub const METRICS_URL: &str = "http://127.0.0.1:2381";

const GIB: u64 = 1 << 30;

/// Whether this member starts a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// A new single-member cluster (the first master).
    New,
    /// An existing cluster this member was added to.
    Existing,
}

/// A member as `--initial-cluster` names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Member name (the node name).
    pub name: String,
    /// Peer IP.
    pub ip: IpAddr,
}

/// What the manifest depends on besides the config.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The configuration.
    pub config: &'a ControlPlaneConfiguration,
    /// This member (node name and IP).
    pub this: Peer,
    /// Every member of `--initial-cluster`, this one included.
    pub members: &'a [Peer],
    /// New or existing cluster.
    pub state: ClusterState,
    /// The backend quota in bytes (see [`quota_bytes`]).
    pub quota_bytes: u64,
    /// The certificates and keys it reads, by host path (`None`: missing).
    pub pki_files: &'a BTreeMap<String, Option<Vec<u8>>>,
    /// The etcd image tag the node runs now, if any.
    pub running_tag: Option<&'a str>,
    /// How etcd may move from `running_tag`.
    pub etcd_move: EtcdMove,
}

/// The certificates and keys etcd reads.
pub fn referenced_files() -> Vec<String> {
    ["ca.crt", "server.crt", "server.key", "peer.crt", "peer.key"]
        .iter()
        .map(|f| format!("{PKI}/{f}"))
        .collect()
}

/// The backend quota: a configured number of bytes, or with `auto` an eighth of the smallest
/// master's memory clamped to 2–8 GiB, never below what the cluster runs with now (lowering it
/// could put a full database into alarm).
pub fn quota_bytes(
    config: &ControlPlaneConfiguration,
    smallest_master_memory: Option<u64>,
    current: Option<u64>,
) -> u64 {
    match config.etcd.quota_backend_bytes {
        Quota::Bytes(n) => n,
        Quota::Auto => {
            let derived =
                smallest_master_memory.map_or(2 * GIB, |m| (m / 8).clamp(2 * GIB, 8 * GIB));
            derived.max(current.unwrap_or(0))
        }
    }
}

fn url(scheme: &str, ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
    }
}

/// The etcd flags. Only flags etcd 3.4, 3.5 and 3.6 all accept (the tests run 3.4).
pub fn flags(i: &Inputs<'_>) -> BTreeMap<String, String> {
    let ip = i.this.ip;
    let mut members: Vec<&Peer> = i.members.iter().collect();
    members.sort();
    members.dedup();
    let initial: Vec<String> = members
        .iter()
        .map(|p| format!("{}={}", p.name, url("https", p.ip, 2380)))
        .collect();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let mut listen_client = vec![url("https", loopback, 2379)];
    if ip != loopback {
        listen_client.push(url("https", ip, 2379));
    }
    let pki = |f: &str| format!("{PKI}/{f}");
    let mut f = BTreeMap::new();
    for (k, v) in [
        ("advertise-client-urls", url("https", ip, 2379)),
        ("cert-file", pki("server.crt")),
        ("client-cert-auth", "true".into()),
        ("data-dir", DATA_DIR.into()),
        ("experimental-initial-corrupt-check", "true".into()),
        ("experimental-corrupt-check-time", "60m".into()),
        ("experimental-watch-progress-notify-interval", "5s".into()),
        ("initial-advertise-peer-urls", url("https", ip, 2380)),
        ("initial-cluster", initial.join(",")),
        (
            "initial-cluster-state",
            match i.state {
                ClusterState::New => "new",
                ClusterState::Existing => "existing",
            }
            .into(),
        ),
        ("key-file", pki("server.key")),
        ("listen-client-urls", listen_client.join(",")),
        ("listen-metrics-urls", METRICS_URL.into()),
        ("listen-peer-urls", url("https", ip, 2380)),
        ("name", i.this.name.clone()),
        ("peer-cert-file", pki("peer.crt")),
        ("peer-client-cert-auth", "true".into()),
        ("peer-key-file", pki("peer.key")),
        ("peer-trusted-ca-file", pki("ca.crt")),
        ("quota-backend-bytes", i.quota_bytes.to_string()),
        ("snapshot-count", "10000".into()),
        ("trusted-ca-file", pki("ca.crt")),
    ] {
        f.insert(k.to_string(), v);
    }
    f
}

/// The rendered manifest and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The manifest bytes.
    pub bytes: Vec<u8>,
    /// The checksum annotation.
    pub checksum: String,
}

/// The manifest header.
pub const HEADER: &str = "# Generated by cpm-etcd; do not edit: changes are overwritten.\n";

/// Renders the etcd static pod.
pub fn render(i: &Inputs<'_>) -> Option<Rendered> {
    let v = versions::lookup(i.config.kubernetes_version)?;
    let command = std::iter::once("etcd".to_string())
        .chain(flags(i).iter().map(|(k, v)| format!("--{k}={v}")))
        .collect();
    let p = pod(&StaticPod {
        name: "etcd".into(),
        image: format!(
            "{}/etcd:{}",
            i.config.image_repository,
            etcd_tag(v.etcd, i.running_tag, i.etcd_move)
        ),
        command,
        probes: Probes {
            host: "127.0.0.1".into(),
            port: 2381,
            scheme: "HTTP",
            live: "/livez",
            ready: "/readyz",
        },
        mounts: vec![
            dir("etcd-data", DATA_DIR, false),
            dir("etcd-certs", PKI, true),
        ],
        cpu: "100m",
        memory: "100Mi",
    });
    let bare = serde_saphyr::to_string(&p).ok()?;
    let refs: BTreeMap<String, Option<&[u8]>> = referenced_files()
        .into_iter()
        .map(|f| {
            let content = i.pki_files.get(&f).and_then(|c| c.as_deref());
            (f, content)
        })
        .collect();
    let sum = checksum(&bare, &refs);
    let text = serde_saphyr::to_string(&with_checksum(p, &sum)).ok()?;
    Some(Rendered {
        bytes: format!("{HEADER}{text}").into_bytes(),
        checksum: sum,
    })
}

#[cfg(test)]
mod tests;
