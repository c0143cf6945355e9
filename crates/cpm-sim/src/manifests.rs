//! The objects `cargo xtask manifests` generates, read from the workspace's `manifests/` (the
//! drift test keeps them equal to the generator's output) and applied to the store with
//! server-side apply; the templates rendered as `manifests/README.md` says.

use std::path::{Path, PathBuf};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;

use crate::error::{Result, SimError};

/// The workspace this crate was built in.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The documents of a multi-document YAML text (empty ones skipped).
pub fn documents(text: &str, what: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            let body: String = current
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n");
            if !body.trim().is_empty() {
                let v: Value = serde_saphyr::from_str(&current).map_err(|e| SimError::Parse {
                    what: what.to_string(),
                    message: e.to_string(),
                })?;
                if !v.is_null() {
                    docs.push(v);
                }
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(docs)
}

/// The documents of `path`.
pub fn read_documents(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(SimError::io("read", path))?;
    documents(&text, &path.display().to_string())
}

/// Every `*.yaml` of `dir`, sorted by name.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(SimError::io("read", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

const CLUSTER_SCOPED: [&str; 6] = [
    "Namespace",
    "Node",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
];

/// `kind/name` of a document, for messages.
fn describe(doc: &Value) -> String {
    format!(
        "{} {}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["namespace"].as_str().unwrap_or_default(),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Server-side applies `doc` (field manager `cpm-sim`, forced).
pub async fn apply(client: &kube::Client, doc: &Value) -> Result<()> {
    let what = describe(doc);
    let api_version = doc["apiVersion"]
        .as_str()
        .ok_or_else(|| SimError::invalid(&what, "no apiVersion"))?;
    let kind = doc["kind"]
        .as_str()
        .ok_or_else(|| SimError::invalid(&what, "no kind"))?;
    let name = doc["metadata"]["name"]
        .as_str()
        .ok_or_else(|| SimError::invalid(&what, "no name"))?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()));
    let api: Api<DynamicObject> = if CLUSTER_SCOPED.contains(&kind) {
        Api::all_with(client.clone(), &resource)
    } else {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &resource)
    };
    api.patch(
        name,
        &PatchParams::apply("cpm-sim").force(),
        &Patch::Apply(doc),
    )
    .await
    .map_err(SimError::kube("apply", what))?;
    Ok(())
}

/// Applies every document in order.
pub async fn apply_all(client: &kube::Client, docs: &[Value]) -> Result<()> {
    for d in docs {
        apply(client, d).await?;
    }
    Ok(())
}

/// The api-proxy static pod for a node, from the template, with `upstreams`
/// (`IP:PORT,...`) as `${CPM_BOOTSTRAP_UPSTREAMS}`.
pub fn api_proxy_static_pod(workspace: &Path, upstreams: &str) -> Result<String> {
    let path = workspace.join("manifests/static-pods/kubernetes-api-proxy.yaml");
    let text = std::fs::read_to_string(&path).map_err(SimError::io("read", &path))?;
    Ok(text.replace("${CPM_BOOTSTRAP_UPSTREAMS}", upstreams))
}

/// The etcd-backup CronJob of master `node`, from the template.
pub fn backup_cronjob(workspace: &Path, node: &str) -> Result<Vec<Value>> {
    let path = workspace.join("manifests/etcd-backup/cronjob-template.yaml");
    let text = std::fs::read_to_string(&path).map_err(SimError::io("read", &path))?;
    documents(
        &text.replace("${NODE_NAME}", node),
        &path.display().to_string(),
    )
}

#[cfg(test)]
mod tests;
