//! What a kube-apiserver keeps in the cluster about itself, as the front keeps it: its identity
//! Lease `kube-system/apiserver-<hash>` (label `apiserver.kubernetes.io/identity`), renewed every
//! 10 s, and the `default/kubernetes` Service and EndpointSlice listing every front whose Lease
//! was renewed within the last 15 s (kube-apiserver's lease endpoint reconciler keeps the same
//! 15 s TTL in etcd; here the identity Leases carry it, with the address in an annotation). A
//! front that stops on SIGTERM removes itself at once; one that dies drops out after the TTL.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How often a front renews its Lease and reconciles the endpoints.
pub(crate) const PERIOD: Duration = Duration::from_secs(10);
/// How long a front counts as alive after its last renewal.
pub(crate) const TTL: Duration = Duration::from_secs(15);
/// The annotation holding a front's advertised `address:port`.
pub(crate) const ADDRESS_ANNOTATION: &str = "cpm.dev/advertise-address";
/// The identity label kube-apiserver puts on its Lease.
pub(crate) const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";

/// One front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `apiserver-<hash>`.
    pub(crate) lease: String,
    /// `<lease>_<random>` for this process.
    pub(crate) holder: String,
    pub(crate) address: IpAddr,
    pub(crate) port: u16,
}

impl Identity {
    pub(crate) fn new(address: IpAddr, port: u16) -> Self {
        let digest = Sha256::digest(format!("{address}:{port}").as_bytes());
        let hash: String = digest.iter().take(13).map(|b| format!("{b:02x}")).collect();
        let lease = format!("apiserver-{hash}");
        Self {
            holder: format!("{lease}_{:032x}", rand::random::<u128>()),
            lease,
            address,
            port,
        }
    }
}

fn rfc3339_micro(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let micros = t.microsecond();
    let base = t
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    format!("{base}.{micros:06}Z")
}

/// The identity Lease at `now`.
pub(crate) fn lease(me: &Identity, now: SystemTime) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": me.lease,
            "namespace": "kube-system",
            "labels": {IDENTITY_LABEL: "kube-apiserver"},
            "annotations": {ADDRESS_ANNOTATION: format!("{}:{}", me.address, me.port)},
        },
        "spec": {
            "holderIdentity": me.holder,
            "leaseDurationSeconds": 3600,
            "renewTime": rfc3339_micro(now),
        },
    })
}

/// The addresses of the fronts alive at `now` (Leases renewed within [`TTL`]), sorted, with
/// their port.
pub(crate) fn alive(leases: &[Value], now: SystemTime) -> Vec<(IpAddr, u16)> {
    let mut out: Vec<(IpAddr, u16)> = leases
        .iter()
        .filter(|l| {
            l.pointer("/spec/renewTime")
                .and_then(Value::as_str)
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .is_some_and(|t| SystemTime::from(t) + TTL > now)
        })
        .filter_map(|l| {
            let a = l
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    ADDRESS_ANNOTATION.replace('/', "~1")
                ))
                .and_then(Value::as_str)?;
            let (ip, port) = a.rsplit_once(':')?;
            Some((
                ip.trim_matches(['[', ']']).parse().ok()?,
                port.parse().ok()?,
            ))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The `default/kubernetes` EndpointSlice for `alive` (the port of the first).
pub(crate) fn endpoint_slice(alive: &[(IpAddr, u16)]) -> Value {
    let port = alive.first().map_or(6443, |(_, p)| *p);
    let v6 = alive.first().is_some_and(|(ip, _)| ip.is_ipv6());
    let endpoints: Vec<Value> = alive
        .iter()
        .map(|(ip, _)| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

/// The first address of a Service IP range (`10.96.0.0/12` → `10.96.0.1`).
pub(crate) fn first_service_ip(range: &str) -> Option<IpAddr> {
    let first = range.split(',').next()?.trim();
    let (net, _) = first.split_once('/')?;
    match net.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(IpAddr::V4((u32::from(v4) + 1).into())),
        IpAddr::V6(v6) => Some(IpAddr::V6((u128::from(v6) + 1).into())),
    }
}

/// The `default/kubernetes` Service.
pub(crate) fn service(cluster_ip: Option<IpAddr>, target_port: u16) -> Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": target_port}],
            "sessionAffinity": "None",
        },
    });
    if let Some(ip) = cluster_ip {
        svc["spec"]["clusterIP"] = json!(ip.to_string());
        svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
    }
    svc
}
