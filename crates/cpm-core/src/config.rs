//! `ControlPlaneConfiguration`: the one YAML document, the same on all masters, that drives cpm.
//!
//! Parsing is strict: unknown fields are errors and every error names the file and the field path
//! (`apiserver.certSANs[1]`). Defaults are filled in by serde; [`ControlPlaneConfiguration::load`]
//! then validates what types alone cannot express (version format, SAN syntax, day counts).
//!
//! ```
//! use cpm_core::config::ControlPlaneConfiguration;
//! let cfg = ControlPlaneConfiguration::parse(
//!     "apiVersion: cpm.dev/v1alpha1\nkind: ControlPlaneConfiguration\nkubernetesVersion: \"1.33\"\n",
//!     "inline".as_ref(),
//! ).unwrap();
//! assert_eq!(cfg.certificates.renew_before_days, 30);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// The `apiVersion` this build reads.
pub const API_VERSION: &str = "cpm.dev/v1alpha1";
/// The `kind` this build reads.
pub const KIND: &str = "ControlPlaneConfiguration";

/// A configuration error; its text names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{file}: invalid YAML: {message}")]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// What the YAML parser said, with the position.
        message: String,
    },
    /// A field is unknown, missing, of the wrong type or has an invalid value.
    #[error("{file}: {field}: {message}")]
    Field {
        /// The config file.
        file: PathBuf,
        /// The field path, as in the YAML (`apiserver.certSANs[1]`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration (PRODUCT.md §4). Documented field by field in `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ControlPlaneConfiguration {
    pub api_version: String,
    pub kind: String,
    /// A Kubernetes minor, such as `"1.33"`.
    pub kubernetes_version: KubernetesMinor,
    #[serde(default = "defaults::image_repository")]
    pub image_repository: String,
    #[serde(default = "defaults::cluster_name")]
    pub cluster_name: String,
    #[serde(default = "defaults::cluster_domain")]
    pub cluster_domain: DnsName,
    #[serde(default = "defaults::service_subnet")]
    pub service_subnet: Cidr,
    #[serde(default = "defaults::pod_subnet")]
    pub pod_subnet: Cidr,
    /// Where admins and node components reach the API: the node-local api-proxy by default
    /// (`https://<apiProxy.listen>`).
    #[serde(default)]
    pub control_plane_endpoint: Option<HttpsEndpoint>,
    #[serde(default = "Certificates::defaults")]
    pub certificates: Certificates,
    #[serde(default = "Apiserver::defaults")]
    pub apiserver: Apiserver,
    #[serde(default = "ControllerManager::defaults")]
    pub controller_manager: ControllerManager,
    #[serde(default = "Scheduler::defaults")]
    pub scheduler: Scheduler,
    #[serde(default = "Etcd::defaults")]
    pub etcd: Etcd,
    #[serde(default = "ApiProxy::defaults")]
    pub api_proxy: ApiProxy,
    #[serde(default = "defaults::yes")]
    pub root_kubeconfig_symlink: bool,
}

/// Certificate policy for every leaf certificate cpm issues.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Certificates {
    #[serde(default = "defaults::key_algorithm")]
    pub key_algorithm: KeyAlgorithm,
    #[serde(default = "defaults::validity_days")]
    pub validity_days: u32,
    #[serde(default = "defaults::renew_before_days")]
    pub renew_before_days: u32,
}

/// kube-apiserver settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Apiserver {
    #[serde(default, rename = "certSANs")]
    pub cert_sans: Vec<San>,
    #[serde(default)]
    pub bind_to_wildcard: bool,
    #[serde(default)]
    pub admission_plugins: Vec<String>,
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
    #[serde(default)]
    pub extra_args: BTreeMap<String, String>,
    #[serde(default = "AuditPolicy::defaults")]
    pub audit_policy: AuditPolicy,
    #[serde(default)]
    pub encryption_at_rest: bool,
}

/// The API server audit policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditPolicy {
    /// `None`, `Basic` or `Custom`.
    pub mode: AuditMode,
    /// With `Custom`: the policy file (an absolute host path).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// How much the API server audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[allow(missing_docs)]
pub enum AuditMode {
    None,
    Basic,
    Custom,
}

/// kube-controller-manager settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ControllerManager {
    #[serde(default = "defaults::node_monitor_grace_period_seconds")]
    pub node_monitor_grace_period_seconds: u32,
}

/// kube-scheduler settings (extenders come from `KubeSchedulerWebhookConfiguration` objects).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scheduler {}

/// etcd settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Etcd {
    #[serde(default = "defaults::quota")]
    pub quota_backend_bytes: Quota,
    #[serde(default = "Backup::defaults")]
    pub backup: Backup,
}

