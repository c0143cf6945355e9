//! Scheduler extension against the test API server: the CRD from `crd_yaml()` is registered,
//! valid and invalid `KubeSchedulerWebhookConfiguration`s are listed and rendered, rejections
//! become Events (once) and status (cleared when fixed), and the watch triggers.

use std::time::Duration;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cpm_core::config::DnsName;
use cpm_core::reconcile::Trigger;
use cpm_manifests::scheduler::{
    ExtenderSet, FailurePolicy, KubeSchedulerWebhookConfiguration,
    KubeSchedulerWebhookConfigurationSpec, KubeSchedulerWebhookConfigurationStatus,
    RejectedWebhook, Reported, SchedulerWebhook, ServiceReference, WebhookClientConfig, crd_yaml,
    desired_extenders, list_webhooks, render_scheduler_config, report, watch,
};
use cpm_testing::apiserver::ApiServer;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);
const CA_PEM: &str = include_str!("../../src/scheduler/testdata/ca.pem");
const REPORTER: &str = "cpm-manifests";

fn domain() -> DnsName {
    "cluster.local".parse().unwrap()
}

/// A test API server with the CRD registered from `crd_yaml()`.
async fn server_with_crd() -> Result<(ApiServer, Client)> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&crd_yaml())?;
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await?;
    Ok((server, client))
}

fn webhook(service: &str, weight: i64) -> SchedulerWebhook {
    SchedulerWebhook {
        weight,
        failure_policy: FailurePolicy::Fail,
        client_config: WebhookClientConfig {
            service: Some(ServiceReference {
                name: Some(service.into()),
                namespace: Some("ext".into()),
                port: 443,
                path: "/".into(),
            }),
            ca_bundle: Some(B64.encode(CA_PEM)),
        },
        timeout_seconds: 5,
    }
}

fn object(name: &str, webhooks: Vec<SchedulerWebhook>) -> KubeSchedulerWebhookConfiguration {
    KubeSchedulerWebhookConfiguration::new(name, KubeSchedulerWebhookConfigurationSpec { webhooks })
}

/// One agent pass: list, render, report.
async fn pass(client: &Client) -> Result<(ExtenderSet, String, Reported)> {
    let objects = list_webhooks(client).await?;
    let set = desired_extenders(&objects, &domain());
    let yaml = render_scheduler_config(&set.extenders, "/etc/kubernetes/scheduler.conf");
    let reported = report(client, &objects, &set.rejections, REPORTER).await?;
    Ok((set, yaml, reported))
}

async fn invalid_webhook_events(client: &Client) -> Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut list: Vec<Event> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("InvalidWebhook"))
        .collect();
    list.sort_by_key(|e| (e.involved_object.name.clone(), e.message.clone()));
    Ok(list)
}

fn status_of(o: &KubeSchedulerWebhookConfiguration) -> KubeSchedulerWebhookConfigurationStatus {
    o.status.clone().unwrap_or_default()
}

