//! The test API server, exercised through kube-rs over real TLS: discovery, storage semantics,
//! error statuses, selectors, watches, patches, server-side apply, CRDs, reviews, faults.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use cpm_testing::apiserver::{
    ApiServer, ApiServerOptions, Attributes, CutMode, Decision, Identity, RequestMatch, UserInfo,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, NodeSpec, NodeStatus, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::ObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Discovery, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, f)
        .await
        .with_context(|| format!("timed out waiting for {what}"))
}

async fn start() -> Result<(ApiServer, Client)> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    Ok((server, client))
}

fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

/// The (code, reason) of an API error.
fn status<T: std::fmt::Debug>(r: kube::Result<T>) -> Result<(u16, String)> {
    match r {
        Err(kube::Error::Api(s)) => Ok((s.code, s.reason.clone())),
        other => bail!("expected an API error, got {other:?}"),
    }
}

fn rv(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or_default()
}

fn raw(method: &str, uri: &str, content_type: &str, body: &[u8]) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body.to_vec())?)
}

#[tokio::test]
async fn discovery_version_and_resource_lists() -> Result<()> {
    let (_server, client) = start().await?;
    let info = client.apiserver_version().await?;
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "33"));
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut found = BTreeMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            found.insert(
                format!("{}/{}", ar.api_version, ar.plural),
                caps.scope.clone(),
            );
        }
    }
    for want in [
        "v1/nodes",
        "v1/pods",
        "v1/secrets",
        "v1/configmaps",
        "v1/events",
        "discovery.k8s.io/v1/endpointslices",
        "coordination.k8s.io/v1/leases",
        "apiextensions.k8s.io/v1/customresourcedefinitions",
        "authentication.k8s.io/v1/tokenreviews",
        "authorization.k8s.io/v1/subjectaccessreviews",
    ] {
        assert!(
            found.contains_key(want),
            "discovery lacks {want}: {found:?}"
        );
    }
    assert_eq!(found["v1/nodes"], kube::discovery::Scope::Cluster);
    assert_eq!(found["v1/configmaps"], kube::discovery::Scope::Namespaced);
    Ok(())
}

