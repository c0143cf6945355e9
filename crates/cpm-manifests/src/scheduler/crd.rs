//! The `KubeSchedulerWebhookConfiguration` custom resource (`cpm.dev/v1alpha1`, cluster-scoped).
//!
//! The Rust types are the source of the CRD: [`crd_yaml`] renders the
//! CustomResourceDefinition derived from them, bounds and defaults included. The fields that
//! code must still check when the API server did not (a test server, an older CRD, a server
//! that skipped validation) are deliberately lenient here: fields the schema requires are
//! `Option`s in Rust and integers are unbounded, so one bad object does not make a whole list
//! undecodable; [`super::desired_extenders`] rejects what the schema would have refused.

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "cpm.dev";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the resource.
pub const API_VERSION: &str = "cpm.dev/v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "KubeSchedulerWebhookConfiguration";

/// An RFC 1123 label (Service names and namespaces).
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Smallest accepted `weight`.
pub const MIN_WEIGHT: i64 = 1;
/// Default `clientConfig.service.port`.
pub const DEFAULT_PORT: i32 = 443;
/// Default `clientConfig.service.path`.
pub const DEFAULT_PATH: &str = "/";
/// Default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 5;
/// Accepted `timeoutSeconds`.
pub const TIMEOUT_SECONDS: std::ops::RangeInclusive<i64> = 1..=30;

/// Scheduler extender webhooks that kube-scheduler calls to filter and score nodes.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "cpm.dev",
    version = "v1alpha1",
    kind = "KubeSchedulerWebhookConfiguration",
    plural = "kubeschedulerwebhookconfigurations",
    singular = "kubeschedulerwebhookconfiguration",
    shortname = "kswc",
    category = "cpm",
    status = "KubeSchedulerWebhookConfigurationStatus",
    derive = "PartialEq",
    doc = "Scheduler extender webhooks for kube-scheduler, rendered by cpm-manifests",
    printcolumn(
        name = "Webhooks",
        type_ = "integer",
        json_path = ".spec.webhooks.length()"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KubeSchedulerWebhookConfigurationSpec {
    /// The extender webhooks, in the order they are rendered for this object.
    #[serde(default)]
    pub webhooks: Vec<SchedulerWebhook>,
}

/// One scheduler extender webhook: kube-scheduler calls `<url>/filter` and `<url>/prioritize`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerWebhook {
    /// Multiplier applied to the node scores the webhook returns (at least 1).
    #[schemars(range(min = 1))]
    pub weight: i64,
    /// `Fail` makes scheduling fail when the webhook cannot be reached; `Ignore` skips it.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// How to reach the webhook.
    pub client_config: WebhookClientConfig,
    /// Timeout of one call, in seconds (1 to 30).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: i64,
}

/// What kube-scheduler does when the webhook fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailurePolicy {
    /// Scheduling fails when the webhook fails.
    #[default]
    Fail,
    /// The webhook is skipped when it fails (kube-scheduler `ignorable: true`).
    Ignore,
}

/// The in-cluster Service of the webhook and the CA that signs its serving certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookClientConfig {
    /// The Service in front of the webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub service: Option<ServiceReference>,
    /// Base64 of PEM CA certificates that verify the webhook's serving certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, length(min = 1), extend("format" = "byte"))]
    pub ca_bundle: Option<String>,
}

/// A Service reached at `https://<name>.<namespace>.svc.<clusterDomain>:<port><path>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReference {
    /// Service name (a DNS label).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: Option<String>,
    /// Service namespace (a DNS label).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
    /// Service port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// URL path prefix of the webhook; the verbs are appended as `/filter` and `/prioritize`.
    #[serde(default = "default_path")]
    #[schemars(pattern(r"^/?[^?#\s]*$"))]
    pub path: String,
}

/// What the last pass found in the object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeSchedulerWebhookConfigurationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The webhooks left out of kube-scheduler's configuration, with the reason; empty when
    /// every webhook is rendered.
    #[serde(default)]
    pub rejected: Vec<RejectedWebhook>,
}

/// A webhook left out of kube-scheduler's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectedWebhook {
    /// Index in `spec.webhooks`.
    pub index: i64,
    /// Why it was left out.
    pub reason: String,
}

fn default_timeout_seconds() -> i64 {
    DEFAULT_TIMEOUT_SECONDS
}

fn default_port() -> i32 {
    DEFAULT_PORT
}

fn default_path() -> String {
    DEFAULT_PATH.to_string()
}

/// The CustomResourceDefinition manifest, as YAML. Deterministic: the same build renders the
/// same bytes.
pub fn crd_yaml() -> String {
    // A CustomResourceDefinition is plain data (strings, maps, numbers): serialising it
    // cannot fail.
    serde_saphyr::to_string(&KubeSchedulerWebhookConfiguration::crd())
        .expect("invariant: a CustomResourceDefinition serialises to YAML")
}
