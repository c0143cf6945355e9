//! etcd moves only inside its master's rollout step: a master rendered at 1.32 whose
//! configuration asks 1.34 keeps its etcd while its `ControlPlaneNode` record does not say to
//! move — the API unreachable (a kubeconfig naming a closed port), no `--kubeconfig`, the CRD
//! missing, no record, an error answer, a record naming no supported minor — and moves when the
//! record's step says so. A fresh node with nothing rendered starts at the configured minor.

use clap::Parser;
use cpm_core::config::KeyAlgorithm;
use cpm_core::controlplanenode as cpn;
use cpm_core::reconcile::{Agent, Mode};
use cpm_etcd::agent::EtcdAgent;
use cpm_testing::apiserver::{ApiServer, Identity, RequestMatch, UserInfo};
use cpm_testing::fixtures::{ca_bundle, config_yaml, etcd_pki};
use cpm_testing::process::{code, stderr};
use cpm_testing::root::FakeRoot;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, PostParams};

const NAME: &str = "master-1";
const IP: &str = "127.0.17.1";

struct Master {
    root: FakeRoot,
    inputs: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Master {
    fn new(version: &str) -> Self {
        let inputs = tempfile::tempdir().unwrap();
        let bundle = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
        let config = inputs.path().join("config.yaml");
        let root = FakeRoot::new();
        etcd_pki(root.path(), &bundle, NAME, IP);
        let m = Self {
            root,
            inputs,
            config,
        };
        m.set_version(version);
        m
    }

    fn set_version(&self, version: &str) {
        let text = config_yaml("").replace(
            "kubernetesVersion: \"1.33\"",
            &format!("kubernetesVersion: \"{version}\""),
        );
        cpm_core::apply::write_atomic(&self.config, text.as_bytes(), 0o600, None, None).unwrap();
    }

    fn args(&self) -> Vec<String> {
        [
            "--root",
            self.root.path().to_str().unwrap(),
            "--config",
            self.config.to_str().unwrap(),
            "--node-name",
            NAME,
            "--node-ip",
            IP,
        ]
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    fn run(&self, extra: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_cpm-etcd"))
            .args(self.args())
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    fn agent(&self, kube: Option<kube::Client>) -> EtcdAgent {
        let mut argv = vec!["cpm-etcd".to_string()];
        argv.extend(self.args());
        EtcdAgent::new(cpm_etcd::Cli::try_parse_from(argv).unwrap().common, kube)
    }

    /// The etcd image tag of the manifest on the node.
    fn etcd_tag(&self) -> String {
        let text = String::from_utf8(self.root.read("etc/kubernetes/manifests/etcd.yaml")).unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("image: "))
            .and_then(|i| i.trim_matches(['"', '\'']).rsplit_once(':'))
            .map(|(_, t)| t.to_string())
            .unwrap_or_default()
    }
}

/// A kubeconfig naming an API server that is gone (its port closed).
async fn closed_port_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let server = ApiServer::start().await.unwrap();
    let yaml = server
        .kubeconfig_yaml(&Identity::Cert(UserInfo::new("admin", &["system:masters"])))
        .unwrap();
    drop(server);
    let path = dir.join("closed.conf");
    cpm_core::apply::write_atomic(&path, yaml.as_bytes(), 0o600, None, None).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_keeps_the_etcd_that_runs_and_says_so() {
    let m = Master::new("1.32");
    // A fresh node with nothing rendered starts at the configured minor.
    let out = m.run(&["--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(m.etcd_tag(), "3.5.16-0");
    let before = m.root.read("etc/kubernetes/manifests/etcd.yaml");

    // The configuration asks 1.34; the API cannot be read.
    m.set_version("1.34");
    let kubeconfig = closed_port_kubeconfig(m.inputs.path()).await;
    let kubeconfig = kubeconfig.to_str().unwrap();
    for mode in ["--check", "--once"] {
        let out = m.run(&[mode, "--kubeconfig", kubeconfig]);
        assert_eq!(code(&out), 0, "{mode}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains("WARN")
                && text.contains(
                    "cannot read this master's ControlPlaneNode record: etcd keeps the tag it runs"
                )
                && text.contains("running=3.5.16-0 configured=1.34"),
            "{mode}: {text}"
        );
    }
    assert_eq!(
        m.root.read("etc/kubernetes/manifests/etcd.yaml"),
        before,
        "etcd stays at 3.5.16-0"
    );

    // Without --kubeconfig nothing can serialise the move either.
    let out = m.run(&["--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("WARN")
            && stderr(&out).contains("no --kubeconfig: etcd keeps the tag it runs")
            && stderr(&out).contains("running=3.5.16-0 configured=1.34"),
        "{}",
        stderr(&out)
    );
    assert_eq!(m.root.read("etc/kubernetes/manifests/etcd.yaml"), before);

    // A fresh node at 1.34 bootstraps at 1.34.
    let fresh = Master::new("1.34");
    let out = fresh.run(&["--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fresh.etcd_tag(), "3.6.4-0");
}

fn readable(registry: &prometheus_client::registry::Registry) -> String {
    cpm_core::metrics::encode(registry)
        .lines()
        .find(|l| l.starts_with("cpm_etcd_rollout_record_readable "))
        .unwrap_or_default()
        .to_string()
}

async fn set_record(api: &Api<DynamicObject>, status: serde_json::Value) {
    let _ = api.delete(NAME, &Default::default()).await;
    let mut obj = DynamicObject::new(NAME, &cpn::api_resource());
    obj.data = serde_json::json!({"spec": {}, "status": status});
    api.create(&PostParams::default(), &obj).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_changes_its_minor_only_when_its_record_says_so() {
    let m = Master::new("1.32");
    m.agent(None).pass(Mode::Apply).await.unwrap();
    assert_eq!(m.etcd_tag(), "3.5.16-0");
    m.set_version("1.34");

    let server = ApiServer::start().await.unwrap();
    let kube = server.admin_client().await.unwrap();
    Api::<Node>::all(kube.clone())
        .create(
            &PostParams::default(),
            &cpm_testing::fixtures::control_plane_node(NAME, IP),
        )
        .await
        .unwrap();
    let mut agent = m.agent(Some(kube.clone()));
    let mut registry = prometheus_client::registry::Registry::default();
    agent.metrics = Some(cpm_etcd::metrics::EtcdMetrics::register(&mut registry));

    // No ControlPlaneNode CRD: unreadable, etcd stays.
    agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(m.etcd_tag(), "3.5.16-0", "CRD missing");
    assert_eq!(readable(&registry), "cpm_etcd_rollout_record_readable 0");

    // The CRD but no record for this master (cpm-manifests has not created it yet): stays.
    let crd: CustomResourceDefinition = serde_json::from_value(cpn::crd()).unwrap();
    Api::<CustomResourceDefinition>::all(kube.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(m.etcd_tag(), "3.5.16-0", "no record");
    assert_eq!(readable(&registry), "cpm_etcd_rollout_record_readable 1");

    // The record says this master runs 1.32 and waits for its turn: stays.
    let api = cpn::api(kube.clone());
    set_record(&api, serde_json::json!({"version": "1.32"})).await;
    agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(m.etcd_tag(), "3.5.16-0", "waiting for its turn");

    // A record naming no supported minor cannot say where etcd belongs: stays, visibly.
    set_record(&api, serde_json::json!({"version": "1.99"})).await;
    agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(m.etcd_tag(), "3.5.16-0", "unsupported minor in the record");
    assert_eq!(readable(&registry), "cpm_etcd_rollout_record_readable 0");

    // The API answers errors: stays.
    set_record(
        &api,
        serde_json::json!({"version": "1.32", "rollout": {"phase": "InProgress", "from": "1.32", "to": "1.33"}}),
    )
    .await;
    server
        .faults()
        .fail_all(RequestMatch::any().path_contains("controlplanenodes"), 500);
    agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(m.etcd_tag(), "3.5.16-0", "API errors");
    assert_eq!(readable(&registry), "cpm_etcd_rollout_record_readable 0");

    // The API answers again: the recorded step moves etcd to 1.33's release.
    server.faults().clear();
    agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(m.etcd_tag(), "3.5.21-0", "its step to 1.33");
    assert_eq!(readable(&registry), "cpm_etcd_rollout_record_readable 1");

    // The next step, to 1.34.
    set_record(
        &api,
        serde_json::json!({"version": "1.33", "rollout": {"phase": "InProgress", "from": "1.33", "to": "1.34"}}),
    )
    .await;
    agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(m.etcd_tag(), "3.6.4-0", "its step to 1.34");
}