#[tokio::test]
async fn crud_sets_server_metadata_and_monotonic_resource_versions() -> Result<()> {
    let (server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", &[], &[("k", "1")]))
        .await?;
    assert!(a.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(a.metadata.creation_timestamp.is_some());
    assert_eq!(a.metadata.generation, Some(1));
    assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
    let b = cms
        .create(&PostParams::default(), &cm("b", &[], &[]))
        .await?;
    assert!(rv(&b.metadata) > rv(&a.metadata));

    let mut a2 = a.clone();
    a2.data = Some([("k".to_string(), "2".to_string())].into());
    let a2 = cms.replace("a", &PostParams::default(), &a2).await?;
    assert!(rv(&a2.metadata) > rv(&b.metadata));
    assert_eq!(a2.metadata.uid, a.metadata.uid);
    assert_eq!(a2.metadata.generation, Some(2));

    // A no-op update keeps the resourceVersion, as the real server does.
    let same = cms.replace("a", &PostParams::default(), &a2).await?;
    assert_eq!(same.metadata.resource_version, a2.metadata.resource_version);

    let list = cms.list(&ListParams::default()).await?;
    assert_eq!(
        list.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        list.metadata.resource_version,
        Some(server.revision().to_string())
    );

    let deleted = cms.delete("a", &DeleteParams::default()).await?;
    let obj = deleted.left().context("delete returns the object")?;
    assert_eq!(obj.name_any(), "a");
    assert!(rv(&obj.metadata) > rv(&a2.metadata));
    assert_eq!(status(cms.get("a").await)?, (404, "NotFound".into()));

    // generateName.
    let mut g = cm("", &[], &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let g = cms.create(&PostParams::default(), &g).await?;
    assert!(
        g.name_any().starts_with("gen-") && g.name_any().len() == 9,
        "{}",
        g.name_any()
    );
    Ok(())
}

#[tokio::test]
async fn create_existing_is_409_already_exists() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("a", &[], &[]))
        .await?;
    let r = cms.create(&PostParams::default(), &cm("a", &[], &[])).await;
    let Err(kube::Error::Api(s)) = r else {
        bail!("expected AlreadyExists, got {r:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "configmaps \"a\" already exists");
    let details = s.details.context("details")?;
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("a", "configmaps")
    );
    Ok(())
}

#[tokio::test]
async fn stale_update_is_409_conflict_and_empty_rv_is_unconditional() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms
        .create(&PostParams::default(), &cm("a", &[], &[("k", "1")]))
        .await?;
    let mut newer = first.clone();
    newer.data = Some([("k".to_string(), "2".to_string())].into());
    cms.replace("a", &PostParams::default(), &newer).await?;

    let mut stale = first.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let r = cms.replace("a", &PostParams::default(), &stale).await;
    let Err(kube::Error::Api(s)) = r else {
        bail!("expected Conflict, got {r:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("the object has been modified"),
        "{}",
        s.message
    );

    stale.metadata.resource_version = None;
    let forced = cms.replace("a", &PostParams::default(), &stale).await?;
    assert_eq!(
        forced.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("3")
    );
    Ok(())
}

#[tokio::test]
async fn missing_objects_are_404_not_found() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let r = cms.get("nope").await;
    let Err(kube::Error::Api(s)) = r else {
        bail!("expected NotFound, got {r:?}")
    };
    assert_eq!(
        (s.code, s.reason.as_str(), s.message.as_str()),
        (404, "NotFound", "configmaps \"nope\" not found")
    );
    assert_eq!(
        status(cms.delete("nope", &DeleteParams::default()).await)?,
        (404, "NotFound".into())
    );
    assert_eq!(
        status(
            cms.patch(
                "nope",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {}}))
            )
            .await
        )?,
        (404, "NotFound".into())
    );
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let r = leases.get("nope").await;
    let Err(kube::Error::Api(s)) = r else {
        bail!("expected NotFound, got {r:?}")
    };
    assert_eq!(s.message, "leases.coordination.k8s.io \"nope\" not found");
    assert_eq!(
        s.details.map(|d| d.group),
        Some("coordination.k8s.io".to_string())
    );
    Ok(())
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_is_410_expired() -> Result<()> {
    let (server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", &[], &[]))
        .await?;
    cms.create(&PostParams::default(), &cm("b", &[], &[]))
        .await?;
    server.compact();
    let old = a.metadata.resource_version.clone().context("rv")?;
    let mut stream = cms.watch(&WatchParams::default(), &old).await?.boxed();
    let ev = within("the 410 event", stream.try_next()).await??;
    let Some(WatchEvent::Error(s)) = ev else {
        bail!("expected an ERROR event, got {ev:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));

    // A list at an exact, compacted resourceVersion, and a stale continue token, are 410 too.
    let lp = ListParams::default()
        .at(&old)
        .matching(kube::api::VersionMatch::Exact);
    assert_eq!(status(cms.list(&lp).await)?, (410, "Expired".into()));
    Ok(())
}

#[tokio::test]
async fn history_window_is_configurable() -> Result<()> {
    let server = ApiServer::start_with(ApiServerOptions {
        history_window: 3,
        ..ApiServerOptions::standard()
    })
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(server.admin_client().await?, "default");
    let first = cms
        .create(&PostParams::default(), &cm("c0", &[], &[]))
        .await?;
    let start_rv = first.metadata.resource_version.clone().context("rv")?;
    // Within the window: resumes and sees the next event.
    cms.create(&PostParams::default(), &cm("c1", &[], &[]))
        .await?;
    let mut s = cms.watch(&WatchParams::default(), &start_rv).await?.boxed();
    let ev = within("resumed event", s.try_next()).await??;
    assert!(
        matches!(ev, Some(WatchEvent::Added(ref c)) if c.name_any() == "c1"),
        "{ev:?}"
    );
    // Past the window: 410.
    for i in 2..6 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[], &[]))
            .await?;
    }
    let mut s = cms.watch(&WatchParams::default(), &start_rv).await?.boxed();
    let ev = within("410 event", s.try_next()).await??;
    assert!(
        matches!(ev, Some(WatchEvent::Error(ref e)) if e.code == 410),
        "{ev:?}"
    );
    Ok(())
}

#[tokio::test]
async fn failing_json_patch_test_op_is_422_invalid() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("a", &[], &[("k", "1")]))
        .await?;
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "2"},
        {"op": "replace", "path": "/data/k", "value": "3"},
    ]))?;
    let r = cms
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(failing))
        .await;
    assert_eq!(status(r)?, (422, "Invalid".into()));
    assert_eq!(
        cms.get("a")
            .await?
            .data
            .and_then(|d| d.get("k").cloned())
            .as_deref(),
        Some("1")
    );

    let passing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "1"},
        {"op": "replace", "path": "/data/k", "value": "3"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ]))?;
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(passing))
        .await?;
    assert_eq!(
        patched.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("3")
    );
    assert_eq!(
        patched
            .metadata
            .labels
            .and_then(|l| l.get("x").cloned())
            .as_deref(),
        Some("y")
    );
    Ok(())
}

#[tokio::test]
async fn missing_or_unknown_credentials_are_401_unauthorized() -> Result<()> {
    let server = ApiServer::start().await?;
    for identity in [
        Identity::Anonymous,
        Identity::Token("not-registered".into()),
    ] {
        let cms: Api<ConfigMap> = Api::namespaced(server.client(&identity).await?, "default");
        let r = cms.list(&ListParams::default()).await;
        let Err(kube::Error::Api(s)) = r else {
            bail!("expected Unauthorized, got {r:?}")
        };
        assert_eq!(
            (s.code, s.reason.as_str()),
            (401, "Unauthorized"),
            "{identity:?}"
        );
    }
    server.add_token("t0k3n", UserInfo::new("robot", &["robots"]));
    let cms: Api<ConfigMap> = Api::namespaced(
        server.client(&Identity::Token("t0k3n".into())).await?,
        "default",
    );
    assert!(cms.list(&ListParams::default()).await?.items.is_empty());
    let users: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.user, r.code))
        .collect();
    assert_eq!(
        users,
        vec![(None, 401), (None, 401), (Some("robot".to_string()), 200)]
    );
    Ok(())
}

