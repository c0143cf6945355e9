//! Static pods: the manifests in a node's `etc/kubernetes/manifests`, read as the kubelet's
//! file source reads them, and their mirror pods.
//!
//! Every file not starting with `.` is a pod (YAML or JSON). Its pod is named
//! `<name>-<node>`, gets `spec.nodeName`, and a uid that is a hash of the node, the file and
//! the manifest's content ([`read_dir`]); `kubernetes.io/config.hash` is that uid,
//! `kubernetes.io/config.source` is `file`. A changed manifest changes the hash: the kubelet
//! stops the old containers, starts the new ones and replaces the mirror pod ([`changes`]).
//! The mirror pod ([`mirror_pod`]) carries the manifest's labels and annotations (cpm's
//! checksum annotations among them) plus `kubernetes.io/config.mirror` = the hash, and is
//! owned by the Node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// `kubernetes.io/config.mirror`.
pub const MIRROR: &str = "kubernetes.io/config.mirror";
/// `kubernetes.io/config.hash`.
pub const HASH: &str = "kubernetes.io/config.hash";
/// `kubernetes.io/config.source`.
pub const SOURCE: &str = "kubernetes.io/config.source";
/// `kubernetes.io/config.seen`.
pub const SEEN: &str = "kubernetes.io/config.seen";

/// A static pod read from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticPod {
    /// The manifest file.
    pub file: PathBuf,
    /// The pod as the kubelet runs it (named `<name>-<node>`, bound, annotated).
    pub pod: Pod,
    /// The uid and `config.hash`.
    pub hash: String,
}

impl StaticPod {
    /// `namespace/name` of the pod (and its mirror pod).
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.pod.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses manifest `text` of `file` for `node`.
pub fn parse(file: &Path, text: &str, node: &str) -> Result<StaticPod, String> {
    use sha2::Digest as _;
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut pod: Pod =
        serde_json::from_value(value.clone()).map_err(|e| format!("{}: {e}", file.display()))?;
    if value.get("kind").and_then(serde_json::Value::as_str) != Some("Pod") {
        return Err(format!("{}: not a Pod", file.display()));
    }
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{}: no metadata.name", file.display()))?;
    let canonical = serde_json::to_vec(&value).unwrap_or_default();
    let mut h = sha2::Sha256::new();
    h.update(node.as_bytes());
    h.update([0]);
    h.update(file.display().to_string().as_bytes());
    h.update([0]);
    h.update(&canonical);
    let hash = hex(&h.finalize()[..16]);
    pod.metadata.name = Some(format!("{name}-{node}"));
    pod.metadata.namespace = Some(
        pod.metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
    );
    pod.metadata.uid = Some(hash.clone());
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(HASH.into(), hash.clone());
    annotations.insert(SOURCE.into(), "file".into());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_string());
    }
    Ok(StaticPod {
        file: file.to_path_buf(),
        pod,
        hash,
    })
}

/// Every static pod in `dir`, and the files that could not be read as one.
pub fn read_dir(dir: &Path, node: &str) -> (Vec<StaticPod>, Vec<String>) {
    let (mut pods, mut errors) = (Vec::new(), Vec::new());
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (pods, errors);
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in files {
        match std::fs::read_to_string(&f)
            .map_err(|e| format!("{}: {e}", f.display()))
            .and_then(|t| parse(&f, &t, node))
        {
            Ok(p) => pods.push(p),
            Err(e) => errors.push(e),
        }
    }
    (pods, errors)
}

/// What to do to reach `desired` from `running` (pod key → hash).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// New pods to start (keys).
    pub start: Vec<String>,
    /// Pods whose manifest changed (stop the old, start the new).
    pub restart: Vec<String>,
    /// Pods whose manifest is gone.
    pub stop: Vec<String>,
}

/// Compares running pods with the manifests.
pub fn changes(running: &BTreeMap<String, String>, desired: &[StaticPod]) -> Changes {
    let mut c = Changes::default();
    let wanted: BTreeMap<String, &str> =
        desired.iter().map(|p| (p.key(), p.hash.as_str())).collect();
    for (key, hash) in &wanted {
        match running.get(key) {
            None => c.start.push(key.clone()),
            Some(h) if h != hash => c.restart.push(key.clone()),
            Some(_) => {}
        }
    }
    c.stop = running
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    c
}

/// The mirror pod of `sp` on node `node` (uid `node_uid`).
pub fn mirror_pod(sp: &StaticPod, node: &str, node_uid: &str) -> Result<Pod, serde_json::Error> {
    let mut value = serde_json::to_value(&sp.pod)?;
    let meta = &mut value["metadata"];
    if let Some(m) = meta.as_object_mut() {
        m.remove("uid");
        m.remove("resourceVersion");
        m.remove("creationTimestamp");
    }
    meta["annotations"][MIRROR] = json!(sp.hash);
    meta["annotations"][SEEN] = json!(
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    meta["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid, "controller": true}]);
    if let Some(m) = value.as_object_mut() {
        m.remove("status");
    }
    serde_json::from_value(value)
}

/// Whether an API pod is a mirror pod.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR))
}

#[cfg(test)]
mod tests;
