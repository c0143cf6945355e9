//! The cpm-manifests agent: load inputs, observe the node (and the cluster when reachable),
//! render, then roll the components out one at a time behind the health gate, restoring a
//! component's previous files when its gate fails.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use cpm_core::apply::{ApplyOptions, BackupPolicy, apply, write_atomic};
use cpm_core::cli::{CommonArgs, MissingFlag};
use cpm_core::config::{AuditMode, ConfigError, ControlPlaneConfiguration};
use cpm_core::node::NodeRoot;
use cpm_core::plan::{Op, plan};
use cpm_core::reconcile::{Agent, Mode, PassError, PassOutcome, converge};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use tracing::{debug, info, warn};

use crate::desired::{HEADER, Inputs, desired, referenced_files};
use crate::files::{AuditPolicy, EncryptionKey, encryption_keys, parse_audit_policy};
use crate::health::{
    Check, ETCD_METRICS_URL, GateError, VerifyMode, check, default_checks, wait_healthy,
};
use crate::layout::{BACKUP_DIR, Component, ENCRYPTION_CONFIG, SCHEDULER_CONFIG, node_path, pki};
use crate::metrics::ManifestMetrics;
use crate::pods::CHECKSUM_ANNOTATION;
use crate::rollout::{
    ETCD_MANIFEST, Prepared, Rollout, RolloutError, RolloutOptions, Target, etcd_manifest_on_disk,
    image_of, manifest_field, minor_on_disk, tag_of,
};
use crate::scheduler;
use cpm_core::config::KubernetesMinor;
use sha2::{Digest, Sha256};

/// The agent's name in logs and metrics.
pub const AGENT: &str = "cpm-manifests";
/// The Secret (namespace kube-system) holding the encryption-at-rest keys shared by all masters.
pub const ENCRYPTION_SECRET: &str = "cpm-encryption-keys";
/// The label of control-plane Nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Bad operator input: config (fields or flags), node identity, custom audit policy.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A refused flag in the config.
    #[error("{file}: {source}")]
    Flag {
        /// The config file.
        file: PathBuf,
        /// The flag.
        source: crate::flags::FlagError,
    },
    /// A required identity flag.
    #[error(transparent)]
    Identity(#[from] MissingFlag),
    /// The custom audit policy.
    #[error("{file}: {message}")]
    AuditPolicy {
        /// The policy file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A pass failed after inputs were valid.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Reading the node.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A component failed its health gate and was rolled back, or is held back.
    #[error("{0}")]
    Gate(String),
}

/// Validated inputs of one pass.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: ControlPlaneConfiguration,
    /// This node's IP.
    pub node_ip: IpAddr,
    /// A `Custom` audit policy.
    pub audit: Option<AuditPolicy>,
}

/// The cpm-manifests agent.
pub struct ManifestsAgent {
    args: CommonArgs,
    metrics: Option<ManifestMetrics>,
    client: Option<kube::Client>,
    /// How long a component may take to become healthy; zero turns the gate off.
    pub gate_timeout: Duration,
    /// How often the gate polls.
    pub gate_interval: Duration,
    /// Without an API client: how long to let the kubelet pick up a new manifest before probing
    /// (the old pod may still answer until it is replaced).
    pub gate_settle: Duration,
    /// Health checks per component, instead of the defaults (tests).
    pub checks: Option<BTreeMap<Component, Vec<Check>>>,
    /// etcd's health checks in a version step, instead of the default (tests).
    pub etcd_checks: Option<Vec<Check>>,
    /// Checksums that failed their gate: not applied again until the inputs change.
    held_back: BTreeMap<Component, String>,
    /// Version rollouts across masters (used with a cluster client).
    pub rollout: Rollout,
}