#[tokio::test]
async fn anonymous_requests_reach_only_the_public_info_paths() -> Result<()> {
    let server = ApiServer::start().await?;
    server.enforce_authorization(true);
    let anon = server.client(&Identity::Anonymous).await?;
    for path in ["/readyz", "/livez", "/healthz", "/version"] {
        let req = http::Request::get(path).body(Vec::new())?;
        let text = anon.request_text(req).await?;
        assert!(!text.is_empty(), "{path}");
    }
    let cms: Api<ConfigMap> = Api::namespaced(anon, "default");
    let r = cms.list(&ListParams::default()).await;
    assert!(
        matches!(&r, Err(kube::Error::Api(s)) if s.code == 401),
        "{r:?}"
    );
    let users: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.user, r.code))
        .collect();
    let anonymous = Some("system:anonymous".to_string());
    assert_eq!(
        users,
        vec![
            (anonymous.clone(), 200),
            (anonymous.clone(), 200),
            (anonymous.clone(), 200),
            (anonymous, 200),
            (None, 401)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn malformed_bodies_are_400_bad_request() -> Result<()> {
    let (_server, client) = start().await?;
    let r = client
        .request::<ConfigMap>(raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            b"{not json",
        )?)
        .await;
    assert_eq!(status(r)?, (400, "BadRequest".into()));
    // Wrong kind for the resource.
    let body = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
    )?;
    let r = client
        .request::<ConfigMap>(raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &body,
        )?)
        .await;
    assert_eq!(status(r)?, (400, "BadRequest".into()));
    // Namespace mismatch between URL and body.
    let body = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}}),
    )?;
    let r = client
        .request::<ConfigMap>(raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &body,
        )?)
        .await;
    assert_eq!(status(r)?, (400, "BadRequest".into()));
    // Malformed JSON patch document and bad selectors.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("a", &[], &[]))
        .await?;
    let r = client
        .request::<ConfigMap>(raw(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/a",
            "application/json-patch+json",
            b"{\"op\":1}",
        )?)
        .await;
    assert_eq!(status(r)?, (400, "BadRequest".into()));
    assert_eq!(
        status(cms.list(&ListParams::default().labels("a in (b")).await)?,
        (400, "BadRequest".into())
    );
    assert_eq!(
        status(cms.list(&ListParams::default().fields("spec.x=1")).await)?,
        (400, "BadRequest".into())
    );
    // Missing name: 422 Invalid, as the real server.
    let body =
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}))?;
    let r = client
        .request::<ConfigMap>(raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &body,
        )?)
        .await;
    assert_eq!(status(r)?, (422, "Invalid".into()));
    Ok(())
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for (name, labels) in [
        ("a", vec![("app", "web"), ("tier", "fe")]),
        ("b", vec![("app", "db")]),
        ("c", vec![("tier", "be")]),
    ] {
        cms.create(&PostParams::default(), &cm(name, &labels, &[]))
            .await?;
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    };
    for (sel, want) in [
        ("app=web", vec!["a"]),
        ("app==db", vec!["b"]),
        ("app!=web", vec!["b", "c"]),
        ("app in (web,db)", vec!["a", "b"]),
        ("app notin (web)", vec!["b", "c"]),
        ("tier", vec!["a", "c"]),
        ("!app", vec!["c"]),
        ("app,tier=fe", vec!["a"]),
    ] {
        assert_eq!(
            names(cms.list(&ListParams::default().labels(sel)).await?),
            want,
            "selector {sel}"
        );
    }
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=b"))
                .await?
        ),
        ["b"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name!=b"))
                .await?
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.namespace=default"))
                .await?
        ),
        ["a", "b", "c"]
    );
    Ok(())
}

#[tokio::test]
async fn namespaced_and_cluster_scoped_paths() -> Result<()> {
    let (_server, client) = start().await?;
    for ns in ["ns1", "ns2"] {
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &cm("x", &[], &[]))
            .await?;
    }
    // A namespaced kind on the cluster path lists across namespaces.
    let all = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let keys: Vec<_> = all
        .items
        .iter()
        .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    assert_eq!(keys, ["ns1/x", "ns2/x"]);
    // A cluster-scoped kind under /namespaces/ is 404.
    let r = client
        .request::<Node>(raw(
            "GET",
            "/api/v1/namespaces/ns1/nodes",
            "application/json",
            b"",
        )?)
        .await;
    assert_eq!(status(r)?, (404, "NotFound".into()));
    // A namespaced object by name on the cluster path is 404.
    let r = client
        .request::<ConfigMap>(raw("GET", "/api/v1/configmaps/x", "application/json", b"")?)
        .await;
    assert_eq!(status(r)?, (404, "NotFound".into()));
    // Unknown resources are 404.
    let r = client
        .request::<ConfigMap>(raw(
            "GET",
            "/apis/example.com/v1/widgets",
            "application/json",
            b"",
        )?)
        .await;
    assert_eq!(status(r)?, (404, "NotFound".into()));
    // Cluster-scoped objects ignore a namespace.
    let nodes: Api<Node> = Api::all(client);
    let n = nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some("n1".into()),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            },
        )
        .await?;
    assert_eq!(n.metadata.namespace, None);
    Ok(())
}

