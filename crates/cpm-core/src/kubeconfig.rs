//! Kubeconfig files: the subset cpm writes (one cluster, one user, one context, data inline) and
//! a tolerant reader for any kubeconfig (unknown fields ignored), as kubectl reads them.
//!
//! ```
//! use cpm_core::kubeconfig::{Kubeconfig, render};
//! let text = render("kubernetes", "https://127.0.0.1:6445", "CA", "kubernetes-admin", "CERT", "KEY");
//! let k = Kubeconfig::parse(&text).unwrap();
//! let (cluster, user) = k.current().unwrap();
//! assert_eq!(cluster.server, "https://127.0.0.1:6445");
//! assert_eq!(user.client_key().unwrap(), b"KEY");
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// A kubeconfig could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a kubeconfig: {0}")]
pub struct KubeconfigError(String);

/// A kubeconfig document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// `v1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// `Config`.
    #[serde(default)]
    pub kind: String,
    /// Named clusters.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// Named contexts.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    /// The context in use.
    #[serde(default)]
    pub current_context: String,
    /// Named users.
    #[serde(default)]
    pub users: Vec<NamedUser>,
}

/// A named cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// Its name.
    pub name: String,
    /// The cluster.
    pub cluster: Cluster,
}

/// How to reach a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// Base64 of the CA bundle (PEM).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_authority_data: String,
    /// The API server URL.
    #[serde(default)]
    pub server: String,
}

/// A named context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    /// Its name.
    pub name: String,
    /// The context.
    pub context: Context,
}

/// A cluster and a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Cluster name.
    pub cluster: String,
    /// User name.
    pub user: String,
}

/// A named user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// The credentials.
    pub user: User,
}

/// Client credentials (certificate data only; other kinds are read as empty).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// Base64 of the client certificate (PEM).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate_data: String,
    /// Base64 of the client key (PEM). Secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key_data: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("client_key_data", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn decode(b64: &str) -> Option<Vec<u8>> {
    if b64.is_empty() {
        return None;
    }
    STANDARD.decode(b64.trim()).ok()
}

impl Cluster {
    /// The CA bundle, decoded.
    pub fn ca(&self) -> Option<Vec<u8>> {
        decode(&self.certificate_authority_data)
    }
}

impl User {
    /// The client certificate, decoded.
    pub fn client_certificate(&self) -> Option<Vec<u8>> {
        decode(&self.client_certificate_data)
    }

    /// The client key, decoded. Secret.
    pub fn client_key(&self) -> Option<Vec<u8>> {
        decode(&self.client_key_data)
    }
}

impl Kubeconfig {
    /// Parses a kubeconfig; unknown fields are ignored, as kubectl does.
    pub fn parse(text: &str) -> Result<Self, KubeconfigError> {
        crate::yaml::from_str(text).map_err(KubeconfigError)
    }

    /// The cluster and user of the current context.
    pub fn current(&self) -> Option<(&Cluster, &User)> {
        let ctx = &self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)?
            .context;
        let cluster = &self
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)?
            .cluster;
        let user = &self.users.iter().find(|u| u.name == ctx.user)?.user;
        Some((cluster, user))
    }
}

/// Renders a kubeconfig with one cluster, one user and the context `<user>@<cluster>`, all data
/// inline (base64 of the PEM), in kubeadm's shape. Deterministic for the same inputs.
pub fn render(
    cluster_name: &str,
    server: &str,
    ca_pem: &str,
    user_name: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let context = format!("{user_name}@{cluster_name}");
    let doc = Kubeconfig {
        api_version: "v1".into(),
        kind: "Config".into(),
        clusters: vec![NamedCluster {
            name: cluster_name.into(),
            cluster: Cluster {
                certificate_authority_data: STANDARD.encode(ca_pem),
                server: server.into(),
            },
        }],
        contexts: vec![NamedContext {
            name: context.clone(),
            context: Context {
                cluster: cluster_name.into(),
                user: user_name.into(),
            },
        }],
        current_context: context,
        users: vec![NamedUser {
            name: user_name.into(),
            user: User {
                client_certificate_data: STANDARD.encode(cert_pem),
                client_key_data: STANDARD.encode(key_pem),
            },
        }],
    };
    serde_saphyr::to_string(&doc).expect("invariant: a kubeconfig of strings serializes")
}

#[cfg(test)]
mod tests;
