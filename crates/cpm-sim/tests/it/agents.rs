//! The agents DaemonSet of `manifests/cpm-agents.yaml`, exactly as generated, on one master
//! bootstrapped like a real node (api-proxy static pod, kubelet credentials), against the store
//! with the namespace, CRDs, RBAC and Secrets applied first: its pod is scheduled, its four
//! agents run under runc with the pod's security context, and their readiness probes pass.
//!
//! cpm-manifests becomes ready only after a pass whose health gate sees kube-apiserver ready.
//! Until the simulator has an executable for the kube-apiserver image
//! (`cpm_sim::image::CONTROL_PLANE`), that static pod waits with `SimulatorNotRunnable`, which
//! is asserted instead; the test then requires cpm-manifests' readiness by itself as soon as
//! the table entry changes.

use std::time::Duration;

use cpm_sim::image::{CONTROL_PLANE, Source};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::common::{cluster, container_status, dump, eventually, pod};

fn ready_containers(p: &Pod) -> Vec<String> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.ready)
        .map(|c| c.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_daemonset_runs_its_exact_spec_and_becomes_ready() -> anyhow::Result<()> {
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    let apiserver_runnable = !matches!(
        CONTROL_PLANE
            .iter()
            .find(|(n, _)| *n == "kube-apiserver")
            .map(|(_, s)| s),
        Some(Source::NotRunnable(_))
    );
    let expected: &[&str] = if apiserver_runnable {
        &["cpm-certs", "cpm-kubeconfig", "cpm-manifests", "cpm-etcd"]
    } else {
        &["cpm-certs", "cpm-kubeconfig", "cpm-etcd"]
    };
    let m = cluster.add_master("master-1").await?;
    cluster.apply_file("manifests/cpm-agents.yaml").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "cpm-system");
    let result = async {
        let p = eventually(
            "the agents Ready on master-1",
            Duration::from_secs(240),
            || async {
                let list = pods.list(&Default::default()).await.ok()?;
                let p = list.items.into_iter().find(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("cpm-"))
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("master-1")
                })?;
                let ready = ready_containers(&p);
                expected
                    .iter()
                    .all(|e| ready.iter().any(|r| r == e))
                    .then_some(p)
            },
        )
        .await?;
        let names: Vec<String> = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(
            names,
            ["cpm-certs", "cpm-kubeconfig", "cpm-manifests", "cpm-etcd"]
        );
        let manifests = container_status(&p, "cpm-manifests")
            .ok_or_else(|| anyhow::anyhow!("no cpm-manifests status"))?;
        assert!(
            manifests
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .is_some(),
            "{manifests:?}"
        );
        assert_eq!(manifests.restart_count, 0);
        // What the agents wrote on the master: PKI, kubeconfigs, the etcd and apiserver
        // static pods; etcd runs from its rendered manifest.
        for f in [
            "etc/kubernetes/pki/apiserver.crt",
            "etc/kubernetes/pki/etcd/server.key",
            "etc/kubernetes/admin.conf",
            "etc/kubernetes/super-admin.conf",
            "etc/kubernetes/manifests/etcd.yaml",
            "etc/kubernetes/manifests/kube-apiserver.yaml",
        ] {
            assert!(m.root.join(f).is_file(), "{f} missing on the master");
        }
        eventually(
            "etcd running from its static pod",
            Duration::from_secs(60),
            || async {
                let etcd = pod(&cluster, "kube-system", "etcd-master-1").await?;
                container_status(&etcd, "etcd")?
                    .state
                    .as_ref()?
                    .running
                    .as_ref()
                    .map(|_| ())
            },
        )
        .await?;
        if !apiserver_runnable {
            let api = eventually(
                "the kube-apiserver mirror pod",
                Duration::from_secs(60),
                || async { pod(&cluster, "kube-system", "kube-apiserver-master-1").await },
            )
            .await?;
            let waiting = container_status(&api, "kube-apiserver")
                .and_then(|s| s.state.as_ref()?.waiting.as_ref())
                .and_then(|w| w.reason.clone());
            assert_eq!(waiting.as_deref(), Some("SimulatorNotRunnable"));
        }
        let dss: Api<DaemonSet> = Api::namespaced(cluster.client(), "cpm-system");
        let ds = dss.get("cpm").await?;
        let status = ds
            .status
            .ok_or_else(|| anyhow::anyhow!("no DaemonSet status"))?;
        assert_eq!(
            (
                status.desired_number_scheduled,
                status.current_number_scheduled
            ),
            (1, 1)
        );
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}{}", dump(&cluster).await);
    }
    crate::common::dump_if_asked(&cluster).await;
    cluster.shutdown().await;
    Ok(())
}