#[tokio::test]
async fn pagination_with_limit_and_continue() -> Result<()> {
    let (server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[], &[]))
            .await?;
    }
    let first = cms.list(&ListParams::default().limit(2)).await?;
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().context("continue token")?;
    let second = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await?;
    assert_eq!(
        second
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        ["c2", "c3", "c4"]
    );
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    assert!(second.metadata.continue_.is_none());
    cms.create(&PostParams::default(), &cm("c9", &[], &[]))
        .await?;
    server.compact();
    assert_eq!(
        status(
            cms.list(&ListParams::default().continue_token(&token))
                .await
        )?,
        (410, "Expired".into())
    );
    Ok(())
}

#[tokio::test]
async fn merge_and_strategic_merge_patches() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = cms
        .create(
            &PostParams::default(),
            &cm("a", &[("keep", "1"), ("drop", "1")], &[("k", "1")]),
        )
        .await?;
    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"drop": null, "new": "2"}}, "data": {"k2": "v"}}),
            ),
        )
        .await?;
    let labels = patched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.keys().cloned().collect::<Vec<_>>(), ["keep", "new"]);
    assert_eq!(patched.data.clone().unwrap_or_default().len(), 2);
    assert!(rv(&patched.metadata) > rv(&created.metadata));
    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"k": "9"}})),
        )
        .await?;
    assert_eq!(
        patched.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("9")
    );
    // A resourceVersion in a merge patch is a precondition.
    let stale = json!({"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"k": "0"}});
    assert_eq!(
        status(
            cms.patch("a", &PatchParams::default(), &Patch::Merge(stale))
                .await
        )?,
        (409, "Conflict".into())
    );
    Ok(())
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_detects_conflicts() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1", "y": "1"}});
    let created = cms
        .patch("a", &PatchParams::apply("mgr-a"), &Patch::Apply(&applied))
        .await?;
    assert_eq!(created.data.clone().unwrap_or_default().len(), 2);

    // Another manager adds its own field: merged.
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"z": "1"}});
    let merged = cms
        .patch("a", &PatchParams::apply("mgr-b"), &Patch::Apply(&other))
        .await?;
    assert_eq!(
        merged
            .data
            .clone()
            .unwrap_or_default()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["x", "y", "z"]
    );

    // mgr-b changing mgr-a's field: 409 Conflict unless forced.
    let steal = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"z": "1", "x": "2"}});
    let r = cms
        .patch("a", &PatchParams::apply("mgr-b"), &Patch::Apply(&steal))
        .await;
    let Err(kube::Error::Api(s)) = r else {
        bail!("expected an apply conflict, got {r:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("conflict with \"mgr-a\"") && s.message.contains(".data.x"),
        "{}",
        s.message
    );
    let forced = cms
        .patch(
            "a",
            &PatchParams::apply("mgr-b").force(),
            &Patch::Apply(&steal),
        )
        .await?;
    assert_eq!(
        forced
            .data
            .clone()
            .and_then(|d| d.get("x").cloned())
            .as_deref(),
        Some("2")
    );

    // mgr-a drops y from its configuration: y is removed (x now belongs to mgr-b).
    let fewer =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {}});
    let pruned = cms
        .patch("a", &PatchParams::apply("mgr-a"), &Patch::Apply(&fewer))
        .await?;
    assert_eq!(
        pruned
            .data
            .unwrap_or_default()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["x", "z"]
    );

    // fieldManager is required.
    let r = client
        .request::<ConfigMap>(raw(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/a",
            "application/apply-patch+yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
        )?)
        .await;
    assert_eq!(status(r)?, (400, "BadRequest".into()));
    // YAML bodies are accepted.
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  q: \"1\"\n";
    let made = client
        .request::<ConfigMap>(raw(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/b?fieldManager=yaml",
            "application/apply-patch+yaml",
            yaml,
        )?)
        .await?;
    assert_eq!(
        made.data.and_then(|d| d.get("q").cloned()).as_deref(),
        Some("1")
    );
    Ok(())
}

#[tokio::test]
async fn status_subresource_splits_spec_and_status() -> Result<()> {
    let (_server, client) = start().await?;
    let nodes: Api<Node> = Api::all(client);
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            unschedulable: Some(false),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            phase: Some("Pending".into()),
            ..NodeStatus::default()
        }),
    };
    nodes.create(&PostParams::default(), &node).await?;
    // Status changes on the main resource are ignored.
    let p = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}, "status": {"phase": "Running"}})),
        )
        .await?;
    assert_eq!(p.spec.and_then(|s| s.unschedulable), Some(true));
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    // Spec changes through /status are ignored.
    let p = nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"unschedulable": false}, "status": {"phase": "Running"}}),
            ),
        )
        .await?;
    assert_eq!(p.spec.and_then(|s| s.unschedulable), Some(true));
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    let got = nodes.get_status("n1").await?;
    assert_eq!(got.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    // Leases have no status subresource, as in Kubernetes.
    let leases: Api<Lease> = Api::namespaced(nodes.into_client(), "default");
    assert_eq!(
        status(leases.get_status("x").await)?,
        (404, "NotFound".into())
    );
    Ok(())
}

