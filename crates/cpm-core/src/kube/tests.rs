//! Tests for client construction and kube watch triggers, against the test API server.

use std::io::Write as _;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, ListParams, PostParams};
use ::kube::runtime::watcher;
use cpm_testing::apiserver::{ApiServer, CutMode, Identity, RequestMatch, UserInfo};
use k8s_openapi::api::core::v1::ConfigMap;
use tokio::sync::mpsc;

use super::*;

const WAIT: Duration = Duration::from_secs(15);

fn options(kubeconfig: Option<PathBuf>) -> ClientOptions {
    ClientOptions {
        kubeconfig,
        context: None,
        connect_timeout: Duration::from_secs(3),
        read_timeout: Duration::from_secs(30),
    }
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ::kube::core::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..ConfigMap::default()
    }
}

async fn next_trigger(rx: &mut mpsc::UnboundedReceiver<Trigger>) -> anyhow::Result<Trigger> {
    tokio::time::timeout(WAIT, rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("trigger channel closed"))
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Trigger>) {
    while rx.try_recv().is_ok() {}
}

#[tokio::test]
async fn client_from_a_kubeconfig_file_uses_its_ca_and_timeouts() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("admin.conf");
    let yaml =
        server.kubeconfig_yaml(&Identity::Cert(UserInfo::new("admin", &["system:masters"])))?;
    std::fs::File::create(&path)?.write_all(yaml.as_bytes())?;

    let cfg = config(&options(Some(path.clone()))).await?;
    assert_eq!(cfg.connect_timeout, Some(Duration::from_secs(3)));
    assert_eq!(cfg.read_timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        cfg.cluster_url.to_string().trim_end_matches('/'),
        server.url()
    );

    let cms: Api<ConfigMap> = Api::default_namespaced(client(&options(Some(path))).await?);
    cms.create(
        &PostParams::default(),
        &configmap("made-through-kubeconfig"),
    )
    .await?;
    assert_eq!(cms.list(&ListParams::default()).await?.items.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_missing_kubeconfig_is_a_kubeconfig_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("absent.conf");
    match client(&options(Some(path.clone()))).await.err() {
        Some(KubeError::Kubeconfig { path: p, .. }) => assert_eq!(p, path),
        other => anyhow::bail!("expected a kubeconfig error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_triggers_fire_on_events_and_survive_cuts_and_410() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(server.admin_client().await?, "default");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watch = watch_triggers(cms.clone(), watcher::Config::default(), tx);

    // The initial list of an empty namespace: Init and InitDone.
    assert_eq!(next_trigger(&mut rx).await?, Trigger::Kube);
    assert_eq!(next_trigger(&mut rx).await?, Trigger::Kube);

    cms.create(&PostParams::default(), &configmap("a")).await?;
    assert_eq!(next_trigger(&mut rx).await?, Trigger::Kube);

    // A cut stream: the watcher reconnects and later events still trigger.
    server.faults().cut_watches(CutMode::Abort);
    drain(&mut rx);
    cms.create(&PostParams::default(), &configmap("b")).await?;
    assert_eq!(next_trigger(&mut rx).await?, Trigger::Kube);

    // A change missed while the history was compacted: 410, relist, trigger.
    server
        .faults()
        .fail_all(RequestMatch::any().watch(true), 500);
    server.faults().cut_watches(CutMode::Graceful);
    let refused = server.wait_for_request(|r| r.code == 500 && r.query.contains("watch=true"));
    tokio::time::timeout(WAIT, refused).await?;
    cms.delete("a", &DeleteParams::default()).await?;
    server.compact();
    drain(&mut rx);
    server.faults().clear();
    assert_eq!(next_trigger(&mut rx).await?, Trigger::Kube);
    assert!(
        server.expired_watches() >= 1,
        "the resumed watch was answered 410"
    );
    Ok(())
}

#[tokio::test]
async fn forward_ends_when_the_receiver_is_dropped() -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = futures::stream::pending::<Result<(), watcher::Error>>();
    let task = tokio::spawn(forward(events, tx));
    drop(rx);
    tokio::time::timeout(WAIT, task).await??;
    Ok(())
}

#[tokio::test]
async fn forward_sends_one_trigger_per_event_and_skips_errors() -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let items: Vec<Result<u8, watcher::Error>> =
        vec![Ok(1), Err(watcher::Error::NoResourceVersion), Ok(2)];
    forward(futures::stream::iter(items), tx).await;
    let mut got = Vec::new();
    while let Some(t) = rx.recv().await {
        got.push(t);
    }
    assert_eq!(got, [Trigger::Kube, Trigger::Kube]);
    Ok(())
}
