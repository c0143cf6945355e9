//! Least-privilege RBAC, one file per component, each rule granted because a named piece of
//! code needs it (the comments in the generated files say which).

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::common::{NAMESPACE, file, meta, yaml};

/// The ServiceAccount of the cpm agents DaemonSet.
pub const AGENTS_SA: &str = "cpm";
/// The ServiceAccount of the control-plane-proxy DaemonSet (metrics-rbac-proxy).
pub const PROXY_SA: &str = "metrics-rbac-proxy";
/// The Leases in kube-system: etcd membership changes (cpm-etcd, `MEMBERSHIP_LEASE`) and
/// the one-master-at-a-time rollout (cpm-manifests, `rollout::LEASE_NAME`).
const LEASES: [&str; 2] = ["cpm-etcd-membership", "cpm-rollout"];
/// What cpm-manifests does with its image-holder pods in cpm-system.
const HOLDER_POD_VERBS: [&str; 5] = ["get", "list", "watch", "create", "delete"];
/// The Secret holding the encryption-at-rest keys (cpm-manifests, `ENCRYPTION_SECRET`).
const ENCRYPTION_SECRET: &str = "cpm-encryption-keys";
/// The non-resource URLs metrics-rbac-proxy serves; Prometheus may `get` them.
pub const METRICS_PATHS: [&str; 9] = [
    "/controller-manager/metrics",
    "/scheduler/metrics",
    "/etcd/metrics",
    "/cpm-certs/metrics",
    "/cpm-kubeconfig/metrics",
    "/cpm-manifests/metrics",
    "/cpm-etcd/metrics",
    "/api-proxy/metrics",
    "/proxy-reloader/metrics",
];
/// The Prometheus ServiceAccount bound to the metrics reader (kube-prometheus' default).
pub const PROMETHEUS_SA: (&str, &str) = ("monitoring", "prometheus-k8s");

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        resource_names: (!names.is_empty()).then(|| strings(names)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

fn sa_subject(namespace: &str, name: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".to_string(),
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
    }
}

fn service_account(name: &str, component: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(name, Some(NAMESPACE), component),
        // Pods mount a token only where a container needs one (projected volumes).
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

fn cluster_role(name: &str, component: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, None, component),
        rules: Some(rules),
        ..Default::default()
    }
}

fn cluster_binding(name: &str, component: &str, subject: Subject) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None, component),
        role_ref: role_ref("ClusterRole", name),
        subjects: Some(vec![subject]),
    }
}

fn role(name: &str, namespace: &str, component: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: meta(name, Some(namespace), component),
        rules: Some(rules),
    }
}

fn role_binding(name: &str, namespace: &str, component: &str, subject: Subject) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, Some(namespace), component),
        role_ref: role_ref("Role", name),
        subjects: Some(vec![subject]),
    }
}

/// `rbac/cpm-agents.yaml`.
pub fn agents() -> anyhow::Result<String> {
    let c = "cpm";
    let sa = || sa_subject(NAMESPACE, AGENTS_SA);
    let docs = vec![
        yaml(&service_account(AGENTS_SA, c))?,
        yaml(&cluster_role(
            "cpm:agents",
            c,
            vec![
                // cpm-manifests and cpm-etcd list the control-plane Nodes.
                rule(&[""], &["nodes"], &[], &["get", "list", "watch"]),
                // cpm-manifests lists and watches the scheduler webhooks and writes their status.
                rule(
                    &["cpm.dev"],
                    &["kubeschedulerwebhookconfigurations"],
                    &[],
                    &["get", "list", "watch"],
                ),
                rule(
                    &["cpm.dev"],
                    &["kubeschedulerwebhookconfigurations/status"],
                    &[],
                    &["patch", "update"],
                ),
                // The per-node status objects (ControlPlaneNode).
                rule(
                    &["cpm.dev"],
                    &["controlplanenodes"],
                    &[],
                    &["get", "list", "watch", "create", "update", "patch"],
                ),
                rule(
                    &["cpm.dev"],
                    &["controlplanenodes/status"],
                    &[],
                    &["get", "update", "patch"],
                ),
            ],
        ))?,
        yaml(&cluster_binding("cpm:agents", c, sa()))?,
        yaml(&role(
            "cpm:agents",
            "kube-system",
            c,
            vec![
                // cpm-etcd's and cpm-manifests' Lease locks (cpm_core::lease: get, create,
                // replace). `create` cannot be restricted by name.
                rule(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &LEASES,
                    &["get", "update"],
                ),
                // cpm-manifests' encryption-at-rest keys: read, created once.
                rule(&[""], &["secrets"], &[], &["create"]),
                rule(&[""], &["secrets"], &[ENCRYPTION_SECRET], &["get"]),
                // cpm-manifests' health gate reads the mirror pods.
                rule(&[""], &["pods"], &[], &["get", "list"]),
            ],
        ))?,
        yaml(&role_binding("cpm:agents", "kube-system", c, sa()))?,
        yaml(&role(
            "cpm:agents",
            NAMESPACE,
            c,
            // cpm-manifests' image-holder pods (cpm_manifests::holder): created on a master
            // before a version step, watched until Ready, deleted when the step is over.
            // `create` cannot be restricted by name, and the names carry a hash.
            vec![rule(&[""], &["pods"], &[], &HOLDER_POD_VERBS)],
        ))?,
        yaml(&role_binding("cpm:agents", NAMESPACE, c, sa()))?,
        yaml(&role(
            "cpm:agents",
            "default",
            c,
            // cpm-manifests reports rejected webhooks as Events in `default`.
            vec![rule(&[""], &["events"], &[], &["create", "patch"])],
        ))?,
        yaml(&role_binding("cpm:agents", "default", c, sa()))?,
    ];
    Ok(file(
        "RBAC of the cpm agents DaemonSet (cpm-certs, cpm-kubeconfig, cpm-manifests, cpm-etcd).\n\
         cpm-certs and cpm-kubeconfig use no API credentials (cpm-kubeconfig's ClusterRoleBinding\n\
         goes through the node's super-admin.conf). Secrets cpm-config and cpm-pki reach the pod\n\
         as volumes, so the ServiceAccount cannot read them through the API.",
        &docs,
    ))
}

