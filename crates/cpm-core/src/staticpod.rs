//! Static pods as k8s-openapi `Pod` objects (never templates), and the checksum annotation that
//! makes the kubelet restart a pod exactly when one of its inputs changes.
//!
//! Shared by the agents that write static pods (cpm-manifests, cpm-etcd): each decides the
//! image, command, probes and mounts; this module builds the object the same way for all.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, HostPathVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

/// The annotation carrying the checksum over the manifest and every file it references.
pub const CHECKSUM_ANNOTATION: &str = "cpm.dev/config-checksum";

/// The priority of `system-node-critical`.
pub const NODE_CRITICAL_PRIORITY: i32 = 2_000_001_000;

/// A hostPath volume and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    /// Volume name.
    pub name: &'static str,
    /// Host path (also the mount path).
    pub path: String,
    /// `DirectoryOrCreate` or `FileOrCreate`.
    pub kind: &'static str,
    /// Read-only mount.
    pub read_only: bool,
}

/// A directory mount (`DirectoryOrCreate`).
pub fn dir(name: &'static str, path: &str, read_only: bool) -> HostMount {
    HostMount {
        name,
        path: path.to_string(),
        kind: "DirectoryOrCreate",
        read_only,
    }
}

/// A read-only file mount (`FileOrCreate`).
pub fn file(name: &'static str, path: &str) -> HostMount {
    HostMount {
        name,
        path: path.to_string(),
        kind: "FileOrCreate",
        read_only: true,
    }
}

/// Where a component's health endpoints are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probes {
    /// Host the kubelet probes (`127.0.0.1` or the node IP).
    pub host: String,
    /// Port.
    pub port: u16,
    /// `HTTPS` or `HTTP`.
    pub scheme: &'static str,
    /// Liveness and startup path.
    pub live: &'static str,
    /// Readiness path.
    pub ready: &'static str,
}

fn probe(p: &Probes, path: &str, period: i32, failures: i32, initial_delay: Option<i32>) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            host: Some(p.host.clone()),
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(p.port)),
            scheme: Some(p.scheme.into()),
            ..Default::default()
        }),
        initial_delay_seconds: initial_delay,
        period_seconds: Some(period),
        timeout_seconds: Some(15),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Everything a static pod needs.
#[derive(Debug, Clone)]
pub struct StaticPod {
    /// Pod and container name (`kube-apiserver`, `etcd`).
    pub name: String,
    /// The image.
    pub image: String,
    /// The container command (binary then flags).
    pub command: Vec<String>,
    /// Health endpoints.
    pub probes: Probes,
    /// hostPath volumes.
    pub mounts: Vec<HostMount>,
    /// CPU request.
    pub cpu: &'static str,
    /// Memory request.
    pub memory: &'static str,
}

/// Builds the pod: `kube-system`, labels `component` and `tier: control-plane`, host network,
/// `system-node-critical`, seccomp `RuntimeDefault`, liveness/readiness/startup probes, requests.
/// The checksum annotation is added by [`with_checksum`].
pub fn pod(p: &StaticPod) -> Pod {
    let container = Container {
        name: p.name.clone(),
        image: Some(p.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(p.command.clone()),
        liveness_probe: Some(probe(&p.probes, p.probes.live, 10, 8, Some(10))),
        readiness_probe: Some(probe(&p.probes, p.probes.ready, 1, 3, None)),
        startup_probe: Some(probe(&p.probes, p.probes.live, 10, 24, Some(10))),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(p.cpu.to_string())),
                ("memory".to_string(), Quantity(p.memory.to_string())),
            ])),
            ..Default::default()
        }),
        volume_mounts: Some(
            p.mounts
                .iter()
                .map(|m| VolumeMount {
                    name: m.name.into(),
                    mount_path: m.path.clone(),
                    read_only: Some(m.read_only),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    };
    let volumes = p
        .mounts
        .iter()
        .map(|m| Volume {
            name: m.name.into(),
            host_path: Some(HostPathVolumeSource {
                path: m.path.clone(),
                type_: Some(m.kind.into()),
            }),
            ..Default::default()
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(p.name.clone()),
            namespace: Some("kube-system".into()),
            labels: Some(BTreeMap::from([
                ("component".to_string(), p.name.clone()),
                ("tier".to_string(), "control-plane".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            host_network: Some(true),
            priority: Some(NODE_CRITICAL_PRIORITY),
            priority_class_name: Some("system-node-critical".into()),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

/// Adds the checksum annotation.
pub fn with_checksum(mut pod: Pod, checksum: &str) -> Pod {
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CHECKSUM_ANNOTATION.into(), checksum.into());
    pod
}

/// The content of a referenced file, or its absence.
pub type FileContent<'a> = Option<&'a [u8]>;

/// sha256 over `manifest` and each `(path, content)` in path order; a missing file counts as
/// missing, so its appearance changes the checksum too.
pub fn checksum(manifest: &str, files: &BTreeMap<String, FileContent<'_>>) -> String {
    let mut h = Sha256::new();
    h.update(b"manifest\0");
    h.update(manifest.as_bytes());
    for (path, content) in files {
        h.update(b"\0file\0");
        h.update(path.as_bytes());
        match content {
            Some(bytes) => {
                h.update(b"\0present\0");
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
            None => h.update(b"\0missing"),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
