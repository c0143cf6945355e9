//! The CronJob and Job controllers.
//!
//! A CronJob fires on its schedule (checked every few seconds; `timeZone` must be UTC-like,
//! `suspend` and `concurrencyPolicy: Forbid` are honoured, `startingDeadlineSeconds` is moot
//! since missed runs are not caught up) or on demand ([`fire`]): a Job `<cronjob>-<minutes
//! since the epoch>` (on demand `<cronjob>-manual-<suffix>`) from `jobTemplate`, owned by the
//! CronJob. A Job gets one pod at a time (`completions` 1, `parallelism` 1), a new one after a
//! failed pod until `backoffLimit` failures, and is Complete once a pod succeeded. Pods are
//! bound by the template's node affinity or nodeSelector to a fitting node (the simulator also
//! plays the scheduler). History limits and `ttlSecondsAfterFinished` are not enforced.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use time::OffsetDateTime;

use super::daemonset::fits;
use crate::cron::Schedule;

fn owner(kind: &str, api_version: &str, name: &str, uid: Option<&String>) -> serde_json::Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}])
}

/// The Job `cj` creates, named `name`.
pub fn job_for(
    cj: &CronJob,
    name: &str,
    scheduled: OffsetDateTime,
) -> Result<Job, serde_json::Error> {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let cj_name = cj.metadata.name.clone().unwrap_or_default();
    let mut annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    if let Ok(t) = scheduled.format(&time::format_description::well_known::Rfc3339) {
        annotations.insert("batch.kubernetes.io/cronjob-scheduled-timestamp".into(), t);
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cj.metadata.namespace,
            "labels": template.metadata.as_ref().and_then(|m| m.labels.clone()),
            "annotations": annotations,
            "ownerReferences": owner("CronJob", "batch/v1", &cj_name, cj.metadata.uid.as_ref()),
        },
        "spec": template.spec,
    }))
}

/// Creates a Job of CronJob `namespace/name` now (as `kubectl create job --from=cronjob/…`);
/// returns the Job's name.
pub async fn fire(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String, kube::Error> {
    let cjs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let cj = cjs.get(name).await?;
    let job_name = format!("{name}-manual-{}", super::suffix());
    let job =
        job_for(&cj, &job_name, OffsetDateTime::now_utc()).map_err(kube::Error::SerdeError)?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    jobs.create(&PostParams::default(), &job).await?;
    Ok(job_name)
}

fn active(job: &Job) -> bool {
    !job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn owned<'a, T: kube::Resource>(items: &'a [T], kind: &str, uid: Option<&String>) -> Vec<&'a T> {
    items
        .iter()
        .filter(|o| {
            o.meta()
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.kind == kind && Some(&r.uid) == uid)
        })
        .collect()
}

/// One pass of the CronJob controller at `now`: fires every CronJob whose schedule matches
/// this minute and that has not fired in it.
pub async fn sync_cronjobs(client: &kube::Client, now: OffsetDateTime) -> Result<(), kube::Error> {
    let cjs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let all_jobs = jobs.list(&ListParams::default()).await?.items;
    let minute = now.unix_timestamp() / 60;
    for cj in cjs.list(&ListParams::default()).await?.items {
        let Some(spec) = &cj.spec else { continue };
        if spec.suspend == Some(true) {
            continue;
        }
        let utc = spec
            .time_zone
            .as_deref()
            .is_none_or(|z| matches!(z, "Etc/UTC" | "UTC" | "Etc/GMT"));
        let Ok(schedule) = Schedule::parse(&spec.schedule) else {
            continue;
        };
        if !utc || !schedule.matches(now) {
            continue;
        }
        let name = cj.metadata.name.clone().unwrap_or_default();
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let job_name = format!("{name}-{minute}");
        let mine = owned(&all_jobs, "CronJob", cj.metadata.uid.as_ref());
        if mine
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some(&job_name))
        {
            continue;
        }
        if spec.concurrency_policy.as_deref() == Some("Forbid") && mine.iter().any(|j| active(j)) {
            continue;
        }
        let start = OffsetDateTime::from_unix_timestamp(minute * 60).unwrap_or(now);
        let job = job_for(&cj, &job_name, start).map_err(kube::Error::SerdeError)?;
        let api: Api<Job> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &job).await?;
        let status = json!({"status": {"lastScheduleTime": start.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()}});
        let cjs_ns: Api<CronJob> = Api::namespaced(client.clone(), &ns);
        cjs_ns
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    Ok(())
}

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// One pass of the Job controller.
pub async fn sync_jobs(client: &kube::Client) -> Result<(), kube::Error> {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let all_pods = pods.list(&ListParams::default()).await?.items;
    let nodes = nodes.list(&ListParams::default()).await?.items;
    for job in jobs.list(&ListParams::default()).await?.items {
        if !active(&job) {
            continue;
        }
        let name = job.metadata.name.clone().unwrap_or_default();
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let mine = owned(&all_pods, "Job", job.metadata.uid.as_ref());
        let succeeded = mine.iter().filter(|p| pod_phase(p) == "Succeeded").count();
        let failed = mine.iter().filter(|p| pod_phase(p) == "Failed").count();
        let running = mine.len() - succeeded - failed;
        let limit = usize::try_from(job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6))
            .unwrap_or(6);
        let now = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut status = json!({
            "active": running,
            "succeeded": succeeded,
            "failed": failed,
            "startTime": job.status.as_ref().and_then(|s| s.start_time.clone()).map_or(json!(now), |t| json!(t)),
        });
        if succeeded > 0 {
            status["conditions"] =
                json!([{"type": "Complete", "status": "True", "lastTransitionTime": now}]);
            status["completionTime"] = json!(now);
        } else if failed > limit {
            status["conditions"] = json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": now}]);
        } else if running == 0 {
            let pod = job_pod(&job, &nodes).map_err(kube::Error::SerdeError)?;
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            api.create(&PostParams::default(), &pod).await?;
            status["active"] = json!(1);
        }
        let api: Api<Job> = Api::namespaced(client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
    Ok(())
}

/// The pod of `job`, bound to the first node its template fits (unbound if none).
pub fn job_pod(job: &Job, nodes: &[Node]) -> Result<Pod, serde_json::Error> {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let spec = template.spec.unwrap_or_default();
    let node = nodes
        .iter()
        .find(|n| fits(&spec, n))
        .and_then(|n| n.metadata.name.clone());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert("job-name".into(), job_name.clone());
    labels.insert("batch.kubernetes.io/job-name".into(), job_name.clone());
    if let Some(uid) = &job.metadata.uid {
        labels.insert("controller-uid".into(), uid.clone());
        labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
    }
    let mut spec = serde_json::to_value(spec)?;
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{job_name}-{}", super::suffix()),
            "namespace": job.metadata.namespace,
            "labels": labels,
            "ownerReferences": owner("Job", "batch/v1", &job_name, job.metadata.uid.as_ref()),
        },
        "spec": spec,
    }))
}
