//! Process-level tests of the cpm-certs binary: real processes, real files, real openssl and etcd.

mod bad_input;
mod daemon;
mod etcd;
mod openssl;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cpm_core::config::KeyAlgorithm;
use cpm_testing::fixtures::{ca_bundle, write_config};
pub use cpm_testing::process::{code, stderr, stdout};
use cpm_testing::root::FakeRoot;

/// A node root plus the inputs cpm-certs reads.
pub struct Node {
    pub root: FakeRoot,
    pub inputs: tempfile::TempDir,
    pub config: PathBuf,
    pub pki: PathBuf,
    pub name: String,
    pub ip: String,
}

impl Node {
    pub fn new(extra_config: &str) -> Self {
        Self::with(
            extra_config,
            KeyAlgorithm::EcdsaP256,
            "master-1",
            "127.0.0.1",
        )
    }

    pub fn with(extra_config: &str, alg: KeyAlgorithm, name: &str, ip: &str) -> Self {
        let inputs = tempfile::tempdir().unwrap();
        let pki = ca_bundle(&inputs.path().join("pki"), alg);
        let config = inputs.path().join("config.yaml");
        write_config(&config, extra_config);
        Self {
            root: FakeRoot::new(),
            inputs,
            config,
            pki,
            name: name.into(),
            ip: ip.into(),
        }
    }

    /// The shared flags for this node.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--root".into(),
            self.root.path().display().to_string(),
            "--config".into(),
            self.config.display().to_string(),
            "--pki-dir".into(),
            self.pki.display().to_string(),
            "--node-name".into(),
            self.name.clone(),
            "--node-ip".into(),
            self.ip.clone(),
        ]
    }

    /// Runs cpm-certs with this node's flags plus `extra`; a flag of `extra` that the node
    /// already sets (`--node-name x`) replaces the node's value.
    pub fn run(&self, extra: &[&str]) -> Output {
        let mut args = self.args();
        let mut rest = extra.iter();
        while let Some(a) = rest.next() {
            match args.iter().position(|x| x == a) {
                Some(i) if a.starts_with("--") => args[i + 1] = rest.next().unwrap().to_string(),
                _ => args.push(a.to_string()),
            }
        }
        cpm_certs(&args)
    }

    pub fn pki_path(&self, rel: &str) -> PathBuf {
        self.root.join(&format!("etc/kubernetes/pki/{rel}"))
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cpm-certs")
}

