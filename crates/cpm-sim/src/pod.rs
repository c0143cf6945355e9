//! One pod on one node: its sandbox (the node's network namespace with `hostNetwork`, else a
//! namespace of its own on the cluster bridge), its volumes, its init containers in order, its
//! containers each under a supervisor (restart policy with back-off, probes, grace period), and
//! a status poster that keeps the pod's (or mirror pod's) status in the API current.

pub mod rootfs;
pub mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Pod, PodSpec, Secret, ServiceAccount, Volume,
};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::context::NodeCtx;
use crate::env::{Objects, PodFields};
use crate::image::{ImageSpec, RootfsMode, Source};
use crate::oci::{Bundle, Mount, MountKind};
use crate::probe::Target;
use status::{ContainerRecord, PodRecord, State};

/// Where the automounted ServiceAccount token goes (ServiceAccount admission, applied by the
/// simulator's kubelet since the store has no admission).
pub const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How often Secret, ConfigMap and projected volumes are re-synced.
const VOLUME_RESYNC: Duration = Duration::from_secs(5);

/// A running pod worker.
#[derive(Debug)]
pub struct PodWorker {
    /// The pod's uid (the API's, or the static pod's hash).
    pub uid: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    record: Arc<Mutex<PodRecord>>,
}

impl PodWorker {
    /// Stops every container (SIGTERM, then SIGKILL after the grace period) and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// The pod's current record.
    pub fn record(&self) -> PodRecord {
        lock(&self.record).clone()
    }

    /// Whether the worker has finished (every container ended for good).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

struct Shared {
    node: Arc<NodeCtx>,
    spec: PodSpec,
    /// Namespace and name of the API object whose status is posted.
    namespace: String,
    status_name: String,
    fields: PodFields,
    uid: String,
    dir: PathBuf,
    log_dir: PathBuf,
    netns: String,
    sandbox: Option<u8>,
    record: Arc<Mutex<PodRecord>>,
    changed: Notify,
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn stopped(&self) -> bool {
        *self.stop.borrow() || self.node.cluster.stopping()
    }

    fn update(&self, f: impl FnOnce(&mut PodRecord)) {
        f(&mut lock(&self.record));
        self.changed.notify_one();
    }

    async fn sleep_or_stop(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => self.stopped(),
            () = until_stopped(&mut stop) => true,
        }
    }
}

/// Starts a worker for `pod` on `node`; its status goes to `status_name` in the pod's
/// namespace (the pod itself, or a static pod's mirror).
pub fn spawn(node: Arc<NodeCtx>, pod: &Pod, uid: &str, status_name: &str) -> PodWorker {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let host_network = spec.host_network == Some(true);
    let sandbox = (!host_network)
        .then(|| node.cluster.take_index(100))
        .flatten();
    let netns = match sandbox {
        Some(i) => crate::net::netns_name(&node.cluster.net.tag, &format!("p{i}")),
        None => node.netns.clone(),
    };
    let pod_ip = sandbox
        .map_or(node.ip, |i| node.cluster.net.address(i))
        .to_string();
    let fields = PodFields {
        name: status_name.to_string(),
        namespace: namespace.clone(),
        uid: uid.to_string(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        node_name: node.name.clone(),
        service_account: spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        host_ip: node.ip.to_string(),
        pod_ip: pod_ip.clone(),
    };
    let record = PodRecord {
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        host_ip: node.ip.to_string(),
        pod_ip,
        start_time: now(),
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                ContainerRecord::new(
                    &c.name,
                    c.image.as_deref().unwrap_or_default(),
                    "PodInitializing",
                )
            })
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| {
                let reason = if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                };
                ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or_default(), reason)
            })
            .collect(),
        initialized: spec.init_containers.as_ref().is_none_or(Vec::is_empty),
        transitions: BTreeMap::new(),
    };
    let record = Arc::new(Mutex::new(record));
    let (stop_tx, stop_rx) = watch::channel(false);
    let dir = node.cluster.dir.join("pods").join(uid);
    let log_dir = node
        .cluster
        .dir
        .join("logs")
        .join(format!("{namespace}_{status_name}_{uid}"));
    let shared = Arc::new(Shared {
        node,
        spec,
        namespace,
        status_name: status_name.to_string(),
        fields,
        uid: uid.to_string(),
        dir,
        log_dir,
        netns,
        sandbox,
        record: record.clone(),
        changed: Notify::new(),
        stop: stop_rx,
    });
    let task = tokio::spawn(run_pod(shared));
    PodWorker {
        uid: uid.to_string(),
        stop: stop_tx,
        task,
        record,
    }
}

