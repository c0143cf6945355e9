//! The DaemonSet controller: one pod per node that the template fits (nodeSelector, required
//! node affinity, tolerations against the node's NoSchedule/NoExecute taints), bound to its
//! node directly (the simulator also plays the scheduler). A template change is rolled out
//! with `RollingUpdate` one pod at a time within `maxUnavailable` (an outdated pod is deleted
//! only while fewer than `maxUnavailable` nodes lack a ready pod; outdated pods that are not
//! ready go first and freely); `OnDelete` replaces only deleted pods. Failed pods are deleted
//! and replaced. Status counts are kept current.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The label carrying the template's hash.
pub const HASH_LABEL: &str = "controller-revision-hash";

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a pod with `spec` may run on `node`.
pub fn fits(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|sel| {
            sel.node_selector_terms.iter().any(|term| {
                term.match_expressions
                    .iter()
                    .flatten()
                    .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
                    && term.match_fields.iter().flatten().all(|r| {
                        let v = (r.key == "metadata.name").then_some(name.as_str());
                        requirement_matches(r, v)
                    })
            })
        });
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let taints_ok = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| {
            tolerations.iter().any(|tol| {
                let effect_ok = tol
                    .effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == t.effect);
                let key_ok = tol
                    .key
                    .as_deref()
                    .is_none_or(|k| k.is_empty() || k == t.key);
                let value_ok = match tol.operator.as_deref() {
                    Some("Exists") => true,
                    _ => {
                        tol.value.as_deref().unwrap_or_default()
                            == t.value.as_deref().unwrap_or_default()
                    }
                };
                effect_ok && key_ok && value_ok
            })
        });
    selector_ok && affinity_ok && taints_ok
}

/// A short hash of the pod template.
pub fn template_hash(ds: &DaemonSet) -> String {
    use sha2::Digest as _;
    let template = ds
        .spec
        .as_ref()
        .map(|s| serde_json::to_vec(&s.template).unwrap_or_default())
        .unwrap_or_default();
    let d = sha2::Sha256::digest(&template);
    d.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// What the controller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a pod on this node.
    Create(String),
    /// Delete this pod.
    Delete(String),
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn max_unavailable(ds: &DaemonSet, nodes: usize) -> usize {
    let v = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    match v {
        IntOrString::Int(n) => usize::try_from(n).unwrap_or(1),
        IntOrString::String(p) => {
            let pct: usize = p.trim_end_matches('%').parse().unwrap_or(0);
            (nodes * pct).div_ceil(100).max(1)
        }
    }
}

/// The next actions for `ds`, given every node and the pods it owns.
pub fn plan(ds: &DaemonSet, nodes: &[Node], pods: &[Pod]) -> Vec<Action> {
    let hash = template_hash(ds);
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let rolling = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let eligible: Vec<String> = nodes
        .iter()
        .filter(|n| fits(&spec, n))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().push(p);
    }
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let updated =
        |p: &Pod| p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash);
    let mut actions = Vec::new();
    for (node, list) in &by_node {
        if !eligible.contains(node) {
            actions.extend(list.iter().map(|p| Action::Delete(name(p))));
        }
    }
    let mut unavailable = 0;
    let mut outdated_ready = Vec::new();
    for node in &eligible {
        let list: Vec<&Pod> = by_node
            .get(node)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| phase(p) != "Failed")
            .collect();
        for p in by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter(|p| phase(p) == "Failed")
        {
            actions.push(Action::Delete(name(p)));
        }
        match list.as_slice() {
            [] => {
                actions.push(Action::Create(node.clone()));
                unavailable += 1;
            }
            [p, extra @ ..] => {
                actions.extend(extra.iter().map(|e| Action::Delete(name(e))));
                if !ready(p) {
                    unavailable += 1;
                }
                if rolling && !updated(p) {
                    if ready(p) {
                        outdated_ready.push(name(p));
                    } else {
                        actions.push(Action::Delete(name(p)));
                    }
                }
            }
        }
    }
    let budget = max_unavailable(ds, eligible.len()).saturating_sub(unavailable);
    actions.extend(outdated_ready.into_iter().take(budget).map(Action::Delete));
    actions
}

/// The pod the controller creates for `ds` on `node`.
pub fn new_pod(ds: &DaemonSet, node: &str) -> Result<Pod, serde_json::Error> {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), template_hash(ds));
    labels.insert(
        "pod-template-generation".into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let ds_name = ds.metadata.name.clone().unwrap_or_default();
    let mut spec = serde_json::to_value(template.spec.unwrap_or_default())?;
    spec["nodeName"] = json!(node);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{ds_name}-{}", super::suffix()),
            "namespace": ds.metadata.namespace,
            "labels": labels,
            "annotations": template.metadata.and_then(|m| m.annotations),
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": ds_name,
                "uid": ds.metadata.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    }))
}

fn owned_by<'a>(pods: &'a [Pod], ds: &DaemonSet) -> Vec<Pod> {
    let uid = ds.metadata.uid.clone();
    pods.iter()
        .filter(|p: &&'a Pod| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "DaemonSet" && Some(&o.uid) == uid.as_ref())
        })
        .cloned()
        .collect()
}

/// One pass over every DaemonSet.
pub async fn sync(client: &kube::Client) -> Result<(), kube::Error> {
    let dss: Api<DaemonSet> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes = nodes.list(&ListParams::default()).await?.items;
    let all_pods = pods.list(&ListParams::default()).await?.items;
    for ds in dss.list(&ListParams::default()).await?.items {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let owned = owned_by(&all_pods, &ds);
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for action in plan(&ds, &nodes, &owned) {
            match action {
                Action::Create(node) => {
                    let pod = new_pod(&ds, &node).map_err(kube::Error::SerdeError)?;
                    api.create(&PostParams::default(), &pod).await?;
                }
                Action::Delete(name) => {
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                }
            }
        }
        update_status(client, &ds, &nodes, &owned).await?;
    }
    Ok(())
}

async fn update_status(
    client: &kube::Client,
    ds: &DaemonSet,
    nodes: &[Node],
    owned: &[Pod],
) -> Result<(), kube::Error> {
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let desired = nodes.iter().filter(|n| fits(&spec, n)).count();
    let hash = template_hash(ds);
    let ready_n = owned.iter().filter(|p| ready(p)).count();
    let updated_n = owned
        .iter()
        .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash))
        .count();
    let status = json!({"status": {
        "currentNumberScheduled": owned.len(),
        "desiredNumberScheduled": desired,
        "numberMisscheduled": 0,
        "numberReady": ready_n,
        "numberAvailable": ready_n,
        "numberUnavailable": desired.saturating_sub(ready_n),
        "updatedNumberScheduled": updated_n,
        "observedGeneration": ds.metadata.generation,
    }});
    if ds
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        == Some(status["status"].clone())
    {
        return Ok(());
    }
    let api: Api<DaemonSet> = Api::namespaced(
        client.clone(),
        ds.metadata.namespace.as_deref().unwrap_or_default(),
    );
    api.patch_status(
        ds.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