impl ManifestsAgent {
    /// An agent for `args`; `client` reaches the cluster when given.
    pub fn new(
        args: CommonArgs,
        metrics: Option<ManifestMetrics>,
        client: Option<kube::Client>,
    ) -> Self {
        Self {
            args,
            metrics,
            client,
            gate_timeout: Duration::from_secs(300),
            gate_interval: Duration::from_secs(2),
            gate_settle: Duration::from_secs(20),
            checks: None,
            etcd_checks: None,
            held_back: BTreeMap::new(),
            rollout: Rollout::new(RolloutOptions::default()),
        }
    }

    /// Init: loads and validates every input (exit 2 on failure).
    pub fn load_inputs(&self) -> Result<Loaded, InputError> {
        let config = ControlPlaneConfiguration::load(&self.args.config)?;
        crate::flags::validate(&config).map_err(|source| InputError::Flag {
            file: self.args.config.clone(),
            source,
        })?;
        let node_ip = self.args.node_ip()?;
        let audit = match (
            &config.apiserver.audit_policy.mode,
            &config.apiserver.audit_policy.file,
        ) {
            (AuditMode::Custom, Some(file)) => {
                let path =
                    self.args
                        .node_root()
                        .host(file)
                        .map_err(|e| InputError::AuditPolicy {
                            file: file.clone(),
                            message: e.to_string(),
                        })?;
                let text = std::fs::read_to_string(&path).map_err(|e| InputError::AuditPolicy {
                    file: path.clone(),
                    message: format!("cannot read: {e}"),
                })?;
                Some(
                    parse_audit_policy(&text).map_err(|e| InputError::AuditPolicy {
                        file: path,
                        message: e.message,
                    })?,
                )
            }
            _ => None,
        };
        Ok(Loaded {
            config,
            node_ip,
            audit,
        })
    }

    /// Paths whose change should trigger a pass.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let root = self.args.node_root();
        let mut paths = vec![self.args.config.clone()];
        paths.extend(
            [
                "etc/kubernetes/pki",
                "etc/kubernetes",
                "etc/kubernetes/manifests",
                "etc/kubernetes/cpm",
            ]
            .iter()
            .filter_map(|p| root.join(p).ok()),
        );
        paths
    }

    /// The checks of `c`; replacement checks (tests) that name a `gitVersion` expect `version`.
    fn checks(&self, c: Component, ip: IpAddr, version: &str) -> Vec<Check> {
        match self.checks.as_ref().and_then(|m| m.get(&c).cloned()) {
            Some(mut checks) => {
                for check in &mut checks {
                    if check.git_version.is_some() {
                        check.git_version = Some(version.to_string());
                    }
                }
                checks
            }
            None => default_checks(c, ip, version),
        }
    }

    /// The minor this pass renders: with a cluster client, what the rollout decides (the node's
    /// current minor when the cluster cannot tell); without one, the node's current minor (a
    /// version change needs the API to serialise it across masters), or the configured one on
    /// a fresh node. A version change refused for want of the API sets
    /// `cpm_rollout_version_held`.
    async fn version_for_pass(
        &mut self,
        root: &NodeRoot,
        cfg: &ControlPlaneConfiguration,
        on_disk: Option<KubernetesMinor>,
        mode: Mode,
    ) -> Result<(KubernetesMinor, Option<Prepared>), PassError> {
        let target = cfg.kubernetes_version;
        let (version, prepared) = self.rollout_version(root, cfg, on_disk, mode).await?;
        let held = prepared.is_none() && on_disk.is_some() && version != target;
        if let Some(m) = &self.metrics {
            m.version_held(held);
        }
        Ok((version, prepared))
    }

    /// See [`Self::version_for_pass`].
    async fn rollout_version(
        &mut self,
        root: &NodeRoot,
        cfg: &ControlPlaneConfiguration,
        on_disk: Option<KubernetesMinor>,
        mode: Mode,
    ) -> Result<(KubernetesMinor, Option<Prepared>), PassError> {
        let target = cfg.kubernetes_version;
        let Some(client) = self.client.clone() else {
            // No Lease, no ControlPlaneNode records: nothing would stop every master from
            // moving at once.
            return Ok(match on_disk {
                Some(running) if running != target => {
                    warn!(%running, configured = %target, "no --kubeconfig: refusing to move this master to another minor, as only a rollout through the API moves masters one at a time; it keeps the minor it runs");
                    (running, None)
                }
                _ => (target, None),
            });
        };
        let current = on_disk.unwrap_or(target);
        let node = match self.args.node_name() {
            Ok(n) if mode == Mode::Apply => n,
            _ => return Ok((current, None)),
        };
        let hash = match std::fs::read(&self.args.config) {
            Ok(bytes) => hex(&Sha256::digest(&bytes)),
            Err(e) => {
                return Err(PassError::runtime(RunError::Read {
                    path: self.args.config.clone(),
                    source: e,
                }));
            }
        };
        let want = Target {
            version: target,
            config_hash: &hash,
            image_repository: &cfg.image_repository,
        };
        match self
            .rollout
            .prepare(&client, root, &node, want, on_disk)
            .await
        {
            Ok(p) => {
                if let Some(m) = &self.metrics {
                    m.rollout_failed(&node, self.rollout.failed);
                }
                match &p {
                    Prepared::Stay {
                        waiting: Some(why), ..
                    } => warn!("{why}"),
                    Prepared::Step { .. } => self.held_back.clear(),
                    Prepared::Stay { .. } => {}
                }
                Ok((p.version(), Some(p)))
            }
            Err(RolloutError::Policy(e)) => Err(PassError::runtime(RunError::Gate(format!(
                "{}: {e}",
                self.args.config.display()
            )))),
            Err(e) => {
                warn!(error = %cpm_core::exit::chain(&e), version = %current, "rollout state unavailable: the node keeps its version");
                Ok((current, None))
            }
        }
    }
}