#[tokio::test]
async fn finalizers_and_delete_preconditions() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut c = cm("f", &[], &[]);
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let created = cms.create(&PostParams::default(), &c).await?;
    let pre = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(
        status(cms.delete("f", &pre).await)?,
        (409, "Conflict".into())
    );
    let pending = cms
        .delete("f", &DeleteParams::default())
        .await?
        .left()
        .context("object")?;
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(cms.get("f").await.is_ok(), "held by its finalizer");
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert_eq!(status(cms.get("f").await)?, (404, "NotFound".into()));
    assert!(created.metadata.deletion_timestamp.is_none());
    Ok(())
}

#[tokio::test]
async fn crds_register_namespaced_and_cluster_scoped_kinds() -> Result<()> {
    let (_server, client) = start().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (plural, kind, scope) in [
        ("widgets", "Widget", "Namespaced"),
        ("gadgets", "Gadget", "Cluster"),
    ] {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {
                "group": "example.com",
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                "scope": scope,
                "versions": [{"name": "v1", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                              "subresources": {"status": {}}}],
            },
        }))?;
        let created = crds.create(&PostParams::default(), &crd).await?;
        let established = created
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{plural} is established");
    }
    let discovery = Discovery::new(client.clone()).run().await?;
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .context("Widget discovered")?;
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut w =
        DynamicObject::new("w1", &ar).data(json!({"spec": {"size": 1}, "status": {"ready": true}}));
    w.metadata.namespace = Some("default".into());
    let made = widgets.create(&PostParams::default(), &w).await?;
    assert_eq!(made.data.get("spec"), Some(&json!({"size": 1})));
    assert_eq!(
        made.data.get("status"),
        None,
        "custom resources drop status on create"
    );
    widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await?;
    assert_eq!(
        widgets.get("w1").await?.data.pointer("/status/ready"),
        Some(&json!(true))
    );

    let gadget_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Gadget"),
        "gadgets",
    );
    let gadgets: Api<DynamicObject> = Api::all_with(client.clone(), &gadget_ar);
    gadgets
        .create(
            &PostParams::default(),
            &DynamicObject::new("g1", &gadget_ar),
        )
        .await?;
    let r = client
        .request::<DynamicObject>(raw(
            "GET",
            "/apis/example.com/v1/namespaces/default/gadgets",
            "application/json",
            b"",
        )?)
        .await;
    assert_eq!(status(r)?, (404, "NotFound".into()));

    // Deleting the CRD removes the kind and its objects.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await?;
    assert_eq!(
        status(widgets.list(&ListParams::default()).await)?,
        (404, "NotFound".into())
    );
    Ok(())
}

