//! A dev-only node simulator: plays the kubelet for simulated masters against one test API
//! server, so the objects `cargo xtask manifests` generates run as a cluster would run them.
//!
//! - **Hosts are network namespaces** ([`net`]): each master is a namespace joined to a
//!   per-cluster bridge by a veth pair, with its own address on a per-cluster /24, so every
//!   master keeps every port cpm uses (127.0.0.1:6445, 127.0.0.1:9601–9607, 2379/2380/2381, …).
//! - **Containers run under runc, always** ([`runc`], [`oci`]): exactly the pod's command,
//!   args, env, volume mounts and security context, in the master's network namespace (or a
//!   pod sandbox namespace) and a mount namespace of their own, so paths inside are exactly the
//!   pod spec's. The one liberty: a hostPath `H` is `<master root>/H` on this machine.
//! - **Images** ([`image`]): one table maps an image reference to what runs (a workspace
//!   binary, Debian's etcd, or "not runnable yet"); process mode builds a rootfs from the host's
//!   `/usr` plus that binary at the image's path, image mode unpacks `target/images/<bin>.tar`.
//! - **The kubelet** ([`kubelet`], [`pod`], [`staticpod`], [`probe`], [`volume`], [`env`],
//!   [`backoff`]): Node registration and heartbeat, pods bound to the node, static pods from
//!   `etc/kubernetes/manifests` with mirror pods, probes, restart policies with back-off.
//! - **Controllers** ([`controllers`]): DaemonSet, CronJob and Job, ServiceAccount tokens,
//!   `kube-root-ca.crt` publishing: the parts of kube-controller-manager cpm's objects need.
//! - **The cluster** ([`cluster`]): [`cluster::SimCluster`] builds the PKI and Secrets, starts
//!   the store, applies the generated objects ([`manifests`]) and adds masters.
//!
//! What it does not model is listed in `docs/testing.md`. Needs root, `runc` and `ip`.

pub mod backoff;
pub mod cluster;
pub mod context;
pub mod controllers;
pub mod cron;
pub mod env;
pub mod error;
pub mod image;
pub mod kubelet;
pub mod manifests;
pub mod net;
pub mod oci;
pub mod pod;
pub mod probe;
pub mod runc;
pub mod staticpod;
pub mod volume;

pub use cluster::{SimCluster, SimOptions};
pub use error::SimError;