fn read_opt(root: &NodeRoot, host: &str) -> Result<Option<Vec<u8>>, RunError> {
    let path = root.join(node_path(host)).map_err(|e| RunError::Read {
        path: host.into(),
        source: io::Error::other(e),
    })?;
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunError::Read { path, source }),
    }
}

/// The other masters named in an existing apiserver manifest's `--etcd-servers`.
pub fn peers_from_manifest(manifest: &[u8], own: IpAddr) -> Vec<IpAddr> {
    let text = String::from_utf8_lossy(manifest);
    let Some(flag) = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--etcd-servers="))
    else {
        return vec![];
    };
    flag.split(',')
        .filter_map(|u| {
            u.strip_prefix("https://")?
                .rsplit_once(':')?
                .0
                .trim_matches(['[', ']'])
                .parse()
                .ok()
        })
        .filter(|ip| *ip != own)
        .collect()
}

async fn peers_from_api(client: &kube::Client, own: IpAddr) -> Result<Vec<IpAddr>, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut ips: Vec<IpAddr> = nodes
        .list(&ListParams::default().labels(CONTROL_PLANE_LABEL))
        .await?
        .items
        .into_iter()
        .filter_map(|n| {
            n.status?
                .addresses?
                .into_iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()
        })
        .filter(|ip| *ip != own)
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

fn new_key(name: &str) -> EncryptionKey {
    EncryptionKey {
        name: name.to_string(),
        secret: base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
    }
}

