//! Probes: a readiness probe drives the pod's `Ready` condition in the API both ways; a failing
//! liveness probe restarts the container, first at once, then after the kubelet's back-off.

use std::time::Duration;

use cpm_sim::cluster::MasterOptions;

use crate::common::{cluster, container_id, container_status, dump, eventually, exec, pod, ready};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: probed, namespace: default}
spec:
  nodeName: node-p
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: cpm/cpm-holder:0.1.0
    args: [hold]
    readinessProbe: {exec: {command: [/bin/test, -f, /state/ready]}, periodSeconds: 1, failureThreshold: 1}
    livenessProbe: {exec: {command: [/bin/test, '!', -f, /state/die]}, periodSeconds: 1, failureThreshold: 2}
    volumeMounts: [{name: state, mountPath: /state}]
  volumes: [{name: state, emptyDir: {}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_drives_ready_and_liveness_failures_restart_with_back_off() -> anyhow::Result<()>
{
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    let opts = MasterOptions {
        api_proxy: false,
        control_plane: false,
    };
    cluster.add_master_with("node-p", &opts).await?;
    cluster.apply_yaml(POD).await?;
    let result = async {
        let id = eventually(
            "the container running, not ready",
            Duration::from_secs(60),
            || async {
                let p = pod(&cluster, "default", "probed").await?;
                let running = container_status(&p, "app")?
                    .state
                    .as_ref()?
                    .running
                    .is_some();
                (running && ready(&p) == Some(false))
                    .then(|| container_id(&p, "app"))
                    .flatten()
            },
        )
        .await?;
        exec(&cluster, &id, "touch /state/ready")?;
        eventually("Ready True", Duration::from_secs(30), || async {
            ready(&pod(&cluster, "default", "probed").await?)?.then_some(())
        })
        .await?;
        exec(&cluster, &id, "rm /state/ready")?;
        eventually("Ready False again", Duration::from_secs(30), || async {
            (!ready(&pod(&cluster, "default", "probed").await?)?).then_some(())
        })
        .await?;
        // The emptyDir outlives restarts, so the container keeps failing its liveness probe.
        exec(&cluster, &id, "touch /state/die")?;
        eventually("the first restart", Duration::from_secs(60), || async {
            let p = pod(&cluster, "default", "probed").await?;
            let s = container_status(&p, "app")?;
            // cpm-holder exits 0 on the kubelet's SIGTERM: the restart is the probe's doing.
            let last = s.last_state.as_ref()?.terminated.as_ref()?;
            (s.restart_count >= 1 && last.exit_code == 0).then_some(())
        })
        .await?;
        let (count, message) = eventually(
            "CrashLoopBackOff after the second failure",
            Duration::from_secs(60),
            || async {
                let p = pod(&cluster, "default", "probed").await?;
                let s = container_status(&p, "app")?;
                let w = s.state.as_ref()?.waiting.as_ref()?;
                (w.reason.as_deref() == Some("CrashLoopBackOff"))
                    .then(|| (s.restart_count, w.message.clone().unwrap_or_default()))
            },
        )
        .await?;
        // The first restart was immediate; after n restarts the next waits 10 s × 2^(n-1).
        let delay = 10u64 << (count - 1).clamp(0, 5);
        let want = format!("back-off {delay}s restarting failed container=app pod=probed_default(");
        assert!(message.starts_with(&want), "restart {count}: {message}");
        eventually(
            "the second restart after the back-off",
            Duration::from_secs(60),
            || async {
                let p = pod(&cluster, "default", "probed").await?;
                (container_status(&p, "app")?.restart_count >= 2).then_some(())
            },
        )
        .await?;
        let p = pod(&cluster, "default", "probed")
            .await
            .ok_or_else(|| anyhow::anyhow!("pod gone"))?;
        assert_eq!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
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
