//! Version rollouts across masters: which minor this master renders, and the bookkeeping that
//! makes a rollout one master at a time, gated, restorable and resumable.
//!
//! Each pass (with a cluster client), before rendering:
//! 1. This master's `ControlPlaneNode` is read (created on first sight, at the minor its
//!    manifests run, or the configured one on a fresh master).
//! 2. A rollout this master had under way (phase `InProgress`, e.g. before an agent restart)
//!    resumes at its `to` minor, under the rollout Lease.
//! 3. A failed rollout anywhere halts every master while the configuration is unchanged, until
//!    an operator sets the `cpm.dev/resume-rollout` annotation on the failed master's object.
//! 4. Otherwise the [`policy`] picks the next minor; a master not there takes the Lease
//!    `cpm-rollout` (one master at a time), backs its manifests up, records `InProgress`, and
//!    renders that minor. The agent's health gate then checks each component (the apiserver's
//!    `/version` included).
//!
//! After the pass, [`Rollout::finish`] records `Succeeded` (new minor, highest minor) or, when a
//! gate failed, restores every manifest from the backup, records `Failed` with the reason, emits
//! an Event, sets `cpm_rollout_failed{node}`, and releases the Lease.

pub mod policy;

use std::collections::BTreeMap;
use std::time::Duration;

use cpm_core::apply::write_atomic;
use cpm_core::config::KubernetesMinor;
use cpm_core::controlplanenode::{
    self as cpn, ComponentStatus, ControlPlaneNodeStatus, Phase, RESUME_ANNOTATION, RolloutStatus,
};
use cpm_core::lease::{LeaseConfig, LeaseError, LeaseLock, Step};
use cpm_core::node::NodeRoot;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, PostParams};
use tracing::{info, warn};

use crate::holder::{self, HolderOptions, HolderSpec, HolderState};
use crate::layout::{Component, PKI, node_path};
use crate::pods::CHECKSUM_ANNOTATION;
use policy::{Decision, PolicyError, View, decide, minor_of_tag};

/// Name of the Lease that serialises rollouts across masters.
pub const LEASE_NAME: &str = "cpm-rollout";
/// Where a master's manifests are kept while a rollout runs on it.
pub const ROLLOUT_BACKUP_DIR: &str = "/etc/kubernetes/cpm/backup/rollout";
/// Namespace of Events about cluster-scoped objects.
const EVENT_NAMESPACE: &str = "default";

/// Rollout settings.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    /// Namespace of the rollout Lease.
    pub lease_namespace: String,
    /// How long a holder that stopped renewing keeps the Lease (a master that dies mid-rollout
    /// blocks the others this long).
    pub lease_duration: Duration,
    /// Image holders: with them, a master moves only once the new images are on it.
    pub holders: Option<HolderOptions>,
}

impl Default for RolloutOptions {
    fn default() -> Self {
        Self {
            lease_namespace: "kube-system".into(),
            lease_duration: Duration::from_secs(900),
            holders: None,
        }
    }
}

/// What the configuration asks of this pass.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The configured minor.
    pub version: KubernetesMinor,
    /// sha256 of the configuration file.
    pub config_hash: &'a str,
    /// Where the control-plane images come from.
    pub image_repository: &'a str,
}

/// A rollout cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The configured version is refused.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The cluster could not be read or written.
    #[error("{what}")]
    Api {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn api_err<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> RolloutError {
    let what = what.into();
    move |e| RolloutError::Api {
        what,
        source: Box::new(e),
    }
}

/// What this pass renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Render this minor; no version change is under way here.
    Stay {
        /// The minor.
        version: KubernetesMinor,
        /// Why the master does not move although the cluster is not converged.
        waiting: Option<String>,
    },
    /// This master moves (it holds the Lease).
    Step {
        /// The minor it leaves.
        from: KubernetesMinor,
        /// The minor it renders.
        to: KubernetesMinor,
    },
}

impl Prepared {
    /// The minor to render.
    pub fn version(&self) -> KubernetesMinor {
        match self {
            Self::Stay { version, .. } => *version,
            Self::Step { to, .. } => *to,
        }
    }
}

