//! A simulated cluster: the store, the generated objects, and masters.
//!
//! [`SimCluster::start`] reaps what dead owners left, makes the cluster's bridge and subnet,
//! creates the CA bundle with `cpm-certs init-ca`, starts the store (the in-process test API
//! server on the bridge address, serving with the bundle's cluster CA), applies the namespace,
//! the CRDs, the RBAC, the Secrets `cpm-pki` (the bundle) and `cpm-config`
//! (`manifests/examples/cpm-config-secret.yaml`), publishes `kube-root-ca.crt` and the
//! `default/kubernetes` endpoints, and starts the controllers. Workloads are applied by the
//! caller ([`SimCluster::apply_file`]); [`SimCluster::add_master`] adds a node the way a
//! node bootstrap would (kubelet credentials, the api-proxy static pod) and starts its kubelet.
//! Everything is removed on drop.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use cpm_testing::apiserver::{ApiServer, ApiServerOptions, CertAndKey};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::context::{ClusterCtx, NodeCtx};
use crate::controllers::tokens::RegisteredTokens;
use crate::error::{Result, SimError, run};
use crate::image::RootfsMode;
use crate::net::ClusterNet;
use crate::runc::Runc;

/// The first service IP (`serviceSubnet` 10.96.0.0/12 of the example configuration).
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// How a cluster is built.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The workspace (`manifests/`, `docs/`).
    pub workspace: PathBuf,
    /// The workspace binaries (`target/<profile>`).
    pub bin_dir: PathBuf,
    /// Process mode or image mode.
    pub rootfs: RootfsMode,
    /// The registry prefix of cpm's images in the manifests.
    pub cpm_prefix: String,
}

impl SimOptions {
    /// This workspace, the binaries next to the running test executable
    /// (`target/<profile>/deps/<test>` → `target/<profile>`), process mode, prefix `cpm`.
    pub fn from_test_binary() -> Self {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
            .unwrap_or_default();
        Self {
            workspace: crate::manifests::workspace_root(),
            bin_dir: std::env::var_os("CPM_SIM_BIN_DIR").map_or(bin_dir, PathBuf::from),
            rootfs: RootfsMode::Process,
            cpm_prefix: "cpm".into(),
        }
    }
}

/// What a test needs to know about a master.
#[derive(Debug, Clone)]
pub struct MasterInfo {
    /// The Node name.
    pub name: String,
    /// Its address on the cluster bridge.
    pub ip: Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
    /// Its root directory (`/` of that host).
    pub root: PathBuf,
}

/// How a master is added.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// Install the api-proxy static pod (as the node bootstrap does).
    pub api_proxy: bool,
    /// Label and taint it as a control-plane node.
    pub control_plane: bool,
}

impl MasterOptions {
    /// A master as a node bootstrap makes it: control-plane role, api-proxy static pod.
    pub fn bootstrap() -> Self {
        Self {
            api_proxy: true,
            control_plane: true,
        }
    }
}

struct Master {
    info: MasterInfo,
    kubelet: JoinHandle<()>,
}

/// A running simulated cluster; torn down on drop.
pub struct SimCluster {
    opts: SimOptions,
    ctx: Arc<ClusterCtx>,
    server: Arc<ApiServer>,
    net: Arc<ClusterNet>,
    pki: PathBuf,
    version: String,
    masters: Mutex<BTreeMap<String, Master>>,
    controllers: JoinHandle<()>,
    stop: watch::Sender<bool>,
    // Dropped last: the masters' roots, pods and logs.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("tag", &self.net.tag)
            .field("dir", &self.dir.path())
            .field("store", &self.server.addr())
            .finish_non_exhaustive()
    }
}

/// Whether this machine can run the simulator (root, `runc`, `ip`, network namespaces); the
/// reason when not.
pub fn unavailable() -> Option<String> {
    for tool in ["runc", "ip", "iptables"] {
        if crate::net::which(tool).is_none() {
            return Some(format!("`{tool}` is not installed (bash .ci/install-deps)"));
        }
    }
    if !Path::new("/proc/self/ns/net").exists()
        || run(&["id", "-u"]).ok().as_deref().map(str::trim) != Some("0")
    {
        return Some("the node simulator needs root and network namespaces".into());
    }
    None
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(SimError::io("read", path))
}

