//! Version rollouts across three simulated masters: three node roots, the test API server, and
//! per node:
//! - a simulated kubelet: mirror pods carrying each manifest's checksum (Ready unless the test
//!   breaks that node at a version), and the status of image-holder pods (every image running,
//!   or `ErrImagePull` for an image the test makes unpullable on that node);
//! - an etcd stand-in for cpm-etcd: it rewrites the node's etcd manifest to the tag cpm-etcd's
//!   own version choice gives for the node's `ControlPlaneNode` record;
//! - component stubs answering `/readyz`, `/version` and etcd's `/health` for the image tag in
//!   the manifest the node currently has.
//!
//! Every manifest change the kubelets see goes into one event log, from which serialisation,
//! order and skew are checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use cpm_core::controlplanenode::{self as cpn, ControlPlaneNodeStatus, Phase};
use cpm_core::reconcile::{Agent, Mode};
use cpm_manifests::agent::ManifestsAgent;
use cpm_manifests::health::{Check, VerifyMode};
use cpm_manifests::holder::HolderOptions;
use cpm_manifests::layout::Component;
use cpm_manifests::metrics::ManifestMetrics;
use cpm_manifests::rollout::RolloutOptions;
use cpm_testing::apiserver::ApiServer;
use k8s_openapi::api::core::v1::{Event, Node as KubeNode, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::agent::Node;

const NAMES: [&str; 3] = ["master-1", "master-2", "master-3"];

/// One manifest change seen by a simulated kubelet.
#[derive(Debug, Clone)]
struct Change {
    at: Instant,
    node: String,
    component: &'static str,
    tag: String,
}

type Log = Arc<Mutex<Vec<Change>>>;
/// (node, image tag) pairs whose components never become ready (`<component>:<tag>` for one
/// component only); on another list, (node, image) pairs the node's kubelet cannot pull.
type Broken = Arc<Mutex<Vec<(String, String)>>>;
/// When each node's image-holder pod was first all running, and with which images.
type Pulled = Arc<Mutex<Vec<(Instant, String, Vec<String>)>>>;

/// The manifests the simulated kubelets run.
const WATCHED: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

struct Master {
    name: &'static str,
    fixture: Node,
    stub: String,
    registry: Arc<Mutex<prometheus_client::registry::Registry>>,
    metrics: ManifestMetrics,
}

struct Cluster {
    _server: ApiServer,
    admin: kube::Client,
    masters: Vec<Master>,
    log: Log,
    broken: Broken,
    unpullable: Broken,
    pulled: Pulled,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn tag_of(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(field))
        .map(|v| v.trim_matches(['"', '\'']).to_string())
        .unwrap_or_default()
}

fn image_tag(text: &str) -> String {
    tag_of(text, "image: ")
        .rsplit_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

fn minor(tag: &str) -> u32 {
    tag.trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The simulated kubelet's side of image-holder pods on node `name`: every container running,
/// except those whose image is unpullable there (`ErrImagePull`).
async fn hold_images(holders: &Api<Pod>, name: &str, unpullable: &Broken, pulled: &Pulled) {
    let Ok(list) = holders
        .list(&ListParams::default().labels("app.kubernetes.io/name=cpm-image-holder"))
        .await
    else {
        return;
    };
    for pod in list.items {
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.node_name.as_deref() != Some(name) {
            continue;
        }
        let mut all = true;
        let statuses: Vec<serde_json::Value> = spec
            .containers
            .iter()
            .map(|c| {
                let image = c.image.clone().unwrap_or_default();
                let missing = unpullable
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(n, i)| n == name && *i == image);
                all &= !missing;
                let state = if missing {
                    serde_json::json!({"waiting": {"reason": "ErrImagePull", "message": format!("pull access denied for {image}")}})
                } else {
                    serde_json::json!({"running": {}})
                };
                serde_json::json!({"name": c.name, "image": image, "imageID": "", "ready": !missing, "restartCount": 0, "state": state})
            })
            .collect();
        let status = serde_json::json!({"phase": if all { "Running" } else { "Pending" }, "containerStatuses": statuses});
        if serde_json::to_value(&pod.status).unwrap() == status {
            continue;
        }
        let pod_name = pod.metadata.name.clone().unwrap();
        let patched = holders
            .patch_status(
                &pod_name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await;
        if patched.is_ok() && all {
            let images = spec
                .containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect();
            pulled
                .lock()
                .unwrap()
                .push((Instant::now(), name.to_string(), images));
        }
    }
}

/// Whether `component` at `tag` on node `name` is broken (never ready).
fn is_broken(broken: &Broken, name: &str, component: &str, tag: &str) -> bool {
    broken
        .lock()
        .unwrap()
        .iter()
        .any(|(n, t)| n == name && (t == tag || *t == format!("{component}:{tag}")))
}

/// The manifest of the etcd stand-in at `tag`.
fn etcd_manifest(tag: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  annotations:\n    cpm.dev/config-checksum: sum-{tag}\nspec:\n  containers:\n  - name: etcd\n    image: registry.k8s.io/etcd:{tag}\n"
    )
}

/// cpm-etcd's part, stood in: the etcd manifest of node `name` follows its record, by cpm-etcd's
/// own reading of it (`Record`), choice of minor and direction (`choose`) and tag (`etcd_tag`).
fn etcd_follower(
    client: kube::Client,
    name: &'static str,
    root: std::path::PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api = cpn::api(client);
        let path = root.join("etc/kubernetes/manifests/etcd.yaml");
        loop {
            if let Ok(Some(o)) = api.get_opt(name).await {
                let record = cpm_etcd::record::Record::from_object(name, &o);
                let running = image_tag(&std::fs::read_to_string(&path).unwrap_or_default());
                let (minor, how) =
                    cpm_etcd::record::choose(&record, "1.32".parse().unwrap(), Some(&running));
                let mapped = cpm_core::versions::lookup(minor).unwrap().etcd;
                let tag = cpm_core::versions::etcd_tag(mapped, Some(&running), how);
                if tag != running {
                    cpm_core::apply::write_atomic(
                        &path,
                        etcd_manifest(tag).as_bytes(),
                        0o600,
                        None,
                        None,
                    )
                    .unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// The simulated kubelet of one node: records manifest changes, publishes mirror pods and runs
/// image-holder pods.
fn kubelet(
    client: kube::Client,
    name: &'static str,
    root: std::path::PathBuf,
    log: Log,
    broken: Broken,
    unpullable: Broken,
    pulled: Pulled,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        let holders: Api<Pod> = Api::namespaced(client, "cpm-system");
        let mut seen: BTreeMap<&'static str, (String, String, bool)> = BTreeMap::new();
        loop {
            hold_images(&holders, name, &unpullable, &pulled).await;
            for c in WATCHED {
                let Ok(text) = std::fs::read_to_string(
                    root.join(format!("etc/kubernetes/manifests/{c}.yaml")),
                ) else {
                    continue;
                };
                let tag = image_tag(&text);
                let sum = tag_of(&text, "cpm.dev/config-checksum: ");
                let ready = !is_broken(&broken, name, c, &tag);
                let state = (tag.clone(), sum.clone(), ready);
                if seen.get(c) == Some(&state) {
                    continue;
                }
                if seen.get(c).is_none_or(|(t, _, _)| *t != tag) {
                    log.lock().unwrap().push(Change {
                        at: Instant::now(),
                        node: name.to_string(),
                        component: c,
                        tag: tag.clone(),
                    });
                }
                let pod_name = format!("{c}-{name}");
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": pod_name, "namespace": "kube-system", "annotations": {"cpm.dev/config-checksum": sum}},
                    "spec": {"containers": [{"name": c, "image": format!("x:{tag}")}]},
                    "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
                }))
                .unwrap();
                let _ = pods.delete(&pod_name, &Default::default()).await;
                if pods.create(&PostParams::default(), &pod).await.is_ok() {
                    seen.insert(c, state);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Component stubs of one node: `/<component>/readyz` and `/<component>/version` answer for the
/// image tag in the manifest the node has now.
async fn stub(
    name: &'static str,
    root: std::path::PathBuf,
    broken: Broken,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let root = root.clone();
            let broken = broken.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (component, what) = path
                    .trim_start_matches('/')
                    .split_once('/')
                    .unwrap_or(("", ""));
                let text = std::fs::read_to_string(
                    root.join(format!("etc/kubernetes/manifests/{component}.yaml")),
                )
                .unwrap_or_default();
                let tag = image_tag(&text);
                let ready = !tag.is_empty() && !is_broken(&broken, name, component, &tag);
                let (status, body) = match (what, ready) {
                    ("version", true) => (200, format!("{{\"gitVersion\":\"{tag}\"}}")),
                    (_, true) => (200, "ok".to_string()),
                    (_, false) => (503, "not ready".to_string()),
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), task)
}

fn set_version(node: &Node, version: &str) {
    cpm_core::apply::write_atomic(
        &node.config,
        cpm_testing::fixtures::config_yaml("")
            .replace(
                "kubernetesVersion: \"1.33\"",
                &format!("kubernetesVersion: \"{version}\""),
            )
            .as_bytes(),
        0o600,
        None,
        None,
    )
    .unwrap();
}

impl Cluster {
    async fn start(version: &str) -> Self {
        let server = ApiServer::start().await.unwrap();
        let admin = server.admin_client().await.unwrap();
        let crd: CustomResourceDefinition = serde_json::from_value(cpn::crd()).unwrap();
        Api::<CustomResourceDefinition>::all(admin.clone())
            .create(&PostParams::default(), &crd)
            .await
            .unwrap();
        let nodes: Api<KubeNode> = Api::all(admin.clone());
        let log: Log = Arc::default();
        let broken: Broken = Arc::default();
        let unpullable: Broken = Arc::default();
        let pulled: Pulled = Arc::default();
        let etcd_tag = cpm_core::versions::lookup(version.parse().unwrap())
            .unwrap()
            .etcd;
        let mut masters = Vec::new();
        let mut tasks = Vec::new();
        for (i, name) in NAMES.into_iter().enumerate() {
            let node: KubeNode = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"node-role.kubernetes.io/control-plane": ""}},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": format!("192.0.2.{}", 11 + i)}],
                    "nodeInfo": {"kubeletVersion": "v1.32.9", "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""},
                },
            }))
            .unwrap();
            nodes.create(&PostParams::default(), &node).await.unwrap();
            let fixture = Node::new("");
            set_version(&fixture, version);
            let root = fixture.root.path().to_path_buf();
            let etcd = root.join("etc/kubernetes/manifests/etcd.yaml");
            std::fs::create_dir_all(etcd.parent().unwrap()).unwrap();
            cpm_core::apply::write_atomic(
                &etcd,
                etcd_manifest(etcd_tag).as_bytes(),
                0o600,
                None,
                None,
            )
            .unwrap();
            tasks.push(kubelet(
                admin.clone(),
                name,
                root.clone(),
                log.clone(),
                broken.clone(),
                unpullable.clone(),
                pulled.clone(),
            ));
            tasks.push(etcd_follower(admin.clone(), name, root.clone()));
            let (url, task) = stub(name, root, broken.clone()).await;
            tasks.push(task);
            let mut registry = prometheus_client::registry::Registry::default();
            let metrics = ManifestMetrics::register(&mut registry);
            masters.push(Master {
                name,
                fixture,
                stub: url,
                registry: Arc::new(Mutex::new(registry)),
                metrics,
            });
        }
        Self {
            _server: server,
            admin,
            masters,
            log,
            broken,
            unpullable,
            pulled,
            tasks,
        }
    }

    /// A fresh agent of master `i` (a restart loses everything in memory).
    fn agent(&self, i: usize) -> ManifestsAgent {
        let m = &self.masters[i];
        let cli = cpm_manifests::Cli::try_parse_from([
            "cpm-manifests",
            "--root",
            m.fixture.root.path().to_str().unwrap(),
            "--config",
            m.fixture.config.to_str().unwrap(),
            "--node-name",
            m.name,
            "--node-ip",
            &format!("192.0.2.{}", 11 + i),
        ])
        .unwrap();
        let mut a = ManifestsAgent::new(
            cli.common,
            Some(m.metrics.clone()),
            Some(self.admin.clone()),
        );
        a.gate_timeout = Duration::from_secs(2);
        a.gate_interval = Duration::from_millis(20);
        a.gate_settle = Duration::ZERO;
        a.rollout = cpm_manifests::rollout::Rollout::new(RolloutOptions {
            lease_namespace: "kube-system".into(),
            lease_duration: Duration::from_secs(60),
            holders: Some(HolderOptions {
                namespace: "cpm-system".into(),
                image: "cpm/cpm-holder:test".into(),
            }),
        });
        let check = |c: Component, what: &str, version: bool| Check {
            url: format!("{}/{}/{what}", m.stub, c.name()),
            verify: VerifyMode::Insecure,
            git_version: version.then(String::new),
        };
        a.etcd_checks = Some(vec![Check {
            url: format!("{}/etcd/health", m.stub),
            verify: VerifyMode::Insecure,
            git_version: None,
        }]);
        a.checks = Some(
            Component::ALL
                .into_iter()
                .map(|c| {
                    let mut v = vec![check(c, "readyz", false)];
                    if c == Component::Apiserver {
                        v.push(check(c, "version", true));
                    }
                    (c, v)
                })
                .collect(),
        );
        a
    }

    fn set_version(&self, version: &str) {
        for m in &self.masters {
            set_version(&m.fixture, version);
        }
    }

    async fn status(&self, i: usize) -> ControlPlaneNodeStatus {
        cpn::status_of(
            &cpn::api(self.admin.clone())
                .get(self.masters[i].name)
                .await
                .unwrap(),
        )
    }

    fn apiserver_tag(&self, i: usize) -> String {
        image_tag(
            &self.masters[i]
                .fixture
                .read("/etc/kubernetes/manifests/kube-apiserver.yaml"),
        )
    }

    fn etcd_tag(&self, i: usize) -> String {
        image_tag(
            &self.masters[i]
                .fixture
                .read("/etc/kubernetes/manifests/etcd.yaml"),
        )
    }

    /// The image-holder pods left in the cluster.
    async fn holder_pods(&self) -> Vec<String> {
        Api::<Pod>::namespaced(self.admin.clone(), "cpm-system")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    /// Checks that every master had the images of `tag` (its holder pod all running) before its
    /// first manifest named `tag`.
    fn check_pulled_first(&self, log: &[Change], tag: &str) {
        let pulled = self.pulled.lock().unwrap().clone();
        for n in NAMES {
            let first = log
                .iter()
                .find(|c| c.node == n && c.tag == tag)
                .unwrap_or_else(|| panic!("{n} never ran {tag}"));
            assert!(
                pulled.iter().any(|(at, node, images)| node == n
                    && *at < first.at
                    && images.iter().any(|i| i.ends_with(&format!(":{tag}")))),
                "{n} ran {tag} before its holder pod had the images: {pulled:?}"
            );
        }
    }

    /// Runs passes on all masters at once, round after round, until every master runs
    /// `version` (or `rounds` run out); returns the errors seen.
    async fn converge_concurrently(
        &self,
        agents: &mut [ManifestsAgent],
        version: &str,
        rounds: usize,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for _ in 0..rounds {
            let results =
                futures::future::join_all(agents.iter_mut().map(|a| a.pass(Mode::Apply))).await;
            errors.extend(
                results
                    .into_iter()
                    .filter_map(|r| r.err().map(|e| cpm_core::exit::chain(&e))),
            );
            let mut done = true;
            for i in 0..3 {
                let s = self.status(i).await;
                done &= s.version == version && s.rollout.phase != Phase::InProgress;
            }
            if done {
                break;
            }
        }
        errors
    }

    /// Waits for the kubelets to have seen the current manifests.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Checks the event log: the masters' changes never overlap in time, and the apiserver
    /// minors of the masters never differ by more than one.
    fn check_log(&self) -> Vec<Change> {
        let log = self.log.lock().unwrap().clone();
        // Per node and per version step, the window from its first to its last change.
        let mut windows: Vec<(String, Instant, Instant)> = Vec::new();
        let mut last_tag: BTreeMap<String, String> = BTreeMap::new();
        for c in &log {
            match windows.last_mut() {
                Some((n, _, end)) if *n == c.node => *end = c.at,
                _ => windows.push((c.node.clone(), c.at, c.at)),
            }
            if c.component == "kube-apiserver" {
                last_tag.insert(c.node.clone(), c.tag.clone());
                let minors: Vec<u32> = last_tag.values().map(|t| minor(t)).collect();
                let (lo, hi) = (minors.iter().min().unwrap(), minors.iter().max().unwrap());
                assert!(
                    hi - lo <= 1,
                    "skew over one minor after {c:?}: {last_tag:?}"
                );
            }
        }
        // Windows alternate between nodes, so "at most one master changes at any moment"
        // means no node comes back to change again while another one's step is under way: each
        // node's window closes before the next node's opens (the log is in time order).
        for w in windows.windows(2) {
            assert!(
                w[0].2 <= w[1].1,
                "changes of {} and {} overlap",
                w[0].0,
                w[1].0
            );
        }
        log
    }
}

/// The nodes in the order their blocks of changes appear in the log (after `skip` entries).
fn blocks(log: &[Change], skip: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in &log[skip..] {
        if out.last() != Some(&c.node) {
            out.push(c.node.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_then_downgrade_moves_one_master_at_a_time_without_skew() {
    let cluster = Cluster::start("1.32").await;
    let mut agents: Vec<ManifestsAgent> = (0..3).map(|i| cluster.agent(i)).collect();
    let errors = cluster.converge_concurrently(&mut agents, "1.32", 3).await;
    assert!(errors.is_empty(), "{errors:?}");
    cluster.settle().await;
    let start = cluster.log.lock().unwrap().len();
    for i in 0..3 {
        assert_eq!(cluster.apiserver_tag(i), "v1.32.9");
    }

    cluster.set_version("1.33");
    let errors = cluster.converge_concurrently(&mut agents, "1.33", 20).await;
    assert!(errors.is_empty(), "{errors:?}");
    cluster.settle().await;
    for i in 0..3 {
        assert_eq!(cluster.apiserver_tag(i), "v1.33.5");
        let s = cluster.status(i).await;
        assert_eq!(
            (s.version.as_str(), s.highest_version.as_str()),
            ("1.33", "1.33")
        );
        assert_eq!(s.rollout.phase, Phase::Succeeded);
        assert_eq!(s.components["kube-scheduler"].version, "v1.33.5");
    }
    let log = cluster.check_log();
    let up = blocks(&log, start);
    assert_eq!(up.len(), 3, "each master changed in one block: {up:?}");
    // Upgrade order on a master: etcd (cpm-etcd, following the record) first, then the apiserver.
    let first: Vec<(&str, &str)> = log[start..]
        .iter()
        .filter(|c| c.node == log[start].node)
        .map(|c| (c.component, c.tag.as_str()))
        .collect();
    assert_eq!(
        first,
        [
            ("etcd", "3.5.21-0"),
            ("kube-apiserver", "v1.33.5"),
            ("kube-controller-manager", "v1.33.5"),
            ("kube-scheduler", "v1.33.5")
        ]
    );
    cluster.check_pulled_first(&log, "v1.33.5");
    assert_eq!(
        cluster.holder_pods().await,
        Vec::<String>::new(),
        "holder pods go once the step is over"
    );
    let s = cluster.status(0).await;
    assert!(s.certificates.contains_key("ca.crt"), "{s:?}");
    assert_eq!(s.certificate_expiry.as_ref(), s.certificates.values().min());
    assert_eq!(s.waiting, None);
    let mid = log.len();

    cluster.set_version("1.32");
    let errors = cluster.converge_concurrently(&mut agents, "1.32", 20).await;
    assert!(errors.is_empty(), "{errors:?}");
    cluster.settle().await;
    for i in 0..3 {
        assert_eq!(cluster.apiserver_tag(i), "v1.32.9");
        let s = cluster.status(i).await;
        assert_eq!(
            (s.version.as_str(), s.highest_version.as_str()),
            ("1.32", "1.33")
        );
        assert_eq!(cluster.etcd_tag(i), "3.5.21-0", "a downgrade keeps etcd");
    }
    let log = cluster.check_log();
    assert_eq!(blocks(&log, mid).len(), 3);
    // Downgrade order on a master: the scheduler first, the apiserver last.
    let first: Vec<&str> = log[mid..]
        .iter()
        .filter(|c| c.node == log[mid].node)
        .map(|c| c.component)
        .collect();
    assert_eq!(
        first,
        [
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver"
        ]
    );
    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), "default");
    let succeeded = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RolloutSucceeded"))
        .count();
    assert_eq!(succeeded, 6, "one Event per master and step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_that_never_gets_ready_is_rolled_back_and_halts_the_rollout() {
    let cluster = Cluster::start("1.32").await;
    let mut agents: Vec<ManifestsAgent> = (0..3).map(|i| cluster.agent(i)).collect();
    for a in &mut agents {
        a.pass(Mode::Apply).await.unwrap();
    }
    cluster.settle().await;
    let before3 = cluster.masters[2]
        .fixture
        .read("/etc/kubernetes/manifests/kube-apiserver.yaml");
    cluster
        .broken
        .lock()
        .unwrap()
        .push(("master-2".into(), "v1.33.5".into()));
    cluster.set_version("1.33");
    // Masters in name order: master-1 moves, master-2 fails and is restored, master-3 waits.
    let mut errors = Vec::new();
    for round in 0..3 {
        for a in agents.iter_mut() {
            if let Err(e) = a.pass(Mode::Apply).await {
                errors.push((round, cpm_core::exit::chain(&e)));
            }
        }
    }
    cluster.settle().await;
    assert_eq!(cluster.apiserver_tag(0), "v1.33.5");
    assert_eq!(cluster.apiserver_tag(1), "v1.32.9", "master-2 restored");
    assert_eq!(
        cluster.etcd_tag(1),
        "3.5.16-0",
        "etcd undoes the failed step's patch upgrade"
    );
    assert_eq!(
        cluster.masters[2]
            .fixture
            .read("/etc/kubernetes/manifests/kube-apiserver.yaml"),
        before3,
        "master-3 untouched"
    );
    assert!(
        !cluster
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.node == "master-3" && c.tag == "v1.33.5"),
        "master-3 never changed"
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].1.contains("kube-apiserver not healthy"),
        "{errors:?}"
    );
    let s2 = cluster.status(1).await;
    assert_eq!(s2.rollout.phase, Phase::Failed);
    assert_eq!(
        (
            s2.rollout.from.as_str(),
            s2.rollout.to.as_str(),
            s2.version.as_str()
        ),
        ("1.32", "1.33", "1.32")
    );
    assert!(
        s2.rollout
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("kube-apiserver not healthy"),
        "{s2:?}"
    );
    assert_eq!(cluster.status(2).await.version, "1.32");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(
        &mut text,
        &cluster.masters[1].registry.lock().unwrap(),
    )
    .unwrap();
    assert!(
        text.contains("cpm_rollout_failed{node=\"master-2\"} 1"),
        "{text}"
    );
    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), "default");
    assert!(
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolloutFailed")
                && e.involved_object.name.as_deref() == Some("master-2"))
    );

    // The operator fixes the node and resumes: master-2 and then master-3 move.
    cluster.broken.lock().unwrap().clear();
    cpn::api(cluster.admin.clone())
        .patch(
            "master-2",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {cpn::RESUME_ANNOTATION: "true"}}}),
            ),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        for a in agents.iter_mut() {
            a.pass(Mode::Apply).await.unwrap();
        }
    }
    for i in 0..3 {
        assert_eq!(cluster.apiserver_tag(i), "v1.33.5");
        assert_eq!(cluster.status(i).await.version, "1.33");
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(
        &mut text,
        &cluster.masters[1].registry.lock().unwrap(),
    )
    .unwrap();
    assert!(
        text.contains("cpm_rollout_failed{node=\"master-2\"} 0"),
        "{text}"
    );
    cluster.check_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_later_component_failing_restores_every_manifest_of_the_step() {
    let cluster = Cluster::start("1.32").await;
    let mut agents: Vec<ManifestsAgent> = (0..3).map(|i| cluster.agent(i)).collect();
    for a in &mut agents {
        a.pass(Mode::Apply).await.unwrap();
    }
    cluster.settle().await;
    let root = &cluster.masters[0].fixture.root;
    let manifests = |root: &cpm_testing::root::FakeRoot| -> BTreeMap<String, (u32, String)> {
        root.entries()
            .into_iter()
            .filter(|(p, _)| p.starts_with("etc/kubernetes/manifests/"))
            .map(|(p, e)| (p, (e.mode, e.digest)))
            .collect()
    };
    let before = manifests(root);
    assert_eq!(before.len(), 4, "{before:?}");
    // master-1's scheduler never gets ready at 1.33; etcd, the apiserver and the
    // controller-manager do, so they have moved when the scheduler's gate fails.
    cluster
        .broken
        .lock()
        .unwrap()
        .push(("master-1".into(), "kube-scheduler:v1.33.5".into()));
    cluster.set_version("1.33");
    let mark = cluster.log.lock().unwrap().len();
    let mut failed = None;
    for _ in 0..5 {
        if let Err(e) = agents[0].pass(Mode::Apply).await {
            failed = Some(cpm_core::exit::chain(&e));
            break;
        }
        cluster.settle().await;
    }
    let text = failed.expect("master-1's step failed");
    assert!(text.contains("kube-scheduler not healthy"), "{text}");
    let moved: Vec<(&str, String)> = cluster.log.lock().unwrap()[mark..]
        .iter()
        .filter(|c| c.node == "master-1")
        .map(|c| (c.component, c.tag.clone()))
        .collect();
    for want in [
        ("etcd", "3.5.21-0"),
        ("kube-apiserver", "v1.33.5"),
        ("kube-controller-manager", "v1.33.5"),
        ("kube-scheduler", "v1.33.5"),
    ] {
        assert!(
            moved.contains(&(want.0, want.1.to_string())),
            "{want:?} was written before the scheduler failed: {moved:?}"
        );
    }
    // Every manifest is back as it was, byte for byte: the three cpm-manifests wrote (from the
    // step's backup) and etcd's (cpm-etcd, here its stand-in, undoes its patch step once the
    // record says Failed).
    let mut after = manifests(root);
    for _ in 0..200 {
        if after == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        after = manifests(root);
    }
    assert_eq!(after, before, "every manifest restored");
    assert_eq!(cluster.apiserver_tag(0), "v1.32.9");
    let s = cluster.status(0).await;
    assert_eq!(
        (s.rollout.phase, s.version.as_str()),
        (Phase::Failed, "1.32")
    );
    assert!(
        s.rollout
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("kube-scheduler not healthy"),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_minors_go_one_at_a_time_restarts_resume_and_the_floor_holds() {
    let cluster = Cluster::start("1.32").await;
    let mut agents: Vec<ManifestsAgent> = (0..3).map(|i| cluster.agent(i)).collect();
    for a in &mut agents {
        a.pass(Mode::Apply).await.unwrap();
    }
    cluster.settle().await;
    cluster.set_version("1.34");
    // master-1 starts, but its components are slow: the agent is killed in the middle.
    cluster
        .broken
        .lock()
        .unwrap()
        .push(("master-1".into(), "v1.33.5".into()));
    // The first pass only asks for the images of 1.33 (a holder pod); the kubelet pulls them.
    agents[0].pass(Mode::Apply).await.unwrap();
    assert!(
        cluster
            .status(0)
            .await
            .waiting
            .unwrap_or_default()
            .starts_with("moving to 1.33 waits for its images: holder pod cpm-images-")
    );
    cluster.settle().await;
    let killed =
        tokio::time::timeout(Duration::from_millis(500), agents[0].pass(Mode::Apply)).await;
    assert!(killed.is_err(), "the pass was still waiting on the gate");
    let s1 = cluster.status(0).await;
    assert_eq!(
        (s1.rollout.phase, s1.rollout.to.as_str()),
        (Phase::InProgress, "1.33"),
        "1.34 requested: 1.33 first"
    );
    // Meanwhile the others wait: the Lease is master-1's.
    for a in agents.iter_mut().skip(1) {
        a.pass(Mode::Apply).await.unwrap();
    }
    assert_eq!(cluster.apiserver_tag(1), "v1.32.9");
    assert_eq!(cluster.apiserver_tag(2), "v1.32.9");
    // A restarted agent (nothing in memory) resumes from the cluster's record.
    cluster.broken.lock().unwrap().clear();
    agents[0] = cluster.agent(0);
    agents[0].pass(Mode::Apply).await.unwrap();
    assert_eq!(cluster.status(0).await.version, "1.33");
    let errors = cluster.converge_concurrently(&mut agents, "1.34", 30).await;
    assert!(errors.is_empty(), "{errors:?}");
    cluster.settle().await;
    for i in 0..3 {
        assert_eq!(cluster.apiserver_tag(i), "v1.34.1");
    }
    let log = cluster.check_log();
    // Every master passed through 1.33.
    for n in NAMES {
        assert!(
            log.iter().any(|c| c.node == n && c.tag == "v1.33.5"),
            "{n} skipped 1.33"
        );
    }

    // 1.34 has run: 1.32 is below the floor.
    cluster.set_version("1.32");
    let before: Vec<String> = (0..3).map(|i| cluster.apiserver_tag(i)).collect();
    let err = agents[2].pass(Mode::Apply).await.unwrap_err();
    let text = cpm_core::exit::chain(&err);
    assert!(
        text.contains("kubernetesVersion 1.32 is refused: this cluster has run 1.34, and a downgrade may go at most one minor below that (to 1.33)"),
        "{text}"
    );
    let after: Vec<String> = (0..3).map(|i| cluster.apiserver_tag(i)).collect();
    assert_eq!(before, after);

    // 1.33 is within the floor; etcd 3.6 stays (an older etcd minor cannot read its data).
    cluster.set_version("1.33");
    let errors = cluster.converge_concurrently(&mut agents, "1.33", 30).await;
    assert!(errors.is_empty(), "{errors:?}");
    cluster.settle().await;
    for i in 0..3 {
        assert_eq!(cluster.apiserver_tag(i), "v1.33.5");
        assert_eq!(cluster.etcd_tag(i), "3.6.4-0");
    }
    cluster.check_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_images_hold_a_master_back_and_an_unhealthy_etcd_stops_the_step_before_the_apiserver()
 {
    let cluster = Cluster::start("1.32").await;
    let mut agents: Vec<ManifestsAgent> = (0..3).map(|i| cluster.agent(i)).collect();
    for a in &mut agents {
        a.pass(Mode::Apply).await.unwrap();
    }
    cluster.settle().await;
    let before2 = cluster.masters[1]
        .fixture
        .read("/etc/kubernetes/manifests/kube-apiserver.yaml");
    let image = "registry.k8s.io/kube-apiserver:v1.33.5";
    cluster
        .unpullable
        .lock()
        .unwrap()
        .push(("master-2".into(), image.into()));
    cluster.set_version("1.33");
    // master-2 cannot pull: it waits, untouched and not failed; the others move past it.
    for _ in 0..3 {
        for a in agents.iter_mut() {
            a.pass(Mode::Apply).await.unwrap();
        }
        cluster.settle().await;
    }
    assert_eq!(cluster.apiserver_tag(0), "v1.33.5");
    assert_eq!(cluster.apiserver_tag(2), "v1.33.5");
    assert_eq!(
        cluster.masters[1]
            .fixture
            .read("/etc/kubernetes/manifests/kube-apiserver.yaml"),
        before2
    );
    assert_eq!(cluster.etcd_tag(1), "3.5.16-0");
    let s2 = cluster.status(1).await;
    assert_eq!(
        (s2.version.as_str(), s2.rollout.phase),
        ("1.32", Phase::None)
    );
    let waiting = s2.waiting.unwrap_or_default();
    assert!(
        waiting.contains(&format!(
            "moving to 1.33 waits for its images: image {image} is not present on the node: ErrImagePull: pull access denied for {image}"
        )),
        "{waiting}"
    );
    assert_eq!(
        cluster.holder_pods().await.len(),
        1,
        "master-2's holder stays"
    );
    // The image arrives (the holder pod's next status): master-2 moves.
    cluster.unpullable.lock().unwrap().clear();
    let errors = cluster.converge_concurrently(&mut agents, "1.33", 10).await;
    assert!(errors.is_empty(), "{errors:?}");
    cluster.settle().await;
    assert_eq!(cluster.apiserver_tag(1), "v1.33.5");
    assert_eq!(cluster.status(1).await.waiting, None);
    let log = cluster.check_log();
    cluster.check_pulled_first(&log, "v1.33.5");
    assert!(cluster.holder_pods().await.is_empty());

    // 1.34 brings etcd 3.6, which never gets healthy on master-1: its step stops at etcd, the
    // apiserver is never written, and the rollout halts.
    cluster
        .broken
        .lock()
        .unwrap()
        .push(("master-1".into(), "3.6.4-0".into()));
    let mark = cluster.log.lock().unwrap().len();
    let before: Vec<String> = (0..3).map(|i| cluster.apiserver_tag(i)).collect();
    cluster.set_version("1.34");
    let mut errors = Vec::new();
    for _ in 0..2 {
        for a in agents.iter_mut() {
            if let Err(e) = a.pass(Mode::Apply).await {
                errors.push(cpm_core::exit::chain(&e));
            }
        }
    }
    cluster.settle().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("etcd not healthy"), "{errors:?}");
    let after: Vec<String> = (0..3).map(|i| cluster.apiserver_tag(i)).collect();
    assert_eq!(before, after, "no apiserver moved");
    let changes: Vec<(String, &str, String)> = cluster.log.lock().unwrap()[mark..]
        .iter()
        .map(|c| (c.node.clone(), c.component, c.tag.clone()))
        .collect();
    assert_eq!(
        changes,
        [("master-1".to_string(), "etcd", "3.6.4-0".to_string())],
        "only master-1's etcd moved, and a failed etcd minor upgrade is not undone"
    );
    let s1 = cluster.status(0).await;
    assert_eq!(s1.rollout.phase, Phase::Failed);
    assert!(
        s1.rollout
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("etcd not healthy"),
        "{s1:?}"
    );
    let s3 = cluster.status(2).await;
    assert!(
        s3.waiting
            .as_deref()
            .unwrap_or_default()
            .starts_with("rollout halted: master-1 failed to move from 1.33 to 1.34"),
        "{s3:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_etcd_check_is_what_a_real_etcd_serves_on_cpm_etcd_s_metrics_listener() {
    // cpm-etcd's manifest listens for metrics where the gate's default check looks.
    assert_eq!(
        cpm_manifests::health::ETCD_METRICS_URL,
        cpm_etcd::manifest::METRICS_URL
    );
    let bin = cpm_testing::etcd::etcd_binary().expect("etcd (installed by .ci/install-deps)");
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = cpm_testing::etcd::EtcdProcess::start(
        &bin,
        &cpm_testing::etcd::EtcdOptions::single("gate", &dir.path().join("data"), None),
    )
    .unwrap();
    let checks = [Check {
        url: format!("{}/health", etcd.metrics_url),
        verify: VerifyMode::Insecure,
        git_version: None,
    }];
    let wait = |timeout| {
        cpm_manifests::health::wait_healthy_named(
            "etcd",
            &checks,
            &[],
            timeout,
            Duration::from_millis(50),
        )
    };
    wait(Duration::from_secs(10)).await.unwrap();
    etcd.kill();
    let err = wait(Duration::from_millis(200)).await.unwrap_err();
    assert!(err.to_string().starts_with("etcd not healthy"), "{err}");
}
