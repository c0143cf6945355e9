//! Command-line flags of the three components: kubeadm's defaults, cpm's hardening, then the
//! operator's `extraArgs` and `featureGates`, with the flags cpm must own refused.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cpm_core::config::{AuditMode, ControlPlaneConfiguration};

use crate::layout::{
    ADMISSION_CONFIG, AUDIT_LOG_DIR, AUDIT_POLICY, ENCRYPTION_CONFIG, SCHEDULER_CONFIG, pki,
};

/// Strong TLS 1.2 suites (ECDHE with AEAD only); TLS 1.3 suites are not configurable in Go.
pub const CIPHER_SUITES: &str = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256";

/// Admission plugins always on.
pub const BASE_ADMISSION_PLUGINS: [&str; 2] = ["NodeRestriction", "EventRateLimit"];

/// apiserver flags `extraArgs` may not set: TLS files, etcd endpoints and credentials,
/// authentication and authorization, service-account keys, the files cpm renders, hardening.
pub const PROTECTED_APISERVER_FLAGS: &[&str] = &[
    "admission-control-config-file",
    "advertise-address",
    "anonymous-auth",
    "audit-log-path",
    "audit-policy-file",
    "authorization-mode",
    "bind-address",
    "client-ca-file",
    "enable-admission-plugins",
    "encryption-provider-config",
    "etcd-cafile",
    "etcd-certfile",
    "etcd-keyfile",
    "etcd-servers",
    "feature-gates",
    "insecure-port",
    "kubelet-certificate-authority",
    "kubelet-client-certificate",
    "kubelet-client-key",
    "profiling",
    "proxy-client-cert-file",
    "proxy-client-key-file",
    "requestheader-allowed-names",
    "requestheader-client-ca-file",
    "requestheader-extra-headers-prefix",
    "requestheader-group-headers",
    "requestheader-username-headers",
    "secure-port",
    "service-account-issuer",
    "service-account-key-file",
    "service-account-signing-key-file",
    "service-cluster-ip-range",
    "tls-cert-file",
    "tls-cipher-suites",
    "tls-min-version",
    "tls-private-key-file",
    "token-auth-file",
];

/// What this node's flags depend on besides the config.
#[derive(Debug, Clone)]
pub struct NodeFacts<'a> {
    /// This node's IP.
    pub ip: IpAddr,
    /// The other masters' IPs (etcd members), in a stable order.
    pub peers: &'a [IpAddr],
    /// Whether encryption at rest is configured (an encryption config is rendered).
    pub encryption: bool,
}

/// A flag refused in `extraArgs` or `featureGates`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FlagError {
    /// The config field path (`apiserver.extraArgs.tls-cert-file`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("https://{v4}:{port}"),
    }
}

fn tls_hardening(f: &mut BTreeMap<String, String>) {
    f.insert("profiling".into(), "false".into());
    f.insert("tls-min-version".into(), "VersionTLS12".into());
    f.insert("tls-cipher-suites".into(), CIPHER_SUITES.into());
}

fn set(f: &mut BTreeMap<String, String>, pairs: &[(&str, String)]) {
    for (k, v) in pairs {
        f.insert((*k).to_string(), v.clone());
    }
}

/// Checks the operator's flags before anything is rendered.
pub fn validate(config: &ControlPlaneConfiguration) -> Result<(), FlagError> {
    let a = &config.apiserver;
    for name in a.extra_args.keys() {
        let field = format!("apiserver.extraArgs.{name}");
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if !valid {
            return Err(FlagError {
                field,
                message: "a flag name without leading dashes, such as `max-requests-inflight`"
                    .into(),
            });
        }
        if PROTECTED_APISERVER_FLAGS.contains(&name.as_str()) {
            let hint = match name.as_str() {
                "feature-gates" => " (use apiserver.featureGates)",
                "enable-admission-plugins" => " (use apiserver.admissionPlugins)",
                "bind-address" | "advertise-address" => " (use apiserver.bindToWildcard)",
                _ => "",
            };
            return Err(FlagError {
                field,
                message: format!("may not be overridden: cpm manages it{hint}"),
            });
        }
    }
    for gate in a.feature_gates.keys() {
        if gate.is_empty() || !gate.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(FlagError {
                field: format!("apiserver.featureGates.{gate}"),
                message: "a feature gate name such as `InPlacePodVerticalScaling`".into(),
            });
        }
    }
    for (i, p) in a.admission_plugins.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(FlagError {
                field: format!("apiserver.admissionPlugins[{i}]"),
                message: format!("{p:?} is not an admission plugin name"),
            });
        }
    }
    Ok(())
}

