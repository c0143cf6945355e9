//! CronJobs fired on demand: a Job from the template, its pod bound to a fitting node, run to
//! completion (`restartPolicy: Never`), the Job `Complete`.

use std::time::Duration;

use cpm_sim::cluster::MasterOptions;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::common::{cluster, dump, eventually};

const CRONJOB: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: version, namespace: cpm-system}
spec:
  schedule: "0 0 1 1 *"
  timeZone: Etc/UTC
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        metadata: {labels: {app: version}}
        spec:
          restartPolicy: Never
          hostNetwork: true
          tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
          containers:
          - name: version
            image: cpm/cpm-holder:0.1.0
            args: [--version]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_cronjob_runs_its_job_to_completion() -> anyhow::Result<()> {
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    let opts = MasterOptions {
        api_proxy: false,
        control_plane: true,
    };
    cluster.add_master_with("master-j", &opts).await?;
    cluster.apply_yaml(CRONJOB).await?;
    let job = cluster.fire_cronjob("version").await?;
    assert!(job.starts_with("version-manual-"), "{job}");
    let jobs: Api<Job> = Api::namespaced(cluster.client(), "cpm-system");
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "cpm-system");
    let result = async {
        eventually("the Job Complete", Duration::from_secs(60), || async {
            let j = jobs.get(&job).await.ok()?;
            let complete = j
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True");
            complete.then_some(())
        })
        .await?;
        let pod = pods
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|p| p.metadata.labels.as_ref().and_then(|l| l.get("job-name")) == Some(&job))
            .ok_or_else(|| anyhow::anyhow!("no pod of {job}"))?;
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded")
        );
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("master-j")
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let log = cluster.container_log("cpm-system", &name, "version");
        assert!(log.starts_with("cpm-holder 0.1.0"), "{log}");
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}{}", dump(&cluster).await);
    }
    cluster.shutdown().await;
    Ok(())
}