async fn run_pod(shared: Arc<Shared>) {
    let poster = tokio::spawn(post_status(shared.clone()));
    if let Some(index) = shared.sandbox
        && let Err(e) = shared.node.cluster.add_host(&shared.netns, index)
    {
        tracing::warn!(pod = %shared.status_name, error = %e, "pod sandbox");
    }
    if let Some(volumes) = setup_volumes(&shared).await {
        let refresher = tokio::spawn(refresh_volumes(shared.clone()));
        if run_init_containers(&shared, &volumes).await {
            let supervisors: Vec<_> = shared
                .spec
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| supervise(shared.clone(), volumes.clone(), c.clone(), Slot::App(i)))
                .collect();
            futures::future::join_all(supervisors).await;
        }
        refresher.abort();
    }
    let mut stop = shared.stop.clone();
    if !shared.stopped() {
        until_stopped(&mut stop).await;
    }
    if let Some(index) = shared.sandbox {
        crate::net::ClusterNet::remove_host(&shared.netns);
        shared.node.cluster.release_index(index);
    }
    shared.changed.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    poster.abort();
}

async fn post_status(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::namespaced(shared.node.cluster.client.clone(), &shared.namespace);
    let mut last = serde_json::Value::Null;
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.changed.notified()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = {
            let mut r = lock(&shared.record);
            status::note_transitions(&mut r, &now());
            status::status_json(&r)
        };
        if status == last {
            continue;
        }
        let patch = Patch::Merge(json!({"status": status}));
        match api
            .patch_status(&shared.status_name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => last = status,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::debug!(pod = %shared.status_name, error = %e, "status not posted"),
        }
    }
}

/// The service-account volume ServiceAccount admission would add, when automounting applies
/// and nothing is mounted at [`SA_MOUNT`] yet.
async fn admission_volume(shared: &Shared) -> Option<Volume> {
    let spec = &shared.spec;
    let mounted = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.mount_path == SA_MOUNT);
    if mounted {
        return None;
    }
    let automount = match spec.automount_service_account_token {
        Some(a) => a,
        None => {
            let api: Api<ServiceAccount> =
                Api::namespaced(shared.node.cluster.client.clone(), &shared.namespace);
            let sa = api
                .get_opt(&shared.fields.service_account)
                .await
                .ok()
                .flatten();
            sa.and_then(|s| s.automount_service_account_token)
                .unwrap_or(true)
        }
    };
    automount.then(|| {
        serde_json::from_value(json!({
            "name": "kube-api-access-sim",
            "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]},
        }))
        .ok()
    })?
}

/// The pod's volumes: name → directory on this machine.
type Volumes = Arc<BTreeMap<String, PathBuf>>;

async fn fetch_objects(shared: &Shared, secrets: &[String], config_maps: &[String]) -> Objects {
    let client = shared.node.cluster.client.clone();
    let sapi: Api<Secret> = Api::namespaced(client.clone(), &shared.namespace);
    let capi: Api<ConfigMap> = Api::namespaced(client, &shared.namespace);
    let mut o = Objects::default();
    for name in secrets {
        if let Ok(Some(s)) = sapi.get_opt(name).await {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            o.secrets.insert(name.clone(), data);
        }
    }
    for name in config_maps {
        if let Ok(Some(c)) = capi.get_opt(name).await {
            let mut data: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in c.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            o.config_maps.insert(name.clone(), data);
        }
    }
    o
}

fn all_volumes(shared: &Shared, extra: Option<&Volume>) -> Vec<Volume> {
    shared
        .spec
        .volumes
        .iter()
        .flatten()
        .chain(extra)
        .cloned()
        .collect()
}

