//! The cluster side against the test API server: etcd members from control-plane Nodes, and an
//! encryption key generated once and shared through a Secret.

use cpm_core::reconcile::{Agent, Mode};
use cpm_testing::apiserver::ApiServer;
use k8s_openapi::api::core::v1::{Node as KubeNode, Secret};
use kube::Api;
use kube::api::PostParams;

use cpm_manifests::health::Check;
use cpm_manifests::layout::Component;
use cpm_testing::fixtures::write_config;

use super::agent::Node;

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
            .create(
                &PostParams::default(),
                &cpm_testing::fixtures::control_plane_node(n, ip),
            )
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

/// Acts as the kubelet: publishes a Ready mirror pod carrying the checksum of each manifest it
/// finds on the node, except for `stuck` components, whose mirror pod keeps the first checksum.
fn fake_kubelet(
    client: kube::Client,
    root: std::path::PathBuf,
    stuck: Option<Component>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "kube-system");
        loop {
            for c in Component::ALL {
                let Ok(text) = std::fs::read_to_string(
                    root.join(format!("etc/kubernetes/manifests/{}.yaml", c.name())),
                ) else {
                    continue;
                };
                let name = format!("{}-master-1", c.name());
                let sum = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("cpm.dev/config-checksum: "))
                    .unwrap_or_default()
                    .to_string();
                let existing = pods.get_opt(&name).await.unwrap();
                if existing.is_some() && stuck == Some(c) {
                    continue;
                }
                let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": "kube-system", "annotations": {"cpm.dev/config-checksum": sum}},
                    "spec": {"containers": [{"name": c.name(), "image": "x"}]},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }))
                .unwrap();
                match existing {
                    None => drop(pods.create(&PostParams::default(), &pod).await),
                    Some(old)
                        if old
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("cpm.dev/config-checksum"))
                            != Some(&sum) =>
                    {
                        let _ = pods.delete(&name, &Default::default()).await;
                        let _ = pods.create(&PostParams::default(), &pod).await;
                    }
                    Some(_) => {}
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_waits_for_the_new_mirror_pod_and_rolls_back_when_it_never_comes() {
    let server = ApiServer::start().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let node = Node::new("");
    let kubelet = fake_kubelet(
        admin.clone(),
        node.root.path().to_path_buf(),
        Some(Component::Scheduler),
    );
    let mut agent = node.agent(Some(admin.clone()));
    agent.gate_timeout = std::time::Duration::from_secs(3);
    agent.gate_interval = std::time::Duration::from_millis(20);
    let ok: std::collections::BTreeMap<Component, Vec<Check>> =
        Component::ALL.into_iter().map(|c| (c, vec![])).collect();
    agent.checks = Some(ok);
    // First pass: every mirror pod appears with its checksum.
    agent.pass(Mode::Apply).await.unwrap();
    let before = node.read("/etc/kubernetes/manifests/kube-scheduler.yaml");
    // A new scheduler config: the kubelet never replaces the scheduler's pod.
    write_config(&node.config, "imageRepository: registry.example.com/k8s\n");
    let err = agent.pass(Mode::Apply).await.unwrap_err();
    let text = cpm_core::exit::chain(&err);
    assert!(
        text.contains(
            "kube-scheduler not healthy within 3s: mirror pod kube-scheduler-master-1: checksum"
        ),
        "{text}"
    );
    assert_eq!(
        node.read("/etc/kubernetes/manifests/kube-scheduler.yaml"),
        before,
        "rolled back"
    );
    assert!(
        node.read("/etc/kubernetes/manifests/kube-apiserver.yaml")
            .contains("registry.example.com/k8s/kube-apiserver"),
        "earlier components passed their gates"
    );
    kubelet.abort();
}