/// One master's side of the rollouts.
pub struct Rollout {
    opts: RolloutOptions,
    lease: Option<LeaseLock>,
    /// Whether this master's last rollout failed, as last read or written.
    pub failed: bool,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_minor(s: &str) -> Option<KubernetesMinor> {
    s.parse().ok()
}

/// The value of the first line of a rendered manifest that starts with `prefix` (after
/// indentation), unquoted: `image: `, or the checksum annotation.
pub fn manifest_field(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(|v| v.trim_matches(['"', '\'']).to_string())
}

/// The image of a rendered manifest.
pub fn image_of(text: &str) -> Option<String> {
    manifest_field(text, "image: ")
}

/// The tag of an image reference (`registry.k8s.io/etcd:3.5.21-0` → `3.5.21-0`).
pub fn tag_of(image: &str) -> Option<&str> {
    Some(image.rsplit_once(':')?.1)
}

/// The minor of the kube-apiserver manifest on the node, if any.
pub fn minor_on_disk(manifest: &[u8]) -> Option<KubernetesMinor> {
    let image = image_of(&String::from_utf8_lossy(manifest))?;
    minor_of_tag(tag_of(&image)?)
}

/// The image tag and checksum of each component manifest on the node.
pub fn components_on_disk(root: &NodeRoot) -> BTreeMap<String, ComponentStatus> {
    let mut out = BTreeMap::new();
    for c in Component::ALL {
        let Ok(path) = root.join(node_path(&c.manifest())) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let image = image_of(&text).unwrap_or_default();
        out.insert(
            c.name().to_string(),
            ComponentStatus {
                version: tag_of(&image).unwrap_or_default().to_string(),
                checksum: manifest_field(&text, &format!("{CHECKSUM_ANNOTATION}: "))
                    .unwrap_or_default(),
            },
        );
    }
    out
}

/// The etcd static pod manifest (written by cpm-etcd).
pub const ETCD_MANIFEST: &str = "/etc/kubernetes/manifests/etcd.yaml";

/// The etcd manifest on the node (text), if any.
pub fn etcd_manifest_on_disk(root: &NodeRoot) -> Option<String> {
    std::fs::read_to_string(root.join(node_path(ETCD_MANIFEST)).ok()?).ok()
}

/// The images the node's three component manifests name now.
fn component_images_on_disk(root: &NodeRoot) -> Vec<String> {
    Component::ALL
        .iter()
        .filter_map(|c| {
            let path = root.join(node_path(&c.manifest())).ok()?;
            image_of(&std::fs::read_to_string(path).ok()?)
        })
        .collect()
}

/// The expiry (RFC 3339) of every certificate under `/etc/kubernetes/pki` and its `etcd/`, by
/// path below the PKI directory; files that do not parse are left out.
pub fn certificates_on_disk(root: &NodeRoot) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for sub in ["", "etcd/"] {
        let Ok(dir) = root.join(node_path(&format!("{PKI}/{sub}"))) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".crt") {
                continue;
            }
            let Ok(pem) = std::fs::read(e.path()) else {
                continue;
            };
            if let Ok(info) = cpm_core::pki::inspect(&pem)
                && let Ok(at) = info
                    .not_after
                    .format(&time::format_description::well_known::Rfc3339)
            {
                out.insert(format!("{sub}{name}"), at);
            }
        }
    }
    out
}

/// Fills what the node has on disk into `status`: components and certificates.
fn observe(root: &NodeRoot, status: &mut ControlPlaneNodeStatus) {
    status.components = components_on_disk(root);
    status.certificates = certificates_on_disk(root);
    // RFC 3339 in UTC sorts as time.
    status.certificate_expiry = status.certificates.values().min().cloned();
}

async fn kubelet_minors(client: &kube::Client) -> Result<Vec<KubernetesMinor>, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| minor_of_tag(&n.status?.node_info?.kubelet_version))
        .collect())
}

impl Rollout {
    /// A rollout participant with `opts`.
    pub fn new(opts: RolloutOptions) -> Self {
        Self {
            opts,
            lease: None,
            failed: false,
        }
    }

    fn lease(&mut self, client: &kube::Client, node: &str) -> Result<&mut LeaseLock, LeaseError> {
        if self.lease.is_none() {
            let d = self.opts.lease_duration;
            let lock = LeaseLock::new(
                client.clone(),
                LeaseConfig {
                    namespace: self.opts.lease_namespace.clone(),
                    name: LEASE_NAME.into(),
                    identity: node.to_string(),
                    lease_duration: d,
                    renew_deadline: d * 2 / 3,
                    retry_period: (d / 10).max(Duration::from_millis(1)),
                },
            )?;
            self.lease = Some(lock);
        }
        Ok(self.lease.as_mut().expect("set above"))
    }

