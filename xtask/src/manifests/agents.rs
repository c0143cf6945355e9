//! The cpm DaemonSet on masters: one container per agent, each mounting exactly the host paths
//! it owns (PRODUCT.md §2) under `/host`. The image holders are not part of it: cpm-manifests
//! creates an image-holder pod on a master before a version step (`cpm_manifests::holder`); an
//! example of that pod is rendered beside the DaemonSet.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, KeyToPath, PodSpec, ProjectedVolumeSource,
    SecretVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};

use super::common::{
    NAMESPACE, Options, admin_probe, env, file, host_path, master_daemonset, meta, mount,
    node_identity, resources, runtime_default, security, yaml,
};
use super::rbac::AGENTS_SA;

/// Where the API credentials of the agents that use the API are mounted.
const KUBE_DIR: &str = "/var/run/secrets/cpm";
/// The ConfigMap with the agents' kubeconfig.
const KUBECONFIG_CM: &str = "cpm-agent-kubeconfig";

/// The agents' kubeconfig: the node-local api-proxy, the cluster CA from `kube-root-ca.crt`, the
/// projected ServiceAccount token (re-read by the client when it rotates).
const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: https://127.0.0.1:6445
    certificate-authority: /var/run/secrets/cpm/ca.crt
users:
- name: cpm
  user:
    tokenFile: /var/run/secrets/cpm/token
contexts:
- name: cpm
  context:
    cluster: cluster
    user: cpm
current-context: cpm
";

/// One agent container.
struct Agent {
    name: &'static str,
    admin_port: i32,
    /// Host mounts: volume name, container path under /host, read-only.
    host: &'static [(&'static str, &'static str, bool)],
    /// Mounts the CA bundle at /pki.
    pki: bool,
    /// Talks to the Kubernetes API.
    kube: bool,
    /// Creates the image-holder pods (`CPM_HOLDER_IMAGE`, `CPM_HOLDER_NAMESPACE`).
    holders: bool,
}

/// The host volumes: name, host path, hostPath type.
const HOST_VOLUMES: [(&str, &str, &str); 7] = [
    (
        "host-etc-kubernetes",
        "/etc/kubernetes",
        "DirectoryOrCreate",
    ),
    ("host-pki", "/etc/kubernetes/pki", "DirectoryOrCreate"),
    (
        "host-manifests",
        "/etc/kubernetes/manifests",
        "DirectoryOrCreate",
    ),
    ("host-cpm", "/etc/kubernetes/cpm", "DirectoryOrCreate"),
    (
        "host-certs-backup",
        "/etc/kubernetes/cpm/backup/cpm-certs",
        "DirectoryOrCreate",
    ),
    ("host-root-kube", "/root/.kube", "DirectoryOrCreate"),
    ("host-var-lib", "/var/lib", "Directory"),
];

const AGENTS: [Agent; 4] = [
    Agent {
        name: "cpm-certs",
        admin_port: 9601,
        host: &[
            ("host-pki", "/host/etc/kubernetes/pki", false),
            (
                "host-certs-backup",
                "/host/etc/kubernetes/cpm/backup/cpm-certs",
                false,
            ),
        ],
        pki: true,
        kube: false,
        holders: false,
    },
    Agent {
        name: "cpm-kubeconfig",
        admin_port: 9602,
        // The four kubeconfigs live directly in /etc/kubernetes: an atomic rename needs the
        // directory, not single files.
        host: &[
            ("host-etc-kubernetes", "/host/etc/kubernetes", false),
            ("host-root-kube", "/host/root/.kube", false),
        ],
        pki: true,
        kube: false,
        holders: false,
    },
    Agent {
        name: "cpm-manifests",
        admin_port: 9603,
        host: &[
            // Reads the PKI and kubeconfigs its pods reference (checksums).
            ("host-etc-kubernetes", "/host/etc/kubernetes", true),
            ("host-manifests", "/host/etc/kubernetes/manifests", false),
            ("host-cpm", "/host/etc/kubernetes/cpm", false),
        ],
        pki: false,
        kube: true,
        holders: true,
    },
    Agent {
        name: "cpm-etcd",
        admin_port: 9604,
        host: &[
            ("host-pki", "/host/etc/kubernetes/pki", true),
            ("host-manifests", "/host/etc/kubernetes/manifests", false),
            // A rejoining member's data dir is moved aside to /var/lib/etcd.removed-<time>:
            // the rename needs the parent directory.
            ("host-var-lib", "/host/var/lib", false),
        ],
        pki: false,
        kube: true,
        holders: false,
    },
];

