//! A DaemonSet template change rolls out one node at a time (`maxUnavailable: 1`): at every
//! look, at most one of the three nodes lacks a ready pod, and every node ends on the new
//! template.

use std::collections::BTreeMap;
use std::time::Duration;

use cpm_sim::cluster::MasterOptions;
use cpm_sim::controllers::daemonset::HASH_LABEL;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::common::{cluster, dump, eventually, ready};

fn daemonset(version: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: roll, namespace: default}}
spec:
  selector: {{matchLabels: {{app: roll}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: roll}}}}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 1
      containers:
      - name: hold
        image: cpm/cpm-holder:0.1.0
        args: [hold]
        env: [{{name: VERSION, value: "{version}"}}]
        readinessProbe: {{exec: {{command: [/bin/true]}}, periodSeconds: 1}}
"#
    )
}

/// Per node: (template hash, ready) of its pod.
async fn by_node(pods: &Api<Pod>) -> BTreeMap<String, (String, bool)> {
    let list = pods
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str)
                == Some("roll")
        })
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone()?;
            let hash = p.metadata.labels.as_ref()?.get(HASH_LABEL)?.clone();
            Some((node, (hash, ready(&p) == Some(true))))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_template_change_rolls_one_node_at_a_time() -> anyhow::Result<()> {
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    let opts = MasterOptions {
        api_proxy: false,
        control_plane: false,
    };
    for n in ["n1", "n2", "n3"] {
        cluster.add_master_with(n, &opts).await?;
    }
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let result = async {
        cluster.apply_yaml(&daemonset("1")).await?;
        let old = eventually("three ready pods", Duration::from_secs(60), || async {
            let nodes = by_node(&pods).await;
            let hashes: std::collections::BTreeSet<&String> =
                nodes.values().map(|(h, _)| h).collect();
            (nodes.len() == 3 && nodes.values().all(|(_, r)| *r) && hashes.len() == 1)
                .then(|| nodes.values().next().map(|(h, _)| h.clone()))?
        })
        .await?;
        cluster.apply_yaml(&daemonset("2")).await?;
        let worst = std::sync::atomic::AtomicUsize::new(3);
        let (w, p, old) = (&worst, &pods, &old);
        eventually(
            "every node on the new template, ready",
            Duration::from_secs(120),
            move || async move {
                let nodes = by_node(p).await;
                let ready_nodes = ["n1", "n2", "n3"]
                    .iter()
                    .filter(|n| nodes.get(**n).is_some_and(|(_, r)| *r))
                    .count();
                w.fetch_min(ready_nodes, std::sync::atomic::Ordering::SeqCst);
                (nodes.len() == 3 && nodes.values().all(|(h, r)| *r && h != old)).then_some(())
            },
        )
        .await?;
        let worst = worst.into_inner();
        assert!(worst >= 2, "{worst} of 3 nodes had a ready pod at one look");
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}{}", dump(&cluster).await);
    }
    cluster.shutdown().await;
    Ok(())
}
