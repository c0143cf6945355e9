//! The binary as a daemon against the test API server, with the CRDs installed as deployed: on a
//! converged node it does nothing, neither passes nor API requests, while its inputs are read.

use std::process::{Command, Stdio};

use cpm_testing::apiserver::{ApiServer, Identity, UserInfo};
use cpm_testing::process::{Daemon, code, stderr};
use k8s_openapi::api::core::v1::Node as KubeNode;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

use super::agent::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_does_no_work_when_its_inputs_are_read() {
    let server = ApiServer::start().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let webhooks: CustomResourceDefinition =
        serde_saphyr::from_str(&cpm_manifests::scheduler::crd_yaml()).unwrap();
    let records: CustomResourceDefinition =
        serde_json::from_value(cpm_core::controlplanenode::crd()).unwrap();
    for crd in [webhooks, records] {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    Api::<KubeNode>::all(admin)
        .create(
            &PostParams::default(),
            &cpm_testing::fixtures::control_plane_node("master-1", "127.0.0.1"),
        )
        .await
        .unwrap();
    let node = Node::new("");
    let kubeconfig = node.root.path().join("cpm.kubeconfig");
    let yaml = server
        .kubeconfig_yaml(&Identity::Cert(UserInfo::new(
            "system:serviceaccount:cpm-system:cpm",
            &[],
        )))
        .unwrap();
    cpm_core::apply::write_atomic(&kubeconfig, yaml.as_bytes(), 0o600, None, None).unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap().to_string();
    let out = tokio::task::block_in_place(|| {
        node.run(&[
            "--once",
            "--health-timeout-seconds",
            "0",
            "--kubeconfig",
            &kubeconfig,
        ])
    });
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let addr = format!(
        "127.0.0.1:{}",
        cpm_testing::etcd::free_port("127.0.0.1".parse().unwrap())
    );
    let _daemon = Daemon::spawn(
        Command::new(env!("CARGO_BIN_EXE_cpm-manifests"))
            .args(&node.args(&["--kubeconfig", &kubeconfig, "--admin-addr", &addr])[1..])
            .stderr(Stdio::null()),
    );
    assert!(
        cpm_testing::process::admin_ready(&addr).await,
        "admin /readyz never answered 200"
    );
    let inputs = [node.config.clone(), node.root.path().join("etc/kubernetes")];
    tokio::task::block_in_place(|| {
        cpm_testing::idle::assert_idle_against(&server, &addr, "cpm_reconcile_total{", &inputs);
    });
}
