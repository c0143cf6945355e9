//! The static pods, built as k8s-openapi `Pod` objects: image, command, probes, resources,
//! hostPath volumes, priority and security context. Serialized, never templated.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, HostPathVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::layout::{AUDIT_LOG_DIR, CPM_DIR, Component, PKI};

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

fn dir(name: &'static str, path: &str, read_only: bool) -> HostMount {
    HostMount {
        name,
        path: path.to_string(),
        kind: "DirectoryOrCreate",
        read_only,
    }
}

fn file(name: &'static str, path: &str) -> HostMount {
    HostMount {
        name,
        path: path.to_string(),
        kind: "FileOrCreate",
        read_only: true,
    }
}

/// The host mounts of `component`.
pub fn mounts(component: Component, audit: bool) -> Vec<HostMount> {
    let mut m = vec![
        dir("ca-certs", "/etc/ssl/certs", true),
        dir("etc-ca-certificates", "/etc/ca-certificates", true),
        dir("k8s-certs", PKI, true),
    ];
    match component {
        Component::Apiserver => {
            m.push(dir("cpm-config", CPM_DIR, true));
            if audit {
                m.push(dir("audit-log", AUDIT_LOG_DIR, false));
            }
        }
        Component::ControllerManager => {
            m.push(file(
                "kubeconfig",
                "/etc/kubernetes/controller-manager.conf",
            ));
            m.push(dir(
                "flexvolume-dir",
                "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
                false,
            ));
        }
        Component::Scheduler => {
            m.push(file("kubeconfig", "/etc/kubernetes/scheduler.conf"));
            m.push(dir("cpm-config", CPM_DIR, true));
        }
    }
    m
}

fn probe(
    host: &str,
    path: &str,
    port: u16,
    period: i32,
    failures: i32,
    initial_delay: Option<i32>,
) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            host: Some(host.to_string()),
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(port)),
            scheme: Some("HTTPS".into()),
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
pub struct PodInputs<'a> {
    /// Which component.
    pub component: Component,
    /// `<imageRepository>/<name>:<tag>`.
    pub image: String,
    /// The container command (binary then flags).
    pub command: Vec<String>,
    /// Where the health endpoints listen (the node IP for the apiserver, 127.0.0.1 otherwise).
    pub probe_host: &'a str,
    /// Whether audit logging is on (apiserver).
    pub audit: bool,
    /// The CPU request.
    pub cpu: &'static str,
    /// The memory request.
    pub memory: &'static str,
}

/// Builds the static pod. The checksum annotation is added later by [`with_checksum`].
pub fn pod(p: &PodInputs<'_>) -> Pod {
    let name = p.component.name();
    let port = p.component.port();
    let (live, ready) = match p.component {
        Component::Apiserver => ("/livez", "/readyz"),
        Component::ControllerManager | Component::Scheduler => ("/healthz", "/healthz"),
    };
    let mounts = mounts(p.component, p.audit);
    let container = Container {
        name: name.to_string(),
        image: Some(p.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(p.command.clone()),
        liveness_probe: Some(probe(p.probe_host, live, port, 10, 8, Some(10))),
        readiness_probe: Some(probe(p.probe_host, ready, port, 1, 3, None)),
        startup_probe: Some(probe(p.probe_host, live, port, 10, 24, Some(10))),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(p.cpu.to_string())),
                ("memory".to_string(), Quantity(p.memory.to_string())),
            ])),
            ..Default::default()
        }),
        volume_mounts: Some(
            mounts
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
    let volumes = mounts
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
            name: Some(name.to_string()),
            namespace: Some("kube-system".into()),
            labels: Some(BTreeMap::from([
                ("component".to_string(), name.to_string()),
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