pub fn cpm_certs<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Runs `openssl args…`; returns (success, stdout + stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (bash .ci/install-deps)");
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn version_names_version_revision_and_profile() {
    let out = cpm_certs(&["--version"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("cpm-certs {} (git ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains(", debug)") || text.contains(", release)"),
        "{text}"
    );
}

#[test]
fn dry_run_writes_nothing_and_check_exits_3_on_drift() {
    let node = Node::new("");
    let out = node.run(&["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(node.root.entries().is_empty(), "--dry-run wrote files");
    let plan = stdout(&out);
    assert!(
        plan.contains(
            "create etc/kubernetes/pki/apiserver.crt (mode 0600)\n  # apiserver: issue (missing)"
        ),
        "{plan}"
    );
    assert!(
        plan.contains(
            "create etc/kubernetes/pki/ca.key (mode 0600)\n  secret content: sha256 none -> "
        ),
        "{plan}"
    );
    assert!(!plan.contains("PRIVATE KEY"), "a secret reached stdout");

    let out = node.run(&["--check"]);
    assert_eq!(code(&out), 3, "drift on an empty root");
    assert!(node.root.entries().is_empty(), "--check wrote files");

    assert_eq!(code(&node.run(&["--once"])), 0);
    let tree = node.root.entries();
    let out = node.run(&["--check"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "", "an empty plan prints nothing");
    assert_eq!(
        node.root.entries(),
        tree,
        "second pass: same bytes, modes, mtimes, inodes"
    );
}

#[test]
fn renew_reissues_only_the_named_certificate() {
    let node = Node::new("");
    assert_eq!(code(&node.run(&["--once"])), 0);
    let before = node.root.entries();
    let out = node.run(&["renew", "etcd-peer"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = node.root.entries();
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, e)| {
            !p.starts_with("etc/kubernetes/cpm")
                && before.get(*p).map(|b| &b.digest) != Some(&e.digest)
        })
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        changed,
        vec![
            "etc/kubernetes/pki/etcd/peer.crt",
            "etc/kubernetes/pki/etcd/peer.key"
        ]
    );
    let out = node.run(&["renew", "etcd-pear"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("unknown certificate \"etcd-pear\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_expiration_lists_every_certificate() {
    let node = Node::new("");
    assert_eq!(code(&node.run(&["--once"])), 0);
    let out = cpm_certs(&[
        "check-expiration",
        "--root",
        s(node.root.path()),
        "--output",
        "json",
    ]);
    assert_eq!(code(&out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = v["certificates"].as_array().unwrap();
    assert_eq!(all.len(), 11, "7 leaves and 4 kubeconfigs");
    for k in &all[7..] {
        assert_eq!(k["status"], "missing", "no kubeconfigs on this node: {k}");
    }
    let leaves = &all[..7];
    for l in leaves {
        assert_eq!(l["status"], "ok", "{l}");
        assert!(l["residualSeconds"].as_i64().unwrap() > 364 * 86_400, "{l}");
    }
    assert_eq!(leaves[4]["name"], "etcd-server");
    assert_eq!(leaves[4]["authority"], "etcd-ca");
    assert_eq!(v["authorities"].as_array().unwrap().len(), 3);
    let table = stdout(&cpm_certs(&[
        "check-expiration",
        "--root",
        s(node.root.path()),
    ]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("apiserver ") && l.contains(" 364d ") && l.contains(" ca ")),
        "{table}"
    );
    std::fs::remove_file(node.pki_path("front-proxy-client.crt")).unwrap();
    let table = stdout(&cpm_certs(&[
        "check-expiration",
        "--root",
        s(node.root.path()),
    ]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("front-proxy-client") && l.contains("<missing>")),
        "{table}"
    );
}

#[test]
fn init_ca_refuses_to_overwrite_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pki");
    let out = cpm_certs(&[
        "init-ca",
        "--out",
        s(&out_dir),
        "--key-algorithm",
        "RSA-2048",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (ok, text) = openssl(&["x509", "-in", s(&out_dir.join("ca.crt")), "-noout", "-text"]);
    assert!(
        ok && text.contains("Public-Key: (2048 bit)") && text.contains("CA:TRUE"),
        "{text}"
    );
    let before = std::fs::read(out_dir.join("ca.key")).unwrap();
    let out = cpm_certs(&["init-ca", "--out", s(&out_dir)]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("ca.crt: exists; refusing to overwrite a CA bundle"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(out_dir.join("ca.key")).unwrap(), before);
}

#[test]
fn init_ca_dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pki");
    let out = cpm_certs(&["init-ca", "--dry-run", "--out", s(&out_dir)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!out_dir.exists(), "--dry-run created {}", out_dir.display());
    let plan = stdout(&out);
    assert!(
        plan.starts_with(&format!("mkdir {} (mode 0700)", s(&out_dir))),
        "{plan}"
    );
    for file in [
        "ca.crt",
        "ca.key",
        "etcd-ca.key",
        "front-proxy-ca.crt",
        "sa.key",
        "sa.pub",
    ] {
        assert!(plan.contains(&format!("create {file}")), "{file}: {plan}");
    }
    assert!(!plan.contains("PRIVATE KEY"), "a key in the plan: {plan}");
    // Into an existing, empty directory: still nothing written.
    std::fs::create_dir(&out_dir).unwrap();
    let out = cpm_certs(&["init-ca", "--dry-run", "--out", s(&out_dir)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stdout(&out).contains("mkdir"), "{}", stdout(&out));
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}

#[test]
fn flags_a_command_does_not_honour_are_refused_with_exit_2() {
    let node = Node::new("");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pki");
    let out_flag = s(&out_dir).to_string();
    let root = s(node.root.path()).to_string();
    for (args, flag) in [
        (vec!["init-ca", "--out", &out_flag, "--once"], "--once"),
        (vec!["init-ca", "--out", &out_flag, "--check"], "--check"),
        (
            vec!["--root", &root, "init-ca", "--out", &out_flag],
            "--root",
        ),
        (
            vec!["init-ca", "--out", &out_flag, "--admin-addr", "127.0.0.1:0"],
            "--admin-addr",
        ),
        (
            vec!["check-expiration", "--root", &root, "--dry-run"],
            "--dry-run",
        ),
        (
            vec!["check-expiration", "--root", &root, "--check"],
            "--check",
        ),
        (vec!["--kubeconfig", "/k", "--once"], "--kubeconfig"),
    ] {
        let out = cpm_certs(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{flag} is not honoured by `cpm-certs")),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    for extra in [
        &["--once", "--admin-addr", "127.0.0.1:0"][..],
        &["--dry-run", "--resync-seconds", "5"],
        &["renew", "all", "--admin-addr", "127.0.0.1:0"],
    ] {
        let out = node.run(extra);
        assert_eq!(code(&out), 2, "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is not honoured by"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!out_dir.exists());
    assert!(
        node.root.entries().is_empty(),
        "a refused command wrote to the node"
    );
}

#[test]
fn check_expiration_into_a_closed_pipe_exits_quietly() {
    let node = Node::new("");
    assert_eq!(code(&node.run(&["--once"])), 0);
    let mut cmd = Command::new(bin());
    cmd.args(["check-expiration", "--root", s(node.root.path())]);
    let out = cpm_testing::process::output_into_closed_pipe(&mut cmd);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}