    /// Decides what this master renders this pass (see the module docs).
    pub async fn prepare(
        &mut self,
        client: &kube::Client,
        root: &NodeRoot,
        node: &str,
        want: Target<'_>,
        on_disk: Option<KubernetesMinor>,
    ) -> Result<Prepared, RolloutError> {
        let (target, config_hash) = (want.version, want.config_hash);
        let api = cpn::api(client.clone());
        let all = api
            .list(&ListParams::default())
            .await
            .map_err(api_err("cannot list ControlPlaneNodes"))?
            .items;
        let others: Vec<KubernetesMinor> = all
            .iter()
            .filter(|o| o.metadata.name.as_deref() != Some(node))
            .filter_map(|o| parse_minor(&cpn::status_of(o).version))
            .collect();
        // A fresh master joins at the cluster's lowest minor (or the configured one).
        let initial = on_disk
            .or_else(|| others.iter().min().copied())
            .unwrap_or(target);
        let own = cpn::get_or_create(
            &api,
            node,
            &ControlPlaneNodeStatus {
                version: initial.to_string(),
                highest_version: initial.to_string(),
                ..ControlPlaneNodeStatus::default()
            },
        )
        .await
        .map_err(api_err(format!("cannot read ControlPlaneNode {node}")))?;
        let mut status = cpn::status_of(&own);
        let own_version = parse_minor(&status.version).unwrap_or(initial);

        // An operator's resume clears this master's failed rollout.
        let resume = own
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(RESUME_ANNOTATION));
        if resume {
            if status.rollout.phase == Phase::Failed {
                info!(node, "rollout resumed by the operator");
                status.rollout.phase = Phase::None;
                status.rollout.reason = None;
                cpn::patch_status(&api, node, &status)
                    .await
                    .map_err(api_err(format!("cannot update ControlPlaneNode {node}")))?;
            }
            cpn::remove_annotation(&api, node, RESUME_ANNOTATION)
                .await
                .map_err(api_err(format!("cannot update ControlPlaneNode {node}")))?;
        }

        self.failed = status.rollout.phase == Phase::Failed;

        // A rollout of ours under way (the agent restarted): continue it under the Lease.
        if status.rollout.phase == Phase::InProgress
            && let (Some(from), Some(to)) = (
                parse_minor(&status.rollout.from),
                parse_minor(&status.rollout.to),
            )
        {
            return match self.try_lease(client, node).await? {
                None => Ok(Prepared::Step { from, to }),
                Some(holder) => {
                    // Lost the Lease while down: keep the node as it is until it is ours again.
                    let waiting =
                        format!("rollout to {to} paused: the rollout Lease is held by {holder}");
                    warn!(node, "{waiting}");
                    Ok(Prepared::Stay {
                        version: on_disk.unwrap_or(from),
                        waiting: Some(waiting),
                    })
                }
            };
        }

        // A failed rollout anywhere (under this configuration) halts every master.
        let halted = all.iter().find_map(|o| {
            let name = o.metadata.name.clone().unwrap_or_default();
            let s = if name == node {
                status.clone()
            } else {
                cpn::status_of(o)
            };
            (s.rollout.phase == Phase::Failed && s.rollout.config_hash == config_hash).then(|| {
                format!(
                    "rollout halted: {name} failed to move from {} to {}: {}; change the configuration or annotate ControlPlaneNode {name} with {RESUME_ANNOTATION}=true to resume",
                    s.rollout.from,
                    s.rollout.to,
                    s.rollout.reason.clone().unwrap_or_default()
                )
            })
        });
        if let Some(why) = halted {
            return Ok(Prepared::Stay {
                version: own_version,
                waiting: Some(why),
            });
        }