#[tokio::test]
async fn token_and_subject_access_reviews_are_scripted() -> Result<()> {
    let (server, client) = start().await?;
    server.add_token("good", UserInfo::new("alice", &["devs"]));
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let ok = reviews
        .create(&PostParams::default(), &review("good"))
        .await?
        .status
        .context("status")?;
    assert_eq!(ok.authenticated, Some(true));
    assert_eq!(
        ok.user.as_ref().and_then(|u| u.username.clone()).as_deref(),
        Some("alice")
    );
    assert_eq!(
        ok.user.and_then(|u| u.groups),
        Some(vec!["devs".to_string()])
    );
    let bad = reviews
        .create(&PostParams::default(), &review("bad"))
        .await?
        .status
        .context("status")?;
    assert_eq!(bad.authenticated, Some(false));
    server.set_token_reviewer(|t| (t == "scripted").then(|| UserInfo::new("bob", &[])));
    let s = reviews
        .create(&PostParams::default(), &review("scripted"))
        .await?
        .status
        .context("status")?;
    assert_eq!(s.user.and_then(|u| u.username).as_deref(), Some("bob"));

    server.set_authorizer(|a: &Attributes| {
        if a.user.groups.iter().any(|g| g == "system:masters")
            || (a.verb == "get" && a.resource == "nodes")
        {
            Decision::allow("scripted")
        } else {
            Decision::deny("scripted no")
        }
    });
    let sars: Api<SubjectAccessReview> = Api::all(client);
    let sar = |verb: &str, resource: &str| SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("carol".into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let yes = sars
        .create(&PostParams::default(), &sar("get", "nodes"))
        .await?
        .status
        .context("status")?;
    assert!(yes.allowed);
    let no = sars
        .create(&PostParams::default(), &sar("delete", "nodes"))
        .await?
        .status
        .context("status")?;
    assert!(!no.allowed);
    assert_eq!(no.reason.as_deref(), Some("scripted no"));
    Ok(())
}

#[tokio::test]
async fn certificate_cn_and_o_map_to_user_and_groups_and_403_when_denied() -> Result<()> {
    let server = ApiServer::start().await?;
    let seen: Arc<Mutex<Vec<Attributes>>> = Arc::default();
    let log = seen.clone();
    server.set_authorizer(move |a: &Attributes| {
        log.lock().map(|mut l| l.push(a.clone())).ok();
        if a.verb == "list" {
            Decision::allow("ok")
        } else {
            Decision::deny("no")
        }
    });
    server.enforce_authorization(true);
    let client = server
        .client(&Identity::Cert(UserInfo::new(
            "system:node:n1",
            &["system:nodes", "extra"],
        )))
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    cms.list(&ListParams::default()).await?;
    let r = cms.get("x").await;
    let Err(kube::Error::Api(s)) = r else {
        bail!("expected Forbidden, got {r:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert!(
        s.message
            .contains("User \"system:node:n1\" cannot get resource \"configmaps\""),
        "{}",
        s.message
    );
    let seen = seen.lock().map(|l| l.clone()).unwrap_or_default();
    let first = seen.first().context("authorizer called")?;
    assert_eq!(
        first.user,
        UserInfo::new("system:node:n1", &["system:nodes", "extra"])
    );
    assert_eq!(
        (
            first.verb.as_str(),
            first.resource.as_str(),
            first.namespace.as_str()
        ),
        ("list", "configmaps", "kube-system")
    );
    Ok(())
}

#[tokio::test]
async fn watch_events_bookmarks_and_selector_transitions() -> Result<()> {
    let server = ApiServer::start_with(ApiServerOptions {
        bookmark_interval: Duration::from_millis(50),
        ..ApiServerOptions::standard()
    })
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(server.admin_client().await?, "default");
    let start = cms
        .create(&PostParams::default(), &cm("pre", &[("app", "web")], &[]))
        .await?;
    let start_rv = start.metadata.resource_version.clone().context("rv")?;
    let wp = WatchParams::default().labels("app=web");
    let mut stream = cms.watch(&wp, &start_rv).await?.boxed();
    cms.create(&PostParams::default(), &cm("a", &[("app", "web")], &[]))
        .await?;
    cms.create(&PostParams::default(), &cm("other", &[("app", "db")], &[]))
        .await?;
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await?;
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await?;
    cms.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await?;
    cms.delete("other", &DeleteParams::default()).await?;

    let mut seen = Vec::new();
    let mut last_rv = 0;
    let mut bookmark = None;
    while seen.len() < 5 || bookmark.is_none() {
        let ev = within("watch events", stream.try_next())
            .await??
            .context("stream ended")?;
        let (ty, obj) = match ev {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(b) => {
                bookmark = Some(b.metadata.resource_version.parse::<u64>()?);
                continue;
            }
            WatchEvent::Error(e) => bail!("unexpected error event {e:?}"),
        };
        let r = rv(&obj.metadata);
        assert!(r > last_rv, "resourceVersions increase along the stream");
        last_rv = r;
        seen.push(format!("{ty} {}", obj.name_any()));
    }
    assert_eq!(
        seen,
        [
            "ADDED a",
            "MODIFIED a",
            "DELETED a",
            "ADDED other",
            "DELETED other"
        ]
    );
    assert!(bookmark.is_some_and(|b| b >= last_rv));
    Ok(())
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_the_current_state() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("a", &[], &[]))
        .await?;
    let mut stream = cms
        .watch(&WatchParams::default().fields("metadata.name=a"), "0")
        .await?
        .boxed();
    let ev = within("initial event", stream.try_next()).await??;
    assert!(
        matches!(ev, Some(WatchEvent::Added(ref c)) if c.name_any() == "a"),
        "{ev:?}"
    );
    // sendInitialEvents ends the initial state with a bookmark.
    let wp = WatchParams::default().initial_events();
    let mut stream = cms.watch(&wp, "").await?.boxed();
    assert!(matches!(
        within("initial add", stream.try_next()).await??,
        Some(WatchEvent::Added(_))
    ));
    let ev = within("initial-events-end", stream.try_next()).await??;
    let Some(WatchEvent::Bookmark(b)) = ev else {
        bail!("expected a bookmark, got {ev:?}")
    };
    assert_eq!(
        b.metadata
            .annotations
            .get("k8s.io/initial-events-end")
            .map(String::as_str),
        Some("true")
    );
    Ok(())
}

#[tokio::test]
async fn watch_timeout_ends_the_stream() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = cms
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), "0")
        .await?
        .boxed();
    assert!(within("stream end", stream.try_next()).await??.is_none());
    Ok(())
}

