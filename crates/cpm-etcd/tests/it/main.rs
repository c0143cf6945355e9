//! cpm-etcd against real etcd: the rendered manifest's command line starts a working member
//! (Debian's etcd 3.4, paths mapped under the node's root), a second pass changes nothing, a
//! renewed certificate changes the checksum, and a silent rename is refused.

mod idle;
mod leader;
mod scale;
mod version;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use cpm_core::config::KeyAlgorithm;
use cpm_testing::etcd::{EtcdProcess, etcd_binary, etcdctl_binary};
use cpm_testing::fixtures::{ca_bundle, etcd_pki, write_config};
use cpm_testing::process::{code, stderr};
use cpm_testing::root::FakeRoot;

struct Node {
    root: FakeRoot,
    _inputs: tempfile::TempDir,
    bundle: std::path::PathBuf,
    config: std::path::PathBuf,
}

fn node() -> Node {
    let inputs = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let config = inputs.path().join("config.yaml");
    write_config(&config, "");
    let root = FakeRoot::new();
    etcd_pki(root.path(), &bundle, "master-1", "127.0.1.1");
    Node {
        root,
        _inputs: inputs,
        bundle,
        config,
    }
}

fn run(n: &Node, name: &str, ip: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpm-etcd"))
        .arg("--root")
        .arg(n.root.path())
        .arg("--config")
        .arg(&n.config)
        .args(["--node-name", name, "--node-ip", ip])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Runs `etcdctl` against `endpoints` (comma-separated URLs) with the healthcheck-client
/// certificate under `pki`; whether it succeeded, and its output.
fn etcdctl(ctl: &Path, endpoints: &str, pki: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(ctl)
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", pki.join("ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("healthcheck-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("healthcheck-client.key").display()
        ))
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn etcd_runs_from_the_rendered_manifest_and_a_second_pass_changes_nothing() {
    let (Some(etcd), Some(ctl)) = (etcd_binary(), etcdctl_binary()) else {
        return;
    };
    let n = node();
    let out = run(&n, "master-1", "127.0.1.1", &["--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let tree = n.root.entries();
    assert_eq!(tree["etc/kubernetes/manifests/etcd.yaml"].mode, 0o600);
    let out = run(&n, "master-1", "127.0.1.1", &["--check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let mut member = EtcdProcess::spawn_from_manifest(&etcd, n.root.path()).unwrap();
    member.wait_healthy(Duration::from_secs(30)).unwrap();
    let pki = n.root.join("etc/kubernetes/pki/etcd");
    let (ok, text) = etcdctl(&ctl, &member.client_url, &pki, &["put", "cpm/k", "v"]);
    assert!(ok, "{text}\n{}", member.log_tail());
    let (ok, text) = etcdctl(&ctl, &member.client_url, &pki, &["member", "list"]);
    assert!(
        ok && text.contains("master-1, https://127.0.1.1:2380, https://127.0.1.1:2379"),
        "{text}"
    );
    drop(member);
    let data = n.root.entries();
    assert!(
        data.keys().any(|p| p.starts_with("var/lib/etcd/member")),
        "etcd's data went under the node's root"
    );
}

#[test]
fn a_renewed_certificate_changes_the_checksum_only() {
    let n = node();
    assert_eq!(code(&run(&n, "master-1", "127.0.1.1", &["--once"])), 0);
    let before = String::from_utf8(n.root.read("etc/kubernetes/manifests/etcd.yaml")).unwrap();
    etcd_pki(n.root.path(), &n.bundle, "master-1", "127.0.1.1");
    assert_eq!(code(&run(&n, "master-1", "127.0.1.1", &["--check"])), 3);
    assert_eq!(code(&run(&n, "master-1", "127.0.1.1", &["--once"])), 0);
    let after = String::from_utf8(n.root.read("etc/kubernetes/manifests/etcd.yaml")).unwrap();
    let diff: Vec<_> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(diff[0].0.contains("cpm.dev/config-checksum"), "{diff:?}");
}

#[test]
fn renaming_or_moving_a_member_is_refused_and_nothing_changes() {
    let n = node();
    assert_eq!(code(&run(&n, "master-1", "127.0.1.1", &["--once"])), 0);
    let before = n.root.entries();
    for (name, ip, want) in [
        (
            "master-x",
            "127.0.1.1",
            "refusing to change the name of the existing etcd member from \"master-1\" to \"master-x\"",
        ),
        (
            "master-1",
            "127.0.1.9",
            "refusing to change the advertise IP of the existing etcd member from \"127.0.1.1\" to \"127.0.1.9\"",
        ),
    ] {
        for mode in ["--once", "--check"] {
            let out = run(&n, name, ip, &[mode]);
            assert_eq!(code(&out), 2, "{}", stderr(&out));
            assert!(
                stderr(&out).contains(want)
                    && stderr(&out).contains("etc/kubernetes/manifests/etcd.yaml"),
                "{}",
                stderr(&out)
            );
        }
    }
    assert_eq!(n.root.entries(), before);
}