/// Writes the payload volumes (secret, configMap, projected, downwardAPI); an error names the
/// first volume that failed.
async fn sync_payloads(
    shared: &Shared,
    volumes: &[Volume],
    dirs: &BTreeMap<String, PathBuf>,
) -> Result<(), String> {
    let (mut secrets, mut cms) = (Vec::new(), Vec::new());
    for v in volumes {
        let (s, c) = crate::volume::referenced(v);
        secrets.extend(s);
        cms.extend(c);
    }
    let objects = fetch_objects(shared, &secrets, &cms).await;
    let fs_group = shared
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let tokens = shared.node.cluster.tokens.clone();
    let (ns, sa) = (
        shared.namespace.clone(),
        shared.fields.service_account.clone(),
    );
    for v in volumes {
        let dir = &dirs[&v.name];
        // A token is issued once per volume (the simulator's tokens do not expire).
        let existing = token_on_disk(dir, v);
        let mut issue = |aud: Option<&str>, exp: i64| match &existing {
            Some(t) => Ok(t.clone()),
            None => tokens.issue(&ns, &sa, aud, exp),
        };
        let Some(payload) = crate::volume::payload(v, &objects, &shared.fields, &mut issue) else {
            continue;
        };
        let payload = payload
            .map_err(|e| format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name))?;
        crate::volume::write_payload(dir, &payload, fs_group)
            .map_err(|e| format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name))?;
    }
    Ok(())
}

/// The token a projected volume already holds, if any.
fn token_on_disk(dir: &Path, v: &Volume) -> Option<String> {
    let path = v
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .find_map(|src| src.service_account_token.as_ref().map(|t| t.path.clone()))?;
    std::fs::read_to_string(dir.join("..data").join(path)).ok()
}

async fn setup_volumes(shared: &Arc<Shared>) -> Option<Volumes> {
    let extra = admission_volume(shared).await;
    let volumes = all_volumes(shared, extra.as_ref());
    loop {
        if shared.stopped() {
            return None;
        }
        match prepare_volumes(shared, &volumes).await {
            Ok(dirs) => return Some(Arc::new(dirs)),
            Err(message) => {
                shared.update(|r| {
                    for c in r.containers.iter_mut().chain(r.init.iter_mut()) {
                        c.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: message.clone(),
                        };
                    }
                });
                tracing::debug!(pod = %shared.status_name, %message, "volumes not ready");
                if shared.sleep_or_stop(Duration::from_secs(2)).await {
                    return None;
                }
            }
        }
    }
}

async fn prepare_volumes(
    shared: &Shared,
    volumes: &[Volume],
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut dirs = BTreeMap::new();
    for v in volumes {
        let dir = shared.dir.join("volumes").join(&v.name);
        let path = if let Some(h) = &v.host_path {
            crate::volume::host_path(&shared.node.root, h)?
        } else if v.empty_dir.is_some() {
            crate::volume::empty_dir(&dir).map_err(|e| format!("emptyDir {}: {e}", v.name))?;
            dir
        } else if v.secret.is_some()
            || v.config_map.is_some()
            || v.projected.is_some()
            || v.downward_api.is_some()
        {
            dir
        } else {
            return Err(format!(
                "volume {:?}: kind not modelled by the simulator",
                v.name
            ));
        };
        dirs.insert(v.name.clone(), path);
    }
    sync_payloads(shared, volumes, &dirs).await?;
    Ok(dirs)
}

async fn refresh_volumes(shared: Arc<Shared>) {
    let extra = admission_volume(&shared).await;
    let volumes = all_volumes(&shared, extra.as_ref());
    let dirs: BTreeMap<String, PathBuf> = volumes
        .iter()
        .map(|v| (v.name.clone(), shared.dir.join("volumes").join(&v.name)))
        .collect();
    let payloads: Vec<Volume> = volumes
        .into_iter()
        .filter(|v| {
            v.secret.is_some()
                || v.config_map.is_some()
                || v.projected.is_some()
                || v.downward_api.is_some()
        })
        .collect();
    while !shared.sleep_or_stop(VOLUME_RESYNC).await {
        if let Err(e) = sync_payloads(&shared, &payloads, &dirs).await {
            tracing::debug!(pod = %shared.status_name, error = %e, "volume resync");
        }
    }
}

/// Runs the init containers in order; true when all succeeded.
async fn run_init_containers(shared: &Arc<Shared>, volumes: &Volumes) -> bool {
    let inits: Vec<Container> = shared.spec.init_containers.clone().unwrap_or_default();
    for (i, c) in inits.into_iter().enumerate() {
        supervise(shared.clone(), volumes.clone(), c, Slot::Init(i)).await;
        let ok = matches!(
            lock(&shared.record).init[i].state,
            State::Terminated { exit_code: 0, .. }
        );
        if !ok {
            return false;
        }
    }
    shared.update(|r| {
        r.initialized = true;
        for c in &mut r.containers {
            c.state = State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            };
        }
    });
    true
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Init(usize),
    App(usize),
}

