//! The cluster side against the test API server: etcd members from control-plane Nodes, and an
//! encryption key generated once and shared through a Secret.

use cpm_core::reconcile::{Agent, Mode};
use cpm_testing::apiserver::ApiServer;
use k8s_openapi::api::core::v1::{Node as KubeNode, Secret};
use kube::Api;
use kube::api::PostParams;

use super::agent::Node;

fn control_plane_node(name: &str, ip: &str) -> KubeNode {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn etcd_members_come_from_control_plane_nodes_and_the_key_is_shared() {
    let server = ApiServer::start().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let nodes: Api<KubeNode> = Api::all(admin.clone());
    for (n, ip) in [
        ("master-1", "127.0.0.1"),
        ("master-2", "192.0.2.12"),
        ("master-3", "192.0.2.13"),
    ] {
        nodes
            .create(&PostParams::default(), &control_plane_node(n, ip))
            .await
            .unwrap();
    }
    let worker: KubeNode = serde_json::from_value(serde_json::json!({"metadata": {"name": "w"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.50"}]}})).unwrap();
    nodes.create(&PostParams::default(), &worker).await.unwrap();

    let a = Node::new("apiserver: {encryptionAtRest: true}\n");
    a.agent(Some(admin.clone()))
        .pass(Mode::Apply)
        .await
        .unwrap();
    let manifest = a.read("/etc/kubernetes/manifests/kube-apiserver.yaml");
    assert!(
        manifest.contains(
            "--etcd-servers=https://127.0.0.1:2379,https://192.0.2.12:2379,https://192.0.2.13:2379"
        ),
        "local member first, then the other masters, no worker:\n{manifest}"
    );
    let secret = Api::<Secret>::namespaced(admin.clone(), "kube-system")
        .get("cpm-encryption-keys")
        .await
        .unwrap();
    let key = String::from_utf8(secret.data.unwrap()["key-1"].0.clone()).unwrap();
    assert!(
        a.read("/etc/kubernetes/cpm/encryption-config.yaml")
            .contains(&key),
        "the first master stored its key"
    );

    // A second master takes the cluster's key instead of making its own.
    let b = Node::new("apiserver: {encryptionAtRest: true}\n");
    b.agent(Some(admin.clone()))
        .pass(Mode::Apply)
        .await
        .unwrap();
    assert!(
        b.read("/etc/kubernetes/cpm/encryption-config.yaml")
            .contains(&key)
    );
    assert!(
        b.read("/etc/kubernetes/manifests/kube-apiserver.yaml")
            .contains("--encryption-provider-config=/etc/kubernetes/cpm/encryption-config.yaml")
    );

    // Switching it off is refused: encryption stays on, with the same key.
    cpm_testing::fixtures::write_config(&b.config, "apiserver: {encryptionAtRest: false}\n");
    b.agent(Some(admin)).pass(Mode::Apply).await.unwrap();
    assert!(
        b.read("/etc/kubernetes/cpm/encryption-config.yaml")
            .contains(&key)
    );
    assert!(
        b.read("/etc/kubernetes/manifests/kube-apiserver.yaml")
            .contains("--encryption-provider-config")
    );
}
