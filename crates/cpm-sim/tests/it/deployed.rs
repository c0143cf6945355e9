//! Everything `manifests/` deploys on one master, run together: the agents DaemonSet, the
//! control-plane-proxy DaemonSet (metrics-rbac-proxy with its in-cluster ServiceAccount
//! credentials) and the master's etcd-backup CronJob, fired on demand against the etcd the
//! agents rendered.

use std::time::Duration;

use cpm_testing::apiserver::UserInfo;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::common::{cluster, dump, eventually, ready};

async fn pod_on(cluster: &cpm_sim::SimCluster, prefix: &str, node: &str) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "cpm-system");
    pods.list(&Default::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
        })
}

fn ready_container(p: &Pod, name: &str) -> bool {
    crate::common::container_status(p, name).is_some_and(|c| c.ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_objects_serve_metrics_and_take_a_backup_on_one_master() -> anyhow::Result<()>
{
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    let m = cluster.add_master("master-1").await?;
    cluster.apply_file("manifests/cpm-agents.yaml").await?;
    cluster
        .apply_file("manifests/control-plane-proxy.yaml")
        .await?;
    cluster.apply_backup_cronjob("master-1").await?;
    let result = async {
        eventually(
            "cpm-certs and cpm-etcd Ready, control-plane-proxy Ready",
            Duration::from_secs(240),
            || async {
                let agents = pod_on(&cluster, "cpm-", "master-1").await?;
                let proxy = pod_on(&cluster, "control-plane-proxy-", "master-1").await?;
                (ready_container(&agents, "cpm-certs")
                    && ready_container(&agents, "cpm-etcd")
                    && ready(&proxy)?)
                .then_some(())
            },
        )
        .await?;
        // A scrape through metrics-rbac-proxy on the node IP: TokenReview and
        // SubjectAccessReview go to the store through the ClusterIP, the upstream is cpm-certs'
        // admin port on the master's loopback.
        cluster.server().add_token(
            "prometheus-token",
            UserInfo::new(
                "system:serviceaccount:monitoring:prometheus-k8s",
                &["system:serviceaccounts"],
            ),
        );
        let proxy: std::net::SocketAddr = (m.ip, 4209).into();
        let bearer = [(
            "Authorization".to_string(),
            "Bearer prometheus-token".to_string(),
        )];
        let body = eventually(
            "a scrape of cpm-certs through the proxy",
            Duration::from_secs(60),
            || async {
                let (code, body) = cpm_sim::probe::http_get_in(
                    &m.netns,
                    proxy,
                    "/cpm-certs/metrics",
                    &bearer,
                    true,
                    Duration::from_secs(5),
                )
                .await
                .ok()?;
                (code == 200).then_some(body)
            },
        )
        .await?;
        let (anonymous, _) = cpm_sim::probe::http_get_in(
            &m.netns,
            proxy,
            "/cpm-certs/metrics",
            &[],
            true,
            Duration::from_secs(5),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        assert_eq!(anonymous, 401, "no credentials, no metrics");
        assert!(body.contains("cpm_reconcile_total"), "{body}");
        // The backup CronJob, fired now, snapshots the master's etcd into its backup directory.
        let job = cluster.fire_cronjob("etcd-backup-master-1").await?;
        let jobs: Api<Job> = Api::namespaced(cluster.client(), "cpm-system");
        eventually(
            "the backup Job Complete",
            Duration::from_secs(120),
            || async {
                let j = jobs.get(&job).await.ok()?;
                j.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
                    .then_some(())
            },
        )
        .await?;
        let backups: Vec<String> = std::fs::read_dir(m.root.join("var/lib/etcd/backups"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            backups.iter().any(|b| b.starts_with("etcd-master-1-")),
            "{backups:?}"
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
