//! Image holders: before a master moves to another Kubernetes minor, a pod on that master runs
//! every image of the new minor (and keeps those of the minor it leaves), so the kubelet has
//! pulled them before a manifest names them, and a rollback finds the old images still there.
//!
//! The pod is bound to the node by `spec.nodeName` (the scheduler may be the component being
//! replaced), tolerates every taint, and runs `cpm-holder hold` from an `emptyDir` that an init
//! container fills from the cpm-holder image: the control-plane images have no shell. Its name
//! carries a hash of its image list, so a different list is a different pod; pods of the node
//! with another list are deleted. A master takes the rollout Lease only once its holder pod is
//! Ready, i.e. every image is present; until then it reports what it waits for (an image the
//! kubelet cannot pull, with the kubelet's reason).
//!
//! ```
//! use cpm_manifests::holder::{HolderSpec, holder_pod, pod_name};
//! let spec = HolderSpec {
//!     namespace: "cpm-system".into(),
//!     node: "master-1".into(),
//!     holder_image: "cpm/cpm-holder:0.1.0".into(),
//!     images: vec!["registry.k8s.io/kube-apiserver:v1.33.5".into()],
//! };
//! let pod = holder_pod(&spec);
//! assert_eq!(pod.metadata.name.as_deref(), Some(pod_name(&spec).as_str()));
//! assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some("master-1"));
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};

/// `app.kubernetes.io/name` of every holder pod.
pub const HOLDER_APP: &str = "cpm-image-holder";
/// Annotation naming the node a holder pod serves (also in `spec.nodeName`).
pub const NODE_ANNOTATION: &str = "cpm.dev/node";

/// Where image holders run and with which cpm-holder image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderOptions {
    /// Namespace of the holder pods.
    pub namespace: String,
    /// The cpm-holder image (copies its static binary into the pod).
    pub image: String,
}

/// One holder pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderSpec {
    /// Its namespace.
    pub namespace: String,
    /// The node it runs on.
    pub node: String,
    /// The cpm-holder image.
    pub holder_image: String,
    /// The images to hold, in order.
    pub images: Vec<String>,
}

/// Where a holder pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderState {
    /// Every image is present: every holder container is ready.
    Ready,
    /// Not yet; the text says what is missing.
    Waiting(String),
}

/// The etcd tag cpm-etcd runs once the master is at `minor`: the version map's, never older than
/// `running_etcd` (a downgrade keeps etcd). `None` for a minor outside the version map.
pub fn etcd_tag_at(
    minor: cpm_core::config::KubernetesMinor,
    running_etcd: Option<&str>,
) -> Option<String> {
    let mapped = cpm_core::versions::lookup(minor)?.etcd;
    let how = cpm_core::versions::EtcdMove::Forward;
    Some(cpm_core::versions::etcd_tag(mapped, running_etcd, how).to_string())
}

/// The images of `minor` from `repository`: kube-apiserver, kube-controller-manager,
/// kube-scheduler at the minor's tag, and etcd at [`etcd_tag_at`]. `None` for a minor outside
/// the version map.
pub fn images(
    repository: &str,
    minor: cpm_core::config::KubernetesMinor,
    running_etcd: Option<&str>,
) -> Option<Vec<String>> {
    let v = cpm_core::versions::lookup(minor)?;
    let mut out: Vec<String> = crate::layout::Component::ALL
        .iter()
        .map(|c| format!("{repository}/{}:{}", c.name(), v.kubernetes))
        .collect();
    out.push(format!(
        "{repository}/etcd:{}",
        etcd_tag_at(minor, running_etcd)?
    ));
    Some(out)
}

fn digest(images: &[String]) -> String {
    let sum = Sha256::digest(images.join("\n").as_bytes());
    sum.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The pod's name: `cpm-images-<hash of the image list>-<node>`, cut to the 253 characters a
/// name may have.
pub fn pod_name(spec: &HolderSpec) -> String {
    let mut name = format!("cpm-images-{}-{}", digest(&spec.images), spec.node);
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

/// A container name for `image`: `<repository basename>-<tag>` as a DNS label, unique in the
/// pod by its index when cut.
fn container_name(image: &str, index: usize) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let raw: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("{index}-{}", raw.trim_matches('-'));
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu)),
            ("memory".to_string(), q(memory)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q(memory_limit))])),
        ..ResourceRequirements::default()
    }
}