/// `rbac/proxy-reloader.yaml`.
pub fn proxy_reloader() -> anyhow::Result<String> {
    let c = "proxy-reloader";
    let nodes = Subject {
        kind: "Group".to_string(),
        name: "system:nodes".to_string(),
        api_group: Some("rbac.authorization.k8s.io".to_string()),
        ..Default::default()
    };
    let docs = vec![
        yaml(&role(
            "cpm:proxy-reloader",
            "default",
            c,
            vec![rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &[],
                &["get", "list", "watch"],
            )],
        ))?,
        yaml(&role_binding("cpm:proxy-reloader", "default", c, nodes))?,
    ];
    Ok(file(
        "proxy-reloader runs in the kubernetes-api-proxy static pod with the kubelet's credentials\n\
         (group system:nodes) and lists the EndpointSlices of Service default/kubernetes by label.\n\
         RBAC cannot filter a list by label and resourceNames only restricts get (and list/watch\n\
         with a metadata.name field selector), so every node may read every EndpointSlice in the\n\
         namespace `default` (addresses of the Services there), nothing elsewhere.",
        &docs,
    ))
}

/// `rbac/metrics-rbac-proxy.yaml`.
pub fn metrics_proxy() -> anyhow::Result<String> {
    let c = "control-plane-proxy";
    let docs = vec![
        yaml(&service_account(PROXY_SA, c))?,
        yaml(&cluster_role(
            "cpm:metrics-rbac-proxy",
            c,
            vec![
                rule(
                    &["authentication.k8s.io"],
                    &["tokenreviews"],
                    &[],
                    &["create"],
                ),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &[],
                    &["create"],
                ),
                // controller-manager and scheduler authorise their /metrics through the API:
                // the proxy presents its own token there.
                PolicyRule {
                    non_resource_urls: Some(vec!["/metrics".to_string()]),
                    verbs: vec!["get".to_string()],
                    ..Default::default()
                },
            ],
        ))?,
        yaml(&cluster_binding(
            "cpm:metrics-rbac-proxy",
            c,
            sa_subject(NAMESPACE, PROXY_SA),
        ))?,
    ];
    Ok(file(
        "metrics-rbac-proxy authenticates callers with TokenReviews and authorises them with\n\
         SubjectAccessReviews; it needs nothing else.",
        &docs,
    ))
}

/// `rbac/prometheus.yaml`.
pub fn prometheus() -> anyhow::Result<String> {
    let c = "control-plane-proxy";
    let role = ClusterRole {
        metadata: meta("cpm:metrics-reader", None, c),
        rules: Some(vec![PolicyRule {
            // The proxy's paths, and /metrics of kube-apiserver (scraped directly).
            non_resource_urls: Some(
                std::iter::once("/metrics")
                    .chain(METRICS_PATHS)
                    .map(str::to_string)
                    .collect(),
            ),
            verbs: vec!["get".to_string()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let docs = vec![
        yaml(&role)?,
        yaml(&cluster_binding(
            "cpm:metrics-reader",
            c,
            sa_subject(PROMETHEUS_SA.0, PROMETHEUS_SA.1),
        ))?,
    ];
    Ok(file(
        "Lets Prometheus scrape the paths metrics-rbac-proxy serves on each master (port 4209).\n\
         The binding names kube-prometheus' ServiceAccount monitoring/prometheus-k8s: change the\n\
         subject to your Prometheus' ServiceAccount.",
        &docs,
    ))
}