/// kube-apiserver flags.
pub fn apiserver(
    config: &ControlPlaneConfiguration,
    node: &NodeFacts<'_>,
) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let mut etcd: Vec<String> = vec![url(node.ip, 2379)];
    etcd.extend(
        node.peers
            .iter()
            .filter(|p| **p != node.ip)
            .map(|p| url(*p, 2379)),
    );
    let mut plugins: Vec<String> = BASE_ADMISSION_PLUGINS
        .iter()
        .map(|p| (*p).to_string())
        .collect();
    for p in &config.apiserver.admission_plugins {
        if !plugins.contains(p) {
            plugins.push(p.clone());
        }
    }
    let bind = if config.apiserver.bind_to_wildcard {
        "0.0.0.0".to_string()
    } else {
        node.ip.to_string()
    };
    set(
        &mut f,
        &[
            ("admission-control-config-file", ADMISSION_CONFIG.into()),
            ("advertise-address", node.ip.to_string()),
            ("allow-privileged", "true".into()),
            ("authorization-mode", "Node,RBAC".into()),
            ("bind-address", bind),
            ("client-ca-file", pki("ca.crt")),
            ("enable-admission-plugins", plugins.join(",")),
            ("enable-bootstrap-token-auth", "true".into()),
            ("etcd-cafile", pki("etcd/ca.crt")),
            ("etcd-certfile", pki("apiserver-etcd-client.crt")),
            ("etcd-keyfile", pki("apiserver-etcd-client.key")),
            ("etcd-servers", etcd.join(",")),
            ("kubelet-certificate-authority", pki("ca.crt")),
            (
                "kubelet-client-certificate",
                pki("apiserver-kubelet-client.crt"),
            ),
            ("kubelet-client-key", pki("apiserver-kubelet-client.key")),
            (
                "kubelet-preferred-address-types",
                "InternalIP,ExternalIP,Hostname".into(),
            ),
            ("proxy-client-cert-file", pki("front-proxy-client.crt")),
            ("proxy-client-key-file", pki("front-proxy-client.key")),
            ("requestheader-allowed-names", "front-proxy-client".into()),
            ("requestheader-client-ca-file", pki("front-proxy-ca.crt")),
            (
                "requestheader-extra-headers-prefix",
                "X-Remote-Extra-".into(),
            ),
            ("requestheader-group-headers", "X-Remote-Group".into()),
            ("requestheader-username-headers", "X-Remote-User".into()),
            ("secure-port", "6443".into()),
            (
                "service-account-issuer",
                format!("https://kubernetes.default.svc.{}", config.cluster_domain),
            ),
            ("service-account-key-file", pki("sa.pub")),
            ("service-account-signing-key-file", pki("sa.key")),
            (
                "service-cluster-ip-range",
                config.service_subnet.to_string(),
            ),
            ("tls-cert-file", pki("apiserver.crt")),
            ("tls-private-key-file", pki("apiserver.key")),
        ],
    );
    tls_hardening(&mut f);
    if config.apiserver.audit_policy.mode != AuditMode::None {
        set(
            &mut f,
            &[
                ("audit-policy-file", AUDIT_POLICY.into()),
                ("audit-log-path", format!("{AUDIT_LOG_DIR}/audit.log")),
                ("audit-log-maxage", "30".into()),
                ("audit-log-maxbackup", "10".into()),
                ("audit-log-maxsize", "100".into()),
            ],
        );
    }
    if node.encryption {
        f.insert(
            "encryption-provider-config".into(),
            ENCRYPTION_CONFIG.into(),
        );
    }
    if !config.apiserver.feature_gates.is_empty() {
        let gates: Vec<String> = config
            .apiserver
            .feature_gates
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        f.insert("feature-gates".into(), gates.join(","));
    }
    for (k, v) in &config.apiserver.extra_args {
        f.insert(k.clone(), v.clone());
    }
    f
}

/// kube-controller-manager flags.
pub fn controller_manager(config: &ControlPlaneConfiguration) -> BTreeMap<String, String> {
    let kubeconfig = "/etc/kubernetes/controller-manager.conf".to_string();
    let mut f = BTreeMap::new();
    set(
        &mut f,
        &[
            ("allocate-node-cidrs", "true".into()),
            ("authentication-kubeconfig", kubeconfig.clone()),
            ("authorization-kubeconfig", kubeconfig.clone()),
            ("bind-address", "127.0.0.1".into()),
            ("client-ca-file", pki("ca.crt")),
            ("cluster-cidr", config.pod_subnet.to_string()),
            ("cluster-name", config.cluster_name.clone()),
            ("cluster-signing-cert-file", pki("ca.crt")),
            ("cluster-signing-key-file", pki("ca.key")),
            ("controllers", "*,bootstrapsigner,tokencleaner".into()),
            ("kubeconfig", kubeconfig),
            ("leader-elect", "true".into()),
            (
                "node-monitor-grace-period",
                format!(
                    "{}s",
                    config.controller_manager.node_monitor_grace_period_seconds
                ),
            ),
            ("requestheader-client-ca-file", pki("front-proxy-ca.crt")),
            ("root-ca-file", pki("ca.crt")),
            ("service-account-private-key-file", pki("sa.key")),
            (
                "service-cluster-ip-range",
                config.service_subnet.to_string(),
            ),
            ("use-service-account-credentials", "true".into()),
        ],
    );
    tls_hardening(&mut f);
    f
}

/// kube-scheduler flags (the kubeconfig and leader election are in its config file).
pub fn scheduler() -> BTreeMap<String, String> {
    let kubeconfig = "/etc/kubernetes/scheduler.conf".to_string();
    let mut f = BTreeMap::new();
    set(
        &mut f,
        &[
            ("authentication-kubeconfig", kubeconfig.clone()),
            ("authorization-kubeconfig", kubeconfig),
            ("bind-address", "127.0.0.1".into()),
            ("config", SCHEDULER_CONFIG.into()),
        ],
    );
    tls_hardening(&mut f);
    f
}

/// `name` followed by `--flag=value` in flag order, as a container command.
pub fn command(name: &str, flags: &BTreeMap<String, String>) -> Vec<String> {
    std::iter::once(name.to_string())
        .chain(flags.iter().map(|(k, v)| format!("--{k}={v}")))
        .collect()
}