/// `quotaBackendBytes`: `auto` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Derived from the smallest master's memory (2–8 GiB), never lowered automatically.
    Auto,
    /// A fixed number of bytes.
    Bytes(u64),
}

/// Periodic etcd snapshots.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Backup {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    #[serde(default = "defaults::backup_schedule")]
    pub schedule: String,
    #[serde(default = "defaults::backup_directory")]
    pub directory: PathBuf,
    #[serde(default = "defaults::backup_keep")]
    pub keep: u32,
    /// Also keep the newest backup of each of the N most recent UTC days that have one.
    #[serde(default)]
    pub keep_daily: u32,
    /// Also keep the newest backup of each of the N most recent ISO weeks that have one.
    #[serde(default)]
    pub keep_weekly: u32,
    /// How backups are stored.
    #[serde(default = "defaults::backup_compression")]
    pub compression: BackupCompression,
}

/// `etcd.backup.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupCompression {
    /// The snapshot as etcd sends it (`.db`).
    None,
    /// Streamed zstd (`.db.zst`).
    Zstd,
}

/// The node-local API proxy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ApiProxy {
    #[serde(default = "defaults::api_proxy_listen")]
    pub listen: SocketAddr,
}

/// Private-key algorithm of issued certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[allow(missing_docs)]
pub enum KeyAlgorithm {
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    #[serde(rename = "RSA-3072")]
    Rsa3072,
    #[serde(rename = "RSA-4096")]
    Rsa4096,
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
    #[serde(rename = "ECDSA-P384")]
    EcdsaP384,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order of the docs.
    pub const ALL: [KeyAlgorithm; 5] = [
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
        Self::EcdsaP256,
        Self::EcdsaP384,
    ];

    /// The name used in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "RSA-2048",
            Self::Rsa3072 => "RSA-3072",
            Self::Rsa4096 => "RSA-4096",
            Self::EcdsaP256 => "ECDSA-P256",
            Self::EcdsaP384 => "ECDSA-P384",
        }
    }

    /// Whether this is an RSA algorithm.
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "unknown key algorithm {s:?}, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A Kubernetes minor version, `1.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubernetesMinor {
    /// The major version (always 1).
    pub major: u32,
    /// The minor version.
    pub minor: u32,
}

impl fmt::Display for KubernetesMinor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for KubernetesMinor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a Kubernetes minor such as \"1.33\"");
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        if major != "1" || !digits(minor) {
            return Err(bad());
        }
        Ok(Self {
            major: 1,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let net: IpNet = s
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR such as 10.96.0.0/12"))?;
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(Self(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An `https://host:port` URL (host a DNS name, an IPv4 address or a bracketed IPv6 address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsEndpoint(String);

impl HttpsEndpoint {
    /// `https://host:port`, with `[...]` around IPv6 hosts.
    pub fn new(host: &str, port: u16) -> Self {
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => Self(format!("https://[{v6}]:{port}")),
            _ => Self(format!("https://{host}:{port}")),
        }
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HttpsEndpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an https://host:port URL");
        let rest = s.strip_prefix("https://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => host.parse::<std::net::Ipv4Addr>().is_ok() || host.parse::<DnsName>().is_ok(),
        };
        if !host_ok || host.starts_with("*.") {
            return Err(bad());
        }
        Ok(Self(format!("https://{host}:{port}")))
    }
}

/// A DNS name (RFC 1123 labels; a leading `*.` wildcard label is allowed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DnsName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("{s:?} is not a valid DNS name: {why}");
        if s.is_empty() || s.len() > 253 {
            return Err(bad("length must be 1 to 253"));
        }
        for (i, label) in s.split('.').enumerate() {
            if i == 0 && label == "*" && s.len() > 2 {
                continue;
            }
            let ok_chars = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if label.is_empty() || label.len() > 63 || !ok_chars {
                return Err(bad("labels are 1 to 63 letters, digits or '-'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label may not start or end with '-'"));
            }
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
}

/// A subject alternative name: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    /// A DNS name.
    Dns(DnsName),
    /// An IP address.
    Ip(IpAddr),
}

impl FromStr for San {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        s.parse::<DnsName>()
            .map(Self::Dns)
            .map_err(|_| format!("{s:?} is neither an IP address nor a valid DNS name"))
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(d) => d.fmt(f),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

/// Implements `Deserialize` through `FromStr` for types written as YAML strings.
macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(KubernetesMinor, Cidr, DnsName, San, HttpsEndpoint);

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Quota::Bytes(n)),
            Raw::Text(t) if t == "auto" => Ok(Quota::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "{t:?} is neither \"auto\" nor a number of bytes"
            ))),
        }
    }
}

