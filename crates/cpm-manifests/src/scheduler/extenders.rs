//! From `KubeSchedulerWebhookConfiguration` objects to kube-scheduler extenders (pure).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cpm_core::config::DnsName;
use kube::ResourceExt as _;
use serde::{Deserialize, Serialize};

use super::crd::{
    FailurePolicy, KubeSchedulerWebhookConfiguration, MIN_WEIGHT, SchedulerWebhook,
    ServiceReference, TIMEOUT_SECONDS,
};

/// One entry of `KubeSchedulerConfiguration.extenders` (kube-scheduler's `Extender`, v1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extender {
    /// `https://<service>.<namespace>.svc.<clusterDomain>:<port><path>`.
    pub url_prefix: String,
    /// Always `filter`.
    pub filter_verb: String,
    /// Always `prioritize`.
    pub prioritize_verb: String,
    /// The webhook's weight.
    pub weight: i64,
    /// Always true.
    #[serde(rename = "enableHTTPS")]
    pub enable_https: bool,
    /// The CA that verifies the webhook.
    pub tls_config: ExtenderTlsConfig,
    /// `<timeoutSeconds>s`.
    pub http_timeout: String,
    /// Always true: the webhooks get node names, not whole Node objects.
    pub node_cache_capable: bool,
    /// `failurePolicy: Ignore`.
    pub ignorable: bool,
}

/// `Extender.tlsConfig`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtenderTlsConfig {
    /// PEM CA certificates (base64 in YAML, as kube-scheduler's `[]byte`).
    #[serde(with = "base64_bytes")]
    pub ca_data: Vec<u8>,
}

impl fmt::Debug for ExtenderTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The PEM text, not a list of byte values (a CA bundle is public).
        f.debug_struct("ExtenderTlsConfig")
            .field("ca_data", &String::from_utf8_lossy(&self.ca_data))
            .finish()
    }
}

/// Why a webhook is left out. The `Display` text is the reason shown in Events and status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `weight` below 1.
    #[error("weight must be at least {MIN_WEIGHT}, got {0}")]
    Weight(i64),
    /// `timeoutSeconds` outside 1..=30.
    #[error("timeoutSeconds must be between 1 and 30, got {0}")]
    Timeout(i64),
    /// No `clientConfig.service`.
    #[error("clientConfig.service is missing")]
    MissingService,
    /// Empty `clientConfig.service.name`.
    #[error("clientConfig.service.name is missing")]
    MissingServiceName,
    /// Empty `clientConfig.service.namespace`.
    #[error("clientConfig.service.namespace is missing")]
    MissingServiceNamespace,
    /// `clientConfig.service.name` is not a DNS label.
    #[error("clientConfig.service.name {0:?} is not a DNS label")]
    ServiceName(String),
    /// `clientConfig.service.namespace` is not a DNS label.
    #[error("clientConfig.service.namespace {0:?} is not a DNS label")]
    ServiceNamespace(String),
    /// `clientConfig.service.port` outside 1..=65535.
    #[error("clientConfig.service.port must be between 1 and 65535, got {0}")]
    Port(i32),
    /// `clientConfig.service.path` cannot be a URL path.
    #[error("clientConfig.service.path {path:?} is not a valid URL path: {why}")]
    Path {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Empty `clientConfig.caBundle`.
    #[error("clientConfig.caBundle is missing")]
    MissingCaBundle,
    /// `clientConfig.caBundle` is not base64.
    #[error("clientConfig.caBundle is not base64")]
    CaBundleBase64,
    /// `clientConfig.caBundle` does not decode to PEM certificates.
    #[error("clientConfig.caBundle is not a PEM certificate bundle: {0}")]
    CaBundlePem(String),
}

/// A webhook left out of the rendered extenders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The object's name.
    pub object: String,
    /// The object's uid, when it has one (for the Event's involvedObject).
    pub uid: Option<String>,
    /// The object's `metadata.generation`, when it has one.
    pub generation: Option<i64>,
    /// Index of the webhook in `spec.webhooks`.
    pub index: usize,
    /// Every problem found, in field order (never empty).
    pub problems: Vec<Problem>,
}

impl Rejection {
    /// The reason text: the problems joined by `; `.
    pub fn reason(&self) -> String {
        let texts: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        texts.join("; ")
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: webhooks[{}]: {}",
            self.object,
            self.index,
            self.reason()
        )
    }
}

/// The extenders to render and the webhooks left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtenderSet {
    /// Valid webhooks, by object name then webhook index.
    pub extenders: Vec<Extender>,
    /// Invalid webhooks, in the same order.
    pub rejections: Vec<Rejection>,
}

/// Turns the objects into kube-scheduler extenders, ordered by object name then webhook
/// index. An invalid webhook is left out and reported in [`ExtenderSet::rejections`]; the
/// other webhooks, of the same object and of others, are still rendered. Pure.
pub fn desired_extenders(
    objects: &[KubeSchedulerWebhookConfiguration],
    cluster_domain: &DnsName,
) -> ExtenderSet {
    let mut sorted: Vec<&KubeSchedulerWebhookConfiguration> = objects.iter().collect();
    sorted.sort_by_key(|o| o.name_any());
    let mut set = ExtenderSet::default();
    for object in sorted {
        for (index, webhook) in object.spec.webhooks.iter().enumerate() {
            match extender(webhook, cluster_domain) {
                Ok(e) => set.extenders.push(e),
                Err(problems) => set.rejections.push(Rejection {
                    object: object.name_any(),
                    uid: object.metadata.uid.clone(),
                    generation: object.metadata.generation,
                    index,
                    problems,
                }),
            }
        }
    }
    set
}