fn slot(r: &mut PodRecord, s: Slot) -> &mut ContainerRecord {
    match s {
        Slot::Init(i) => &mut r.init[i],
        Slot::App(i) => &mut r.containers[i],
    }
}

/// A container ready to run.
struct Prepared {
    id: String,
    bundle: PathBuf,
    log: PathBuf,
    termination: PathBuf,
    image_id: String,
}

/// Why a container could not be created: (reason, message).
type Waiting = (&'static str, String);

async fn prepare(
    shared: &Shared,
    volumes: &Volumes,
    c: &Container,
    attempt: u32,
) -> Result<Prepared, Waiting> {
    let cluster = &shared.node.cluster;
    let image_ref = c.image.clone().unwrap_or_default();
    let mut image: ImageSpec =
        crate::image::resolve(&image_ref, &cluster.cpm_prefix).map_err(|m| ("ErrImagePull", m))?;
    let (mut secrets, mut cms) = (Vec::new(), Vec::new());
    for e in c.env.iter().flatten() {
        if let Some(from) = &e.value_from {
            secrets.extend(from.secret_key_ref.as_ref().map(|s| s.name.clone()));
            cms.extend(from.config_map_key_ref.as_ref().map(|s| s.name.clone()));
        }
    }
    for f in c.env_from.iter().flatten() {
        secrets.extend(f.secret_ref.as_ref().map(|s| s.name.clone()));
        cms.extend(f.config_map_ref.as_ref().map(|s| s.name.clone()));
    }
    let objects = fetch_objects(shared, &secrets, &cms).await;
    let id = format!(
        "{}-{}-{attempt}",
        &shared.uid[..shared.uid.len().min(8)],
        c.name
    );
    let cdir = cluster.dir.join("containers").join(&id);
    let _ = std::fs::remove_dir_all(&cdir);
    let rootfs = cdir.join("rootfs");
    let mut mounts: Vec<Mount> = Vec::new();
    match &cluster.rootfs {
        RootfsMode::Process => {}
        RootfsMode::Image(images) => {
            let archive = image
                .archive
                .map(|a| images.join(format!("{a}.tar")))
                .filter(|p| p.is_file())
                .ok_or_else(|| {
                    (
                        "ErrImagePull",
                        format!("no archive for {image_ref} in {}", images.display()),
                    )
                })?;
            let config = crate::image::unpack_oci_archive(&archive, &cdir.join("unpack"), &rootfs)
                .map_err(|e| ("ErrImagePull", e.to_string()))?;
            image.entrypoint = config.entrypoint;
            image.cmd = config.cmd;
            image.env = config.env;
            image.user = config.user;
            image.working_dir = config.working_dir;
        }
    }
    let mut kubelet_env =
        crate::env::kubelet_env(c, &cluster.service_env, &shared.fields, &objects)
            .map_err(|m| ("CreateContainerConfigError", m))?;
    let hostname = if shared.sandbox.is_some() {
        shared.status_name.clone()
    } else {
        shared.node.name.clone()
    };
    kubelet_env
        .entry("HOSTNAME".into())
        .or_insert_with(|| hostname.clone());
    let argv = crate::env::command_line(c, &image, &kubelet_env)
        .map_err(|m| ("CreateContainerConfigError", m))?;
    let security = crate::oci::security(&shared.spec, c, image.user)
        .map_err(|m| ("CreateContainerConfigError", m))?;
    if cluster.rootfs == RootfsMode::Process {
        let exe = if let Source::NotRunnable(_) = image.source {
            if crate::env::runs_image_binary(&argv[0], &image) {
                let why = crate::image::executable(&image, &cluster.bin_dir)
                    .err()
                    .unwrap_or_default();
                return Err(("SimulatorNotRunnable", why));
            }
            None
        } else {
            Some(
                crate::image::executable(&image, &cluster.bin_dir)
                    .map_err(|m| ("CreateContainerError", m))?,
            )
        };
        mounts.extend(
            rootfs::process_rootfs(
                &rootfs,
                exe.as_deref().map(|e| (e, image.binary_path.as_str())),
            )
            .map_err(|m| ("CreateContainerError", m))?,
        );
    }
    let termination_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let ip = lock(&shared.record).pod_ip.clone();
    mounts.extend(
        rootfs::runtime_files(&cdir.join("files"), &hostname, &ip, &termination_path)
            .map_err(|m| ("CreateContainerError", m))?,
    );
    mounts.extend(volume_mounts(shared, volumes, c)?);
    let bundle = Bundle {
        args: argv,
        env: crate::env::process_env(&image.env, &kubelet_env),
        cwd: c
            .working_dir
            .clone()
            .unwrap_or_else(|| image.working_dir.clone()),
        security,
        rootfs,
        mounts,
        netns: crate::net::netns_path(&shared.netns),
        hostname,
        cgroups_path: format!("/cpm-sim-{}-{id}", cluster.net.tag),
    };
    let config = crate::oci::config_json(&bundle);
    let text =
        serde_json::to_vec_pretty(&config).map_err(|e| ("CreateContainerError", e.to_string()))?;
    cpm_core::apply::write_atomic(&cdir.join("config.json"), &text, 0o600, None, None)
        .map_err(|e| ("CreateContainerError", format!("config.json: {e}")))?;
    let log_dir = shared.log_dir.join(&c.name);
    std::fs::create_dir_all(&log_dir).map_err(|e| ("CreateContainerError", e.to_string()))?;
    Ok(Prepared {
        log: log_dir.join(format!("{attempt}.log")),
        termination: cdir.join("files/termination-log"),
        bundle: cdir,
        id,
        image_id: image_id(&image_ref),
    })
}

/// The simulator's image id: the reference with a digest of the reference (no registry
/// digest exists for process-mode images).
fn image_id(reference: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(reference.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let repo = reference.split(['@']).next().unwrap_or(reference);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    format!("{repo}@sha256:{hex}")
}

fn volume_mounts(shared: &Shared, volumes: &Volumes, c: &Container) -> Result<Vec<Mount>, Waiting> {
    let mut out = Vec::new();
    let mut mounts: Vec<(String, String, bool, Option<String>)> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                m.name.clone(),
                m.mount_path.clone(),
                m.read_only == Some(true),
                m.sub_path.clone().filter(|s| !s.is_empty()),
            )
        })
        .collect();
    if volumes.contains_key("kube-api-access-sim") && !mounts.iter().any(|m| m.1 == SA_MOUNT) {
        mounts.push(("kube-api-access-sim".into(), SA_MOUNT.into(), true, None));
    }
    mounts.sort_by_key(|m| Path::new(&m.1).components().count());
    for (name, path, ro, sub) in mounts {
        let source = volumes.get(&name).ok_or_else(|| {
            (
                "CreateContainerConfigError",
                format!("volumeMount {name:?} names no volume"),
            )
        })?;
        let forced_ro = shared
            .spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .is_none_or(|v| {
                v.secret.is_some()
                    || v.config_map.is_some()
                    || v.projected.is_some()
                    || v.downward_api.is_some()
            });
        let source = match sub {
            Some(s) => source.join(s),
            None => source.clone(),
        };
        out.push(Mount {
            destination: path,
            kind: MountKind::Bind(source),
            readonly: ro || forced_ro,
        });
    }
    Ok(out)
}