mod defaults {
    use super::*;

    pub fn yes() -> bool {
        true
    }
    pub fn image_repository() -> String {
        "registry.k8s.io".into()
    }
    pub fn cluster_name() -> String {
        "kubernetes".into()
    }
    pub fn cluster_domain() -> DnsName {
        DnsName("cluster.local".into())
    }
    pub fn service_subnet() -> Cidr {
        Cidr("10.96.0.0/12".parse().expect("invariant: literal CIDR"))
    }
    pub fn pod_subnet() -> Cidr {
        Cidr("10.244.0.0/16".parse().expect("invariant: literal CIDR"))
    }
    pub fn key_algorithm() -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256
    }
    pub fn validity_days() -> u32 {
        365
    }
    pub fn renew_before_days() -> u32 {
        30
    }
    pub fn node_monitor_grace_period_seconds() -> u32 {
        40
    }
    pub fn quota() -> Quota {
        Quota::Auto
    }
    pub fn backup_schedule() -> String {
        "0 */6 * * *".into()
    }
    pub fn backup_directory() -> PathBuf {
        "/var/lib/etcd/backups".into()
    }
    pub fn backup_keep() -> u32 {
        7
    }
    pub fn backup_compression() -> BackupCompression {
        BackupCompression::None
    }
    pub fn api_proxy_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 6445))
    }
}

impl Certificates {
    fn defaults() -> Self {
        Self {
            key_algorithm: defaults::key_algorithm(),
            validity_days: defaults::validity_days(),
            renew_before_days: defaults::renew_before_days(),
        }
    }
}

impl Apiserver {
    fn defaults() -> Self {
        Self {
            cert_sans: Vec::new(),
            bind_to_wildcard: false,
            admission_plugins: Vec::new(),
            feature_gates: BTreeMap::new(),
            extra_args: BTreeMap::new(),
            audit_policy: AuditPolicy::defaults(),
            encryption_at_rest: false,
        }
    }
}

impl AuditPolicy {
    fn defaults() -> Self {
        Self {
            mode: AuditMode::Basic,
            file: None,
        }
    }
}

impl ControllerManager {
    fn defaults() -> Self {
        Self {
            node_monitor_grace_period_seconds: defaults::node_monitor_grace_period_seconds(),
        }
    }
}

impl Scheduler {
    fn defaults() -> Self {
        Self {}
    }
}

impl Etcd {
    fn defaults() -> Self {
        Self {
            quota_backend_bytes: defaults::quota(),
            backup: Backup::defaults(),
        }
    }
}

impl Backup {
    fn defaults() -> Self {
        Self {
            enabled: true,
            schedule: defaults::backup_schedule(),
            directory: defaults::backup_directory(),
            keep: defaults::backup_keep(),
            keep_daily: 0,
            keep_weekly: 0,
            compression: defaults::backup_compression(),
        }
    }
}

impl ApiProxy {
    fn defaults() -> Self {
        Self {
            listen: defaults::api_proxy_listen(),
        }
    }
}