impl SimCluster {
    /// Starts a cluster: network, PKI, store, base objects, controllers.
    pub async fn start(opts: SimOptions) -> Result<Self> {
        for tag in crate::net::reap_leftovers() {
            tracing::info!(%tag, "reaped a dead owner's cluster");
        }
        let tag = crate::net::new_tag();
        let net = Arc::new(ClusterNet::create(&tag)?);
        let dir = tempfile::Builder::new()
            .prefix(&format!("cpm-sim-{tag}-"))
            .tempdir()
            .map_err(SimError::io("create", std::env::temp_dir()))?;
        let pki = dir.path().join("pki-bundle");
        let certs = opts.bin_dir.join("cpm-certs");
        run(&[
            &certs.display().to_string(),
            "init-ca",
            "--out",
            &pki.display().to_string(),
        ])?;
        let ca = CertAndKey {
            cert_pem: read(&pki.join("ca.crt"))?,
            key_pem: read(&pki.join("ca.key"))?,
        };
        let server = Arc::new(
            ApiServer::start_with(ApiServerOptions {
                ca: Some(ca.clone()),
                listen: SocketAddr::from((net.gateway(), 0)),
                serving_sans: vec![SERVICE_IP.to_string()],
                ..ApiServerOptions::standard()
            })
            .await
            .map_err(SimError::ApiServer)?,
        );
        let client = server.admin_client().await.map_err(SimError::ApiServer)?;
        let ctx = Arc::new(ClusterCtx {
            client: client.clone(),
            runc: Runc::new(&net.state_dir.join("runc")),
            dir: dir.path().to_path_buf(),
            bin_dir: opts.bin_dir.clone(),
            cpm_prefix: opts.cpm_prefix.clone(),
            rootfs: opts.rootfs.clone(),
            tokens: Arc::new(RegisteredTokens(server.clone())),
            net: net.clone(),
            taken: Mutex::new([0u8, 1].into_iter().collect()),
            service_env: crate::env::kubernetes_service_env(&SERVICE_IP.to_string()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            service_routes: vec![(SocketAddr::from((SERVICE_IP, 443)), server.addr())],
        });
        let config_secret = opts
            .workspace
            .join("manifests/examples/cpm-config-secret.yaml");
        let version = kubelet_version(&config_secret)?;
        let (stop, stop_rx) = watch::channel(false);
        let controllers = tokio::spawn(run_controllers(
            client.clone(),
            ca.cert_pem.clone(),
            stop_rx,
        ));
        let cluster = Self {
            opts,
            ctx,
            server,
            net,
            pki,
            version,
            masters: Mutex::new(BTreeMap::new()),
            controllers,
            stop,
            dir,
        };
        cluster.apply_base(&config_secret).await?;
        Ok(cluster)
    }

    async fn apply_base(&self, config_secret: &Path) -> Result<()> {
        let client = self.client();
        let ws = &self.opts.workspace;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            crate::manifests::apply(
                &client,
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await?;
        }
        let mut files = vec![ws.join("manifests/namespace.yaml")];
        files.extend(crate::manifests::yaml_files(&ws.join("manifests/crds"))?);
        files.extend(crate::manifests::yaml_files(&ws.join("manifests/rbac"))?);
        for f in files {
            crate::manifests::apply_all(&client, &crate::manifests::read_documents(&f)?).await?;
        }
        let mut data = serde_json::Map::new();
        for e in std::fs::read_dir(&self.pki)
            .map_err(SimError::io("read", &self.pki))?
            .flatten()
        {
            let bytes = std::fs::read(e.path()).map_err(SimError::io("read", e.path()))?;
            data.insert(
                e.file_name().to_string_lossy().into_owned(),
                json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
        let pki_secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "cpm-pki", "namespace": "cpm-system"},
            "data": data,
        });
        crate::manifests::apply(&client, &pki_secret).await?;
        crate::manifests::apply_all(&client, &crate::manifests::read_documents(config_secret)?)
            .await?;
        crate::controllers::tokens::publish_root_ca(&client, self.server.ca_pem())
            .await
            .map_err(SimError::kube("publish", "configmap kube-root-ca.crt"))?;
        crate::controllers::endpoints::publish(
            &client,
            &SERVICE_IP.to_string(),
            &[self.server.addr()],
        )
        .await
        .map_err(SimError::kube(
            "publish",
            "endpointslice default/kubernetes",
        ))?;
        Ok(())
    }

    /// An admin client of the store.
    pub fn client(&self) -> kube::Client {
        self.ctx.client.clone()
    }

    /// The store.
    pub fn server(&self) -> &ApiServer {
        &self.server
    }

    /// The CA bundle `cpm-certs init-ca` made (the Secret `cpm-pki`).
    pub fn pki_dir(&self) -> &Path {
        &self.pki
    }

    /// The cluster's work directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bridge address (the store and the test process live there).
    pub fn gateway(&self) -> Ipv4Addr {
        self.net.gateway()
    }

    /// The cluster tag (names of its namespaces, bridge and state directory).
    pub fn tag(&self) -> &str {
        &self.net.tag
    }

