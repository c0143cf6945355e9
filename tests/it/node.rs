//! One master node served by several agents: cpm-certs and cpm-kubeconfig share the CA bundle
//! and the root, and `cpm-certs check-expiration` reports on both.

use cpm_core::config::KeyAlgorithm;
use cpm_testing::fixtures::{ca_bundle, write_config};
use cpm_testing::root::FakeRoot;
use cpm_tests::run;

#[test]
fn certs_and_kubeconfigs_on_one_node_are_reported_together() {
    let inputs = tempfile::tempdir().unwrap();
    let pki = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let config = inputs.path().join("config.yaml");
    write_config(&config, "");
    let root = FakeRoot::new();
    let common = [
        "--root",
        root.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--pki-dir",
        pki.to_str().unwrap(),
        "--node-ip",
        "127.0.0.1",
    ];
    for (bin, extra) in [
        ("cpm-certs", &["--node-name", "master-1", "--once"][..]),
        ("cpm-kubeconfig", &["--once", "--no-rbac"]),
    ] {
        let out = run(bin, &[&common[..], extra].concat());
        assert!(
            out.status.success(),
            "{bin}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(
        "cpm-certs",
        &[
            "check-expiration",
            "--root",
            root.path().to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let certs = v["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 11);
    for c in certs {
        assert_eq!(c["status"], "ok", "{c}");
    }
    assert_eq!(certs[7]["name"], "admin.conf");
    assert_eq!(certs[7]["authority"], "ca");
    // The agents own disjoint files: a second pass of each plans nothing.
    for (bin, extra) in [
        ("cpm-certs", &["--node-name", "master-1", "--check"][..]),
        ("cpm-kubeconfig", &["--check"]),
    ] {
        let out = run(bin, &[&common[..], extra].concat());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{bin}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