/// One webhook as an extender, or every problem found in it.
pub fn extender(
    webhook: &SchedulerWebhook,
    cluster_domain: &DnsName,
) -> Result<Extender, Vec<Problem>> {
    let mut problems = Vec::new();
    if webhook.weight < MIN_WEIGHT {
        problems.push(Problem::Weight(webhook.weight));
    }
    if !TIMEOUT_SECONDS.contains(&webhook.timeout_seconds) {
        problems.push(Problem::Timeout(webhook.timeout_seconds));
    }
    let url = match &webhook.client_config.service {
        None => {
            problems.push(Problem::MissingService);
            None
        }
        Some(service) => match url_prefix(service, cluster_domain) {
            Ok(url) => Some(url),
            Err(p) => {
                problems.extend(p);
                None
            }
        },
    };
    let ca = match ca_bundle(
        webhook
            .client_config
            .ca_bundle
            .as_deref()
            .unwrap_or_default(),
    ) {
        Ok(ca) => Some(ca),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    match (url, ca) {
        (Some(url_prefix), Some(ca_data)) if problems.is_empty() => Ok(Extender {
            url_prefix,
            filter_verb: "filter".into(),
            prioritize_verb: "prioritize".into(),
            weight: webhook.weight,
            enable_https: true,
            tls_config: ExtenderTlsConfig { ca_data },
            http_timeout: format!("{}s", webhook.timeout_seconds),
            node_cache_capable: true,
            ignorable: webhook.failure_policy == FailurePolicy::Ignore,
        }),
        _ => Err(problems),
    }
}

/// `https://<name>.<namespace>.svc.<clusterDomain>:<port><path>`, path normalised.
fn url_prefix(
    service: &ServiceReference,
    cluster_domain: &DnsName,
) -> Result<String, Vec<Problem>> {
    let mut problems = Vec::new();
    let name = service.name.as_deref().unwrap_or_default();
    let namespace = service.namespace.as_deref().unwrap_or_default();
    if name.is_empty() {
        problems.push(Problem::MissingServiceName);
    } else if !is_dns_label(name) {
        problems.push(Problem::ServiceName(name.to_string()));
    }
    if namespace.is_empty() {
        problems.push(Problem::MissingServiceNamespace);
    } else if !is_dns_label(namespace) {
        problems.push(Problem::ServiceNamespace(namespace.to_string()));
    }
    if !(1..=65535).contains(&service.port) {
        problems.push(Problem::Port(service.port));
    }
    let path = match normalize_path(&service.path) {
        Ok(path) => Some(path),
        Err(why) => {
            problems.push(Problem::Path {
                path: service.path.clone(),
                why,
            });
            None
        }
    };
    match path {
        Some(path) if problems.is_empty() => Ok(format!(
            "https://{name}.{namespace}.svc.{cluster_domain}:{}{path}",
            service.port
        )),
        _ => Err(problems),
    }
}

/// An RFC 1123 label: 1 to 63 lowercase letters, digits or '-', alphanumeric at both ends.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

/// The path with one leading '/' and no trailing '/' (`""` for the root), so kube-scheduler's
/// `<urlPrefix>/<verb>` is a clean URL. Query strings, fragments, whitespace, control or
/// non-ASCII characters, backslashes, empty, `.` or `..` segments are refused.
pub fn normalize_path(path: &str) -> Result<String, &'static str> {
    if let Some(c) = path
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control() || c.is_ascii_whitespace() || *c == '\\')
    {
        return Err(if c.is_ascii_whitespace() {
            "whitespace is not allowed"
        } else {
            "only printable ASCII without '\\' is allowed"
        });
    }
    if path.contains(['?', '#']) {
        return Err("query strings and fragments are not allowed");
    }
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::with_capacity(trimmed.len() + 1);
    for segment in trimmed.split('/') {
        match segment {
            "" => return Err("empty path segments ('//') are not allowed"),
            "." | ".." => return Err("'.' and '..' segments are not allowed"),
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    Ok(out)
}

/// The decoded bundle: base64 (line breaks allowed, as Go's decoder) of one or more PEM
/// certificates and nothing but certificates.
fn ca_bundle(b64: &str) -> Result<Vec<u8>, Problem> {
    let compact: String = b64.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    if compact.is_empty() {
        return Err(Problem::MissingCaBundle);
    }
    let pem = B64.decode(compact).map_err(|_| Problem::CaBundleBase64)?;
    let mut certs = 0usize;
    for block in x509_parser::pem::Pem::iter_from_buffer(&pem) {
        let block = block.map_err(|e| Problem::CaBundlePem(e.to_string()))?;
        if block.label != "CERTIFICATE" {
            return Err(Problem::CaBundlePem(format!(
                "block {} is {:?}, not CERTIFICATE",
                certs + 1,
                block.label
            )));
        }
        block
            .parse_x509()
            .map_err(|e| Problem::CaBundlePem(format!("certificate {}: {e}", certs + 1)))?;
        certs += 1;
    }
    if certs == 0 {
        return Err(Problem::CaBundlePem("no PEM block".into()));
    }
    Ok(pem)
}

/// `[]byte` fields: base64 (standard alphabet, padded) in YAML and JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(serde::de::Error::custom)
    }
}
