//! What the simulator tests share: the skip rule, cluster start, polling, pod lookups.

use std::future::Future;
use std::time::{Duration, Instant};

use cpm_sim::{SimCluster, SimOptions};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// Whether the simulator can run here: locally a missing prerequisite skips the test with a
/// loud `SKIPPED:` line, under `CI=true` it fails.
pub fn runnable() -> bool {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let opts = SimOptions::from_test_binary();
    let missing = cpm_sim::cluster::unavailable().or_else(|| {
        let bin = opts.bin_dir.join("cpm-certs");
        (!bin.is_file()).then(|| {
            format!(
                "{} is not built (cargo build --bins, or run the suite with --workspace)",
                bin.display()
            )
        })
    });
    match missing {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{why}: required under CI=true")
        }
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// A started cluster, or `None` (skipped).
pub async fn cluster() -> anyhow::Result<Option<SimCluster>> {
    if !runnable() {
        return Ok(None);
    }
    Ok(Some(
        SimCluster::start(SimOptions::from_test_binary()).await?,
    ))
}

/// Polls `check` every 250 ms until it gives `Some`, or fails after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Pod `namespace/name`, if it exists.
pub async fn pod(cluster: &SimCluster, namespace: &str, name: &str) -> Option<Pod> {
    let api: Api<Pod> = Api::namespaced(cluster.client(), namespace);
    api.get_opt(name).await.ok().flatten()
}

/// The pod's `Ready` condition.
pub fn ready(p: &Pod) -> Option<bool> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status == "True")
}

/// The runc id of container `container` of the pod (`runc://<id>`).
pub fn container_id(p: &Pod, container: &str) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .container_id
        .as_ref()?
        .strip_prefix("runc://")
        .map(str::to_string)
}

/// A container's status.
pub fn container_status<'a>(
    p: &'a Pod,
    container: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

/// Runs `sh -c script` in a running container (`runc exec`, with the host tools of process
/// mode on `PATH`), returning stdout; fails with
/// stderr on a non-zero exit.
pub fn exec(cluster: &SimCluster, id: &str, script: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(cluster.runc_root())
        .args([
            "exec",
            "--env",
            "PATH=/usr/bin:/bin",
            id,
            "/bin/sh",
            "-c",
            script,
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script}: exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A dump of every pod's status and every container's log, for failure messages.
pub async fn dump(cluster: &SimCluster) -> String {
    let api: Api<Pod> = Api::all(cluster.client());
    let mut out = String::new();
    for p in api
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        out.push_str(&format!(
            "\n=== pod {ns}/{name}: {}\n",
            serde_json::to_string(&p.status).unwrap_or_default()
        ));
        for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
            let log = cluster.container_log(&ns, &name, &c.name);
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            out.push_str(&format!("--- {} (last {} lines)\n", c.name, tail.len()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// Prints [`dump`] when `CPM_SIM_DUMP=1` (to read what every container logged in a passing run).
pub async fn dump_if_asked(cluster: &SimCluster) {
    if std::env::var("CPM_SIM_DUMP").is_ok_and(|v| v == "1") {
        eprintln!("{}", dump(cluster).await);
    }
}
