//! The leaf certificates of a master node, with kubeadm's names, files, subjects, usages and SANs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cpm_core::config::{ControlPlaneConfiguration, San};
use cpm_core::pki::Usage;

/// Where the node's PKI lives, relative to the root.
pub const PKI_DIR: &str = "etc/kubernetes/pki";

/// Which CA signs a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The cluster CA (`ca`).
    Kubernetes,
    /// The front-proxy CA.
    FrontProxy,
    /// The etcd CA.
    Etcd,
}

impl Signer {
    /// The CA's name as shown by `check-expiration`.
    pub fn name(self) -> &'static str {
        match self {
            Signer::Kubernetes => "ca",
            Signer::FrontProxy => "front-proxy-ca",
            Signer::Etcd => "etcd-ca",
        }
    }

    /// The CA's file stem under [`PKI_DIR`] (`ca`, `front-proxy-ca`, `etcd/ca`).
    pub fn stem(self) -> &'static str {
        match self {
            Signer::Kubernetes => "ca",
            Signer::FrontProxy => "front-proxy-ca",
            Signer::Etcd => "etcd/ca",
        }
    }
}

/// One leaf certificate a master needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// kubeadm's name (`apiserver`, `etcd-server`, …).
    pub name: &'static str,
    /// File stem under [`PKI_DIR`] (`apiserver`, `etcd/server`).
    pub stem: &'static str,
    /// The signing CA.
    pub signer: Signer,
    /// Subject CN.
    pub common_name: String,
    /// Subject O.
    pub organizations: Vec<String>,
    /// What it is for.
    pub usage: Usage,
    /// Subject alternative names, sorted and deduplicated.
    pub sans: Vec<San>,
}

impl Leaf {
    /// The certificate path relative to the root.
    pub fn cert_path(&self) -> String {
        format!("{PKI_DIR}/{}.crt", self.stem)
    }

    /// The key path relative to the root.
    pub fn key_path(&self) -> String {
        format!("{PKI_DIR}/{}.key", self.stem)
    }
}

/// Every leaf by kubeadm name, with its file stem and signer, in the order they are issued.
pub const LEAF_FILES: [(&str, &str, Signer); 7] = [
    ("apiserver", "apiserver", Signer::Kubernetes),
    (
        "apiserver-kubelet-client",
        "apiserver-kubelet-client",
        Signer::Kubernetes,
    ),
    (
        "apiserver-etcd-client",
        "apiserver-etcd-client",
        Signer::Etcd,
    ),
    (
        "front-proxy-client",
        "front-proxy-client",
        Signer::FrontProxy,
    ),
    ("etcd-server", "etcd/server", Signer::Etcd),
    ("etcd-peer", "etcd/peer", Signer::Etcd),
    (
        "etcd-healthcheck-client",
        "etcd/healthcheck-client",
        Signer::Etcd,
    ),
];

/// The CA certificates by name, with their path under [`PKI_DIR`].
pub const CA_FILES: [(&str, &str); 3] = [
    ("ca", "ca.crt"),
    ("front-proxy-ca", "front-proxy-ca.crt"),
    ("etcd-ca", "etcd/ca.crt"),
];

/// This node's identity, as the leaves need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Node name (a DNS name; it is a SAN of the apiserver and etcd certificates).
    pub name: San,
    /// Node IP.
    pub ip: IpAddr,
}

/// The seven leaves of a master, for this config and node.
pub fn leaves(cfg: &ControlPlaneConfiguration, node: &NodeIdentity) -> Vec<Leaf> {
    let dns = |s: &str| -> San { s.parse().expect("invariant: literal DNS name") };
    let loopback4 = San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut apiserver_sans = vec![
        dns("kubernetes"),
        dns("kubernetes.default"),
        dns("kubernetes.default.svc"),
        San::Dns(
            format!("kubernetes.default.svc.{}", cfg.cluster_domain)
                .parse()
                .expect("invariant: valid domain"),
        ),
        node.name.clone(),
        dns("localhost"),
        San::Ip(cfg.first_service_ip()),
        San::Ip(node.ip),
        loopback4.clone(),
    ];
    apiserver_sans.extend(cfg.apiserver.cert_sans.iter().cloned());
    let etcd_sans = vec![
        node.name.clone(),
        dns("localhost"),
        San::Ip(node.ip),
        loopback4,
        San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    let leaf = |i: usize, cn: &str, usage, sans: Vec<San>| {
        let (name, stem, signer) = LEAF_FILES[i];
        let mut sans = sans;
        sans.sort();
        sans.dedup();
        Leaf {
            name,
            stem,
            signer,
            common_name: cn.to_string(),
            organizations: Vec::new(),
            usage,
            sans,
        }
    };
    let node_cn = node.name.to_string();
    let mut kubelet_client = leaf(1, "kube-apiserver-kubelet-client", Usage::Client, vec![]);
    kubelet_client.organizations = vec!["kubeadm:cluster-admins".into()];
    vec![
        leaf(0, "kube-apiserver", Usage::Server, apiserver_sans),
        kubelet_client,
        leaf(2, "kube-apiserver-etcd-client", Usage::Client, vec![]),
        leaf(3, "front-proxy-client", Usage::Client, vec![]),
        leaf(4, &node_cn, Usage::ServerClient, etcd_sans.clone()),
        leaf(5, &node_cn, Usage::ServerClient, etcd_sans),
        leaf(6, "kube-etcd-healthcheck-client", Usage::Client, vec![]),
    ]
}
