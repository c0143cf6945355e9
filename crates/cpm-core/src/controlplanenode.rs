//! `ControlPlaneNode` (group `cpm.dev`, cluster-scoped, one per master, named after the Node):
//! the per-master record that agents share through the cluster. Its status holds the Kubernetes
//! minor the master runs, the highest minor it ever ran, each component's image tag and
//! manifest checksum, and the last version rollout (from, to, phase, reason). Rollouts resume
//! from it after an agent restart: nothing about a rollout is kept only in memory.
//!
//! ```
//! use cpm_core::controlplanenode::{crd, Phase, RolloutStatus};
//! assert_eq!(crd()["spec"]["names"]["kind"], "ControlPlaneNode");
//! let r = RolloutStatus { phase: Phase::InProgress, ..RolloutStatus::default() };
//! assert_eq!(serde_json::to_value(&r).unwrap()["phase"], "InProgress");
//! ```

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// API group.
pub const GROUP: &str = "cpm.dev";
/// API version.
pub const VERSION: &str = "v1alpha1";
/// Kind.
pub const KIND: &str = "ControlPlaneNode";
/// Plural resource name.
pub const PLURAL: &str = "controlplanenodes";
/// Annotation an operator sets (any value) on a master's object to resume a halted rollout.
pub const RESUME_ANNOTATION: &str = "cpm.dev/resume-rollout";

/// The API resource, for dynamic clients.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// The client for these objects.
pub fn api(client: kube::Client) -> Api<DynamicObject> {
    Api::all_with(client, &api_resource())
}

/// Where a rollout on one master stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No rollout recorded.
    #[default]
    None,
    /// This master is moving from `from` to `to` (it holds the rollout Lease).
    InProgress,
    /// The last rollout finished; the master runs `to`.
    Succeeded,
    /// The last rollout failed its gate: the master was restored to `from`, and no master starts
    /// another rollout until the configuration changes or an operator resumes.
    Failed,
}

/// The last rollout of one master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Where it stands.
    pub phase: Phase,
    /// The minor it started from (`1.32`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// The minor it moves to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// Why it failed (the gate's error), or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// sha256 of the configuration the rollout ran under: a failed rollout halts the others
    /// only while the configuration is unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config_hash: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// One component as the master currently has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Image tag of its static pod (`v1.33.5`).
    pub version: String,
    /// `cpm.dev/config-checksum` of its manifest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checksum: String,
}

/// The status of one master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneNodeStatus {
    /// The Kubernetes minor the master runs (`1.33`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The highest minor it ever ran: the downgrade floor is one below the cluster's highest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub highest_version: String,
    /// Components by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentStatus>,
    /// Earliest expiry among the master's control-plane certificates (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expiry: Option<String>,
    /// Expiry (RFC 3339) of each certificate under `/etc/kubernetes/pki`, by path below it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, String>,
    /// Why this master does not move although the cluster has not reached the configured
    /// version (another master holds the rollout Lease, images not pulled yet, a halt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The last rollout.
    #[serde(default)]
    pub rollout: RolloutStatus,
}

