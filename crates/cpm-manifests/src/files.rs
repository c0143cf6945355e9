//! The apiserver's config files under `etc/kubernetes/cpm/`: audit policy, admission
//! configuration (EventRateLimit) and encryption at rest. Built from Rust types and serialized,
//! never templated; a `Custom` audit policy is parsed strictly.

use serde::{Deserialize, Serialize};

/// An audit policy (`audit.k8s.io/v1` `Policy`), strict: unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AuditPolicy {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_stages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_managed_fields: Option<bool>,
    pub rules: Vec<AuditRule>,
}

/// One audit rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AuditRule {
    pub level: AuditLevel,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<GroupResources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_stages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_managed_fields: Option<bool>,
}

/// Audit levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum AuditLevel {
    None,
    Metadata,
    Request,
    RequestResponse,
}

/// Resources of one API group in an audit rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

fn rule(level: AuditLevel) -> AuditRule {
    AuditRule {
        level,
        users: vec![],
        user_groups: vec![],
        verbs: vec![],
        resources: vec![],
        namespaces: vec![],
        non_resource_urls: vec![],
        omit_stages: vec![],
        omit_managed_fields: None,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

fn group(group: &str, resources: &[&str]) -> GroupResources {
    GroupResources {
        group: group.into(),
        resources: strings(resources),
        resource_names: vec![],
    }
}

/// The `Basic` policy: health checks, events, leases and every read are not logged; writes and
/// access to secrets, configmaps and token reviews are logged at Metadata level (never bodies, so
/// no secret reaches the audit log).
pub fn basic_audit_policy() -> AuditPolicy {
    let mut rules = Vec::new();
    let mut health = rule(AuditLevel::None);
    health.non_resource_urls =
        strings(&["/healthz*", "/livez*", "/readyz*", "/version", "/metrics"]);
    rules.push(health);
    let mut noisy = rule(AuditLevel::None);
    noisy.resources = vec![
        group("", &["events"]),
        group("coordination.k8s.io", &["leases"]),
        group("events.k8s.io", &["events"]),
    ];
    rules.push(noisy);
    let mut sensitive = rule(AuditLevel::Metadata);
    sensitive.resources = vec![
        group("", &["secrets", "configmaps", "serviceaccounts/token"]),
        group("authentication.k8s.io", &["tokenreviews"]),
    ];
    rules.push(sensitive);
    let mut reads = rule(AuditLevel::None);
    reads.verbs = strings(&["get", "list", "watch"]);
    rules.push(reads);
    let mut writes = rule(AuditLevel::Metadata);
    writes.verbs = strings(&["create", "update", "patch", "delete", "deletecollection"]);
    rules.push(writes);
    AuditPolicy {
        api_version: "audit.k8s.io/v1".into(),
        kind: "Policy".into(),
        metadata: None,
        omit_stages: strings(&["RequestReceived"]),
        omit_managed_fields: Some(true),
        rules,
    }
}

/// A custom audit policy could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    /// What is wrong, with the field path.
    pub message: String,
}

/// Parses a custom audit policy strictly (unknown fields, wrong kind or no rules are errors).
pub fn parse_audit_policy(text: &str) -> Result<AuditPolicy, PolicyError> {
    let value: serde_json::Value = cpm_core::yaml::from_str(text).map_err(|e| PolicyError {
        message: format!("invalid YAML: {e}"),
    })?;
    let policy: AuditPolicy = serde_path_to_error_free(value)?;
    if policy.api_version != "audit.k8s.io/v1" || policy.kind != "Policy" {
        return Err(PolicyError {
            message: format!(
                "apiVersion/kind: must be audit.k8s.io/v1 Policy, not {} {}",
                policy.api_version, policy.kind
            ),
        });
    }
    if policy.rules.is_empty() {
        return Err(PolicyError {
            message: "rules: at least one rule is required".into(),
        });
    }
    Ok(policy)
}

fn serde_path_to_error_free(value: serde_json::Value) -> Result<AuditPolicy, PolicyError> {
    serde_json::from_value(value).map_err(|e| PolicyError {
        message: cpm_core::yaml::redact(&e.to_string()),
    })
}

/// The admission configuration: EventRateLimit per namespace and per user, inline.
pub fn admission_config() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{
            "name": "EventRateLimit",
            "configuration": {
                "apiVersion": "eventratelimit.admission.k8s.io/v1alpha1",
                "kind": "Configuration",
                "limits": [
                    {"type": "Namespace", "qps": 50, "burst": 100, "cacheSize": 2000},
                    {"type": "User", "qps": 10, "burst": 50},
                ],
            },
        }],
    })
}

/// One encryption key: a name and 32 random bytes, base64 (secretbox).
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey {
    /// Key name in the config (`key-<n>`).
    pub name: String,
    /// Base64 of 32 bytes. Secret.
    pub secret: String,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The encryption config: Secrets encrypted with secretbox (the first key writes, all keys read),
/// identity last so data written before encryption was enabled stays readable.
pub fn encryption_config(keys: &[EncryptionKey]) -> serde_json::Value {
    let keys: Vec<_> = keys
        .iter()
        .map(|k| serde_json::json!({"name": k.name, "secret": k.secret}))
        .collect();
    serde_json::json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [{
            "resources": ["secrets"],
            "providers": [{"secretbox": {"keys": keys}}, {"identity": {}}],
        }],
    })
}

/// Reads the keys back from an encryption config written by cpm.
pub fn encryption_keys(text: &str) -> Option<Vec<EncryptionKey>> {
    let v: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    let keys = v
        .pointer("/resources/0/providers/0/secretbox/keys")?
        .as_array()?;
    keys.iter()
        .map(|k| {
            Some(EncryptionKey {
                name: k.get("name")?.as_str()?.to_string(),
                secret: k.get("secret")?.as_str()?.to_string(),
            })
        })
        .collect()
}

/// Serializes to YAML (deterministic for the same value).
pub fn yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).expect("invariant: config types serialize")
}

#[cfg(test)]
mod tests;