    /// The runc state root of the cluster's containers.
    pub fn runc_root(&self) -> &Path {
        self.ctx.runc.root()
    }

    /// Applies every document of `manifests`-relative or absolute `path`.
    pub async fn apply_file(&self, path: &str) -> Result<()> {
        let p = self.opts.workspace.join(path);
        crate::manifests::apply_all(&self.client(), &crate::manifests::read_documents(&p)?).await
    }

    /// Applies the documents of `yaml`.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<()> {
        crate::manifests::apply_all(&self.client(), &crate::manifests::documents(yaml, "yaml")?)
            .await
    }

    /// Applies the etcd-backup CronJob of master `node` from the template.
    pub async fn apply_backup_cronjob(&self, node: &str) -> Result<()> {
        let docs = crate::manifests::backup_cronjob(&self.opts.workspace, node)?;
        crate::manifests::apply_all(&self.client(), &docs).await
    }

    /// Fires CronJob `cpm-system/<name>` now; returns the Job's name.
    pub async fn fire_cronjob(&self, name: &str) -> Result<String> {
        crate::controllers::cronjob::fire(&self.client(), "cpm-system", name)
            .await
            .map_err(SimError::kube("fire", format!("cronjob cpm-system/{name}")))
    }

    /// Adds a master as a node bootstrap would ([`MasterOptions::bootstrap`]).
    pub async fn add_master(&self, name: &str) -> Result<MasterInfo> {
        self.add_master_with(name, &MasterOptions::bootstrap())
            .await
    }

    /// Adds a node: its namespace and address, its root with the kubelet's credentials, the
    /// api-proxy static pod when asked, its Node and its kubelet.
    pub async fn add_master_with(&self, name: &str, mo: &MasterOptions) -> Result<MasterInfo> {
        let index = self
            .ctx
            .take_index(2)
            .ok_or_else(|| SimError::invalid(format!("master {name}"), "no free address"))?;
        let netns = crate::net::netns_name(&self.net.tag, name);
        let ip = self.ctx.add_host(&netns, index)?;
        let root = self.dir.path().join("masters").join(name);
        for d in ["etc/kubernetes/manifests", "var/lib", "root", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(SimError::io("create", &p))?;
        }
        self.kubelet_credentials(&root, name)?;
        if mo.api_proxy {
            let pod = crate::manifests::api_proxy_static_pod(
                &self.opts.workspace,
                &self.server.addr().to_string(),
            )?;
            let path = root.join("etc/kubernetes/manifests/kubernetes-api-proxy.yaml");
            cpm_core::apply::write_atomic(&path, pod.as_bytes(), 0o644, None, None)
                .map_err(SimError::io("write", &path))?;
        }
        let node = Arc::new(NodeCtx {
            name: name.to_string(),
            ip,
            netns: netns.clone(),
            root: root.clone(),
            cluster: self.ctx.clone(),
        });
        let registration = crate::kubelet::register(&node, mo.control_plane, &self.version).await?;
        let kubelet = tokio::spawn(crate::kubelet::run(
            node,
            registration,
            self.version.clone(),
            self.stop.subscribe(),
        ));
        let info = MasterInfo {
            name: name.to_string(),
            ip,
            netns,
            root,
        };
        self.masters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.to_string(),
                Master {
                    info: info.clone(),
                    kubelet,
                },
            );
        Ok(info)
    }

    /// `etc/kubernetes/kubelet.conf` (server: the node's api-proxy) and its client
    /// certificate `var/lib/kubelet/pki/kubelet-client-current.pem` (`system:node:<name>`,
    /// group `system:nodes`, from the cluster CA), as the node bootstrap leaves them.
    fn kubelet_credentials(&self, root: &Path, name: &str) -> Result<()> {
        use cpm_core::pki::{Ca, CertSpec, Key, Usage};
        let ca_pem = read(&self.pki.join("ca.crt"))?;
        let ca = Ca::from_pem(&ca_pem, &read(&self.pki.join("ca.key"))?).map_err(|source| {
            SimError::Pki {
                what: "cluster CA".into(),
                source,
            }
        })?;
        let key = Key::generate(cpm_core::config::KeyAlgorithm::EcdsaP256).map_err(|source| {
            SimError::Pki {
                what: format!("kubelet key of {name}"),
                source,
            }
        })?;
        let mut spec = CertSpec::new(
            &format!("system:node:{name}"),
            Usage::Client,
            time::OffsetDateTime::now_utc(),
            365,
        );
        spec.organizations = vec!["system:nodes".into()];
        let cert = ca.issue(&spec, &key).map_err(|source| SimError::Pki {
            what: format!("kubelet certificate of {name}"),
            source,
        })?;
        let pki_dir = root.join("var/lib/kubelet/pki");
        std::fs::create_dir_all(&pki_dir).map_err(SimError::io("create", &pki_dir))?;
        let pem = pki_dir.join("kubelet-client-current.pem");
        cpm_core::apply::write_atomic(
            &pem,
            format!("{cert}{}", key.to_pem()).as_bytes(),
            0o600,
            None,
            None,
        )
        .map_err(SimError::io("write", &pem))?;
        let conf = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: default-cluster\n  cluster:\n    server: https://127.0.0.1:6445\n    certificate-authority-data: {}\nusers:\n- name: default-auth\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\ncontexts:\n- name: default-context\n  context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\ncurrent-context: default-context\n",
            base64::engine::general_purpose::STANDARD.encode(&ca_pem)
        );
        let path = root.join("etc/kubernetes/kubelet.conf");
        cpm_core::apply::write_atomic(&path, conf.as_bytes(), 0o600, None, None)
            .map_err(SimError::io("write", &path))
    }

    /// A master's handles.
    pub fn master(&self, name: &str) -> Option<MasterInfo> {
        self.masters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|m| m.info.clone())
    }

    /// Runs `argv` in master `name`'s network namespace (`ip netns exec`).
    pub fn exec_in(&self, name: &str, argv: &[&str]) -> Result<std::process::Output> {
        let m = self
            .master(name)
            .ok_or_else(|| SimError::invalid(format!("master {name}"), "not in this cluster"))?;
        crate::net::exec_in(&m.netns, argv)
    }

    /// Every log of container `container` of pod `namespace/pod` (all runs, oldest first).
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        let logs = self.dir.path().join("logs");
        let prefix = format!("{namespace}_{pod}_");
        let Ok(rd) = std::fs::read_dir(&logs) else {
            return String::new();
        };
        let mut out = String::new();
        for e in rd.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let dir = e.path().join(container);
            let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| {
                    let n = f.path().file_stem()?.to_str()?.parse().ok()?;
                    Some((n, f.path()))
                })
                .collect();
            runs.sort();
            for (_, p) in runs {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        out
    }

    /// Stops every kubelet (containers get their grace period), the controllers, then tears
    /// everything down. Dropping the cluster does the same without the grace period.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let kubelets: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.masters.lock().unwrap_or_else(PoisonError::into_inner))
                .into_values()
                .map(|m| m.kubelet)
                .collect();
        for k in kubelets {
            let _ = tokio::time::timeout(Duration::from_secs(60), k).await;
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.ctx.stopping.store(true, Ordering::SeqCst);
        self.controllers.abort();
        for m in self
            .masters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            m.kubelet.abort();
        }
        // A worker may be between `prepare` and `runc run`: remove twice.
        crate::runc::remove_all(self.ctx.runc.root());
        std::thread::sleep(Duration::from_millis(200));
        crate::runc::remove_all(self.ctx.runc.root());
        self.net.teardown();
    }
}