/// The keys to render: the cluster's (Secret) first, then local keys it lacks (still needed to
/// read what this master wrote with them); a new key only when there is none anywhere. Creates
/// the Secret from local keys when the cluster has none.
async fn encryption(
    client: Option<&kube::Client>,
    local: Vec<EncryptionKey>,
    enabled: bool,
) -> Vec<EncryptionKey> {
    if !enabled && local.is_empty() {
        return vec![];
    }
    if !enabled {
        warn!(
            "apiserver.encryptionAtRest is false, but encryption at rest was enabled before and cannot be turned off: Secrets stay encrypted"
        );
    }
    let Some(client) = client else {
        return if local.is_empty() {
            vec![new_key("key-1")]
        } else {
            local
        };
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    match api.get_opt(ENCRYPTION_SECRET).await {
        Ok(Some(secret)) => {
            let mut keys: Vec<EncryptionKey> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(name, v)| EncryptionKey {
                    name,
                    secret: String::from_utf8_lossy(&v.0).into_owned(),
                })
                .collect();
            keys.sort_by(|a, b| b.name.cmp(&a.name));
            for k in local {
                if !keys.iter().any(|c| c.secret == k.secret) {
                    keys.push(k);
                }
            }
            keys
        }
        Ok(None) => {
            let keys = if local.is_empty() {
                vec![new_key("key-1")]
            } else {
                local
            };
            let data = keys
                .iter()
                .map(|k| {
                    (
                        k.name.clone(),
                        k8s_openapi::ByteString(k.secret.clone().into_bytes()),
                    )
                })
                .collect();
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(ENCRYPTION_SECRET.into()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => info!(
                    secret = ENCRYPTION_SECRET,
                    "stored the encryption keys in the cluster"
                ),
                Err(e) => {
                    debug!(error = %e, "cannot store the encryption keys yet; retried next pass");
                }
            }
            keys
        }
        Err(e) => {
            debug!(error = %e, "API not reachable: using the local encryption keys");
            if local.is_empty() {
                vec![new_key("key-1")]
            } else {
                local
            }
        }
    }
}

