//! Bad inputs: exit 2, a message naming the file and the field, and nothing changed on disk.

use std::fs;

use cpm_core::apply::write_atomic;

use super::*;

/// Breaks one input of a converged node, runs a pass, and checks exit 2, the message, and that
/// the node's tree is unchanged.
fn check(break_input: impl FnOnce(&Node), extra: &[&str], expected: &[&str]) {
    let node = Node::new("apiserver: {certSANs: [api.example.com]}\n");
    assert_eq!(code(&node.run(&["--once"])), 0);
    let before = node.root.entries();
    break_input(&node);
    for mode in [
        &["--once"][..],
        &["--dry-run"],
        &["--check"],
        &["renew", "all"],
    ] {
        let out = node.run(&[mode, extra].concat());
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{mode:?}: {err}");
        for want in expected {
            let want = want
                .replace("{config}", s(&node.config))
                .replace("{pki}", s(&node.pki));
            assert!(
                err.contains(&want),
                "{mode:?}: {err:?} should contain {want:?}"
            );
        }
        assert!(err.starts_with("error: "), "{err}");
        assert_eq!(node.root.entries(), before, "{mode:?}: the node changed");
    }
}

fn config(node: &Node, text: &str) {
    write_atomic(&node.config, text.as_bytes(), 0o600, None, None).unwrap();
}

const HEAD: &str =
    "apiVersion: cpm.dev/v1alpha1\nkind: ControlPlaneConfiguration\nkubernetesVersion: \"1.33\"\n";

/// A config of `HEAD` plus `yaml` must be refused with `expected`.
fn check_config(yaml: &str, expected: &str) {
    let text = format!("{HEAD}{yaml}");
    check(|n| config(n, &text), &[], &[expected]);
}

#[test]
fn malformed_yaml() {
    check_config("apiserver: {certSANs: [a\n", "{config}: invalid YAML");
}

#[test]
fn unknown_field() {
    check_config(
        "certificates: {keyAlgoritm: RSA-2048}\n",
        "{config}: certificates.keyAlgoritm: unknown field `keyAlgoritm`",
    );
}

#[test]
fn bad_cidr() {
    check_config(
        "serviceSubnet: 10.96.0.0/40\n",
        "{config}: serviceSubnet: \"10.96.0.0/40\" is not a CIDR",
    );
}

#[test]
fn cluster_domain_that_cannot_end_a_service_name() {
    check_config(
        "clusterDomain: \"*.example\"\n",
        "{config}: clusterDomain: must not be a wildcard",
    );
    let long = [
        "a".repeat(60),
        "b".repeat(60),
        "c".repeat(60),
        "d".repeat(51),
    ]
    .join(".");
    check_config(
        &format!("clusterDomain: {long}\n"),
        "{config}: clusterDomain: is 234 characters; at most 230",
    );
}

#[test]
fn invalid_san() {
    check_config(
        "apiserver: {certSANs: [api.example.com, \"bad_name\"]}\n",
        "{config}: apiserver.certSANs[1]: \"bad_name\" is neither an IP address nor a valid DNS name",
    );
}

#[test]
fn ca_key_that_does_not_match_its_certificate() {
    check(
        |n| {
            let other = tempfile::tempdir().unwrap();
            let other_pki = cpm_testing::fixtures::ca_bundle(
                other.path(),
                cpm_core::config::KeyAlgorithm::EcdsaP256,
            );
            fs::copy(other_pki.join("etcd-ca.key"), n.pki.join("etcd-ca.key")).unwrap();
        },
        &[],
        &["{pki}/etcd-ca.key: does not match {pki}/etcd-ca.crt"],
    );
}

#[test]
fn missing_pki_dir() {
    check(
        |n| fs::remove_dir_all(&n.pki).unwrap(),
        &[],
        &["{pki}: CA bundle directory is missing or unreadable"],
    );
}

#[test]
fn unreadable_pki_dir() {
    // Tests run as root, whom permission bits do not stop: a file where the directory must be
    // is what "unreadable" means here.
    check(
        |n| {
            fs::remove_dir_all(&n.pki).unwrap();
            write_atomic(&n.pki, b"not a directory", 0o644, None, None).unwrap();
        },
        &[],
        &["{pki}: CA bundle directory is missing or unreadable: caused by: Not a directory"],
    );
}

#[test]
fn missing_config_file() {
    check(
        |n| fs::remove_file(&n.config).unwrap(),
        &[],
        &["{config}: cannot read config"],
    );
}

#[test]
fn node_name_that_cannot_be_a_san() {
    check(
        |_| {},
        &["--node-name", "Bad_Name"],
        &["--node-name: \"Bad_Name\" is not a valid DNS name"],
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--node-ip", "300.1.1.1"][..],
        &["--dry-run", "--check"],
        &["init-ca"],
        &["bogus-command"],
    ] {
        let out = cpm_certs(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
}
