//! Certificate and config fixtures, made with cpm's own PKI code (`cpm_core::pki`).

use std::path::{Path, PathBuf};

use cpm_core::apply::write_atomic;
use cpm_core::config::KeyAlgorithm;
use cpm_core::pki::bundle::{FILES, generate};
use cpm_core::pki::{Ca, CertSpec, Key, Usage};
use time::OffsetDateTime;

/// Writes a new CA bundle (cpm's flat layout) into `dir`; returns `dir`.
pub fn ca_bundle(dir: &Path, alg: KeyAlgorithm) -> PathBuf {
    std::fs::create_dir_all(dir).expect("invariant: create bundle dir");
    for (f, bytes) in
        generate(alg, OffsetDateTime::now_utc(), 3650).expect("invariant: generate bundle")
    {
        write_atomic(&dir.join(f.name), &bytes, f.mode, None, None)
            .expect("invariant: write bundle");
    }
    dir.to_path_buf()
}

/// Loads the CA named `name` (`ca`, `front-proxy-ca`, `etcd-ca`) from a bundle directory.
pub fn bundle_ca(dir: &Path, name: &str) -> Ca {
    let cert = FILES
        .iter()
        .find(|f| f.name == format!("{name}.crt"))
        .expect("invariant: known CA");
    let key = FILES
        .iter()
        .find(|f| f.name == format!("{name}.key"))
        .expect("invariant: known CA");
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).expect("invariant: read bundle");
    Ca::from_pem(&read(cert.name), &read(key.name)).expect("invariant: valid CA")
}

/// Issues a client certificate from `ca` and writes `<stem>.crt` / `<stem>.key` into `dir`.
pub fn client_cert(ca: &Ca, dir: &Path, stem: &str, common_name: &str) -> (PathBuf, PathBuf) {
    let key = Key::generate(KeyAlgorithm::EcdsaP256).expect("invariant: keygen");
    let spec = CertSpec::new(common_name, Usage::Client, OffsetDateTime::now_utc(), 30);
    let pem = ca.issue(&spec, &key).expect("invariant: issue");
    let (crt, k) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    write_atomic(&crt, pem.as_bytes(), 0o644, None, None).expect("invariant: write cert");
    write_atomic(&k, key.to_pem().as_bytes(), 0o600, None, None).expect("invariant: write key");
    (crt, k)
}

/// A minimal valid config with the given extra YAML appended (top-level keys).
pub fn config_yaml(extra: &str) -> String {
    format!(
        "apiVersion: cpm.dev/v1alpha1\nkind: ControlPlaneConfiguration\nkubernetesVersion: \"1.33\"\n{extra}"
    )
}

/// Writes [`config_yaml`] to `path`.
pub fn write_config(path: &Path, extra: &str) {
    write_atomic(path, config_yaml(extra).as_bytes(), 0o600, None, None)
        .expect("invariant: write config");
}

/// Issues a node's etcd certificates (server, peer, healthcheck client, as cpm-certs does) from
/// the etcd CA of `bundle` under `<root>/etc/kubernetes/pki/etcd`, with the CA installed.
pub fn etcd_pki(root: &Path, bundle: &Path, name: &str, ip: &str) {
    let ca = bundle_ca(bundle, "etcd-ca");
    let dir = root.join("etc/kubernetes/pki/etcd");
    std::fs::create_dir_all(&dir).expect("invariant: mkdir");
    write_atomic(
        &dir.join("ca.crt"),
        ca.cert_pem().as_bytes(),
        0o644,
        None,
        None,
    )
    .expect("invariant: write CA");
    let now = OffsetDateTime::now_utc();
    for (stem, usage, cn) in [
        ("server", Usage::ServerClient, name),
        ("peer", Usage::ServerClient, name),
        (
            "healthcheck-client",
            Usage::Client,
            "kube-etcd-healthcheck-client",
        ),
    ] {
        let key = Key::generate(KeyAlgorithm::EcdsaP256).expect("invariant: keygen");
        let mut spec = CertSpec::new(cn, usage, now, 30);
        if usage == Usage::ServerClient {
            spec.sans = vec![
                name.parse().expect("invariant: node name"),
                "localhost".parse().expect("invariant: literal"),
                ip.parse().expect("invariant: IP"),
                "127.0.0.1".parse().expect("invariant: literal"),
            ];
        }
        let pem = ca.issue(&spec, &key).expect("invariant: issue");
        write_atomic(
            &dir.join(format!("{stem}.crt")),
            pem.as_bytes(),
            0o600,
            None,
            None,
        )
        .expect("invariant: write cert");
        write_atomic(
            &dir.join(format!("{stem}.key")),
            key.to_pem().as_bytes(),
            0o600,
            None,
            None,
        )
        .expect("invariant: write key");
    }
}

/// A control-plane Node (label `node-role.kubernetes.io/control-plane`) with one InternalIP, as
/// cpm reads masters from the API.
pub fn control_plane_node(name: &str, ip: &str) -> k8s_openapi::api::core::v1::Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }))
    .expect("invariant: a valid Node")
}

/// EndpointSlice `name` of Service `default/kubernetes` (as the control plane publishes it, and
/// proxy-reloader watches it): port `port` named `https`, one endpoint per `(ip, ready)`.
pub fn kubernetes_endpoint_slice(
    name: &str,
    port: u16,
    endpoints: &[(&str, bool)],
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(ip, ready)| serde_json::json!({"addresses": [ip], "conditions": {"ready": ready}}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("invariant: a valid EndpointSlice")
}
