//! The other workloads: the `kubernetes-api-proxy` static pod template (every node), the
//! per-master etcd-backup CronJob template, and the control-plane-proxy DaemonSet
//! (metrics-rbac-proxy on masters) with its Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, KeyToPath, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, PodTemplateSpec, SecretVolumeSource,
    Service, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{
    NAMESPACE, Options, admin_probe, env, env_field, file, host_path, labels, master_daemonset,
    master_tolerations, meta, mount, node_identity, resources, runtime_default, security, yaml,
};
use super::rbac::{METRICS_PATHS, PROXY_SA};

/// The placeholder for the bootstrap upstreams in the static pod template.
pub const UPSTREAMS_PLACEHOLDER: &str = "${CPM_BOOTSTRAP_UPSTREAMS}";
/// The placeholder for the master's node name in the CronJob template.
pub const NODE_PLACEHOLDER: &str = "${NODE_NAME}";
/// metrics-rbac-proxy's HTTPS port.
pub const PROXY_PORT: i32 = 4209;

/// The `kubernetes-api-proxy` static pod: api-proxy and proxy-reloader, host paths at the same
/// paths inside the containers (`--root /`), so the kubelet's kubeconfig resolves its
/// certificate paths as on the host.
pub fn api_proxy_pod(opts: &Options) -> Pod {
    let mut proxy_env = vec![env_field("NODE_IP", "status.hostIP")];
    proxy_env.push(env("CPM_UPSTREAM", UPSTREAMS_PLACEHOLDER));
    proxy_env.push(env("CPM_LOG_FORMAT", "json"));
    let api_proxy = Container {
        name: "api-proxy".to_string(),
        image: Some(opts.image("api-proxy")),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(proxy_env),
        volume_mounts: Some(vec![
            mount("api-proxy", "/etc/kubernetes/api-proxy", false),
            mount("ca", "/etc/kubernetes/pki/ca.crt", true),
        ]),
        liveness_probe: Some(admin_probe("/livez", 9606, 6)),
        readiness_probe: Some(admin_probe("/readyz", 9606, 3)),
        // No CPU limit on the data path: throttling would stall every API call of the node.
        resources: Some(resources("20m", "32Mi", None, "256Mi")),
        security_context: Some(security(true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    let reloader = Container {
        name: "proxy-reloader".to_string(),
        image: Some(opts.image("proxy-reloader")),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(vec![env("CPM_LOG_FORMAT", "json")]),
        volume_mounts: Some(vec![
            mount("api-proxy", "/etc/kubernetes/api-proxy", false),
            mount("kubelet-conf", "/etc/kubernetes/kubelet.conf", true),
            mount("kubelet-pki", "/var/lib/kubelet/pki", true),
        ]),
        liveness_probe: Some(admin_probe("/livez", 9605, 6)),
        readiness_probe: Some(admin_probe("/readyz", 9605, 3)),
        resources: Some(resources("10m", "32Mi", Some("200m"), "128Mi")),
        security_context: Some(security(true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    let mut metadata = meta("kubernetes-api-proxy", Some("kube-system"), "api-proxy");
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("component".to_string(), "kubernetes-api-proxy".to_string());
    Pod {
        metadata,
        spec: Some(PodSpec {
            host_network: Some(true),
            priority_class_name: Some("system-node-critical".to_string()),
            security_context: Some(runtime_default()),
            containers: vec![api_proxy, reloader],
            volumes: Some(vec![
                host_path(
                    "api-proxy",
                    "/etc/kubernetes/api-proxy",
                    "DirectoryOrCreate",
                ),
                host_path("ca", "/etc/kubernetes/pki/ca.crt", "File"),
                host_path("kubelet-conf", "/etc/kubernetes/kubelet.conf", "File"),
                host_path("kubelet-pki", "/var/lib/kubelet/pki", "Directory"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `static-pods/kubernetes-api-proxy.yaml`.
pub fn render_api_proxy(opts: &Options) -> anyhow::Result<String> {
    Ok(file(
        "Template of /etc/kubernetes/manifests/kubernetes-api-proxy.yaml (mode 0644), installed on\n\
         every node by the node bootstrap before the kubelet joins. Replace ${CPM_BOOTSTRAP_UPSTREAMS}\n\
         with the API servers known at bootstrap (comma-separated IP:PORT), e.g.\n\
         CPM_BOOTSTRAP_UPSTREAMS=10.0.0.1:6443,10.0.0.2:6443 envsubst < kubernetes-api-proxy.yaml\n\
         proxy-reloader then keeps /etc/kubernetes/api-proxy/upstreams.json current.",
        &[yaml(&api_proxy_pod(opts))?],
    ))
}

/// The etcd files etcd-backup reads under `--root` (its README), mounted one by one: the CA
/// certificate and the client pair, not the CA key nor the server and peer keys beside them.
pub const BACKUP_PKI_FILES: [(&str, &str); 3] = [
    ("etcd-ca-crt", "/etc/kubernetes/pki/etcd/ca.crt"),
    (
        "etcd-client-crt",
        "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
    ),
    (
        "etcd-client-key",
        "/etc/kubernetes/pki/etcd/healthcheck-client.key",
    ),
];

/// Where the CronJob mounts the Secret `cpm-config`, and the file it passes as `--config`.
pub const BACKUP_CONFIG: (&str, &str) = ("/config", "/config/config.yaml");

/// The etcd-backup CronJob of master `node`. Every path the binary uses is spelled in its
/// arguments (`--root`, `--config`, `--dir`) and mounted: the config Secret, the three etcd
/// files it reads, and the backup directory (which etcd-backup sets to 0700: the kubelet creates
/// a missing hostPath directory 0755). Retention and compression come from the config. etcd is
/// reached at the node IP (`NODE_IP`), where cpm-etcd's member listens.
pub fn backup_cronjob(opts: &Options, node: &str, cfg: &cpm_core::config::Backup) -> CronJob {
    let dir = cfg.directory.to_string_lossy().into_owned();
    let in_root = format!("/host{dir}");
    let (config_dir, config_file) = BACKUP_CONFIG;
    let mut mounts = vec![mount("config", config_dir, true)];
    let mut volumes = vec![Volume {
        name: "config".to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some("cpm-config".to_string()),
            items: Some(vec![KeyToPath {
                key: "config.yaml".to_string(),
                path: "config.yaml".to_string(),
                ..Default::default()
            }]),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }];
    for (name, path) in BACKUP_PKI_FILES {
        mounts.push(mount(name, &format!("/host{path}"), true));
        volumes.push(host_path(name, path, "File"));
    }
    mounts.push(mount("backups", &in_root, false));
    volumes.push(host_path("backups", &dir, "DirectoryOrCreate"));
    let container = Container {
        name: "etcd-backup".to_string(),
        image: Some(opts.image("etcd-backup")),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec![
            "--root=/host".to_string(),
            format!("--config={config_file}"),
            format!("--dir={in_root}"),
            "--log-format=json".to_string(),
            "snapshot".to_string(),
        ]),
        env: Some(node_identity()),
        volume_mounts: Some(mounts),
        resources: Some(resources("25m", "64Mi", Some("1"), "256Mi")),
        security_context: Some(security(true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    let affinity = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".to_string(),
                        operator: "In".to_string(),
                        values: Some(vec![node.to_string()]),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod_meta = ObjectMeta {
        labels: Some(labels("etcd-backup")),
        ..Default::default()
    };
    pod_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("cpm.dev/node".to_string(), node.to_string());
    let mut metadata = meta(
        &format!("etcd-backup-{node}"),
        Some(NAMESPACE),
        "etcd-backup",
    );
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("cpm.dev/node".to_string(), node.to_string());
    CronJob {
        metadata,
        spec: Some(CronJobSpec {
            schedule: cfg.schedule.clone(),
            time_zone: Some("Etc/UTC".to_string()),
            concurrency_policy: Some("Forbid".to_string()),
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    active_deadline_seconds: Some(3600),
                    ttl_seconds_after_finished: Some(86400),
                    template: PodTemplateSpec {
                        metadata: Some(pod_meta),
                        spec: Some(PodSpec {
                            restart_policy: Some("Never".to_string()),
                            automount_service_account_token: Some(false),
                            host_network: Some(true),
                            affinity: Some(affinity),
                            tolerations: Some(master_tolerations()),
                            security_context: Some(runtime_default()),
                            containers: vec![container],
                            volumes: Some(volumes),
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `etcd-backup/cronjob-template.yaml`.
pub fn render_backup(opts: &Options, cfg: &cpm_core::config::Backup) -> anyhow::Result<String> {
    Ok(file(
        "Template of one master's etcd-backup CronJob (one per master). Replace ${NODE_NAME} with\n\
         the master's Node name (at most 40 characters: CronJob names are limited to 52), e.g.\n\
         NODE_NAME=master-1 envsubst < cronjob-template.yaml | kubectl apply -f -\n\
         Schedule and directory come from the example configuration's etcd.backup; retention and\n\
         compression are read from the Secret cpm-config at each run.",
        &[yaml(&backup_cronjob(opts, NODE_PLACEHOLDER, cfg))?],
    ))
}

/// The metrics-rbac-proxy routes: path name and loopback upstream.
pub const ROUTES: [(&str, &str); 9] = [
    ("controller-manager", "https://127.0.0.1:10257/metrics"),
    ("scheduler", "https://127.0.0.1:10259/metrics"),
    ("etcd", "http://127.0.0.1:2381/metrics"),
    ("cpm-certs", "http://127.0.0.1:9601/metrics"),
    ("cpm-kubeconfig", "http://127.0.0.1:9602/metrics"),
    ("cpm-manifests", "http://127.0.0.1:9603/metrics"),
    ("cpm-etcd", "http://127.0.0.1:9604/metrics"),
    ("api-proxy", "http://127.0.0.1:9606/metrics"),
    ("proxy-reloader", "http://127.0.0.1:9605/metrics"),
];

/// The control-plane-proxy DaemonSet.
pub fn control_plane_proxy(opts: &Options) -> DaemonSet {
    debug_assert_eq!(ROUTES.len(), METRICS_PATHS.len());
    let mut args: Vec<String> = ROUTES
        .iter()
        .map(|(name, url)| format!("--route={name}={url}"))
        .collect();
    args.extend([
        // controller-manager and scheduler serve self-signed certificates on loopback, and
        // authorise /metrics through the API: the proxy presents its own token.
        "--upstream-insecure-skip-verify".to_string(),
        "--upstream-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token".to_string(),
        "--log-format=json".to_string(),
    ]);
    let container = Container {
        name: "metrics-rbac-proxy".to_string(),
        image: Some(opts.image("metrics-rbac-proxy")),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(args),
        env: Some(node_identity()),
        ports: Some(vec![ContainerPort {
            name: Some("https-metrics".to_string()),
            container_port: PROXY_PORT,
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        liveness_probe: Some(admin_probe("/livez", 9607, 6)),
        readiness_probe: Some(admin_probe("/readyz", 9607, 3)),
        resources: Some(resources("10m", "24Mi", Some("200m"), "128Mi")),
        security_context: Some(security(false)),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    master_daemonset(
        "control-plane-proxy",
        PodSpec {
            service_account_name: Some(PROXY_SA.to_string()),
            // In-cluster credentials for TokenReview/SubjectAccessReview.
            automount_service_account_token: Some(true),
            priority_class_name: Some("system-cluster-critical".to_string()),
            security_context: Some(runtime_default()),
            containers: vec![container],
            ..Default::default()
        },
    )
}

/// The headless Service the ServiceMonitor selects.
pub fn control_plane_proxy_service() -> Service {
    Service {
        metadata: meta(
            "control-plane-proxy",
            Some(NAMESPACE),
            "control-plane-proxy",
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "control-plane-proxy".to_string(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some("https-metrics".to_string()),
                port: PROXY_PORT,
                target_port: Some(IntOrString::String("https-metrics".to_string())),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `control-plane-proxy.yaml`.
pub fn render_proxy(opts: &Options) -> anyhow::Result<String> {
    Ok(file(
        "metrics-rbac-proxy on every master (host network, <node IP>:4209): authenticated,\n\
         authorised HTTPS paths /<name>/metrics to the loopback metrics of the control plane and\n\
         of the cpm agents. The headless Service exists for the ServiceMonitor.",
        &[
            yaml(&control_plane_proxy(opts))?,
            yaml(&control_plane_proxy_service())?,
        ],
    ))
}