#[tokio::test]
async fn only_valid_webhooks_are_rendered_and_rejections_are_reported_once() -> Result<()> {
    let (_server, client) = server_with_crd().await?;
    let api: Api<KubeSchedulerWebhookConfiguration> = Api::all(client.clone());
    let mut garbage = webhook("garbage", 1);
    garbage.client_config.ca_bundle = Some("this is not base64!".into());
    let mut no_service = webhook("none", 1);
    no_service.client_config.service = None;
    for o in [
        object("valid", vec![webhook("alpha", 1), webhook("beta", 4)]),
        object("zero-weight", vec![webhook("zero", 0)]),
        object("garbage-ca", vec![garbage]),
        object("no-service", vec![no_service]),
        object("mixed", vec![webhook("gamma", 2), webhook("delta", 0)]),
    ] {
        api.create(&PostParams::default(), &o).await?;
    }

    // First pass: only the valid webhooks are rendered.
    let (set, yaml, reported) = pass(&client).await?;
    let urls: Vec<&str> = set
        .extenders
        .iter()
        .map(|e| e.url_prefix.as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "https://gamma.ext.svc.cluster.local:443",
            "https://alpha.ext.svc.cluster.local:443",
            "https://beta.ext.svc.cluster.local:443",
        ]
    );
    for bad in ["zero.", "garbage.", "none.", "delta."] {
        assert!(!yaml.contains(bad), "{bad} is not rendered:\n{yaml}");
    }
    let rejected: Vec<(&str, usize)> = set
        .rejections
        .iter()
        .map(|r| (r.object.as_str(), r.index))
        .collect();
    assert_eq!(
        rejected,
        [
            ("garbage-ca", 0),
            ("mixed", 1),
            ("no-service", 0),
            ("zero-weight", 0)
        ]
    );
    assert_eq!(
        reported,
        Reported {
            events_created: 4,
            statuses_written: 5
        }
    );

    // One Warning Event per rejection, about the cluster-scoped object.
    let events = invalid_webhook_events(&client).await?;
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e.involved_object.name.clone().unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        (
            "garbage-ca",
            "webhooks[0] is left out of kube-scheduler's extenders: clientConfig.caBundle is not base64",
        ),
        (
            "mixed",
            "webhooks[1] is left out of kube-scheduler's extenders: weight must be at least 1, got 0",
        ),
        (
            "no-service",
            "webhooks[0] is left out of kube-scheduler's extenders: clientConfig.service is missing",
        ),
        (
            "zero-weight",
            "webhooks[0] is left out of kube-scheduler's extenders: weight must be at least 1, got 0",
        ),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(o, m)| ((*o).to_string(), "Warning".to_string(), (*m).to_string()))
        .collect();
    assert_eq!(summary, expected);
    for e in &events {
        assert_eq!(
            e.involved_object.kind.as_deref(),
            Some("KubeSchedulerWebhookConfiguration")
        );
        assert_eq!(
            e.involved_object.api_version.as_deref(),
            Some("cpm.dev/v1alpha1")
        );
        assert!(e.involved_object.uid.is_some());
    }

    // Status lists each rejected webhook; valid objects have an empty list.
    let mixed = api.get("mixed").await?;
    assert_eq!(
        status_of(&mixed),
        KubeSchedulerWebhookConfigurationStatus {
            observed_generation: Some(1),
            rejected: vec![RejectedWebhook {
                index: 1,
                reason: "weight must be at least 1, got 0".into()
            }],
        }
    );
    assert_eq!(status_of(&api.get("valid").await?).rejected, []);

    // Second pass on the same objects: no new Event, no status write.
    let (_, yaml2, reported) = pass(&client).await?;
    assert_eq!(yaml2, yaml);
    assert_eq!(reported, Reported::default());
    assert_eq!(invalid_webhook_events(&client).await?.len(), 4);

    // Fixing an object clears its status and adds its webhook to the configuration.
    api.patch(
        "zero-weight",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"webhooks": [webhook("zero", 3)]}})),
    )
    .await?;
    let (set, yaml3, reported) = pass(&client).await?;
    assert!(
        yaml3.contains("https://zero.ext.svc.cluster.local:443"),
        "{yaml3}"
    );
    assert_eq!(set.rejections.len(), 3);
    assert_eq!(
        reported,
        Reported {
            events_created: 0,
            statuses_written: 1
        }
    );
    let fixed = api.get("zero-weight").await?;
    assert_eq!(
        status_of(&fixed),
        KubeSchedulerWebhookConfigurationStatus {
            observed_generation: Some(2),
            rejected: vec![],
        }
    );
    assert_eq!(invalid_webhook_events(&client).await?.len(), 4);
    Ok(())
}

#[tokio::test]
async fn a_new_generation_with_a_new_problem_is_reported_again() -> Result<()> {
    let (_server, client) = server_with_crd().await?;
    let api: Api<KubeSchedulerWebhookConfiguration> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &object("w", vec![webhook("svc", 0)]),
    )
    .await?;
    assert_eq!(pass(&client).await?.2.events_created, 1);
    let mut bad_timeout = webhook("svc", 1);
    bad_timeout.timeout_seconds = 99;
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"webhooks": [bad_timeout]}})),
    )
    .await?;
    let (_, _, reported) = pass(&client).await?;
    assert_eq!(reported.events_created, 1);
    assert_eq!(reported.statuses_written, 1);
    let status = status_of(&api.get("w").await?);
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(
        status.rejected,
        [RejectedWebhook {
            index: 0,
            reason: "timeoutSeconds must be between 1 and 30, got 99".into()
        }]
    );
    assert_eq!(invalid_webhook_events(&client).await?.len(), 2);
    Ok(())
}

async fn next_trigger(rx: &mut mpsc::UnboundedReceiver<Trigger>) -> Result<Trigger> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("no trigger in time")?
        .context("trigger channel closed")
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Trigger>) {
    while rx.try_recv().is_ok() {}
}

#[tokio::test]
async fn the_watch_triggers_on_create_and_update() -> Result<()> {
    let (server, client) = server_with_crd().await?;
    let api: Api<KubeSchedulerWebhookConfiguration> = Api::all(client.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watch = watch(client.clone(), tx);

    // The watch is established once the initial list is done and the watch request answered.
    let watching = server.wait_for_request(|r| {
        r.path.ends_with("/kubeschedulerwebhookconfigurations") && r.query.contains("watch=true")
    });
    tokio::time::timeout(WAIT, watching)
        .await
        .context("watch request")?;
    assert_eq!(next_trigger(&mut rx).await?, Trigger::Kube);
    drain(&mut rx);

    api.create(
        &PostParams::default(),
        &object("w", vec![webhook("svc", 1)]),
    )
    .await?;
    assert_eq!(next_trigger(&mut rx).await?, Trigger::Kube);
    drain(&mut rx);

    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"webhooks": [webhook("svc", 2)]}})),
    )
    .await?;
    assert_eq!(next_trigger(&mut rx).await?, Trigger::Kube);
    Ok(())
}
