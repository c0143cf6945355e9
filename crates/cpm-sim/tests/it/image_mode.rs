//! Image mode: the container's root filesystem is the OCI archive `cargo xtask images` built
//! (`target/images/<bin>.tar`, or `CPM_SIM_IMAGES`), with the image config's entrypoint and
//! user, so image-level defects show up. Skipped (loudly) when the archives are not built.

use std::time::Duration;

use cpm_sim::SimOptions;
use cpm_sim::cluster::MasterOptions;
use cpm_sim::image::RootfsMode;

use crate::common::{container_id, dump, eventually, pod, ready, runnable};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: holder-image, namespace: default}
spec:
  nodeName: node-i
  terminationGracePeriodSeconds: 5
  securityContext: {runAsNonRoot: true}
  containers:
  - name: hold
    image: cpm/cpm-holder:0.1.0
    args: [hold]
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_image_runs_from_its_archive_as_its_user() -> anyhow::Result<()> {
    if !runnable() {
        return Ok(());
    }
    let mut opts = SimOptions::from_test_binary();
    let images = std::env::var_os("CPM_SIM_IMAGES")
        .map_or_else(|| opts.bin_dir.join("../images"), std::path::PathBuf::from);
    if !images.join("cpm-holder.tar").is_file() {
        eprintln!(
            "SKIPPED: {} has no cpm-holder.tar (cargo xtask images, or set CPM_SIM_IMAGES)",
            images.display()
        );
        return Ok(());
    }
    opts.rootfs = RootfsMode::Image(images);
    let cluster = cpm_sim::SimCluster::start(opts).await?;
    let node = MasterOptions {
        api_proxy: false,
        control_plane: false,
    };
    cluster.add_master_with("node-i", &node).await?;
    cluster.apply_yaml(POD).await?;
    let result = async {
        let id = eventually(
            "the image's container running and ready",
            Duration::from_secs(60),
            || async {
                let p = pod(&cluster, "default", "holder-image").await?;
                ready(&p)?.then(|| container_id(&p, "hold")).flatten()
            },
        )
        .await?;
        // The image's entrypoint with the pod's args, as the image's user (65532), in a pod
        // sandbox of its own (no hostNetwork) with its own address.
        let state = std::process::Command::new("runc")
            .arg("--root")
            .arg(cluster.runc_root())
            .args(["state", &id])
            .output()?;
        let state: serde_json::Value = serde_json::from_slice(&state.stdout)?;
        let pid = state["pid"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no pid in {state}"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        assert!(
            status.lines().any(|l| l.starts_with("Uid:\t65532\t")),
            "{status}"
        );
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))?;
        assert_eq!(cmdline, "/usr/local/bin/cpm-holder\0hold\0");
        let p = pod(&cluster, "default", "holder-image")
            .await
            .ok_or_else(|| anyhow::anyhow!("pod gone"))?;
        let s = p.status.unwrap_or_default();
        assert_ne!(
            s.pod_ip, s.host_ip,
            "a pod without hostNetwork has its own address"
        );
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}{}", dump(&cluster).await);
    }
    cluster.shutdown().await;
    Ok(())
}
