//! The agent on a fake root: idempotence, `--dry-run`/`--check`, bad inputs, the health gate
//! with stub endpoints, and the cluster side (etcd peers, encryption keys) against the test API
//! server.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use clap::Parser;
use cpm_core::config::KeyAlgorithm;
use cpm_core::reconcile::{Agent, Mode};
use cpm_manifests::agent::ManifestsAgent;
use cpm_manifests::health::{Check, VerifyMode};
use cpm_manifests::layout::Component;
use cpm_testing::fixtures::{ca_bundle, write_config};
use cpm_testing::process::{code, stderr, stdout};
use cpm_testing::root::FakeRoot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Node {
    pub root: FakeRoot,
    pub _inputs: tempfile::TempDir,
    pub config: std::path::PathBuf,
}

impl Node {
    /// A node whose PKI and kubeconfigs were written by cpm-certs and cpm-kubeconfig stand-ins.
    pub fn new(extra: &str) -> Self {
        let inputs = tempfile::tempdir().unwrap();
        let pki = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
        let config = inputs.path().join("config.yaml");
        write_config(&config, extra);
        let root = FakeRoot::new();
        for c in Component::ALL {
            for host in cpm_manifests::desired::referenced_files(c) {
                let path = root.join(host.trim_start_matches('/'));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                cpm_core::apply::write_atomic(
                    &path,
                    format!("{host}\n").as_bytes(),
                    0o600,
                    None,
                    None,
                )
                .unwrap();
            }
        }
        std::fs::copy(pki.join("ca.crt"), root.join("etc/kubernetes/pki/ca.crt")).unwrap();
        Self {
            root,
            _inputs: inputs,
            config,
        }
    }

    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "cpm-manifests",
            "--root",
            self.root.path().to_str().unwrap(),
            "--config",
            self.config.to_str().unwrap(),
            "--node-name",
            "master-1",
            "--node-ip",
            "127.0.0.1",
        ]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
        v.extend(extra.iter().map(std::string::ToString::to_string));
        v
    }

    pub fn run(&self, extra: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_cpm-manifests"))
            .args(&self.args(extra)[1..])
            .env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    pub fn agent(&self, client: Option<kube::Client>) -> ManifestsAgent {
        let cli = cpm_manifests::Cli::try_parse_from(self.args(&[])).unwrap();
        let mut a = ManifestsAgent::new(cli.common, None, client);
        a.gate_timeout = Duration::ZERO;
        a.gate_settle = Duration::ZERO;
        a
    }

    pub fn read(&self, host: &str) -> String {
        String::from_utf8(self.root.read(host.trim_start_matches('/'))).unwrap()
    }
}