fn agent_container(opts: &Options, a: &Agent) -> Container {
    let mut mounts: Vec<VolumeMount> = a
        .host
        .iter()
        .map(|(vol, path, ro)| mount(vol, path, *ro))
        .collect();
    mounts.push(mount("config", "/config", true));
    if a.pki {
        mounts.push(mount("pki", "/pki", true));
    }
    let mut envs = node_identity();
    envs.push(env("CPM_ROOT", "/host"));
    envs.push(env("CPM_LOG_FORMAT", "json"));
    if a.kube {
        mounts.push(mount("kube-api-access", KUBE_DIR, true));
        envs.push(env("CPM_KUBECONFIG", &format!("{KUBE_DIR}/kubeconfig")));
    }
    if a.holders {
        envs.push(env("CPM_HOLDER_IMAGE", &opts.image("cpm-holder")));
        envs.push(env("CPM_HOLDER_NAMESPACE", NAMESPACE));
    }
    Container {
        name: a.name.to_string(),
        image: Some(opts.image(a.name)),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(envs),
        volume_mounts: Some(mounts),
        liveness_probe: Some(admin_probe("/livez", a.admin_port, 6)),
        readiness_probe: Some(admin_probe("/readyz", a.admin_port, 3)),
        resources: Some(resources("10m", "32Mi", Some("1"), "256Mi")),
        security_context: Some(security(true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    }
}

fn volumes() -> Vec<Volume> {
    let mut v: Vec<Volume> = HOST_VOLUMES
        .iter()
        .map(|(name, path, t)| host_path(name, path, t))
        .collect();
    for (name, secret) in [("config", "cpm-config"), ("pki", "cpm-pki")] {
        v.push(Volume {
            name: name.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let cm = |name: &str, key: &str| VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: name.to_string(),
            items: Some(vec![KeyToPath {
                key: key.to_string(),
                path: key.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    v.push(Volume {
        name: "kube-api-access".to_string(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o400),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_string(),
                        expiration_seconds: Some(3607),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                cm("kube-root-ca.crt", "ca.crt"),
                cm(KUBECONFIG_CM, "kubeconfig"),
            ]),
        }),
        ..Default::default()
    });
    v
}

/// The DaemonSet `cpm`: one container per agent.
pub fn daemonset(opts: &Options) -> DaemonSet {
    master_daemonset(
        "cpm",
        PodSpec {
            service_account_name: Some(AGENTS_SA.to_string()),
            automount_service_account_token: Some(false),
            priority_class_name: Some("system-node-critical".to_string()),
            security_context: Some(runtime_default()),
            termination_grace_period_seconds: Some(30),
            containers: AGENTS.iter().map(|a| agent_container(opts, a)).collect(),
            volumes: Some(volumes()),
            ..Default::default()
        },
    )
}

/// `cpm-agents.yaml`: the agents' kubeconfig ConfigMap and the DaemonSet.
pub fn render(opts: &Options) -> anyhow::Result<String> {
    let cm = ConfigMap {
        metadata: meta(KUBECONFIG_CM, Some(NAMESPACE), "cpm"),
        data: Some(BTreeMap::from([(
            "kubeconfig".to_string(),
            KUBECONFIG.to_string(),
        )])),
        ..Default::default()
    };
    Ok(file(
        "The cpm agents on every master: cpm-certs, cpm-kubeconfig, cpm-manifests, cpm-etcd.\n\
         cpm-manifests creates image-holder pods on a master before a version step (see\n\
         examples/image-holder-pod.yaml), so the images are pulled before a manifest names them.\n\
         Needs: Secret cpm-config (key config.yaml) and Secret cpm-pki in cpm-system.",
        &[yaml(&cm)?, yaml(&daemonset(opts))?],
    ))
}

/// The node of the example image-holder pod.
pub const EXAMPLE_NODE: &str = "master-1";

/// The image-holder pod cpm-manifests creates on [`EXAMPLE_NODE`] before a step to `minor`,
/// with the control-plane images from `image_repository`.
pub fn holder_example(
    opts: &Options,
    image_repository: &str,
    minor: cpm_core::config::KubernetesMinor,
) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    let images = cpm_manifests::holder::images(image_repository.trim_end_matches('/'), minor, None)
        .with_context(|| format!("no built-in versions for Kubernetes {minor}"))?;
    Ok(cpm_manifests::holder::holder_pod(
        &cpm_manifests::holder::HolderSpec {
            namespace: NAMESPACE.to_string(),
            node: EXAMPLE_NODE.to_string(),
            holder_image: opts.image("cpm-holder"),
            images,
        },
    ))
}

/// `examples/image-holder-pod.yaml`: [`holder_example`].
pub fn render_holder_example(
    opts: &Options,
    image_repository: &str,
    minor: cpm_core::config::KubernetesMinor,
) -> anyhow::Result<String> {
    let pod = holder_example(opts, image_repository, minor)?;
    Ok(file(
        "An example of the image-holder pod cpm-manifests creates on a master before a version\n\
         step (here: node master-1, the example config's version); not something to apply.",
        &[yaml(&pod)?],
    ))
}
