//! Routes: which proxy path goes to which upstream URL, with what upstream TLS and what
//! authorisation attributes, plus the static allow rules.
//!
//! Routes come from `--route NAME=URL` flags (or the three built-in ones) with the global
//! `--upstream-*` TLS flags, or from a `--routes-file` (YAML or JSON) that sets everything per
//! route:
//!
//! ```yaml
//! routes:
//! - name: etcd                               # path defaults to /etcd/metrics
//!   upstream: http://127.0.0.1:2381/metrics
//! - name: scheduler
//!   upstream: https://127.0.0.1:10259/metrics
//!   tls: {caFile: /pki/ca.crt, certFile: /pki/client.crt, keyFile: /pki/client.key}
//!   resourceAttributes: {namespace: kube-system, resource: pods, subresource: metrics, verb: get}
//! allow:
//! - paths: [/etcd/metrics]
//!   users: [system:serviceaccount:monitoring:prometheus]
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The built-in routes: name and upstream URL.
pub const DEFAULT_ROUTES: [(&str, &str); 3] = [
    ("controller-manager", "https://127.0.0.1:10257/metrics"),
    ("scheduler", "https://127.0.0.1:10259/metrics"),
    ("etcd", "http://127.0.0.1:2381/metrics"),
];

/// TLS towards one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA bundle that verifies the upstream's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented to the upstream.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name verified in the upstream's certificate (default: the URL's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any upstream certificate. Only when explicitly set.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// SubjectAccessReview resource attributes (kube-rbac-proxy's `resourceAttributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAttributes {
    /// Verb (default `get`).
    #[serde(default)]
    pub verb: Option<String>,
    /// API group.
    #[serde(default)]
    pub group: Option<String>,
    /// API version.
    #[serde(default)]
    pub version: Option<String>,
    /// Resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// Subresource.
    #[serde(default)]
    pub subresource: Option<String>,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
}

/// One route as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Name (a metrics label, and the default path `/<name>/metrics`).
    pub name: String,
    /// The upstream URL (`http` or `https`).
    pub upstream: String,
    /// The proxy path (default `/<name>/metrics`).
    #[serde(default)]
    pub path: Option<String>,
    /// Upstream TLS.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// A file holding a bearer token sent to the upstream.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Authorise with these resource attributes instead of the non-resource path.
    #[serde(default)]
    pub resource_attributes: Option<ResourceAttributes>,
}

impl RouteSpec {
    /// The proxy path of this route.
    pub fn path(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("/{}/metrics", self.name))
    }
}

/// A static allow rule: a user or group member may GET these paths without a
/// SubjectAccessReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowRule {
    /// Paths the rule covers.
    pub paths: Vec<String>,
    /// Usernames.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl AllowRule {
    /// Whether the rule lets `user` (in `groups`) GET `path`.
    pub fn allows(&self, user: &str, groups: &[String], path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
            && (self.users.iter().any(|u| u == user)
                || self.groups.iter().any(|g| groups.contains(g)))
    }
}

/// The `--routes-file` document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutesFile {
    /// The routes.
    pub routes: Vec<RouteSpec>,
    /// Static allow rules.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
}

/// A route flag, the routes file or a route in it is invalid.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// `--route` is not `NAME=URL`.
    #[error("--route {0:?}: expected NAME=URL")]
    Flag(String),
    /// The routes file could not be read.
    #[error("cannot read routes file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The routes file is not a valid document.
    #[error("routes file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A field is invalid.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// The routes file, or `flags`.
        origin: String,
        /// The field path, e.g. `routes[1].upstream`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Parses `NAME=URL`.
pub fn parse_flag(s: &str) -> Result<RouteSpec, RoutesError> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| RoutesError::Flag(s.to_string()))?;
    Ok(RouteSpec {
        name: name.trim().to_string(),
        upstream: url.trim().to_string(),
        path: None,
        tls: UpstreamTls::default(),
        token_file: None,
        resource_attributes: None,
    })
}

/// Reads and validates a routes file.
pub fn load(path: &Path) -> Result<RoutesFile, RoutesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: RoutesFile =
        cpm_core::yaml::from_str(&text).map_err(|message| RoutesError::Syntax {
            path: path.to_path_buf(),
            message,
        })?;
    validate(&file.routes, &path.display().to_string())?;
    for (i, rule) in file.allow.iter().enumerate() {
        if rule.users.is_empty() && rule.groups.is_empty() {
            return Err(RoutesError::Invalid {
                origin: path.display().to_string(),
                field: format!("allow[{i}]"),
                message: "names no user and no group".into(),
            });
        }
    }
    Ok(file)
}

/// Checks names, paths and URLs; `origin` names the file (or `flags`) in errors.
pub fn validate(routes: &[RouteSpec], origin: &str) -> Result<(), RoutesError> {
    let bad = |i: usize, field: &str, message: String| RoutesError::Invalid {
        origin: origin.to_string(),
        field: format!("routes[{i}].{field}"),
        message,
    };
    if routes.is_empty() {
        return Err(RoutesError::Invalid {
            origin: origin.to_string(),
            field: "routes".into(),
            message: "no route".into(),
        });
    }
    let mut paths = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let name_ok = !r.name.is_empty()
            && r.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(bad(
                i,
                "name",
                format!("{:?} is not [A-Za-z0-9_-]+", r.name),
            ));
        }
        let path = r.path();
        if !path.starts_with('/') || path.contains('?') {
            return Err(bad(i, "path", format!("{path:?} is not an absolute path")));
        }
        if !paths.insert(path.clone()) {
            return Err(bad(i, "path", format!("{path:?} is used twice")));
        }
        let uri: http::Uri = r
            .upstream
            .parse()
            .map_err(|e| bad(i, "upstream", format!("{:?}: {e}", r.upstream)))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => {
                return Err(bad(
                    i,
                    "upstream",
                    format!("{:?} is not an http(s)://host URL", r.upstream),
                ));
            }
        }
        let https = uri.scheme_str() == Some("https");
        let t = &r.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err(bad(i, "tls", "certFile and keyFile go together".into()));
        }
        if https && t.ca_file.is_none() && !t.insecure_skip_verify {
            return Err(bad(
                i,
                "tls",
                format!(
                    "https upstream {} needs a CA (tls.caFile, --upstream-ca-file) or an explicit \
                     insecureSkipVerify (--upstream-insecure-skip-verify)",
                    r.upstream
                ),
            ));
        }
        if !https && (t.ca_file.is_some() || t.cert_file.is_some() || t.insecure_skip_verify) {
            return Err(bad(
                i,
                "tls",
                format!("TLS settings on a plain http upstream {}", r.upstream),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
