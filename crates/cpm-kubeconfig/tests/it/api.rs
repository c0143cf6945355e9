//! Against the test API server, which runs with the bundle's cluster CA: every kubeconfig
//! authenticates over mTLS as the right user and groups, and the `kubeadm:cluster-admins`
//! ClusterRoleBinding is created through super-admin.conf.

use std::sync::{Arc, Mutex};

use cpm_testing::apiserver::{ApiServer, ApiServerOptions, CertAndKey, Decision};
use k8s_openapi::api::core::v1::Node as KubeNode;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;

use super::*;

/// A (username, groups) pair the authorizer saw.
type Seen = (String, Vec<String>);

async fn server_with_cluster_ca(node: &Node) -> ApiServer {
    let ca = CertAndKey {
        cert_pem: std::fs::read_to_string(node.pki.join("ca.crt")).unwrap(),
        key_pem: std::fs::read_to_string(node.pki.join("ca.key")).unwrap(),
    };
    ApiServer::start_with(ApiServerOptions {
        ca: Some(ca),
        ..ApiServerOptions::standard()
    })
    .await
    .unwrap()
}

/// A client from `file` exactly as kubectl would build it, aimed at `server` (the component
/// kubeconfigs name the node's own apiserver, which in this test is the test server).
async fn client_from(file: &Path, server: &ApiServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(file).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.cluster_url = server.url().parse().unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kubeconfig_authenticates_as_its_user_and_the_binding_is_ensured() {
    let node = Node::new("");
    let server = server_with_cluster_ca(&node).await;
    node.set_config(&format!("controlPlaneEndpoint: {}\n", server.url()));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    // Everyone is allowed and recorded, except super-admin, who is denied: it can only succeed
    // through its system:masters group, which bypasses authorizers as on a real apiserver.
    server.set_authorizer(move |a| {
        if a.user.username == "kubernetes-super-admin" {
            return Decision::deny("only system:masters may pass");
        }
        log.lock()
            .unwrap()
            .push((a.user.username.clone(), a.user.groups.clone()));
        Decision::allow("test")
    });
    server.enforce_authorization(true);

    let out = tokio::task::block_in_place(|| node.run(&["--once"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The binding was created with super-admin credentials.
    let admin = server.admin_client().await.unwrap();
    let crb = Api::<ClusterRoleBinding>::all(admin)
        .get("kubeadm:cluster-admins")
        .await
        .unwrap();
    assert_eq!(crb.role_ref.name, "cluster-admin");
    assert_eq!(crb.subjects.unwrap()[0].name, "kubeadm:cluster-admins");
    let post = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        (post.user.as_deref(), post.code),
        (Some("kubernetes-super-admin"), 201)
    );

    let super_admin = client_from(&node.kubeconfig("super-admin.conf"), &server).await;
    Api::<KubeNode>::all(super_admin)
        .list(&Default::default())
        .await
        .expect("system:masters passes");
    for (file, user, groups) in [
        (
            "admin.conf",
            "kubernetes-admin",
            vec!["kubeadm:cluster-admins"],
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            vec![],
        ),
        ("scheduler.conf", "system:kube-scheduler", vec![]),
    ] {
        seen.lock().unwrap().clear();
        let client = client_from(&node.kubeconfig(file), &server).await;
        Api::<KubeNode>::all(client)
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let groups: Vec<String> = groups.into_iter().map(String::from).collect();
        assert_eq!(
            seen.lock().unwrap().last().cloned(),
            Some((user.to_string(), groups)),
            "{file}"
        );
    }

    // A second pass finds the binding and changes nothing.
    let before = node.root.entries();
    let out = tokio::task::block_in_place(|| node.run(&["--once"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(node.root.entries(), before);
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/clusterrolebindings"))
            .count(),
        1
    );
}

#[test]
fn an_unreachable_api_does_not_fail_the_pass() {
    // controlPlaneEndpoint defaults to the api-proxy on 127.0.0.1:6445, not running here.
    let node = Node::new("controlPlaneEndpoint: https://127.0.0.1:1\n");
    let out = node.run(&["--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(node.kubeconfig("admin.conf").exists());
}

/// As deployed (binding ensured through the API): on a converged node the daemon does nothing,
/// neither passes nor API requests, when its inputs and outputs are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_does_no_work_when_its_inputs_are_read() {
    let node = Node::new("");
    let server = server_with_cluster_ca(&node).await;
    node.set_config(&format!("controlPlaneEndpoint: {}\n", server.url()));
    let out = tokio::task::block_in_place(|| node.run(&["--once"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let admin = format!(
        "127.0.0.1:{}",
        cpm_testing::etcd::free_port("127.0.0.1".parse().unwrap())
    );
    let _daemon = cpm_testing::process::Daemon::spawn(
        Command::new(env!("CARGO_BIN_EXE_cpm-kubeconfig"))
            .arg("--root")
            .arg(node.root.path())
            .arg("--config")
            .arg(&node.config)
            .arg("--pki-dir")
            .arg(&node.pki)
            .args(["--node-ip", "127.0.0.1", "--admin-addr", &admin])
            .stderr(std::process::Stdio::null()),
    );
    assert!(
        cpm_testing::process::admin_ready(&admin).await,
        "admin /readyz never answered 200"
    );
    let inputs = [
        node.config.clone(),
        node.pki.clone(),
        node.root.path().join("etc/kubernetes"),
        node.root.path().join("root/.kube"),
    ];
    tokio::task::block_in_place(|| {
        cpm_testing::idle::assert_idle_against(&server, &admin, "cpm_reconcile_total{", &inputs);
    });
}
