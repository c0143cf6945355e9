//! Process-level tests of cpm-kubeconfig: kubectl reads what it writes, the test API server
//! authenticates its clients, every root-symlink case, and bad inputs.

mod api;
mod symlink;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cpm_core::config::KeyAlgorithm;
use cpm_testing::fixtures::{ca_bundle, write_config};
pub use cpm_testing::process::{code, stderr, stdout};
use cpm_testing::root::FakeRoot;

pub const FILES: [&str; 4] = [
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

pub struct Node {
    pub root: FakeRoot,
    pub inputs: tempfile::TempDir,
    pub config: PathBuf,
    pub pki: PathBuf,
}

impl Node {
    pub fn new(extra_config: &str) -> Self {
        let inputs = tempfile::tempdir().unwrap();
        let pki = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
        let config = inputs.path().join("config.yaml");
        write_config(&config, extra_config);
        Self {
            root: FakeRoot::new(),
            inputs,
            config,
            pki,
        }
    }

    pub fn set_config(&self, extra: &str) {
        write_config(&self.config, extra);
    }

    pub fn run(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cpm-kubeconfig"));
        cmd.arg("--root")
            .arg(self.root.path())
            .arg("--config")
            .arg(&self.config)
            .arg("--pki-dir")
            .arg(&self.pki);
        cmd.args(["--node-ip", "127.0.0.1"]).args(extra);
        cmd.env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    pub fn kubeconfig(&self, file: &str) -> PathBuf {
        self.root.join(&format!("etc/kubernetes/{file}"))
    }
}

fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl is on this machine image");
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn kubectl_parses_every_file_and_a_second_pass_changes_nothing() {
    let node = Node::new("");
    let out = node.run(&["--once", "--no-rbac"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (file, user, server) in [
        ("admin.conf", "kubernetes-admin", "https://127.0.0.1:6445"),
        (
            "super-admin.conf",
            "kubernetes-super-admin",
            "https://127.0.0.1:6445",
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            "https://127.0.0.1:6443",
        ),
        (
            "scheduler.conf",
            "system:kube-scheduler",
            "https://127.0.0.1:6443",
        ),
    ] {
        let path = node.kubeconfig(file);
        let p = path.to_str().unwrap();
        let (ok, text) = kubectl(&[
            "--kubeconfig",
            p,
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.users[0].name} {.clusters[0].cluster.server} {.current-context}",
        ]);
        assert!(ok, "{file}: {text}");
        assert_eq!(text, format!("{user} {server} {user}@kubernetes"), "{file}");
        let e = &node.root.entries()[&format!("etc/kubernetes/{file}")];
        assert_eq!(e.mode, 0o600, "{file}");
    }
    let before = node.root.entries();
    let out = node.run(&["--check", "--no-rbac"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(code(&node.run(&["--once", "--no-rbac"])), 0);
    assert_eq!(node.root.entries(), before, "same bytes, mtimes, inodes");
    assert!(!stderr(&out).contains("PRIVATE KEY"));
}

#[test]
fn garbage_and_truncated_files_are_regenerated_and_nothing_else_is_touched() {
    let node = Node::new("");
    assert_eq!(code(&node.run(&["--once", "--no-rbac"])), 0);
    let before = node.root.entries();
    let admin = std::fs::read_to_string(node.kubeconfig("admin.conf")).unwrap();
    cpm_core::apply::write_atomic(
        &node.kubeconfig("admin.conf"),
        &admin.as_bytes()[..admin.len() / 2],
        0o600,
        None,
        None,
    )
    .unwrap();
    cpm_core::apply::write_atomic(
        &node.kubeconfig("scheduler.conf"),
        b"garbage: [",
        0o600,
        None,
        None,
    )
    .unwrap();
    let plan = node.run(&["--dry-run", "--no-rbac"]);
    let text = stdout(&plan);
    // Half a kubeconfig is still YAML, without its users: missing data.
    assert!(text.contains("replace etc/kubernetes/admin.conf (mode 0600)\n  # admin.conf: write (missing_data)\n  secret content: sha256 "), "{text}");
    assert!(
        text.contains("# scheduler.conf: write (unparsable)"),
        "{text}"
    );
    assert!(
        !text.contains("client-key-data"),
        "kubeconfigs are secret: {text}"
    );
    let out = node.run(&["--once", "--no-rbac"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = node.root.entries();
    for (path, e) in &before {
        let touched = path.ends_with("admin.conf") && !path.ends_with("super-admin.conf")
            || path.ends_with("scheduler.conf");
        assert_eq!(after[path].digest != e.digest, touched, "{path}");
    }
    let log = stderr(&out);
    assert!(
        log.contains("written") && log.contains("missing_data"),
        "{log}"
    );
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains("client-key-data"),
        "secrets in logs: {log}"
    );
}

#[test]
fn a_wrong_ca_bundle_is_a_clear_error_and_changes_nothing() {
    let node = Node::new("");
    assert_eq!(code(&node.run(&["--once", "--no-rbac"])), 0);
    let before = node.root.entries();
    let other = tempfile::tempdir().unwrap();
    let other_pki = ca_bundle(other.path(), KeyAlgorithm::EcdsaP256);
    std::fs::copy(other_pki.join("ca.key"), node.pki.join("ca.key")).unwrap();
    let out = node.run(&["--once", "--no-rbac"]);
    assert_eq!(code(&out), 2);
    let want = format!(
        "{}: does not match {}",
        node.pki.join("ca.key").display(),
        node.pki.join("ca.crt").display()
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    assert_eq!(node.root.entries(), before);
    node.set_config("certificates: {keyAlgoritm: RSA-2048}\n");
    let out = node.run(&["--once"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("certificates.keyAlgoritm: unknown field"),
        "{}",
        stderr(&out)
    );
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn metrics_report_expiry_renewals_and_symlink_state() {
    use clap::Parser;
    use cpm_core::reconcile::{Agent, Mode};
    let node = Node::new("");
    std::fs::create_dir_all(node.root.join("root/.kube")).unwrap();
    cpm_core::apply::write_atomic(
        &node.root.join("root/.kube/config"),
        b"mine",
        0o600,
        None,
        None,
    )
    .unwrap();
    let cli = cpm_kubeconfig::Cli::try_parse_from([
        "cpm-kubeconfig",
        "--root",
        s(node.root.path()),
        "--config",
        s(&node.config),
        "--pki-dir",
        s(&node.pki),
        "--node-ip",
        "127.0.0.1",
    ])
    .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = cpm_kubeconfig::metrics::KubeconfigMetrics::register(&mut registry);
    let mut agent = cpm_kubeconfig::agent::KubeconfigAgent::new(
        cli.common,
        cpm_kubeconfig::system_clock(),
        Some(metrics),
    );
    agent.ensure_rbac = false;
    agent.pass(Mode::Apply).await.unwrap();
    let text = cpm_core::metrics::encode(&registry);
    for want in [
        "cpm_kubeconfig_renewals_total{file=\"scheduler.conf\",reason=\"missing\"} 1",
        "cpm_kubeconfig_expiry_timestamp_seconds{file=\"admin.conf\"}",
        "cpm_root_kubeconfig_symlink_state{state=\"foreign_file\"} 1",
        "cpm_root_kubeconfig_symlink_state{state=\"ok\"} 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}