        let masters: Vec<KubernetesMinor> = others
            .iter()
            .copied()
            .chain(std::iter::once(own_version))
            .collect();
        let highest = all
            .iter()
            .map(|o| {
                if o.metadata.name.as_deref() == Some(node) {
                    status.clone()
                } else {
                    cpn::status_of(o)
                }
            })
            .filter_map(|s| parse_minor(&s.highest_version))
            .max();
        let kubelets = kubelet_minors(client)
            .await
            .map_err(api_err("cannot list Nodes"))?;
        let decision = decide(&View {
            target,
            masters,
            kubelets,
            highest,
        })?;
        let to = match decision {
            Decision::Converged => {
                self.release_holders(client, node).await;
                return Ok(Prepared::Stay {
                    version: own_version,
                    waiting: None,
                });
            }
            Decision::Wait(why) => {
                return Ok(Prepared::Stay {
                    version: own_version,
                    waiting: Some(why),
                });
            }
            Decision::Move { to } if to == own_version => {
                return Ok(Prepared::Stay {
                    version: own_version,
                    waiting: (to != target)
                        .then(|| format!("waiting for the other masters to reach {to}")),
                });
            }
            Decision::Move { to } => to,
        };
        if let Some(why) = self
            .images_missing(client, root, node, to, want.image_repository)
            .await?
        {
            return Ok(Prepared::Stay {
                version: own_version,
                waiting: Some(why),
            });
        }
        if let Some(holder) = self.try_lease(client, node).await? {
            return Ok(Prepared::Stay {
                version: own_version,
                waiting: Some(format!(
                    "waiting to move to {to}: {holder} holds the rollout Lease"
                )),
            });
        }
        backup_manifests(root).map_err(api_err("cannot back up the manifests"))?;
        status.waiting = None;
        status.rollout = RolloutStatus {
            phase: Phase::InProgress,
            from: own_version.to_string(),
            to: to.to_string(),
            reason: None,
            config_hash: config_hash.to_string(),
            started_at: Some(now_rfc3339()),
            finished_at: None,
        };
        cpn::patch_status(&api, node, &status)
            .await
            .map_err(api_err(format!("cannot update ControlPlaneNode {node}")))?;
        info!(node, from = %own_version, %to, "rollout started on this master");
        event(
            client,
            node,
            "Normal",
            "RolloutStarted",
            &format!("moving from {own_version} to {to}"),
        )
        .await;
        Ok(Prepared::Step {
            from: own_version,
            to,
        })
    }

    /// Why this master cannot move to `to` yet for want of images (`None`: every image is on
    /// the node, or image holders are off). Keeps a holder pod with the images of `to` and those
    /// the node runs now.
    async fn images_missing(
        &self,
        client: &kube::Client,
        root: &NodeRoot,
        node: &str,
        to: KubernetesMinor,
        repository: &str,
    ) -> Result<Option<String>, RolloutError> {
        let Some(opts) = &self.opts.holders else {
            warn!(node, %to, "no holder image configured: the images of {to} are not checked before the move");
            return Ok(None);
        };
        // The images of `to`, then what the node runs now (what a rollback goes back to).
        let etcd = etcd_manifest_on_disk(root).and_then(|t| image_of(&t));
        let mut images =
            holder::images(repository, to, etcd.as_deref().and_then(tag_of)).unwrap_or_default();
        for image in component_images_on_disk(root).into_iter().chain(etcd) {
            if !images.contains(&image) {
                images.push(image);
            }
        }
        let spec = HolderSpec {
            namespace: opts.namespace.clone(),
            node: node.to_string(),
            holder_image: opts.image.clone(),
            images,
        };
        match holder::ensure(client, &spec)
            .await
            .map_err(api_err(format!(
                "cannot keep the image holder pod of {node}"
            )))? {
            HolderState::Ready => Ok(None),
            HolderState::Waiting(why) => {
                Ok(Some(format!("moving to {to} waits for its images: {why}")))
            }
        }
    }

    /// Deletes this master's image holder pods (none is needed outside a step).
    async fn release_holders(&self, client: &kube::Client, node: &str) {
        let Some(opts) = &self.opts.holders else {
            return;
        };
        if let Err(e) = holder::remove_all(client, &opts.namespace, node).await {
            warn!(error = %e, "cannot delete the image holder pods; retried next pass");
        }
    }

    /// `None` when we hold the Lease now, else the other holder.
    async fn try_lease(
        &mut self,
        client: &kube::Client,
        node: &str,
    ) -> Result<Option<String>, RolloutError> {
        let lease = self
            .lease(client, node)
            .map_err(api_err("invalid rollout Lease settings"))?;
        match lease
            .try_acquire_or_renew()
            .await
            .map_err(api_err("cannot take the rollout Lease"))?
        {
            Step::Held { .. } => Ok(None),
            Step::HeldByOther { holder } => Ok(Some(holder)),
            Step::Raced => Ok(Some("another master (raced)".into())),
        }
    }

    /// Records the end of this pass's step: `gate` is the pass's gate result.
    pub async fn finish(
        &mut self,
        client: &kube::Client,
        root: &NodeRoot,
        node: &str,
        from: KubernetesMinor,
        to: KubernetesMinor,
        gate: Result<(), String>,
    ) -> Result<(), RolloutError> {
        let api = cpn::api(client.clone());
        let own = api
            .get(node)
            .await
            .map_err(api_err(format!("cannot read ControlPlaneNode {node}")))?;
        let mut status = cpn::status_of(&own);
        status.rollout.finished_at = Some(now_rfc3339());
        match &gate {
            Ok(()) => {
                status.version = to.to_string();
                let highest = parse_minor(&status.highest_version).map_or(to, |h| h.max(to));
                status.highest_version = highest.to_string();
                status.rollout.phase = Phase::Succeeded;
                status.rollout.reason = None;
            }
            Err(why) => {
                restore_manifests(root).map_err(api_err("cannot restore the manifests"))?;
                status.version = from.to_string();
                status.rollout.phase = Phase::Failed;
                status.rollout.reason = Some(why.clone());
            }
        }
        observe(root, &mut status);
        status.waiting = None;
        self.failed = gate.is_err();
        cpn::patch_status(&api, node, &status)
            .await
            .map_err(api_err(format!("cannot update ControlPlaneNode {node}")))?;
        match gate {
            Ok(()) => {
                info!(node, %from, %to, "rollout succeeded on this master");
                event(
                    client,
                    node,
                    "Normal",
                    "RolloutSucceeded",
                    &format!("moved from {from} to {to}"),
                )
                .await;
            }
            Err(why) => {
                warn!(node, %from, %to, reason = %why, "rollout failed: manifests restored, rollout halted");
                event(
                    client,
                    node,
                    "Warning",
                    "RolloutFailed",
                    &format!("moving from {from} to {to} failed, previous manifests restored, rollout halted: {why}"),
                )
                .await;
            }
        }
        if let Some(lease) = self.lease.as_mut()
            && let Err(e) = lease.release().await
        {
            warn!(error = %cpm_core::exit::chain(&e), "cannot release the rollout Lease; it expires on its own");
        }
        self.release_holders(client, node).await;
        Ok(())
    }

    /// Keeps this master's status current: component versions and checksums, certificate
    /// expiry, and what it waits for.
    pub async fn record_components(
        client: &kube::Client,
        root: &NodeRoot,
        node: &str,
        waiting: Option<String>,
    ) -> Result<(), RolloutError> {
        let api = cpn::api(client.clone());
        let Some(own) = api
            .get_opt(node)
            .await
            .map_err(api_err(format!("cannot read ControlPlaneNode {node}")))?
        else {
            return Ok(());
        };
        let old = cpn::status_of(&own);
        let mut status = old.clone();
        observe(root, &mut status);
        status.waiting = waiting;
        if status == old {
            return Ok(());
        }
        cpn::patch_status(&api, node, &status)
            .await
            .map_err(api_err(format!("cannot update ControlPlaneNode {node}")))?;
        Ok(())
    }
}

