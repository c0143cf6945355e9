//! The kubelet of one simulated node: registers its Node and heartbeats it, runs the pods
//! bound to it (a [`crate::pod`] worker each) and the static pods of its
//! `etc/kubernetes/manifests` (watched with notify for content-changing events, plus the
//! kubelet's 20 s re-scan), and keeps their mirror pods in the API.
//!
//! The kubelet talks to the store directly as an admin (not through the node's api-proxy with
//! its own credentials): authorization is not modelled by the store anyway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use crate::context::NodeCtx;
use crate::error::{Result, SimError};
use crate::pod::{PodWorker, spawn};
use crate::staticpod::{self, StaticPod};

/// How often the Node's Ready condition is renewed.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// The kubelet's periodic re-scan of the manifests directory.
const FILE_CHECK: Duration = Duration::from_secs(20);
/// How often bound pods are looked up.
const POD_SYNC: Duration = Duration::from_secs(1);

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The Node object of `node` (a control-plane node when `master`) at kubelet `version`.
pub fn node_object(node: &NodeCtx, master: bool, version: &str) -> serde_json::Value {
    let mut labels = json!({
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    });
    let mut spec = json!({});
    if master {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        spec["taints"] =
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": spec,
        "status": node_status(node, version, &rfc3339_now()),
    })
}

fn node_status(node: &NodeCtx, version: &str, ready_since: &str) -> serde_json::Value {
    let now = rfc3339_now();
    json!({
        "addresses": [
            {"type": "InternalIP", "address": node.ip.to_string()},
            {"type": "Hostname", "address": node.name},
        ],
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": ready_since,
        }],
        "nodeInfo": {
            "kubeletVersion": version,
            "kubeProxyVersion": version,
            "containerRuntimeVersion": "runc://1.1.5",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "cpm-sim",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    })
}

/// Creates (or takes over) the Node; returns its uid and when it became Ready.
pub async fn register(node: &NodeCtx, master: bool, version: &str) -> Result<(String, String)> {
    let api: Api<Node> = Api::all(node.cluster.client.clone());
    let obj: Node = serde_json::from_value(node_object(node, master, version)).map_err(|e| {
        SimError::Parse {
            what: format!("node {}", node.name),
            message: e.to_string(),
        }
    })?;
    let created = match api.create(&PostParams::default(), &obj).await {
        Ok(n) => n,
        Err(kube::Error::Api(e)) if e.code == 409 => api
            .get(&node.name)
            .await
            .map_err(SimError::kube("get", format!("node {}", node.name)))?,
        Err(e) => return Err(SimError::kube("create", format!("node {}", node.name))(e)),
    };
    let since = rfc3339_now();
    let status = Patch::Merge(json!({"status": node_status(node, version, &since)}));
    api.patch_status(&node.name, &PatchParams::default(), &status)
        .await
        .map_err(SimError::kube(
            "patch status",
            format!("node {}", node.name),
        ))?;
    Ok((created.metadata.uid.unwrap_or_default(), since))
}

struct Running {
    worker: PodWorker,
    hash: String,
}

/// What the kubelet loop holds.
struct State {
    node: Arc<NodeCtx>,
    node_uid: String,
    version: String,
    ready_since: String,
    api_pods: BTreeMap<String, PodWorker>,
    static_pods: BTreeMap<String, Running>,
    desired_static: BTreeMap<String, StaticPod>,
}

/// Runs the kubelet of `node` (registered as `registration`: its uid, Ready since) until
/// `stop` turns true; then stops every pod.
pub async fn run(
    node: Arc<NodeCtx>,
    registration: (String, String),
    version: String,
    mut stop: watch::Receiver<bool>,
) {
    let (node_uid, ready_since) = registration;
    let manifests = node.root.join("etc/kubernetes/manifests");
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = watch_dir(&manifests, tx);
    let mut state = State {
        node,
        node_uid,
        version,
        ready_since,
        api_pods: BTreeMap::new(),
        static_pods: BTreeMap::new(),
        desired_static: BTreeMap::new(),
    };
    let (mut last_heartbeat, mut last_scan, mut last_mirror) =
        (Instant::now(), None::<Instant>, Instant::now());
    let mut scan_now = true;
    loop {
        if *stop.borrow() || state.node.cluster.stopping() {
            break;
        }
        if last_heartbeat.elapsed() >= HEARTBEAT {
            heartbeat(&state).await;
            last_heartbeat = Instant::now();
        }
        if scan_now || last_scan.is_none_or(|t| t.elapsed() >= FILE_CHECK) {
            sync_static(&mut state).await;
            last_scan = Some(Instant::now());
            scan_now = false;
            last_mirror = Instant::now();
        } else if last_mirror.elapsed() >= Duration::from_secs(5) {
            ensure_mirrors(&state).await;
            last_mirror = Instant::now();
        }
        sync_api_pods(&mut state).await;
        tokio::select! {
            () = tokio::time::sleep(POD_SYNC) => {}
            Some(()) = events.recv() => {
                // Let a burst of writes settle, then re-scan once.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while events.try_recv().is_ok() {}
                scan_now = true;
            }
            _ = stop.changed() => {}
        }
    }
    drop(watcher);
    let workers: Vec<PodWorker> = std::mem::take(&mut state.api_pods)
        .into_values()
        .chain(
            std::mem::take(&mut state.static_pods)
                .into_values()
                .map(|r| r.worker),
        )
        .collect();
    futures::future::join_all(workers.into_iter().map(PodWorker::stop)).await;
}

