//! Static pods: a manifest written into a master's manifests directory starts, a changed one
//! restarts with a new mirror pod carrying the manifest's annotations, a removed one stops.

use std::time::Duration;

use cpm_sim::cluster::MasterOptions;
use cpm_sim::staticpod::{HASH, MIRROR, SOURCE};

use crate::common::{cluster, container_id, dump, eventually, pod, ready};

fn manifest(checksum: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: demo
  namespace: kube-system
  annotations: {{cpm.dev/checksum: "{checksum}"}}
  labels: {{component: demo}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: hold
    image: cpm/cpm-holder:0.1.0
    args: [hold]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_pod_starts_restarts_on_change_is_mirrored_and_stops_on_removal()
-> anyhow::Result<()> {
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    let opts = MasterOptions {
        api_proxy: false,
        control_plane: true,
    };
    let m = cluster.add_master_with("master-s", &opts).await?;
    let path = m.root.join("etc/kubernetes/manifests/demo.yaml");
    let result = async {
        cpm_core::apply::write_atomic(&path, manifest("v1").as_bytes(), 0o600, None, None)?;
        let (first, hash1) = eventually(
            "the mirror pod, running and ready",
            Duration::from_secs(60),
            || async {
                let p = pod(&cluster, "kube-system", "demo-master-s").await?;
                let a = p.metadata.annotations.clone()?;
                (a.get("cpm.dev/checksum")? == "v1" && ready(&p)?).then_some(())?;
                Some((container_id(&p, "hold")?, a.get(MIRROR)?.clone()))
            },
        )
        .await?;
        let p = pod(&cluster, "kube-system", "demo-master-s")
            .await
            .ok_or_else(|| anyhow::anyhow!("gone"))?;
        let a = p.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(HASH), Some(&hash1));
        assert_eq!(a.get(SOURCE).map(String::as_str), Some("file"));
        assert_eq!(
            p.metadata
                .labels
                .unwrap_or_default()
                .get("component")
                .map(String::as_str),
            Some("demo")
        );
        assert_eq!(
            p.spec.and_then(|s| s.node_name).as_deref(),
            Some("master-s")
        );
        assert!(cpm_sim::runc::list(cluster.runc_root()).contains(&first));

        // A changed manifest: the old container stops, a new one runs, the mirror follows.
        cpm_core::apply::write_atomic(&path, manifest("v2").as_bytes(), 0o600, None, None)?;
        let second = eventually(
            "the new container under a new mirror pod",
            Duration::from_secs(60),
            || async {
                let p = pod(&cluster, "kube-system", "demo-master-s").await?;
                let a = p.metadata.annotations.clone()?;
                (a.get("cpm.dev/checksum")? == "v2" && a.get(MIRROR)? != &hash1 && ready(&p)?)
                    .then_some(())?;
                container_id(&p, "hold").filter(|id| *id != first)
            },
        )
        .await?;
        let ids = cpm_sim::runc::list(cluster.runc_root());
        assert!(ids.contains(&second) && !ids.contains(&first), "{ids:?}");

        // Removed: the container stops and the mirror pod goes.
        std::fs::remove_file(&path)?;
        eventually(
            "the mirror pod gone and no container left",
            Duration::from_secs(60),
            || async {
                let gone = pod(&cluster, "kube-system", "demo-master-s")
                    .await
                    .is_none();
                (gone && cpm_sim::runc::list(cluster.runc_root()).is_empty()).then_some(())
            },
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}{}", dump(&cluster).await);
    }
    cluster.shutdown().await;
    Ok(())
}