/// The holder pod of `spec`.
pub fn holder_pod(spec: &HolderSpec) -> Pod {
    let mount = |read_only| VolumeMount {
        name: "holder".into(),
        mount_path: "/holder".into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let containers = spec
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| Container {
            name: container_name(image, i),
            image: Some(image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec!["/holder/cpm-holder".into(), "hold".into()]),
            volume_mounts: Some(vec![mount(true)]),
            resources: Some(resources("1m", "4Mi", "16Mi")),
            security_context: Some(hardened()),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Container::default()
        })
        .collect();
    let install = Container {
        name: "install-holder".into(),
        image: Some(spec.holder_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["install".into(), "/holder".into()]),
        volume_mounts: Some(vec![mount(false)]),
        resources: Some(resources("10m", "16Mi", "64Mi")),
        security_context: Some(hardened()),
        ..Container::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(spec)),
            namespace: Some(spec.namespace.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), HOLDER_APP.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    crate::agent::AGENT.to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                NODE_ANNOTATION.to_string(),
                spec.node.clone(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(spec.node.clone()),
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Toleration::default()
            }]),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(5),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            init_containers: Some(vec![install]),
            containers,
            volumes: Some(vec![Volume {
                name: "holder".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("64Mi".into())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Whether every image of `pod` is present, per the kubelet's container statuses.
pub fn state(pod: &Pod) -> HolderState {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let wanted: Vec<(&str, &str)> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or_default()))
        .collect();
    let status = pod.status.clone().unwrap_or_default();
    let statuses: Vec<_> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    // An image the kubelet cannot pull is the news an operator needs first.
    for s in &statuses {
        if let Some(w) = s.state.as_ref().and_then(|st| st.waiting.as_ref())
            && let Some(reason) = w.reason.as_deref()
            && reason != "ContainerCreating"
            && reason != "PodInitializing"
        {
            let image = wanted
                .iter()
                .find(|(n, _)| *n == s.name)
                .map_or(s.image.as_str(), |(_, i)| i);
            let message = w.message.as_deref().unwrap_or_default();
            return HolderState::Waiting(if message.is_empty() {
                format!("image {image} is not present on the node: {reason}")
            } else {
                format!("image {image} is not present on the node: {reason}: {message}")
            });
        }
    }
    let containers: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.as_str())
        .collect();
    let not_ready: Vec<&str> = containers
        .iter()
        .copied()
        .filter(|c| {
            !statuses.iter().any(|s| {
                s.name == *c && s.ready && s.state.as_ref().is_some_and(|st| st.running.is_some())
            })
        })
        .collect();
    if not_ready.is_empty() && !containers.is_empty() {
        return HolderState::Ready;
    }
    HolderState::Waiting(format!(
        "holder pod {name} is {}: {} of {} images not running yet",
        status.phase.as_deref().unwrap_or("Pending"),
        not_ready.len(),
        containers.len()
    ))
}

/// The label selector of every holder pod.
fn selector() -> String {
    format!("app.kubernetes.io/name={HOLDER_APP}")
}

/// Marks an agent dirty on every change of a holder pod in `namespace` (a pod becoming ready is
/// what a waiting master waits for).
pub fn watch(
    client: kube::Client,
    namespace: &str,
    tx: cpm_core::reconcile::TriggerSender,
) -> cpm_core::kube::KubeWatch {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    cpm_core::kube::watch_triggers(
        pods,
        kube::runtime::watcher::Config::default().labels(&selector()),
        tx,
    )
}

/// The holder pods of `node` in `namespace`.
async fn of_node(api: &Api<Pod>, node: &str) -> Result<Vec<Pod>, kube::Error> {
    Ok(api
        .list(&ListParams::default().labels(&selector()))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(NODE_ANNOTATION))
                .is_some_and(|n| n == node)
        })
        .collect())
}

/// Makes sure the holder pod of `spec` exists (removing the node's other holder pods) and says
/// whether its images are present.
pub async fn ensure(client: &kube::Client, spec: &HolderSpec) -> Result<HolderState, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &spec.namespace);
    let name = pod_name(spec);
    let mut current = None;
    for pod in of_node(&api, &spec.node).await? {
        if pod.metadata.name.as_deref() == Some(name.as_str()) {
            current = Some(pod);
        } else if let Some(other) = pod.metadata.name.as_deref() {
            delete(&api, other).await?;
        }
    }
    let pod = match current {
        Some(p) if p.metadata.deletion_timestamp.is_some() => {
            return Ok(HolderState::Waiting(format!(
                "holder pod {name} is being deleted; it is created again once gone"
            )));
        }
        Some(p) => p,
        None => match api.create(&PostParams::default(), &holder_pod(spec)).await {
            Ok(p) => p,
            // Created meanwhile (a pass raced a watch-triggered one): read it next pass.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(HolderState::Waiting(format!("holder pod {name} created")));
            }
            Err(e) => return Err(e),
        },
    };
    Ok(state(&pod))
}

/// Deletes every holder pod of `node` (a step is over: its images are in use or not needed).
pub async fn remove_all(
    client: &kube::Client,
    namespace: &str,
    node: &str,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in of_node(&api, node).await? {
        if let Some(name) = pod.metadata.name.as_deref() {
            delete(&api, name).await?;
        }
    }
    Ok(())
}

async fn delete(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
