//! The agents DaemonSet of `manifests/cpm-agents.yaml`, exactly as generated, on one master
//! bootstrapped like a real node (api-proxy static pod, kubelet credentials), against the store
//! with the namespace, CRDs, RBAC and Secrets applied first: its pod is scheduled, its four
//! agents run under runc with the pod's security context, and its readiness probes pass.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::common::{cluster, dump, eventually, ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_daemonset_runs_its_exact_spec_and_becomes_ready() -> anyhow::Result<()> {
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    let m = cluster.add_master("master-1").await?;
    cluster.apply_file("manifests/cpm-agents.yaml").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "cpm-system");
    let waited = eventually(
        "the agents pod Ready on master-1",
        Duration::from_secs(300),
        || async {
            let list = pods.list(&Default::default()).await.ok()?;
            let p = list.items.into_iter().find(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("cpm-"))
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("master-1")
            })?;
            ready(&p)?.then_some(p)
        },
    )
    .await;
    let p = match waited {
        Ok(p) => p,
        Err(e) => anyhow::bail!("{e}{}", dump(&cluster).await),
    };
    let statuses = p
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["cpm-certs", "cpm-kubeconfig", "cpm-manifests", "cpm-etcd"]
    );
    assert!(statuses.iter().all(|s| s.ready), "{statuses:?}");
    // What the agents wrote on the master.
    for f in [
        "etc/kubernetes/pki/apiserver.crt",
        "etc/kubernetes/admin.conf",
        "etc/kubernetes/manifests/etcd.yaml",
    ] {
        assert!(m.root.join(f).is_file(), "{f} missing on the master");
    }
    let dss: Api<DaemonSet> = Api::namespaced(cluster.client(), "cpm-system");
    let ds = eventually(
        "the DaemonSet's status counting the ready pod",
        Duration::from_secs(30),
        || async {
            let ds = dss.get("cpm").await.ok()?;
            (ds.status.as_ref()?.number_ready == 1).then_some(ds)
        },
    )
    .await?;
    assert_eq!(ds.status.map(|s| s.desired_number_scheduled), Some(1));
    cluster.shutdown().await;
    Ok(())
}