/// Runs a watcher into a map of name → data value "v", until `done` holds.
async fn watch_until(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<
        Result<watcher::Event<ConfigMap>, watcher::Error>,
    >,
    state: &mut BTreeMap<String, String>,
    inits: &mut usize,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Result<()> {
    let mut buffer: Option<BTreeMap<String, String>> = None;
    while !done(state) {
        let ev = within("watcher events", events.recv())
            .await?
            .context("watcher ended")?;
        let value = |c: &ConfigMap| {
            c.data
                .as_ref()
                .and_then(|d| d.get("v").cloned())
                .unwrap_or_default()
        };
        match ev {
            Ok(watcher::Event::Init) => {
                *inits += 1;
                buffer = Some(BTreeMap::new());
            }
            Ok(watcher::Event::InitApply(c)) => {
                if let Some(b) = buffer.as_mut() {
                    b.insert(c.name_any(), value(&c));
                }
            }
            Ok(watcher::Event::InitDone) => *state = buffer.take().unwrap_or_default(),
            Ok(watcher::Event::Apply(c)) => {
                state.insert(c.name_any(), value(&c));
            }
            Ok(watcher::Event::Delete(c)) => {
                state.remove(&c.name_any());
            }
            Err(_) => {}
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_survives_cut_streams_and_relists_after_410() -> Result<()> {
    let (server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cfg = watcher::Config::default();
    // The watcher runs on its own task, so it keeps reconnecting while the test waits.
    let mut stream = watcher(cms.clone(), cfg).default_backoff().boxed();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    let mut state = BTreeMap::new();
    let mut inits = 0;
    cms.create(&PostParams::default(), &cm("a", &[], &[("v", "1")]))
        .await?;
    watch_until(&mut events, &mut state, &mut inits, |s| {
        s.get("a").is_some_and(|v| v == "1")
    })
    .await?;

    // A graceful cut: the watcher resumes from its last resourceVersion, without a relist.
    server.faults().cut_watches(CutMode::Graceful);
    cms.create(&PostParams::default(), &cm("b", &[], &[("v", "1")]))
        .await?;
    watch_until(&mut events, &mut state, &mut inits, |s| s.contains_key("b")).await?;
    assert_eq!(inits, 1, "resumed, not relisted");

    // An aborted connection: reconnects (after backoff) and resumes.
    server.faults().cut_watches(CutMode::Abort);
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await?;
    watch_until(&mut events, &mut state, &mut inits, |s| {
        s.get("a").is_some_and(|v| v == "2")
    })
    .await?;

    // Cut after N events.
    server.faults().cut_watches_after(1, CutMode::Graceful);
    cms.create(&PostParams::default(), &cm("c", &[], &[("v", "1")]))
        .await?;
    cms.create(&PostParams::default(), &cm("d", &[], &[("v", "1")]))
        .await?;
    watch_until(&mut events, &mut state, &mut inits, |s| {
        s.contains_key("c") && s.contains_key("d")
    })
    .await?;

    // Cut, change and compact while it is away: the resumed watch gets 410 and relists.
    let before = inits;
    let answered = server.requests().len();
    server
        .faults()
        .fail_all(RequestMatch::any().watch(true), 500);
    server.faults().cut_watches(CutMode::Graceful);
    // The old stream is gone once the watcher's reconnect has been refused.
    let refused = server.wait_for_request(|r| r.code == 500 && r.query.contains("watch=true"));
    within("a refused reconnect", refused).await?;
    assert!(server.requests().len() > answered);
    cms.delete("b", &DeleteParams::default()).await?;
    cms.create(&PostParams::default(), &cm("e", &[], &[("v", "1")]))
        .await?;
    server.compact();
    server.faults().clear();
    watch_until(&mut events, &mut state, &mut inits, |s| {
        s.contains_key("e") && !s.contains_key("b")
    })
    .await?;
    assert!(inits > before, "relisted after 410");
    assert!(
        server.expired_watches() >= 1,
        "the resumed watch was answered 410"
    );
    pump.abort();
    assert_eq!(
        state.keys().cloned().collect::<Vec<_>>(),
        ["a", "c", "d", "e"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_controller_reconciles_against_the_test_server() -> Result<()> {
    let (_server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    // Reconcile: mirror each ConfigMap's "v" into a Secret of the same name, via server-side apply.
    async fn reconcile(
        cm: Arc<ConfigMap>,
        secrets: Arc<Api<Secret>>,
    ) -> Result<Action, kube::Error> {
        let v = cm
            .data
            .as_ref()
            .and_then(|d| d.get("v").cloned())
            .unwrap_or_default();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": cm.name_any()}, "stringData": {"v": v}});
        secrets
            .patch(
                &cm.name_any(),
                &PatchParams::apply("mirror").force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(Action::await_change())
    }
    let ctl = Controller::new(cms.clone(), watcher::Config::default())
        .owns(secrets.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(100)),
            Arc::new(secrets.clone()),
        )
        .for_each(|_| async {});
    let ctl = tokio::spawn(ctl);

    cms.create(&PostParams::default(), &cm("m1", &[], &[("v", "one")]))
        .await?;
    let mut w = watcher(secrets.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let value = |s: &Secret| {
        s.data
            .as_ref()
            .and_then(|d| d.get("v"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    while latest.get("m1").map(String::as_str) != Some("one") {
        if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) =
            within("mirror", w.next()).await?.context("ended")?
        {
            latest.insert(s.name_any(), value(&s).unwrap_or_default());
        }
    }
    cms.patch(
        "m1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "two"}})),
    )
    .await?;
    while latest.get("m1").map(String::as_str) != Some("two") {
        if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) =
            within("mirror update", w.next()).await?.context("ended")?
        {
            latest.insert(s.name_any(), value(&s).unwrap_or_default());
        }
    }
    ctl.abort();
    assert_eq!(latest.get("m1").map(String::as_str), Some("two"));
    Ok(())
}

#[tokio::test]
async fn injected_5xx_and_latency() -> Result<()> {
    let (server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    server.faults().fail_next(
        RequestMatch::any()
            .method(http::Method::GET)
            .path_contains("/configmaps"),
        2,
        500,
    );
    assert_eq!(
        status(cms.list(&ListParams::default()).await)?,
        (500, "InternalError".into())
    );
    assert_eq!(
        status(cms.list(&ListParams::default()).await)?,
        (500, "InternalError".into())
    );
    cms.list(&ListParams::default()).await?;
    // kube-rs retries 503 by default (Config::default_retry): two injected 503s are invisible.
    server
        .faults()
        .fail_next(RequestMatch::any().path_contains("/configmaps"), 2, 503);
    cms.list(&ListParams::default()).await?;
    let codes: Vec<u16> = server
        .requests()
        .iter()
        .rev()
        .take(3)
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, [200, 503, 503]);
    // Other methods are unaffected by a GET rule.
    server
        .faults()
        .fail_next(RequestMatch::any().method(http::Method::POST), 1, 500);
    assert_eq!(
        status(cms.create(&PostParams::default(), &cm("a", &[], &[])).await)?,
        (500, "InternalError".into())
    );
    cms.create(&PostParams::default(), &cm("a", &[], &[]))
        .await?;

    // Latency beyond a client's read timeout makes the request fail on the client side.
    let mut config = server
        .config(&Identity::Cert(UserInfo::new("slow", &["system:masters"])))
        .await?;
    config.read_timeout = Some(Duration::from_millis(200));
    let slow: Api<Pod> = Api::namespaced(Client::try_from(config)?, "default");
    server.faults().add_latency(
        RequestMatch::any().path_contains("/pods"),
        Duration::from_secs(3),
        Some(1),
    );
    let r = slow.list(&ListParams::default()).await;
    assert!(r.is_err(), "read timeout expected, got {r:?}");
    server.faults().set_latency(Duration::from_millis(1));
    assert!(slow.list(&ListParams::default()).await?.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn kubeconfig_yaml_is_a_usable_kubeconfig() -> Result<()> {
    let server = ApiServer::start().await?;
    let yaml =
        server.kubeconfig_yaml(&Identity::Cert(UserInfo::new("admin", &["system:masters"])))?;
    let kc = kube::config::Kubeconfig::from_yaml(&yaml)?;
    assert_eq!(kc.current_context.as_deref(), Some("test"));
    assert_eq!(
        kc.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.clone()),
        Some(server.url())
    );
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let pods: Api<Pod> = Api::default_namespaced(Client::try_from(config)?);
    assert!(pods.list(&ListParams::default()).await?.items.is_empty());
    Ok(())
}

/// A TLS connection to `server`, as an HTTP/1.1 client would open it.
async fn tls_connection(
    server: &ApiServer,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(server.ca_pem().as_bytes())?)?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr()).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    Ok(
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await?,
    )
}

/// Reads until the server closes the connection; the bytes it sent before.
async fn until_closed(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() -> Result<()> {
    use cpm_testing::apiserver::Limits;
    use tokio::io::AsyncWriteExt as _;
    // Headers that never end are cut at the header-read timeout.
    let server = ApiServer::start_with(ApiServerOptions {
        limits: Limits {
            header_read: Duration::from_millis(300),
            ..Limits::standard()
        },
        ..ApiServerOptions::standard()
    })
    .await?;
    let mut conn = tls_connection(&server).await?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let got = within("the slow client to be cut", until_closed(&mut conn)).await?;
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));

    // A kept-alive connection with nothing in flight is closed when idle; one whose response
    // still streams (a watch) is not.
    let server = ApiServer::start_with(ApiServerOptions {
        limits: Limits {
            idle: Duration::from_millis(300),
            ..Limits::standard()
        },
        ..ApiServerOptions::standard()
    })
    .await?;
    let mut idle = tls_connection(&server).await?;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let got = within("the idle connection to close", until_closed(&mut idle)).await?;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"));
    let client = server.admin_client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut events = cms.watch(&WatchParams::default(), "0").await?.boxed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cms.create(&PostParams::default(), &cm("after-idle", &[], &[]))
        .await?;
    let added = within("an event on the long watch", async {
        while let Some(event) = events.try_next().await? {
            if let WatchEvent::Added(c) = event {
                return Ok::<_, kube::Error>(Some(c.name_any()));
            }
        }
        Ok(None)
    })
    .await??;
    assert_eq!(added.as_deref(), Some("after-idle"));
    Ok(())
}