impl Agent for ManifestsAgent {
    fn name(&self) -> &'static str {
        AGENT
    }

    async fn pass(&mut self, mode: Mode) -> Result<PassOutcome, PassError> {
        let loaded = self.load_inputs().map_err(PassError::input)?;
        let cfg = &loaded.config;
        let root = self.args.node_root();
        let read = |host: &str| read_opt(&root, host).map_err(PassError::runtime);
        let mut node_files = BTreeMap::new();
        for c in Component::ALL {
            for path in referenced_files(c) {
                let content = read(&path)?;
                node_files.insert(path, content);
            }
        }
        let current_apiserver = read(&Component::Apiserver.manifest())?;
        let on_disk = current_apiserver.as_deref().and_then(minor_on_disk);
        let (version_minor, prepared) = self.version_for_pass(&root, cfg, on_disk, mode).await?;
        let mut rendered = cfg.clone();
        rendered.kubernetes_version = version_minor;
        let cfg = &rendered;
        let peers = match &self.client {
            Some(c) => match peers_from_api(c, loaded.node_ip).await {
                Ok(p) => p,
                Err(e) => {
                    debug!(error = %e, "cannot list control-plane Nodes; keeping the current etcd members");
                    current_apiserver
                        .as_deref()
                        .map(|m| peers_from_manifest(m, loaded.node_ip))
                        .unwrap_or_default()
                }
            },
            None => current_apiserver
                .as_deref()
                .map(|m| peers_from_manifest(m, loaded.node_ip))
                .unwrap_or_default(),
        };
        let local_keys = read(ENCRYPTION_CONFIG)?
            .and_then(|b| encryption_keys(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        let keys = encryption(
            self.client.as_ref(),
            local_keys,
            cfg.apiserver.encryption_at_rest,
        )
        .await;
        let scheduler_config = self.scheduler_config(&root, cfg, mode).await?;
        let inputs = Inputs {
            config: cfg,
            node_ip: loaded.node_ip,
            peers: &peers,
            node_files: &node_files,
            custom_audit_policy: loaded.audit.as_ref(),
            encryption_keys: &keys,
            scheduler_config: &scheduler_config,
        };
        let d = desired(&inputs).map_err(PassError::runtime)?;
        if mode != Mode::Apply {
            return converge(&root, &d.set, mode, &ApplyOptions::default());
        }
        let outcome = PassOutcome::from_plan(&plan(&root, &d.set).map_err(PassError::runtime)?);
        converge(&root, &d.dirs, mode, &ApplyOptions::default())?;
        let version = cpm_core::versions::lookup(cfg.kubernetes_version)
            .map(|v| v.kubernetes)
            .unwrap_or_default();
        let ca = node_files
            .get(&pki("ca.crt"))
            .cloned()
            .flatten()
            .unwrap_or_default();
        let mut failures = Vec::new();
        let mut order: Vec<&crate::desired::Manifest> = d.manifests.iter().collect();
        // etcd's part of a version step: first on upgrade, last on downgrade.
        let mut etcd_step = None;
        if let Some(Prepared::Step { from, to }) = &prepared {
            if to < from {
                // Downgrade: the reverse of the upgrade order, the apiserver last.
                order.reverse();
            }
            if !self.gate_timeout.is_zero()
                && let Some(tag) = expected_etcd_tag(&root, *to)
            {
                etcd_step = Some((to < from, tag));
            }
        }
        if let Some((false, tag)) = &etcd_step
            && let Err(e) = self.wait_for_etcd(&root, tag, &ca).await
        {
            failures.push(e.to_string());
            order.clear();
        }
        for m in order {
            let p = plan(&root, &m.set).map_err(PassError::runtime)?;
            if p.is_empty() {
                self.held_back.remove(&m.component);
                self.set_held(m.component, false);
                continue;
            }
            if self.held_back.get(&m.component) == Some(&m.checksum) {
                failures.push(format!("{} held back: this configuration failed its health gate; change the inputs to retry", m.component.name()));
                break;
            }
            let generation = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
            let opts = ApplyOptions {
                backup: Some(BackupPolicy {
                    dir: BACKUP_DIR.into(),
                    generation,
                    keep: 5,
                }),
                before_rename: None,
            };
            apply(&root, &p, &opts).map_err(PassError::runtime)?;
            info!(
                component = m.component.name(),
                checksum = &m.checksum[..12],
                "manifest written"
            );
            if self.gate_timeout.is_zero() {
                continue;
            }
            let checks = self.checks(m.component, loaded.node_ip, version);
            let mirror = self.wait_for_mirror_pod(m.component, &m.checksum).await;
            let gate = match mirror {
                Ok(()) => {
                    wait_healthy(
                        m.component,
                        &checks,
                        &ca,
                        self.gate_timeout,
                        self.gate_interval,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match gate {
                Ok(()) => {
                    self.held_back.remove(&m.component);
                    self.set_held(m.component, false);
                    info!(component = m.component.name(), "healthy");
                }
                Err(e) => {
                    warn!(error = %e, component = m.component.name(), "health gate failed: restoring the previous files");
                    restore(&root, &p).map_err(PassError::runtime)?;
                    self.held_back.insert(m.component, m.checksum.clone());
                    self.set_held(m.component, true);
                    if let Some(metrics) = &self.metrics {
                        metrics.rollback(m.component);
                    }
                    failures.push(format!("{e}; previous files restored"));
                    break;
                }
            }
        }
        if failures.is_empty()
            && let Some((true, tag)) = &etcd_step
            && let Err(e) = self.wait_for_etcd(&root, tag, &ca).await
        {
            failures.push(e.to_string());
        }
        self.after_pass(&root, prepared, &failures).await;
        if !failures.is_empty() {
            return Err(PassError::runtime(RunError::Gate(failures.join("; "))));
        }
        Ok(outcome)
    }
}

/// The etcd tag this master runs once at `to` ([`crate::holder::etcd_tag_at`] from the tag on
/// disk). `None` when the node has no etcd manifest (nothing to gate).
fn expected_etcd_tag(root: &NodeRoot, to: KubernetesMinor) -> Option<String> {
    let image = image_of(&etcd_manifest_on_disk(root)?)?;
    crate::holder::etcd_tag_at(to, tag_of(&image))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ManifestsAgent {
    /// Records this pass in the cluster: the end of a rollout step, or the components' state.
    async fn after_pass(
        &mut self,
        root: &NodeRoot,
        prepared: Option<Prepared>,
        failures: &[String],
    ) {
        let (Some(client), Ok(node)) = (self.client.clone(), self.args.node_name()) else {
            return;
        };
        let recorded = match prepared {
            Some(Prepared::Step { from, to }) => {
                let gate = if failures.is_empty() {
                    Ok(())
                } else {
                    Err(failures.join("; "))
                };
                let r = self
                    .rollout
                    .finish(&client, root, &node, from, to, gate)
                    .await;
                if let Some(m) = &self.metrics {
                    m.rollout_failed(&node, self.rollout.failed);
                }
                r
            }
            Some(Prepared::Stay { waiting, .. }) => {
                Rollout::record_components(&client, root, &node, waiting).await
            }
            None => Ok(()),
        };
        if let Err(e) = recorded {
            warn!(error = %cpm_core::exit::chain(&e), "cannot record the rollout state in the cluster");
        }
    }
}

impl ManifestsAgent {
    /// etcd's part of a version step. cpm-etcd renders etcd, following this master's
    /// `ControlPlaneNode` record (it watches it); this waits until etcd's manifest names
    /// `expected`, its mirror pod runs the manifest on disk (re-read each round: cpm-etcd may
    /// rewrite it meanwhile), and etcd answers healthy.
    async fn wait_for_etcd(
        &self,
        root: &NodeRoot,
        expected: &str,
        ca: &[u8],
    ) -> Result<(), GateError> {
        let checks = self.etcd_checks.clone().unwrap_or_else(|| {
            vec![Check {
                url: format!("{ETCD_METRICS_URL}/health"),
                verify: VerifyMode::Insecure,
                git_version: None,
            }]
        });
        let start = std::time::Instant::now();
        let mut settled = false;
        loop {
            let text = etcd_manifest_on_disk(root).unwrap_or_default();
            let image = image_of(&text).unwrap_or_default();
            let tag = tag_of(&image).unwrap_or_default();
            let last = if tag != expected {
                format!(
                    "{ETCD_MANIFEST} names etcd {tag:?}, not {expected:?} (cpm-etcd renders it: is it running on this master?)"
                )
            } else {
                let checksum =
                    manifest_field(&text, &format!("{CHECKSUM_ANNOTATION}: ")).unwrap_or_default();
                let mirror = match &self.client {
                    Some(client) => self.mirror_pod(client, "etcd", &checksum).await,
                    None if !settled => {
                        tokio::time::sleep(self.gate_settle).await;
                        settled = true;
                        Ok(())
                    }
                    None => Ok(()),
                };
                match mirror {
                    Ok(()) => match check(&checks, ca).await {
                        Ok(()) => {
                            info!(tag = expected, "etcd healthy at its new tag");
                            return Ok(());
                        }
                        Err(last) => last,
                    },
                    Err(last) => last,
                }
            };
            if start.elapsed() + self.gate_interval > self.gate_timeout {
                return Err(GateError {
                    component: "etcd",
                    timeout: self.gate_timeout,
                    last,
                });
            }
            tokio::time::sleep(self.gate_interval).await;
        }
    }

    /// Whether the mirror pod `<prefix>-<node>` carries `checksum` and is Ready (else what it
    /// shows).
    async fn mirror_pod(
        &self,
        client: &kube::Client,
        prefix: &str,
        checksum: &str,
    ) -> Result<(), String> {
        let name = format!("{prefix}-{}", self.args.node_name().unwrap_or_default());
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        match pods.get_opt(&name).await {
            Ok(Some(pod)) => {
                let sum = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CHECKSUM_ANNOTATION))
                    .cloned()
                    .unwrap_or_default();
                let ready = pod
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if sum == checksum && ready {
                    return Ok(());
                }
                Err(format!(
                    "mirror pod {name}: checksum {}, ready {ready}",
                    &sum.get(..12).unwrap_or(&sum)
                ))
            }
            Ok(None) => Err(format!("mirror pod {name} not found")),
            Err(e) => Err(format!("cannot read mirror pod {name}: {e}")),
        }
    }

    /// With an API client: waits until the mirror pod of `component` on this node carries
    /// `checksum` and is Ready, so the health checks that follow reach the new pod, not the old
    /// one. Without a client: waits [`Self::gate_settle`] for the kubelet to replace the pod.
    async fn wait_for_mirror_pod(
        &self,
        component: Component,
        checksum: &str,
    ) -> Result<(), GateError> {
        let Some(client) = &self.client else {
            tokio::time::sleep(self.gate_settle).await;
            return Ok(());
        };
        let deadline = std::time::Instant::now() + self.gate_timeout;
        loop {
            let last = match self.mirror_pod(client, component.name(), checksum).await {
                Ok(()) => return Ok(()),
                Err(last) => last,
            };
            if std::time::Instant::now() + self.gate_interval > deadline {
                return Err(GateError {
                    component: component.name(),
                    timeout: self.gate_timeout,
                    last,
                });
            }
            tokio::time::sleep(self.gate_interval).await;
        }
    }

    fn set_held(&self, c: Component, held: bool) {
        if let Some(m) = &self.metrics {
            m.held_back(c, held);
        }
    }

    /// The scheduler configuration: extenders from the cluster's webhook objects when reachable
    /// (rejections reported as Events and status), else the current file, else none.
    async fn scheduler_config(
        &self,
        root: &NodeRoot,
        cfg: &ControlPlaneConfiguration,
        mode: Mode,
    ) -> Result<String, PassError> {
        let kubeconfig = "/etc/kubernetes/scheduler.conf";
        if let Some(client) = &self.client {
            match scheduler::list_webhooks(client).await {
                Ok(objects) => {
                    let set = scheduler::desired_extenders(&objects, &cfg.cluster_domain);
                    if let Some(m) = &self.metrics {
                        m.webhooks.record(&set);
                    }
                    for r in &set.rejections {
                        warn!(object = %r.object, index = r.index, reason = %r, "scheduler webhook left out");
                    }
                    // Plans write nothing, in the cluster either.
                    if mode != Mode::Apply {
                    } else if let Err(e) =
                        scheduler::report(client, &objects, &set.rejections, AGENT).await
                    {
                        warn!(error = %cpm_core::exit::chain(&e), "cannot report scheduler webhook rejections");
                    }
                    return Ok(scheduler::render_scheduler_config(
                        &set.extenders,
                        kubeconfig,
                    ));
                }
                Err(e) => {
                    debug!(error = %e, "cannot list scheduler webhooks; keeping the current extenders");
                }
            }
        }
        match read_opt(root, SCHEDULER_CONFIG).map_err(PassError::runtime)? {
            Some(bytes) => Ok(String::from_utf8_lossy(&bytes)
                .trim_start_matches(HEADER)
                .to_string()),
            None => Ok(scheduler::render_scheduler_config(&[], kubeconfig)),
        }
    }
}

/// Restores what `p` changed: old contents back, created files removed.
fn restore(root: &NodeRoot, p: &cpm_core::plan::Plan) -> Result<(), RunError> {
    for op in p.ops.iter().rev() {
        let path = root.join(op.path()).map_err(|e| RunError::Read {
            path: op.path().into(),
            source: io::Error::other(e),
        })?;
        let err = |source| RunError::Read {
            path: path.clone(),
            source,
        };
        match op {
            Op::Replace { file, old } => {
                write_atomic(&path, old, file.mode, None, None).map_err(err)?;
            }
            Op::Create { .. } => remove(&path).map_err(err)?,
            Op::Delete { old, .. } => write_atomic(&path, old, 0o600, None, None).map_err(err)?,
            _ => {}
        }
    }
    Ok(())
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