/// Whether the rollout of this master failed, per its object (for the metric after restarts).
pub fn failed(obj: &DynamicObject) -> bool {
    cpn::status_of(obj).rollout.phase == Phase::Failed
}

fn backup_manifests(root: &NodeRoot) -> std::io::Result<()> {
    let dir = root
        .join(node_path(ROLLOUT_BACKUP_DIR))
        .map_err(std::io::Error::other)?;
    std::fs::create_dir_all(&dir)?;
    for c in Component::ALL {
        let src = root
            .join(node_path(&c.manifest()))
            .map_err(std::io::Error::other)?;
        let dst = dir.join(format!("{}.yaml", c.name()));
        match std::fs::read(&src) {
            Ok(bytes) => write_atomic(&dst, &bytes, 0o600, None, None)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::remove_file(&dst) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn restore_manifests(root: &NodeRoot) -> std::io::Result<()> {
    let dir = root
        .join(node_path(ROLLOUT_BACKUP_DIR))
        .map_err(std::io::Error::other)?;
    for c in Component::ALL {
        let src = dir.join(format!("{}.yaml", c.name()));
        let dst = root
            .join(node_path(&c.manifest()))
            .map_err(std::io::Error::other)?;
        match std::fs::read(&src) {
            Ok(bytes) => write_atomic(&dst, &bytes, 0o600, None, None)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn event(client: &kube::Client, node: &str, type_: &str, reason: &str, message: &str) {
    let api: Api<Event> = Api::namespaced(client.clone(), EVENT_NAMESPACE);
    let now = time::OffsetDateTime::now_utc();
    let ts = k8s_openapi::jiff::Timestamp::now();
    let e = Event {
        metadata: ObjectMeta {
            name: Some(format!("{node}.{:x}", now.unix_timestamp_nanos())),
            namespace: Some(EVENT_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(format!("{}/{}", cpn::GROUP, cpn::VERSION)),
            kind: Some(cpn::KIND.into()),
            name: Some(node.into()),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(crate::agent::AGENT.into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(Time(ts)),
        last_timestamp: Some(Time(ts)),
        count: Some(1),
        ..Event::default()
    };
    if let Err(err) = api.create(&PostParams::default(), &e).await {
        warn!(error = %err, reason, "cannot create the rollout Event");
    }
}
