//! The control-plane static pods: which mounts, probes and requests each component gets; the
//! objects are built by `cpm_core::staticpod`.

pub use cpm_core::staticpod::{CHECKSUM_ANNOTATION, pod, with_checksum};
use cpm_core::staticpod::{HostMount, Probes, StaticPod, dir, file};

use crate::layout::{AUDIT_LOG_DIR, CPM_DIR, Component, PKI};

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

/// Everything a control-plane static pod needs.
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

impl PodInputs<'_> {
    /// The generic static pod.
    pub fn static_pod(&self) -> StaticPod {
        let (live, ready) = match self.component {
            Component::Apiserver => ("/livez", "/readyz"),
            Component::ControllerManager | Component::Scheduler => ("/healthz", "/healthz"),
        };
        StaticPod {
            name: self.component.name().to_string(),
            image: self.image.clone(),
            command: self.command.clone(),
            probes: Probes {
                host: self.probe_host.to_string(),
                port: self.component.port(),
                scheme: "HTTPS",
                live,
                ready,
            },
            mounts: mounts(self.component, self.audit),
            cpu: self.cpu,
            memory: self.memory,
        }
    }
}