#[test]
fn once_then_check_changes_nothing_and_dry_run_writes_nothing() {
    let node = Node::new("");
    let before = node.root.entries();
    let out = node.run(&["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("create etc/kubernetes/manifests/kube-apiserver.yaml (mode 0600)\n  # kube-apiserver: checksum "), "{}", stdout(&out));
    assert_eq!(node.root.entries(), before, "--dry-run wrote");
    assert_eq!(code(&node.run(&["--check"])), 3);
    let out = node.run(&["--once", "--health-timeout-seconds", "0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let tree = node.root.entries();
    let out = node.run(&["--check"]);
    assert_eq!((code(&out), stdout(&out)), (0, String::new()));
    assert_eq!(
        code(&node.run(&["--once", "--health-timeout-seconds", "0"])),
        0
    );
    assert_eq!(
        node.root.entries(),
        tree,
        "second pass: same bytes, mtimes, inodes"
    );
    for c in Component::ALL {
        assert_eq!(
            tree[&format!("etc/kubernetes/manifests/{}.yaml", c.name())].mode,
            0o600
        );
    }
}

#[test]
fn a_renewed_certificate_restarts_only_the_pods_that_use_it() {
    let node = Node::new("");
    assert_eq!(
        code(&node.run(&["--once", "--health-timeout-seconds", "0"])),
        0
    );
    let before = node.root.entries();
    let cert = node.root.join("etc/kubernetes/pki/front-proxy-client.crt");
    cpm_core::apply::write_atomic(&cert, b"renewed\n", 0o600, None, None).unwrap();
    assert_eq!(
        code(&node.run(&["--once", "--health-timeout-seconds", "0"])),
        0
    );
    let after = node.root.entries();
    let changed: Vec<&str> = after
        .iter()
        .filter(|(p, e)| {
            p.starts_with("etc/kubernetes/manifests/") && before[*p].digest != e.digest
        })
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        changed,
        vec!["etc/kubernetes/manifests/kube-apiserver.yaml"]
    );
}

#[test]
fn bad_config_exits_2_and_changes_nothing() {
    for (extra, want) in [
        (
            "apiserver: {extraArgs: {tls-cert-file: /x}}\n",
            "apiserver.extraArgs.tls-cert-file: may not be overridden",
        ),
        (
            "apiserver: {auditPolicy: {mode: Custom, file: /etc/cpm/missing.yaml}}\n",
            "/etc/cpm/missing.yaml: cannot read",
        ),
        ("bogus: 1\n", "bogus: unknown field"),
    ] {
        let node = Node::new("");
        assert_eq!(
            code(&node.run(&["--once", "--health-timeout-seconds", "0"])),
            0
        );
        let before = node.root.entries();
        write_config(&node.config, extra);
        for mode in ["--once", "--check", "--dry-run"] {
            let out = node.run(&[mode]);
            assert_eq!(code(&out), 2, "{extra} {mode}: {}", stderr(&out));
            assert!(stderr(&out).contains(want), "{}", stderr(&out));
        }
        assert_eq!(node.root.entries(), before, "{extra}");
    }
    // A custom policy with an unknown field names the file and the problem.
    let node = Node::new("apiserver: {auditPolicy: {mode: Custom, file: /etc/cpm/audit.yaml}}\n");
    std::fs::create_dir_all(node.root.join("etc/cpm")).unwrap();
    cpm_core::apply::write_atomic(
        &node.root.join("etc/cpm/audit.yaml"),
        b"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  verb: [get]\n",
        0o600,
        None,
        None,
    )
    .unwrap();
    let out = node.run(&["--once"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("etc/cpm/audit.yaml: unknown field `verb`"),
        "{}",
        stderr(&out)
    );
}

/// A policy path that names a private key is refused before it is read; a policy file that holds
/// one anyway (copied to the wrong name) is refused without a byte of it in the error or the
/// termination message.
#[test]
fn audit_policy_errors_never_echo_a_key() {
    let node = Node::new("");
    let key = std::fs::read_to_string(node.root.join("etc/kubernetes/pki/apiserver.key")).unwrap();
    let line = key.lines().nth(1).unwrap_or("PRIVATE KEY").to_string();
    write_config(
        &node.config,
        "apiserver: {auditPolicy: {mode: Custom, file: /etc/kubernetes/pki/apiserver.key}}\n",
    );
    let out = node.run(&["--once"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("apiserver.auditPolicy.file: /etc/kubernetes/pki/apiserver.key holds keys or credentials"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir_all(node.root.join("etc/cpm")).unwrap();
    let pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    cpm_core::apply::write_atomic(
        &node.root.join("etc/cpm/audit.yaml"),
        pem.as_bytes(),
        0o600,
        None,
        None,
    )
    .unwrap();
    write_config(
        &node.config,
        "apiserver: {auditPolicy: {mode: Custom, file: /etc/cpm/audit.yaml}}\n",
    );
    let out = node.run(&["--once"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("etc/cpm/audit.yaml: invalid type"), "{err}");
    assert!(
        !err.contains("MIGHAgEA") && !err.contains(&line),
        "the error echoes the key: {err}"
    );
}

/// A stub health endpoint answering `status` (shared, so a test can change it).
async fn stub(status: Arc<AtomicU16>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let code = status.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    format!("http://{addr}/healthz")
}

fn checks(url: &str) -> BTreeMap<Component, Vec<Check>> {
    Component::ALL
        .into_iter()
        .map(|c| {
            (
                c,
                vec![Check {
                    url: url.to_string(),
                    verify: VerifyMode::Insecure,
                    git_version: None,
                }],
            )
        })
        .collect()
}

#[tokio::test]
async fn a_component_that_never_becomes_healthy_is_rolled_back_and_held() {
    let node = Node::new("");
    let status = Arc::new(AtomicU16::new(200));
    let url = stub(status.clone()).await;
    let mut agent = node.agent(None);
    agent.gate_timeout = Duration::from_secs(2);
    agent.gate_interval = Duration::from_millis(50);
    agent.checks = Some(checks(&url));
    agent.pass(Mode::Apply).await.unwrap();
    let good = node.root.entries();

    // A config change, and the apiserver never becomes ready again.
    status.store(503, Ordering::SeqCst);
    write_config(
        &node.config,
        "apiserver: {extraArgs: {max-requests-inflight: \"800\"}}\n",
    );
    let err = agent.pass(Mode::Apply).await.unwrap_err();
    let text = cpm_core::exit::chain(&err);
    assert!(
        text.contains("kube-apiserver not healthy within 2s")
            && text.contains("answered 503")
            && text.contains("previous files restored"),
        "{text}"
    );
    let after = node.root.entries();
    let manifest = "etc/kubernetes/manifests/kube-apiserver.yaml";
    assert_eq!(
        after[manifest].digest, good[manifest].digest,
        "the previous manifest is back"
    );
    assert!(!node.read(manifest).contains("max-requests-inflight"));
    assert!(
        after.keys().any(
            |p| p.starts_with("etc/kubernetes/cpm/backup/cpm-manifests/")
                && p.ends_with("kube-apiserver.yaml")
        ),
        "the replaced manifest went to the bounded backup first"
    );

    // The same inputs are held back: nothing is written again while they fail.
    let err = agent.pass(Mode::Apply).await.unwrap_err();
    assert!(
        cpm_core::exit::chain(&err).contains("kube-apiserver held back"),
        "{}",
        cpm_core::exit::chain(&err)
    );
    assert_eq!(node.root.entries()[manifest], after[manifest]);

    // Fixed inputs (or a healthy component) go through.
    status.store(200, Ordering::SeqCst);
    write_config(
        &node.config,
        "apiserver: {extraArgs: {max-requests-inflight: \"900\"}}\n",
    );
    agent.pass(Mode::Apply).await.unwrap();
    assert!(node.read(manifest).contains("--max-requests-inflight=900"));
}

/// `kubernetesVersion` of `node`'s configuration set to `version`.
fn set_version(node: &Node, version: &str) {
    let text = cpm_testing::fixtures::config_yaml("").replace(
        "kubernetesVersion: \"1.33\"",
        &format!("kubernetesVersion: \"{version}\""),
    );
    cpm_core::apply::write_atomic(&node.config, text.as_bytes(), 0o600, None, None).unwrap();
}

fn apiserver_image(node: &Node) -> String {
    node.read("/etc/kubernetes/manifests/kube-apiserver.yaml")
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_a_rendered_master_keeps_its_minor() {
    let node = Node::new("");
    set_version(&node, "1.32");
    let out = node.run(&["--once", "--health-timeout-seconds", "0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        apiserver_image(&node),
        "registry.k8s.io/kube-apiserver:v1.32.9"
    );
    let before = node.root.entries();

    // 1.34 asked with no API to take the rollout Lease: refused, the master stays at 1.32.
    set_version(&node, "1.34");
    let out = node.run(&["--once", "--health-timeout-seconds", "0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("WARN")
            && stderr(&out)
                .contains("no --kubeconfig: refusing to move this master to another minor")
            && stderr(&out).contains("running=1.32 configured=1.34"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.root.entries(), before, "nothing moved");
    let out = node.run(&["--check"]);
    assert_eq!((code(&out), stdout(&out)), (0, String::new()));

    // An API that cannot be read does not move it either.
    let server = cpm_testing::apiserver::ApiServer::start().await.unwrap();
    let kubeconfig = node._inputs.path().join("closed.conf");
    let yaml = server
        .kubeconfig_yaml(&cpm_testing::apiserver::Identity::Cert(
            cpm_testing::apiserver::UserInfo::new("admin", &["system:masters"]),
        ))
        .unwrap();
    drop(server);
    cpm_core::apply::write_atomic(&kubeconfig, yaml.as_bytes(), 0o600, None, None).unwrap();
    let out = node.run(&[
        "--once",
        "--health-timeout-seconds",
        "0",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        apiserver_image(&node),
        "registry.k8s.io/kube-apiserver:v1.32.9"
    );

    // The refusal is a metric while it lasts.
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = cpm_manifests::metrics::ManifestMetrics::register(&mut registry);
    let cli = cpm_manifests::Cli::try_parse_from(node.args(&[])).unwrap();
    let mut agent = ManifestsAgent::new(cli.common, Some(metrics), None);
    agent.gate_timeout = Duration::ZERO;
    agent.pass(Mode::Apply).await.unwrap();
    let text = cpm_core::metrics::encode(&registry);
    assert!(text.contains("cpm_rollout_version_held 1\n"), "{text}");
    assert_eq!(
        apiserver_image(&node),
        "registry.k8s.io/kube-apiserver:v1.32.9"
    );
    set_version(&node, "1.32");
    agent.pass(Mode::Apply).await.unwrap();
    let text = cpm_core::metrics::encode(&registry);
    assert!(text.contains("cpm_rollout_version_held 0\n"), "{text}");

    // A fresh node with nothing rendered renders the configured minor.
    let fresh = Node::new("");
    set_version(&fresh, "1.34");
    let out = fresh.run(&["--once", "--health-timeout-seconds", "0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        apiserver_image(&fresh),
        "registry.k8s.io/kube-apiserver:v1.34.1"
    );
}