fn watch_dir(
    dir: &std::path::Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher as _, event::ModifyKind};
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let content = matches!(
                ev.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(
                        ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any
                    )
            );
            if content {
                let _ = tx.send(());
            }
        }
    })
    .ok()?;
    w.watch(dir, RecursiveMode::NonRecursive).ok()?;
    Some(w)
}

async fn heartbeat(state: &State) {
    let api: Api<Node> = Api::all(state.node.cluster.client.clone());
    let patch = Patch::Merge(
        json!({"status": node_status(&state.node, &state.version, &state.ready_since)}),
    );
    if let Err(e) = api
        .patch_status(&state.node.name, &PatchParams::default(), &patch)
        .await
    {
        tracing::debug!(node = %state.node.name, error = %e, "heartbeat");
    }
}

async fn sync_api_pods(state: &mut State) {
    let api: Api<Pod> = Api::all(state.node.cluster.client.clone());
    let Ok(list) = api.list(&ListParams::default()).await else {
        return;
    };
    let mut seen = std::collections::BTreeSet::new();
    for pod in list.items {
        let bound_here = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
            == Some(state.node.name.as_str());
        if !bound_here || staticpod::is_mirror(&pod) {
            continue;
        }
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        seen.insert(uid.clone());
        if !state.api_pods.contains_key(&uid) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            tracing::info!(node = %state.node.name, pod = %name, "starting pod");
            let worker = spawn(state.node.clone(), &pod, &uid, &name);
            state.api_pods.insert(uid, worker);
        }
    }
    let gone: Vec<String> = state
        .api_pods
        .keys()
        .filter(|u| !seen.contains(*u))
        .cloned()
        .collect();
    for uid in gone {
        if let Some(w) = state.api_pods.remove(&uid) {
            tokio::spawn(w.stop());
        }
    }
}

async fn sync_static(state: &mut State) {
    let dir = state.node.root.join("etc/kubernetes/manifests");
    let (pods, errors) = staticpod::read_dir(&dir, &state.node.name);
    for e in errors {
        tracing::warn!(node = %state.node.name, error = %e, "static pod manifest");
    }
    let running: BTreeMap<String, String> = state
        .static_pods
        .iter()
        .map(|(k, r)| (k.clone(), r.hash.clone()))
        .collect();
    let changes = staticpod::changes(&running, &pods);
    state.desired_static = pods.into_iter().map(|p| (p.key(), p)).collect();
    let mut stopping = Vec::new();
    for key in changes.stop.iter().chain(&changes.restart) {
        if let Some(r) = state.static_pods.remove(key) {
            tracing::info!(node = %state.node.name, pod = %key, "stopping static pod");
            stopping.push(r.worker.stop());
        }
        if changes.stop.contains(key) {
            delete_mirror(state, key).await;
        }
    }
    futures::future::join_all(stopping).await;
    for key in changes.start.iter().chain(&changes.restart) {
        let Some(sp) = state.desired_static.get(key) else {
            continue;
        };
        tracing::info!(node = %state.node.name, pod = %key, hash = %sp.hash, "starting static pod");
        let name = sp.pod.metadata.name.clone().unwrap_or_default();
        let worker = spawn(state.node.clone(), &sp.pod, &sp.hash, &name);
        state.static_pods.insert(
            key.clone(),
            Running {
                worker,
                hash: sp.hash.clone(),
            },
        );
    }
    ensure_mirrors(state).await;
}

async fn delete_mirror(state: &State, key: &str) {
    let Some((ns, name)) = key.split_once('/') else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(state.node.cluster.client.clone(), ns);
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Creates missing mirror pods and replaces those whose hash is stale.
async fn ensure_mirrors(state: &State) {
    for (key, sp) in &state.desired_static {
        let Some((ns, name)) = key.split_once('/') else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(state.node.cluster.client.clone(), ns);
        let current = api.get_opt(name).await;
        let stale = match &current {
            Ok(Some(p)) => {
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(staticpod::MIRROR))
                    != Some(&sp.hash)
            }
            Ok(None) => false,
            Err(_) => continue,
        };
        if stale {
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        if stale || matches!(current, Ok(None)) {
            match staticpod::mirror_pod(sp, &state.node.name, &state.node_uid) {
                Ok(mirror) => {
                    // The worker's status poster retries until the mirror pod exists.
                    if let Err(e) = api.create(&PostParams::default(), &mirror).await {
                        tracing::debug!(pod = %key, error = %e, "mirror pod");
                    }
                }
                Err(e) => tracing::warn!(pod = %key, error = %e, "mirror pod"),
            }
        }
    }
}
