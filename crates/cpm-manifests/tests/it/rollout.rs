//! Version rollouts across three simulated masters: three node roots, the test API server, and
//! per node a simulated kubelet (mirror pods carrying each manifest's checksum, Ready unless the
//! test breaks that node at a version) plus component stubs answering `/readyz` and `/version`
//! for the image tag in the manifest the node currently has. Every manifest change the kubelets
//! see goes into one event log, from which serialisation and skew are checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use cpm_core::controlplanenode::{self as cpn, ControlPlaneNodeStatus, Phase};
use cpm_core::reconcile::{Agent, Mode};
use cpm_manifests::agent::ManifestsAgent;
use cpm_manifests::health::{Check, VerifyMode};
use cpm_manifests::layout::Component;
use cpm_manifests::metrics::ManifestMetrics;
use cpm_manifests::rollout::RolloutOptions;
use cpm_testing::apiserver::ApiServer;
use k8s_openapi::api::core::v1::{Event, Node as KubeNode, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
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
/// (node, image tag) pairs whose components never become ready.
type Broken = Arc<Mutex<Vec<(String, String)>>>;

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

/// The simulated kubelet of one node: records manifest changes and publishes mirror pods.
fn kubelet(
    client: kube::Client,
    name: &'static str,
    root: std::path::PathBuf,
    log: Log,
    broken: Broken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, "kube-system");
        let mut seen: BTreeMap<&'static str, (String, String, bool)> = BTreeMap::new();
        loop {
            for c in Component::ALL {
                let Ok(text) = std::fs::read_to_string(
                    root.join(format!("etc/kubernetes/manifests/{}.yaml", c.name())),
                ) else {
                    continue;
                };
                let tag = image_tag(&text);
                let sum = tag_of(&text, "cpm.dev/config-checksum: ");
                let ready = !broken
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(n, t)| n == name && *t == tag);
                let state = (tag.clone(), sum.clone(), ready);
                if seen.get(c.name()) == Some(&state) {
                    continue;
                }
                if seen.get(c.name()).is_none_or(|(t, _, _)| *t != tag) {
                    log.lock().unwrap().push(Change {
                        at: Instant::now(),
                        node: name.to_string(),
                        component: c.name(),
                        tag: tag.clone(),
                    });
                }
                let pod_name = format!("{}-{name}", c.name());
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": pod_name, "namespace": "kube-system", "annotations": {"cpm.dev/config-checksum": sum}},
                    "spec": {"containers": [{"name": c.name(), "image": format!("x:{tag}")}]},
                    "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
                }))
                .unwrap();
                let _ = pods.delete(&pod_name, &Default::default()).await;
                if pods.create(&PostParams::default(), &pod).await.is_ok() {
                    seen.insert(c.name(), state);
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
                let ready = !tag.is_empty()
                    && !broken
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(n, t)| n == name && *t == tag);
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
            tasks.push(kubelet(
                admin.clone(),
                name,
                root.clone(),
                log.clone(),
                broken.clone(),
            ));
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
        });
        let check = |c: Component, what: &str, version: bool| Check {
            url: format!("{}/{}/{what}", m.stub, c.name()),
            verify: VerifyMode::Insecure,
            git_version: version.then(String::new),
        };
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
}
