//! The binary as a daemon, as deployed (the ControlPlaneNode CRD installed, a kubeconfig, a real
//! etcd started from the manifest it rendered): on a converged master it does nothing, neither
//! passes nor API requests, while its inputs are read.

use std::process::Stdio;

use cpm_testing::apiserver::{ApiServer, Identity, UserInfo};
use cpm_testing::process::Daemon;
use k8s_openapi::api::core::v1::Node as KubeNode;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_does_no_work_when_its_inputs_are_read() {
    let Some(etcd) = etcd_binary() else { return };
    let server = ApiServer::start().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let crd: CustomResourceDefinition =
        serde_json::from_value(cpm_core::controlplanenode::crd()).unwrap();
    Api::<CustomResourceDefinition>::all(admin.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    Api::<KubeNode>::all(admin)
        .create(
            &PostParams::default(),
            &cpm_testing::fixtures::control_plane_node("master-1", "127.0.1.1"),
        )
        .await
        .unwrap();
    let n = node();
    let kubeconfig = n.root.path().join("cpm.kubeconfig");
    let yaml = server
        .kubeconfig_yaml(&Identity::Cert(UserInfo::new(
            "system:serviceaccount:cpm-system:cpm",
            &[],
        )))
        .unwrap();
    cpm_core::apply::write_atomic(&kubeconfig, yaml.as_bytes(), 0o600, None, None).unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap().to_string();
    let out = tokio::task::block_in_place(|| {
        run(
            &n,
            "master-1",
            "127.0.1.1",
            &["--once", "--kubeconfig", &kubeconfig],
        )
    });
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut member = EtcdProcess::spawn_from_manifest(&etcd, n.root.path()).unwrap();
    member.wait_healthy(Duration::from_secs(30)).unwrap();

    let addr = format!(
        "127.0.0.1:{}",
        cpm_testing::etcd::free_port("127.0.0.1".parse().unwrap())
    );
    let _daemon = Daemon::spawn(
        Command::new(env!("CARGO_BIN_EXE_cpm-etcd"))
            .arg("--root")
            .arg(n.root.path())
            .arg("--config")
            .arg(&n.config)
            .args(["--node-name", "master-1", "--node-ip", "127.0.1.1"])
            .args(["--kubeconfig", &kubeconfig, "--admin-addr", &addr])
            .stderr(Stdio::null()),
    );
    assert!(
        cpm_testing::process::admin_ready(&addr).await,
        "admin /readyz never answered 200"
    );
    let inputs = [n.config.clone(), n.root.path().join("etc/kubernetes")];
    tokio::task::block_in_place(|| {
        cpm_testing::idle::assert_idle_against(&server, &addr, "cpm_reconcile_total{", &inputs);
    });
}
