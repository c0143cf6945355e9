//! ServiceAccount tokens and the cluster CA ConfigMap.
//!
//! The store has no TokenRequest yet, so [`RegisteredTokens`] makes a random bearer token and
//! registers it with the test API server for the ServiceAccount's user
//! (`system:serviceaccount:<ns>:<name>`, groups `system:serviceaccounts`,
//! `system:serviceaccounts:<ns>`, `system:authenticated`). Tokens do not expire. When the store
//! serves TokenRequest, another [`TokenIssuer`] asks it instead.
//!
//! [`publish_root_ca`] plays kube-controller-manager's root-ca-cert-publisher: every namespace
//! gets ConfigMap `kube-root-ca.crt` with the cluster CA.

use std::sync::Arc;

use cpm_testing::apiserver::{ApiServer, UserInfo};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

/// Issues ServiceAccount tokens for projected volumes.
pub trait TokenIssuer: Send + Sync {
    /// A token for ServiceAccount `namespace/name` (audience and lifetime as requested).
    fn issue(
        &self,
        namespace: &str,
        name: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, String>;
}

/// Random tokens registered with the in-process test API server.
#[derive(Debug, Clone)]
pub struct RegisteredTokens(pub Arc<ApiServer>);

/// The user a ServiceAccount token authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> UserInfo {
    let ns_group = format!("system:serviceaccounts:{namespace}");
    UserInfo::new(
        &format!("system:serviceaccount:{namespace}:{name}"),
        &["system:serviceaccounts", &ns_group, "system:authenticated"],
    )
}

impl TokenIssuer for RegisteredTokens {
    fn issue(
        &self,
        namespace: &str,
        name: &str,
        _audience: Option<&str>,
        _expiration_seconds: i64,
    ) -> Result<String, String> {
        use rand::Rng as _;
        let token: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        let token = format!("sim.{token}");
        self.0
            .add_token(&token, service_account_user(namespace, name));
        Ok(token)
    }
}

/// Ensures `kube-root-ca.crt` (key `ca.crt`) in every namespace.
pub async fn publish_root_ca(client: &kube::Client, ca_pem: &str) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces.list(&ListParams::default()).await? {
        let Some(name) = ns.metadata.name else {
            continue;
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
        if let Some(cm) = api.get_opt("kube-root-ca.crt").await?
            && cm
                .data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(String::as_str)
                == Some(ca_pem)
        {
            continue;
        }
        let cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": name},
            "data": {"ca.crt": ca_pem},
        });
        api.patch(
            "kube-root-ca.crt",
            &PatchParams::apply("root-ca-cert-publisher").force(),
            &Patch::Apply(cm),
        )
        .await?;
    }
    Ok(())
}