impl ControlPlaneConfiguration {
    /// Reads, parses and validates the config file at `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// Parses and validates `text`; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            crate::yaml::from_str(text).map_err(|message| ConfigError::Syntax {
                file: file.to_path_buf(),
                message,
            })?;
        if value.is_null() {
            return Err(field_error(file, ".", "the document is empty"));
        }
        let cfg: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            field_error(
                file,
                &field,
                &crate::yaml::redact(&e.into_inner().to_string()),
            )
        })?;
        cfg.validate()
            .map_err(|(field, message)| field_error(file, field, &message))?;
        Ok(cfg)
    }

    /// Checks what the types cannot: identity, ranges and cross-field rules.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.api_version != API_VERSION {
            return Err((
                "apiVersion",
                format!("must be {API_VERSION:?}, not {:?}", self.api_version),
            ));
        }
        if self.kind != KIND {
            return Err(("kind", format!("must be {KIND:?}, not {:?}", self.kind)));
        }
        if crate::versions::lookup(self.kubernetes_version).is_none() {
            return Err((
                "kubernetesVersion",
                format!(
                    "{} is not supported by this build (supported: {})",
                    self.kubernetes_version,
                    crate::versions::supported_range()
                ),
            ));
        }
        let c = &self.certificates;
        if !(1..=3650).contains(&c.validity_days) {
            return Err((
                "certificates.validityDays",
                "must be between 1 and 3650".into(),
            ));
        }
        if c.renew_before_days >= c.validity_days {
            return Err((
                "certificates.renewBeforeDays",
                format!("must be less than validityDays ({})", c.validity_days),
            ));
        }
        // `kubernetes.default.svc.<clusterDomain>` is a SAN and a URL host: a plain DNS name
        // (no wildcard) short enough for that name to stay within 253 characters.
        let domain = self.cluster_domain.as_str();
        if domain.starts_with('*') {
            return Err(("clusterDomain", "must not be a wildcard".into()));
        }
        if domain.len() + SERVICE_PREFIX.len() > 253 {
            return Err((
                "clusterDomain",
                format!(
                    "is {} characters; at most {} (with {SERVICE_PREFIX:?} in front it must stay a \
                     DNS name of 253)",
                    domain.len(),
                    253 - SERVICE_PREFIX.len()
                ),
            ));
        }
        if self.cluster_name.is_empty() {
            return Err(("clusterName", "must not be empty".into()));
        }
        if self.image_repository.is_empty() || self.image_repository.contains(char::is_whitespace) {
            return Err((
                "imageRepository",
                "must be a non-empty registry path".into(),
            ));
        }
        if self.service_subnet.0.contains(&self.pod_subnet.0.network())
            || self.pod_subnet.0.contains(&self.service_subnet.0.network())
        {
            return Err((
                "podSubnet",
                format!("overlaps serviceSubnet {}", self.service_subnet),
            ));
        }
        let audit = &self.apiserver.audit_policy;
        match (audit.mode, &audit.file) {
            (AuditMode::Custom, None) => {
                return Err((
                    "apiserver.auditPolicy.file",
                    "is required with mode Custom".into(),
                ));
            }
            (AuditMode::Custom, Some(f)) if !f.is_absolute() => {
                return Err((
                    "apiserver.auditPolicy.file",
                    "must be an absolute path".into(),
                ));
            }
            (AuditMode::Custom, Some(f)) if holds_secrets(f) => {
                return Err((
                    "apiserver.auditPolicy.file",
                    format!(
                        "{} holds keys or credentials ({}): never read as a policy",
                        f.display(),
                        SECRET_PATHS.join(", ")
                    ),
                ));
            }
            (AuditMode::None | AuditMode::Basic, Some(_)) => {
                return Err((
                    "apiserver.auditPolicy.file",
                    "is only allowed with mode Custom".into(),
                ));
            }
            _ => {}
        }
        if !self.etcd.backup.directory.is_absolute() {
            return Err(("etcd.backup.directory", "must be an absolute path".into()));
        }
        if self.etcd.backup.keep == 0 {
            return Err(("etcd.backup.keep", "must be at least 1".into()));
        }
        if let Quota::Bytes(n) = self.etcd.quota_backend_bytes {
            const MIB: u64 = 1 << 20;
            if !(256 * MIB..=(8u64 << 30)).contains(&n) {
                return Err((
                    "etcd.quotaBackendBytes",
                    "must be between 256 MiB and 8 GiB".into(),
                ));
            }
        }
        Ok(())
    }

    /// Where admins reach the API: `controlPlaneEndpoint`, else the node-local api-proxy.
    pub fn control_plane_endpoint(&self) -> HttpsEndpoint {
        self.control_plane_endpoint.clone().unwrap_or_else(|| {
            HttpsEndpoint::new(
                &self.api_proxy.listen.ip().to_string(),
                self.api_proxy.listen.port(),
            )
        })
    }

    /// The first address of the service subnet: the `kubernetes` Service's ClusterIP.
    pub fn first_service_ip(&self) -> IpAddr {
        let net = self.service_subnet.0;
        match net.network() {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
        }
    }
}

/// What goes in front of `clusterDomain` in the API server's longest service name.
const SERVICE_PREFIX: &str = "kubernetes.default.svc.";

/// Host paths that hold private keys or credentials; a policy file is never read from them.
const SECRET_PATHS: [&str; 3] = [
    "/etc/kubernetes/pki/",
    "/etc/kubernetes/*.conf",
    "/etc/kubernetes/cpm/encryption-config.yaml",
];

/// Whether `path` is one of [`SECRET_PATHS`], or climbs with `..` (which could reach them).
fn holds_secrets(path: &Path) -> bool {
    let kube = Path::new("/etc/kubernetes");
    path.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
        || path.starts_with("/etc/kubernetes/pki")
        || (path.parent() == Some(kube) && path.extension().is_some_and(|e| e == "conf"))
        || path == Path::new("/etc/kubernetes/cpm/encryption-config.yaml")
}

fn field_error(file: &Path, field: &str, message: &str) -> ConfigError {
    ConfigError::Field {
        file: file.to_path_buf(),
        field: field.to_string(),
        message: one_line(message),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