/// How a run ended.
enum Ended {
    Exited(i32),
    Liveness(i32, String),
    Stopped,
}

fn exit_code_of(ended: &Ended) -> i32 {
    match ended {
        Ended::Exited(c) | Ended::Liveness(c, _) => *c,
        Ended::Stopped => 0,
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    status.ok().and_then(|s| s.code()).unwrap_or(137)
}

async fn kill_gracefully(shared: &Shared, id: &str, child: &mut tokio::process::Child) -> i32 {
    let runc = &shared.node.cluster.runc;
    let grace = Duration::from_secs(
        u64::try_from(
            shared
                .spec
                .termination_grace_period_seconds
                .unwrap_or(30)
                .max(0),
        )
        .unwrap_or(30),
    );
    let _ = runc.kill(id, "TERM").await;
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => exit_code(s),
        Err(_) => {
            let _ = runc.kill(id, "KILL").await;
            exit_code(child.wait().await)
        }
    }
}

fn termination_message(c: &Container, prepared: &Prepared, code: i32) -> String {
    let mut msg = std::fs::read(&prepared.termination).unwrap_or_default();
    msg.truncate(4096);
    let mut text = String::from_utf8_lossy(&msg).into_owned();
    if text.is_empty()
        && code != 0
        && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        let log = std::fs::read_to_string(&prepared.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        text = lines[lines.len().saturating_sub(80)..].join("\n");
        if text.len() > 2048 {
            let cut = text.len() - 2048;
            let start = (cut..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(cut);
            text = text[start..].to_string();
        }
    }
    text
}

/// Runs one container to the end of its life: prepare, run, probe, restart per policy with
/// back-off, until it ends for good or the pod stops.
async fn supervise(shared: Arc<Shared>, volumes: Volumes, c: Container, s: Slot) {
    let policy = shared
        .spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let init = matches!(s, Slot::Init(_));
    let mut backoff = Backoff::default();
    let mut attempt: u32 = 0;
    loop {
        if shared.stopped() {
            return;
        }
        let prepared = match prepare(&shared, &volumes, &c, attempt).await {
            Ok(p) => p,
            Err((reason, message)) => {
                tracing::debug!(pod = %shared.status_name, container = %c.name, reason, %message, "not created");
                shared.update(|r| {
                    slot(r, s).state = State::Waiting {
                        reason: reason.to_string(),
                        message,
                    };
                });
                if shared.sleep_or_stop(Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        let runc = shared.node.cluster.runc.clone();
        if shared.stopped() {
            return;
        }
        let mut child = match runc.run(&prepared.id, &prepared.bundle, &prepared.log) {
            Ok(ch) => ch,
            Err(e) => {
                shared.update(|r| {
                    slot(r, s).state = State::Waiting {
                        reason: "RunContainerError".into(),
                        message: e.to_string(),
                    };
                });
                if shared.sleep_or_stop(Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        let started_at = now();
        let has_readiness = c.readiness_probe.is_some() && !init;
        let has_startup = c.startup_probe.is_some() && !init;
        shared.update(|r| {
            let rec = slot(r, s);
            rec.state = State::Running {
                started_at: started_at.clone(),
            };
            rec.container_id = Some(format!("runc://{}", prepared.id));
            rec.image_id = prepared.image_id.clone();
            rec.started = !has_startup;
            rec.ready = !has_readiness && !has_startup && !init;
        });
        let began = Instant::now();
        let (live_tx, mut live_rx) = tokio::sync::mpsc::channel::<String>(1);
        let probes = if init {
            None
        } else {
            Some(tokio::spawn(probe_loop(
                shared.clone(),
                c.clone(),
                s,
                prepared.id.clone(),
                live_tx,
            )))
        };
        let mut stop = shared.stop.clone();
        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(exit_code(status)),
            Some(why) = live_rx.recv() => {
                let code = kill_gracefully(&shared, &prepared.id, &mut child).await;
                Ended::Liveness(code, why)
            }
            () = until_stopped(&mut stop) => {
                kill_gracefully(&shared, &prepared.id, &mut child).await;
                Ended::Stopped
            }
        };
        if let Some(p) = probes {
            p.abort();
        }
        runc.delete(&prepared.id).await;
        let message = termination_message(&c, &prepared, exit_code_of(&ended));
        // The bundle (config.json, rootfs skeleton or unpacked image) is done with; the log
        // stays for the tests.
        let _ = std::fs::remove_dir_all(&prepared.bundle);
        let code = match &ended {
            Ended::Exited(c) | Ended::Liveness(c, _) => *c,
            Ended::Stopped => {
                shared.update(|r| {
                    let rec = slot(r, s);
                    rec.ready = false;
                });
                return;
            }
        };
        if let Ended::Liveness(_, why) = &ended {
            tracing::info!(pod = %shared.status_name, container = %c.name, %why, "liveness probe failed, restarting");
        }
        let terminated = State::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message,
            started_at,
            finished_at: now(),
            container_id: format!("runc://{}", prepared.id),
        };
        let restart = match (init, policy.as_str()) {
            (true, "Never") => false,
            (true, _) => code != 0,
            (false, "Always") => true,
            (false, "OnFailure") => code != 0,
            (false, _) => false,
        };
        shared.update(|r| {
            let rec = slot(r, s);
            rec.ready = false;
            rec.state = terminated.clone();
        });
        if !restart {
            return;
        }
        let delay = backoff.after_exit(began.elapsed());
        shared.update(|r| {
            let rec = slot(r, s);
            rec.last = Some(terminated.clone());
            if !delay.is_zero() {
                rec.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        delay.as_secs(),
                        c.name,
                        shared.status_name,
                        shared.namespace,
                        shared.uid
                    ),
                };
            }
        });
        if !delay.is_zero() && shared.sleep_or_stop(delay).await {
            return;
        }
        shared.update(|r| slot(r, s).restart_count += 1);
        attempt += 1;
    }
}

fn period(p: &k8s_openapi::api::core::v1::Probe) -> Duration {
    Duration::from_secs(u64::try_from(p.period_seconds.unwrap_or(10).max(1)).unwrap_or(10))
}

/// Startup, then liveness and readiness probes of one run; a liveness failure past its
/// threshold is sent on `live` (the supervisor restarts the container).
async fn probe_loop(
    shared: Arc<Shared>,
    c: Container,
    s: Slot,
    id: String,
    live: tokio::sync::mpsc::Sender<String>,
) {
    let target = Target {
        netns: shared.netns.clone(),
        pod_ip: lock(&shared.record)
            .pod_ip
            .parse()
            .unwrap_or(std::net::IpAddr::V4(shared.node.ip)),
        runc: shared.node.cluster.runc.clone(),
        container_id: id,
    };
    if let Some(p) = &c.startup_probe {
        tokio::time::sleep(Duration::from_secs(
            u64::try_from(p.initial_delay_seconds.unwrap_or(0).max(0)).unwrap_or(0),
        ))
        .await;
        let threshold = p.failure_threshold.unwrap_or(3).max(1);
        let mut failures = 0;
        loop {
            match crate::probe::run(p, &c, &target).await {
                Ok(()) => break,
                Err(why) => {
                    failures += 1;
                    if failures >= threshold {
                        let _ = live.send(format!("Startup probe failed: {why}")).await;
                        return;
                    }
                }
            }
            tokio::time::sleep(period(p)).await;
        }
        shared.update(|r| {
            let rec = slot(r, s);
            rec.started = true;
            if c.readiness_probe.is_none() {
                rec.ready = true;
            }
        });
    }
    let liveness = c
        .liveness_probe
        .clone()
        .map(|p| tokio::spawn(liveness_loop(p, c.clone(), target.clone(), live)));
    if let Some(p) = &c.readiness_probe {
        tokio::time::sleep(Duration::from_secs(
            u64::try_from(p.initial_delay_seconds.unwrap_or(0).max(0)).unwrap_or(0),
        ))
        .await;
        let (fail_at, ok_at) = (
            p.failure_threshold.unwrap_or(3).max(1),
            p.success_threshold.unwrap_or(1).max(1),
        );
        let (mut fails, mut oks) = (0, 0);
        loop {
            match crate::probe::run(p, &c, &target).await {
                Ok(()) => {
                    oks += 1;
                    fails = 0;
                    if oks >= ok_at {
                        shared.update(|r| slot(r, s).ready = true);
                    }
                }
                Err(why) => {
                    fails += 1;
                    oks = 0;
                    tracing::debug!(pod = %shared.status_name, container = %c.name, %why, "readiness probe failed");
                    // Not ready until the first success; ready → not ready after the threshold.
                    if fails >= fail_at
                        || !lock(&shared.record)
                            .containers
                            .iter()
                            .any(|x| x.name == c.name && x.ready)
                    {
                        shared.update(|r| slot(r, s).ready = false);
                    }
                }
            }
            tokio::time::sleep(period(p)).await;
        }
    }
    if let Some(l) = liveness {
        let _ = l.await;
    }
}

async fn liveness_loop(
    p: k8s_openapi::api::core::v1::Probe,
    c: Container,
    target: Target,
    live: tokio::sync::mpsc::Sender<String>,
) {
    tokio::time::sleep(Duration::from_secs(
        u64::try_from(p.initial_delay_seconds.unwrap_or(0).max(0)).unwrap_or(0),
    ))
    .await;
    let threshold = p.failure_threshold.unwrap_or(3).max(1);
    let mut failures = 0;
    loop {
        match crate::probe::run(&p, &c, &target).await {
            Ok(()) => failures = 0,
            Err(why) => {
                failures += 1;
                if failures >= threshold {
                    let _ = live.send(format!("Liveness probe failed: {why}")).await;
                    return;
                }
            }
        }
        tokio::time::sleep(period(&p)).await;
    }
}