/// The status of `obj` (an empty status when absent or unreadable).
pub fn status_of(obj: &DynamicObject) -> ControlPlaneNodeStatus {
    obj.data
        .get("status")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Fetches the object of `node`, creating it with `initial` as status when missing.
pub async fn get_or_create(
    api: &Api<DynamicObject>,
    node: &str,
    initial: &ControlPlaneNodeStatus,
) -> Result<DynamicObject, kube::Error> {
    if let Some(o) = api.get_opt(node).await? {
        return Ok(o);
    }
    let mut obj = DynamicObject::new(node, &api_resource());
    obj.data = json!({"spec": {}, "status": initial});
    match api.create(&PostParams::default(), &obj).await {
        Ok(o) => Ok(o),
        // Another writer was first: read theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => api.get(node).await,
        Err(e) => Err(e),
    }
}

/// Replaces the status of `node` as a whole (a JSON patch: a merge patch would keep fields the
/// new status leaves out, such as a cleared failure reason).
pub async fn patch_status(
    api: &Api<DynamicObject>,
    node: &str,
    status: &ControlPlaneNodeStatus,
) -> Result<DynamicObject, kube::Error> {
    let ops = json!([{"op": "add", "path": "/status", "value": status}]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    api.patch(node, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
}

/// Removes annotation `key` from `node`.
pub async fn remove_annotation(
    api: &Api<DynamicObject>,
    node: &str,
    key: &str,
) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": {key: null}}});
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// Marks an agent dirty on every change of the object of `node` (all objects with `None`).
/// Until the CRD exists the watch retries with backoff.
pub fn watch(
    client: kube::Client,
    node: Option<&str>,
    tx: crate::reconcile::TriggerSender,
) -> crate::kube::KubeWatch {
    let mut config = kube::runtime::watcher::Config::default();
    if let Some(n) = node {
        config = config.fields(&format!("metadata.name={n}"));
    }
    crate::kube::watch_triggers(api(client), config, tx)
}

/// The CustomResourceDefinition, as a JSON object.
pub fn crd() -> Value {
    let string = json!({"type": "string"});
    let rollout = json!({
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": ["None", "InProgress", "Succeeded", "Failed"]},
            "from": string, "to": string, "reason": string, "configHash": string,
            "startedAt": string, "finishedAt": string,
        },
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{PLURAL}.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": format!("{KIND}List"),
                "plural": PLURAL,
                "singular": "controlplanenode",
                "shortNames": ["cpn"],
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "additionalPrinterColumns": [
                    {"name": "Version", "type": "string", "jsonPath": ".status.version"},
                    {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase"},
                    {"name": "To", "type": "string", "jsonPath": ".status.rollout.to"},
                    {"name": "Certificates-Expire", "type": "string", "jsonPath": ".status.certificateExpiry"},
                    {"name": "Waiting", "type": "string", "jsonPath": ".status.waiting", "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A control-plane node managed by cpm: what it runs and how its last version rollout went.",
                    "properties": {
                        "apiVersion": string,
                        "kind": string,
                        "metadata": {"type": "object"},
                        "spec": {"type": "object"},
                        "status": {
                            "type": "object",
                            "properties": {
                                "version": string,
                                "highestVersion": string,
                                "certificateExpiry": string,
                                "certificates": {"type": "object", "additionalProperties": string},
                                "waiting": string,
                                "components": {
                                    "type": "object",
                                    "additionalProperties": {
                                        "type": "object",
                                        "properties": {"version": string, "checksum": string},
                                    },
                                },
                                "rollout": rollout,
                            },
                        },
                    },
                }},
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cpm_testing::apiserver::ApiServer;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use tokio::sync::mpsc;

    use super::*;
    use crate::reconcile::Trigger;

    async fn next(rx: &mut mpsc::UnboundedReceiver<Trigger>) -> Option<Trigger> {
        tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_node_s_watch_selects_its_own_object_and_fires_on_its_changes() -> anyhow::Result<()>
    {
        let server = ApiServer::start().await?;
        let client = server.admin_client().await?;
        let crd: CustomResourceDefinition = serde_json::from_value(crd())?;
        Api::<CustomResourceDefinition>::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await?;
        let objects = api(client.clone());
        let status = ControlPlaneNodeStatus::default();
        get_or_create(&objects, "master-2", &status).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watch = watch(client, Some("master-1"), tx);
        // The initial list: Init and InitDone, nothing of master-2's.
        assert_eq!(next(&mut rx).await, Some(Trigger::Kube));
        assert_eq!(next(&mut rx).await, Some(Trigger::Kube));
        let ready = server.wait_for_request(|r| r.query.contains("watch=true"));
        tokio::time::timeout(Duration::from_secs(15), ready).await?;
        // master-1 is created and changes (master-2's change is outside the field selector, which
        // the test API server applies as kube-apiserver does).
        patch_status(
            &objects,
            "master-2",
            &ControlPlaneNodeStatus {
                version: "1.33".into(),
                ..status.clone()
            },
        )
        .await?;
        get_or_create(&objects, "master-1", &status).await?;
        assert_eq!(next(&mut rx).await, Some(Trigger::Kube));
        patch_status(
            &objects,
            "master-1",
            &ControlPlaneNodeStatus {
                version: "1.33".into(),
                ..status.clone()
            },
        )
        .await?;
        assert_eq!(next(&mut rx).await, Some(Trigger::Kube));
        let seen = server.requests();
        assert!(
            seen.iter().any(|r| r.query.contains("watch=true")
                && r.query.contains("fieldSelector=metadata.name%3Dmaster-1")),
            "{seen:?}"
        );
        Ok(())
    }

    #[test]
    fn status_round_trips_and_tolerates_missing_fields() {
        let s = ControlPlaneNodeStatus {
            version: "1.33".into(),
            highest_version: "1.33".into(),
            components: BTreeMap::from([(
                "kube-apiserver".into(),
                ComponentStatus {
                    version: "v1.33.5".into(),
                    checksum: "abc".into(),
                },
            )]),
            certificate_expiry: None,
            certificates: BTreeMap::new(),
            waiting: Some("images".into()),
            rollout: RolloutStatus {
                phase: Phase::Failed,
                from: "1.32".into(),
                to: "1.33".into(),
                reason: Some("gate".into()),
                ..RolloutStatus::default()
            },
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["rollout"]["phase"], "Failed");
        assert_eq!(v["highestVersion"], "1.33");
        let back: ControlPlaneNodeStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        let empty: ControlPlaneNodeStatus = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty.rollout.phase, Phase::None);
    }

    #[test]
    fn crd_names_match_the_api_resource() {
        let c = crd();
        let r = api_resource();
        assert_eq!(c["metadata"]["name"], format!("{}.{}", r.plural, r.group));
        assert_eq!(c["spec"]["versions"][0]["name"], r.version);
        assert_eq!(c["spec"]["scope"], "Cluster");
    }
}