/// The kubelet version of the example configuration's minor (`v1.33.5`).
fn kubelet_version(config_secret: &Path) -> Result<String> {
    let docs = crate::manifests::read_documents(config_secret)?;
    let text = docs
        .first()
        .and_then(|d| d["stringData"]["config.yaml"].as_str())
        .ok_or_else(|| SimError::invalid(config_secret.display(), "no stringData config.yaml"))?;
    let config: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| SimError::Parse {
        what: config_secret.display().to_string(),
        message: e.to_string(),
    })?;
    let minor = config["kubernetesVersion"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .and_then(cpm_core::versions::lookup)
        .ok_or_else(|| {
            SimError::invalid(
                config_secret.display(),
                "kubernetesVersion is not a supported minor",
            )
        })?;
    Ok(minor.kubernetes.to_string())
}

async fn run_controllers(client: kube::Client, ca_pem: String, mut stop: watch::Receiver<bool>) {
    let mut tick: u64 = 0;
    loop {
        if let Err(e) = crate::controllers::daemonset::sync(&client).await {
            tracing::debug!(error = %e, "daemonset controller");
        }
        if let Err(e) = crate::controllers::cronjob::sync_jobs(&client).await {
            tracing::debug!(error = %e, "job controller");
        }
        if tick.is_multiple_of(5) {
            if let Err(e) =
                crate::controllers::cronjob::sync_cronjobs(&client, time::OffsetDateTime::now_utc())
                    .await
            {
                tracing::debug!(error = %e, "cronjob controller");
            }
            if let Err(e) = crate::controllers::tokens::publish_root_ca(&client, &ca_pem).await {
                tracing::debug!(error = %e, "root CA publisher");
            }
        }
        tick += 1;
        tokio::select! {
            () = tokio::time::sleep(crate::controllers::RESYNC) => {}
            _ = stop.changed() => return,
        }
    }
}
