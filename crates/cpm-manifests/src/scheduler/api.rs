//! The Kubernetes side: list the objects, report rejected webhooks (Events and status), watch.

use std::collections::BTreeMap;

use cpm_core::kube::{KubeWatch, watch_triggers};
use cpm_core::reconcile::TriggerSender;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use sha2::{Digest as _, Sha256};
use tracing::debug;

use super::crd::{
    API_VERSION, KIND, KubeSchedulerWebhookConfiguration, KubeSchedulerWebhookConfigurationStatus,
    RejectedWebhook,
};
use super::extenders::Rejection;

/// `reason` of the Events about rejected webhooks.
pub const EVENT_REASON: &str = "InvalidWebhook";
/// Namespace of Events about cluster-scoped objects.
pub const EVENT_NAMESPACE: &str = "default";
/// Longest Event message the API server accepts.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Reporting a rejection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An Event could not be created.
    #[error("cannot create event {name} in namespace {EVENT_NAMESPACE}")]
    Event {
        /// The Event's name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A status could not be written.
    #[error("cannot update the status of {KIND} {object}")]
    Status {
        /// The object's name.
        object: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// What [`report`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Events created (rejections already reported are not counted).
    pub events_created: usize,
    /// Statuses written (statuses already up to date are not counted).
    pub statuses_written: usize,
}

/// Every `KubeSchedulerWebhookConfiguration` of the cluster.
pub async fn list_webhooks(
    client: &Client,
) -> Result<Vec<KubeSchedulerWebhookConfiguration>, kube::Error> {
    let api: Api<KubeSchedulerWebhookConfiguration> = Api::all(client.clone());
    Ok(api.list(&ListParams::default()).await?.items)
}

/// Reports every rejection both ways: an Event per rejection ([`report_rejections`]) and the
/// objects' status ([`sync_status`]). Both are attempted; the first error is returned.
pub async fn report(
    client: &Client,
    objects: &[KubeSchedulerWebhookConfiguration],
    rejections: &[Rejection],
    reporter: &str,
) -> Result<Reported, ReportError> {
    let events = report_rejections(client, rejections, reporter).await;
    let statuses = sync_status(client, objects, rejections).await;
    Ok(Reported {
        events_created: events?,
        statuses_written: statuses?,
    })
}

/// Creates one Warning Event (`reason: InvalidWebhook`, in namespace `default`, about the
/// cluster-scoped object) per rejection. The Event's name is derived from the object, its uid
/// and generation, the webhook index and the reason, and an existing Event (409) is left
/// alone: repeated passes, or several masters, report each rejection once per generation.
/// Returns how many Events were created.
pub async fn report_rejections(
    client: &Client,
    rejections: &[Rejection],
    reporter: &str,
) -> Result<usize, ReportError> {
    let api: Api<Event> = Api::namespaced(client.clone(), EVENT_NAMESPACE);
    let now = Time(Timestamp::now());
    let mut created = 0;
    for rejection in rejections {
        let event = rejection_event(rejection, reporter, &now);
        let name = event.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => created += 1,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(event = %name, "rejection already reported");
            }
            Err(source) => return Err(ReportError::Event { name, source }),
        }
    }
    Ok(created)
}

/// The Event reporting `rejection` (pure but for `now`).
pub fn rejection_event(rejection: &Rejection, reporter: &str, now: &Time) -> Event {
    let message = truncate(
        format!(
            "webhooks[{}] is left out of kube-scheduler's extenders: {}",
            rejection.index,
            rejection.reason()
        ),
        MAX_MESSAGE_BYTES,
    );
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(rejection)),
            namespace: Some(EVENT_NAMESPACE.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "cpm".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(API_VERSION.into()),
            kind: Some(KIND.into()),
            name: Some(rejection.object.clone()),
            uid: rejection.uid.clone(),
            field_path: Some(format!("spec.webhooks[{}]", rejection.index)),
            ..ObjectReference::default()
        },
        reason: Some(EVENT_REASON.into()),
        message: Some(message),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(reporter.into()),
            host: None,
        }),
        reporting_component: Some(reporter.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        count: Some(1),
        ..Event::default()
    }
}

/// `<object>.<16 hex digits>`: a hash of (object, uid, generation, index, reason), so the
/// same rejection of the same generation always gets the same name.
pub fn event_name(rejection: &Rejection) -> String {
    let mut hash = Sha256::new();
    for part in [
        rejection.object.as_str(),
        rejection.uid.as_deref().unwrap_or(""),
        &rejection
            .generation
            .map(|g| g.to_string())
            .unwrap_or_default(),
        &rejection.index.to_string(),
        &rejection.reason(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    // Object names are DNS subdomains (≤ 253); keep the Event name within that bound too.
    let prefix: String = rejection.object.chars().take(253 - 17).collect();
    let prefix = prefix.trim_end_matches(['.', '-']);
    format!("{prefix}.{hex}")
}

/// Writes each object's `status`: its generation and its rejected webhooks (an empty list
/// once every webhook is valid). Objects whose status is already right are not written, so a
/// pass does not wake watchers for nothing. An object deleted meanwhile is skipped. Returns
/// how many statuses were written.
pub async fn sync_status(
    client: &Client,
    objects: &[KubeSchedulerWebhookConfiguration],
    rejections: &[Rejection],
) -> Result<usize, ReportError> {
    let api: Api<KubeSchedulerWebhookConfiguration> = Api::all(client.clone());
    let mut written = 0;
    for object in objects {
        let name = object.name_any();
        let desired = desired_status(object, rejections);
        if object.status.as_ref() == Some(&desired) {
            continue;
        }
        let patch = serde_json::json!({ "status": desired });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => written += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                debug!(object = %name, "object gone before its status was written");
            }
            Err(source) => {
                return Err(ReportError::Status {
                    object: name,
                    source,
                });
            }
        }
    }
    Ok(written)
}

/// The status `object` should have given `rejections` (all objects' rejections; those of
/// other objects are ignored). Pure.
pub fn desired_status(
    object: &KubeSchedulerWebhookConfiguration,
    rejections: &[Rejection],
) -> KubeSchedulerWebhookConfigurationStatus {
    let name = object.name_any();
    let mut rejected: Vec<RejectedWebhook> = rejections
        .iter()
        .filter(|r| r.object == name)
        .map(|r| RejectedWebhook {
            index: i64::try_from(r.index).unwrap_or(i64::MAX),
            reason: r.reason(),
        })
        .collect();
    rejected.sort_by_key(|r| r.index);
    KubeSchedulerWebhookConfigurationStatus {
        observed_generation: object.metadata.generation,
        rejected,
    }
}

/// Marks the agent dirty (sends a trigger) on every change of any
/// `KubeSchedulerWebhookConfiguration`. Until the CRD exists the watch retries with backoff.
pub fn watch(client: Client, tx: TriggerSender) -> KubeWatch {
    let api: Api<KubeSchedulerWebhookConfiguration> = Api::all(client);
    watch_triggers(api, watcher::Config::default(), tx)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
