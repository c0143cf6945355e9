//! The flags the stand-ins accept without modelling them: every other flag cpm-manifests
//! renders for kube-apiserver, kube-controller-manager and kube-scheduler (1.31–1.34), and the
//! real components' flags an operator commonly sets through `apiserver.extraArgs`. A flag in
//! neither these lists nor the honoured ones (`cli.rs`) is refused with exit 2.

use clap::{Arg, ArgAction, Command};

/// Whether a flag is a Go boolean (`--flag`, `--flag=false`) or takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Value,
}

use Kind::{Bool, Value};

/// kube-apiserver flags accepted but not modelled. The first block is what cpm renders.
pub(crate) const APISERVER: &[(&str, Kind)] = &[
    // rendered by cpm-manifests
    ("admission-control-config-file", Value),
    ("allow-privileged", Bool),
    ("audit-log-maxage", Value),
    ("audit-log-maxbackup", Value),
    ("audit-log-maxsize", Value),
    ("audit-log-path", Value),
    ("audit-policy-file", Value),
    ("authorization-mode", Value),
    ("enable-admission-plugins", Value),
    ("enable-bootstrap-token-auth", Bool),
    ("encryption-provider-config", Value),
    ("etcd-cafile", Value),
    ("etcd-certfile", Value),
    ("etcd-keyfile", Value),
    ("etcd-servers", Value),
    ("feature-gates", Value),
    ("kubelet-certificate-authority", Value),
    ("kubelet-client-certificate", Value),
    ("kubelet-client-key", Value),
    ("kubelet-preferred-address-types", Value),
    ("profiling", Bool),
    ("service-account-issuer", Value),
    ("service-account-key-file", Value),
    ("service-account-signing-key-file", Value),
    // common `apiserver.extraArgs`
    ("api-audiences", Value),
    ("audit-log-compress", Bool),
    ("audit-log-format", Value),
    ("audit-log-mode", Value),
    ("audit-webhook-config-file", Value),
    ("audit-webhook-mode", Value),
    ("authentication-config", Value),
    ("authentication-token-webhook-cache-ttl", Value),
    ("authentication-token-webhook-config-file", Value),
    ("authorization-config", Value),
    ("authorization-webhook-cache-authorized-ttl", Value),
    ("authorization-webhook-cache-unauthorized-ttl", Value),
    ("authorization-webhook-config-file", Value),
    ("cors-allowed-origins", Value),
    ("default-not-ready-toleration-seconds", Value),
    ("default-unreachable-toleration-seconds", Value),
    ("default-watch-cache-size", Value),
    ("delete-collection-workers", Value),
    ("disable-admission-plugins", Value),
    ("egress-selector-config-file", Value),
    ("enable-aggregator-routing", Bool),
    ("enable-garbage-collector", Bool),
    ("enable-priority-and-fairness", Bool),
    ("endpoint-reconciler-type", Value),
    ("etcd-compaction-interval", Value),
    ("etcd-prefix", Value),
    ("etcd-servers-overrides", Value),
    ("event-ttl", Value),
    ("external-hostname", Value),
    ("goaway-chance", Value),
    ("http2-max-streams-per-connection", Value),
    ("kubelet-timeout", Value),
    ("livez-grace-period", Value),
    ("logging-format", Value),
    ("max-mutating-requests-inflight", Value),
    ("max-requests-inflight", Value),
    ("min-request-timeout", Value),
    ("oidc-ca-file", Value),
    ("oidc-client-id", Value),
    ("oidc-groups-claim", Value),
    ("oidc-groups-prefix", Value),
    ("oidc-issuer-url", Value),
    ("oidc-required-claim", Value),
    ("oidc-signing-algs", Value),
    ("oidc-username-claim", Value),
    ("oidc-username-prefix", Value),
    ("request-timeout", Value),
    ("runtime-config", Value),
    ("service-account-extend-token-expiration", Bool),
    ("service-account-lookup", Bool),
    ("service-account-max-token-expiration", Value),
    ("service-node-port-range", Value),
    ("shutdown-delay-duration", Value),
    ("shutdown-send-retry-after", Bool),
    ("shutdown-watch-termination-grace-period", Value),
    ("storage-backend", Value),
    ("storage-media-type", Value),
    ("strict-transport-security-directives", Value),
    ("v", Value),
    ("vmodule", Value),
    ("watch-cache", Bool),
    ("watch-cache-sizes", Value),
];

/// kube-controller-manager flags accepted but not modelled. The first block is what cpm
/// renders.
pub(crate) const CONTROLLER_MANAGER: &[(&str, Kind)] = &[
    // rendered by cpm-manifests
    ("allocate-node-cidrs", Bool),
    ("cluster-cidr", Value),
    ("cluster-name", Value),
    ("cluster-signing-cert-file", Value),
    ("cluster-signing-key-file", Value),
    ("controllers", Value),
    ("node-monitor-grace-period", Value),
    ("profiling", Bool),
    ("service-account-private-key-file", Value),
    ("service-cluster-ip-range", Value),
    ("use-service-account-credentials", Bool),
    // other real flags
    ("authorization-always-allow-paths", Value),
    ("cluster-signing-duration", Value),
    ("concurrent-deployment-syncs", Value),
    ("concurrent-service-syncs", Value),
    ("configure-cloud-routes", Bool),
    ("feature-gates", Value),
    ("kube-api-burst", Value),
    ("kube-api-qps", Value),
    ("logging-format", Value),
    ("node-cidr-mask-size", Value),
    ("terminated-pod-gc-threshold", Value),
    ("v", Value),
];

/// kube-scheduler flags accepted but not modelled (cpm renders only honoured ones besides
/// `--profiling`).
pub(crate) const SCHEDULER: &[(&str, Kind)] = &[
    ("profiling", Bool),
    ("authorization-always-allow-paths", Value),
    ("feature-gates", Value),
    ("logging-format", Value),
    ("v", Value),
];

/// Adds `flags` to `cmd` as accepted, unmodelled arguments (under their own help heading).
pub(crate) fn accept(mut cmd: Command, flags: &[(&'static str, Kind)]) -> Command {
    for (name, kind) in flags {
        let mut arg = Arg::new(*name)
            .long(*name)
            .help_heading("Accepted, not modelled")
            .action(ArgAction::Set);
        if *name == "v" {
            arg = arg.short('v');
        }
        let arg = match kind {
            Bool => arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_parser(super::parse_go_bool),
            Value => arg.num_args(1),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}
