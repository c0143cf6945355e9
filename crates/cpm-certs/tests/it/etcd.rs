//! A real etcd (Debian's 3.4) started with the issued server and peer certificates accepts the
//! healthcheck-client certificate over mTLS and refuses a client certificate from another CA.

use std::process::Command;

use cpm_testing::etcd::{EtcdOptions, EtcdProcess, EtcdTls, etcd_binary, etcdctl_binary};
use cpm_testing::fixtures::{bundle_ca, ca_bundle, client_cert};

use super::*;

fn etcdctl(
    bin: &Path,
    endpoint: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    args: &[&str],
) -> (bool, String) {
    let out = Command::new(bin)
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--cacert={}", ca.display()))
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .arg("--command-timeout=5s")
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn etcd_accepts_the_healthcheck_client_and_refuses_another_ca() {
    let (Some(etcd), Some(ctl)) = (etcd_binary(), etcdctl_binary()) else {
        return;
    };
    let node = Node::new("");
    assert_eq!(code(&node.run(&["--once"])), 0);
    let pki = node.root.join("etc/kubernetes/pki");
    let data = node.root.join("var/lib/etcd");
    let member = EtcdProcess::start(
        &etcd,
        &EtcdOptions::single("master-1", &data, Some(EtcdTls::kubeadm(&pki))),
    )
    .unwrap();
    let ca = pki.join("etcd/ca.crt");

    let (hc_crt, hc_key) = (
        pki.join("etcd/healthcheck-client.crt"),
        pki.join("etcd/healthcheck-client.key"),
    );
    let (ok, text) = etcdctl(
        &ctl,
        &member.client_url,
        &ca,
        &hc_crt,
        &hc_key,
        &["put", "cpm/probe", "ok"],
    );
    assert!(
        ok,
        "healthcheck-client refused: {text}\n{}",
        member.log_tail()
    );
    let (ok, text) = etcdctl(
        &ctl,
        &member.client_url,
        &ca,
        &hc_crt,
        &hc_key,
        &["get", "cpm/probe", "--print-value-only"],
    );
    assert!(ok && text.trim() == "ok", "{text}");
    // The apiserver's etcd client certificate works too.
    let (ok, text) = etcdctl(
        &ctl,
        &member.client_url,
        &ca,
        &pki.join("apiserver-etcd-client.crt"),
        &pki.join("apiserver-etcd-client.key"),
        &["endpoint", "health"],
    );
    assert!(ok, "{text}");

    // Same subject, other CA: refused by etcd's client-cert-auth.
    let other = tempfile::tempdir().unwrap();
    let other_ca = bundle_ca(
        &ca_bundle(
            &other.path().join("pki"),
            cpm_core::config::KeyAlgorithm::EcdsaP256,
        ),
        "etcd-ca",
    );
    let (rogue_crt, rogue_key) = client_cert(
        &other_ca,
        other.path(),
        "rogue",
        "kube-etcd-healthcheck-client",
    );
    let (ok, text) = etcdctl(
        &ctl,
        &member.client_url,
        &ca,
        &rogue_crt,
        &rogue_key,
        &["get", "cpm/probe"],
    );
    assert!(!ok, "a certificate from another CA was accepted: {text}");
    assert!(
        member.log_tail().contains("bad certificate")
            || text.contains("bad certificate")
            || text.contains("deadline exceeded"),
        "{text}\n{}",
        member.log_tail()
    );
}
