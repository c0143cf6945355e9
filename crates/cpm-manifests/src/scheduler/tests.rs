//! Unit tests of the scheduler extension: extender rendering (golden-style), path
//! normalisation, defaults, rejections, determinism, the CRD, status, Events and metrics.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cpm_core::config::DnsName;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::registry::Registry;

use super::*;

const CA_PEM: &str = include_str!("testdata/ca.pem");
const CA2_PEM: &str = include_str!("testdata/ca2.pem");
const KUBECONFIG: &str = "/etc/kubernetes/scheduler.conf";

fn domain() -> DnsName {
    "cluster.local".parse().unwrap()
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

/// Parses one object from YAML, `{CA}` and `{CA2}` replaced by the fixtures' base64.
fn object(yaml: &str) -> KubeSchedulerWebhookConfiguration {
    let yaml = yaml
        .replace("{CA}", &b64(CA_PEM))
        .replace("{CA2}", &b64(CA2_PEM));
    serde_saphyr::from_str(&yaml).unwrap()
}

/// A valid webhook: `name.ns`, weight 1, defaults elsewhere.
fn webhook(name: &str) -> SchedulerWebhook {
    SchedulerWebhook {
        weight: 1,
        failure_policy: FailurePolicy::Fail,
        client_config: WebhookClientConfig {
            service: Some(ServiceReference {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                port: 443,
                path: "/".into(),
            }),
            ca_bundle: Some(b64(CA_PEM)),
        },
        timeout_seconds: 5,
    }
}

fn with_webhooks(name: &str, webhooks: Vec<SchedulerWebhook>) -> KubeSchedulerWebhookConfiguration {
    let mut o = KubeSchedulerWebhookConfiguration::new(
        name,
        KubeSchedulerWebhookConfigurationSpec { webhooks },
    );
    o.metadata.uid = Some(format!("uid-{name}"));
    o.metadata.generation = Some(1);
    o
}

fn service(w: &mut SchedulerWebhook) -> &mut ServiceReference {
    w.client_config.service.as_mut().unwrap()
}

const A_GPU: &str = r"
apiVersion: cpm.dev/v1alpha1
kind: KubeSchedulerWebhookConfiguration
metadata:
  name: a-gpu
spec:
  webhooks:
  - weight: 1
    clientConfig:
      service: {name: gpu, namespace: kube-system}
      caBundle: {CA}
  - weight: 3
    failurePolicy: Fail
    timeoutSeconds: 30
    clientConfig:
      service: {name: gpu-score, namespace: kube-system, path: score}
      caBundle: {CA}
";

const B_SCORER: &str = r"
apiVersion: cpm.dev/v1alpha1
kind: KubeSchedulerWebhookConfiguration
metadata:
  name: b-scorer
spec:
  webhooks:
  - weight: 5
    failurePolicy: Ignore
    timeoutSeconds: 10
    clientConfig:
      service: {name: scorer, namespace: sched, port: 8443, path: /scheduler/v1/}
      caBundle: {CA2}
";

const TWO_OBJECTS_GOLDEN: &str = "\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/scheduler.conf
leaderElection:
  leaderElect: true
extenders:
- urlPrefix: https://gpu.kube-system.svc.cluster.local:443
  filterVerb: filter
  prioritizeVerb: prioritize
  weight: 1
  enableHTTPS: true
  tlsConfig:
    caData: {CA}
  httpTimeout: 5s
  nodeCacheCapable: true
  ignorable: false
- urlPrefix: https://gpu-score.kube-system.svc.cluster.local:443/score
  filterVerb: filter
  prioritizeVerb: prioritize
  weight: 3
  enableHTTPS: true
  tlsConfig:
    caData: {CA}
  httpTimeout: 30s
  nodeCacheCapable: true
  ignorable: false
- urlPrefix: https://scorer.sched.svc.cluster.local:8443/scheduler/v1
  filterVerb: filter
  prioritizeVerb: prioritize
  weight: 5
  enableHTTPS: true
  tlsConfig:
    caData: {CA2}
  httpTimeout: 10s
  nodeCacheCapable: true
  ignorable: true
";

#[test]
fn two_objects_render_the_exact_scheduler_configuration() {
    // Input deliberately out of name order.
    let objects = [object(B_SCORER), object(A_GPU)];
    let set = desired_extenders(&objects, &domain());
    assert_eq!(set.rejections, []);
    let expected = TWO_OBJECTS_GOLDEN
        .replace("{CA}", &b64(CA_PEM))
        .replace("{CA2}", &b64(CA2_PEM));
    assert_eq!(
        render_scheduler_config(&set.extenders, KUBECONFIG),
        expected
    );
}

#[test]
fn rendered_ca_data_decodes_to_the_pem_bundle() {
    let set = desired_extenders(&[object(A_GPU), object(B_SCORER)], &domain());
    let yaml = render_scheduler_config(&set.extenders, KUBECONFIG);
    let value: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let ca_data = |i: usize| {
        let text = value["extenders"][i]["tlsConfig"]["caData"]
            .as_str()
            .unwrap();
        String::from_utf8(B64.decode(text).unwrap()).unwrap()
    };
    assert_eq!(ca_data(0), CA_PEM);
    assert_eq!(ca_data(2), CA2_PEM);
}

#[test]
fn no_extenders_leave_the_key_out() {
    assert_eq!(
        render_scheduler_config(&[], "/etc/kubernetes/scheduler.conf"),
        "\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/scheduler.conf
leaderElection:
  leaderElect: true
"
    );
}

#[test]
fn rendering_is_deterministic_whatever_the_input_order() {
    let mut extra = with_webhooks("c-more", vec![webhook("x"), webhook("y")]);
    extra.spec.webhooks[1].weight = 0;
    let orders = [
        vec![object(A_GPU), object(B_SCORER), extra.clone()],
        vec![extra.clone(), object(B_SCORER), object(A_GPU)],
        vec![object(B_SCORER), extra, object(A_GPU)],
    ];
    let outputs: Vec<(String, Vec<Rejection>)> = orders
        .iter()
        .map(|objects| {
            let set = desired_extenders(objects, &domain());
            (
                render_scheduler_config(&set.extenders, KUBECONFIG),
                set.rejections,
            )
        })
        .collect();
    for out in &outputs[1..] {
        assert_eq!(out, &outputs[0]);
    }
    assert_eq!(outputs[0].1.len(), 1);
    // And the same input twice gives the same bytes.
    assert_eq!(crd_yaml(), crd_yaml());
}

/// Path as written → normalised path, or `None` when rejected.
fn check_path(path: &str, expected: Option<&str>) {
    assert_eq!(
        normalize_path(path).ok().as_deref(),
        expected,
        "path {path:?}"
    );
}

#[test]
fn paths_are_normalised_or_rejected() {
    let cases: [(&str, Option<&str>); 16] = [
        ("/", Some("")),
        ("", Some("")),
        ("//", Some("")),
        ("filter-api", Some("/filter-api")),
        ("/api/", Some("/api")),
        ("//api//", Some("/api")),
        ("/scheduler/v1", Some("/scheduler/v1")),
        ("/a-b_c.d~e/%41", Some("/a-b_c.d~e/%41")),
        ("/a//b", None),
        ("/a/../b", None),
        ("/./b", None),
        ("/a?x=1", None),
        ("/a#frag", None),
        ("/a b", None),
        ("/caf\u{e9}", None),
        ("/a\\b", None),
    ];
    for (path, expected) in cases {
        check_path(path, expected);
    }
}

#[test]
fn normalised_paths_end_up_in_the_url_prefix() {
    for (path, url) in [
        ("/", "https://svc.ns.svc.cluster.local:443"),
        ("ext", "https://svc.ns.svc.cluster.local:443/ext"),
        ("/ext/v1/", "https://svc.ns.svc.cluster.local:443/ext/v1"),
    ] {
        let mut w = webhook("svc");
        service(&mut w).path = path.into();
        assert_eq!(extender(&w, &domain()).unwrap().url_prefix, url);
    }
    let other: DnsName = "corp.example".parse().unwrap();
    assert_eq!(
        extender(&webhook("svc"), &other).unwrap().url_prefix,
        "https://svc.ns.svc.corp.example:443"
    );
}

#[test]
fn omitted_fields_take_their_defaults() {
    let o = object(
        r"
apiVersion: cpm.dev/v1alpha1
kind: KubeSchedulerWebhookConfiguration
metadata: {name: minimal}
spec:
  webhooks:
  - weight: 2
    clientConfig:
      service: {name: ext, namespace: ops}
      caBundle: {CA}
",
    );
    let w = &o.spec.webhooks[0];
    assert_eq!(w.failure_policy, FailurePolicy::Fail);
    assert_eq!(w.timeout_seconds, 5);
    let svc = w.client_config.service.as_ref().unwrap();
    assert_eq!((svc.port, svc.path.as_str()), (443, "/"));

    let set = desired_extenders(&[o], &domain());
    assert_eq!(
        set.extenders,
        [Extender {
            url_prefix: "https://ext.ops.svc.cluster.local:443".into(),
            filter_verb: "filter".into(),
            prioritize_verb: "prioritize".into(),
            weight: 2,
            enable_https: true,
            tls_config: ExtenderTlsConfig {
                ca_data: CA_PEM.as_bytes().to_vec(),
            },
            http_timeout: "5s".into(),
            node_cache_capable: true,
            ignorable: false,
        }]
    );
    // An object without `spec.webhooks` renders nothing and rejects nothing.
    let empty = object(
        "{apiVersion: cpm.dev/v1alpha1, kind: KubeSchedulerWebhookConfiguration, metadata: {name: e}, spec: {}}",
    );
    assert_eq!(
        desired_extenders(&[empty], &domain()),
        ExtenderSet::default()
    );
}

#[test]
fn failure_policy_ignore_makes_the_extender_ignorable() {
    let mut w = webhook("svc");
    assert!(!extender(&w, &domain()).unwrap().ignorable);
    w.failure_policy = FailurePolicy::Ignore;
    assert!(extender(&w, &domain()).unwrap().ignorable);
}

/// Applies `edit` to a valid webhook and checks the problems it is rejected for.
fn check(edit: impl FnOnce(&mut SchedulerWebhook), expected: &[Problem]) {
    let mut w = webhook("svc");
    edit(&mut w);
    assert_eq!(extender(&w, &domain()).err().as_deref(), Some(expected));
}

fn pem_block(label: &str, body: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        B64.encode(body)
    )
}

#[test]
fn each_invalid_field_is_a_rejection_reason() {
    check(|w| w.weight = 0, &[Problem::Weight(0)]);
    check(|w| w.weight = -3, &[Problem::Weight(-3)]);
    check(|w| w.timeout_seconds = 0, &[Problem::Timeout(0)]);
    check(|w| w.timeout_seconds = 31, &[Problem::Timeout(31)]);
    check(
        |w| w.client_config.service = None,
        &[Problem::MissingService],
    );
    check(|w| service(w).name = None, &[Problem::MissingServiceName]);
    check(
        |w| service(w).name = Some(String::new()),
        &[Problem::MissingServiceName],
    );
    check(
        |w| service(w).namespace = None,
        &[Problem::MissingServiceNamespace],
    );
    check(
        |w| service(w).name = Some("Bad_Name".into()),
        &[Problem::ServiceName("Bad_Name".into())],
    );
    check(
        |w| service(w).namespace = Some("-ns".into()),
        &[Problem::ServiceNamespace("-ns".into())],
    );
    check(|w| service(w).port = 0, &[Problem::Port(0)]);
    check(|w| service(w).port = 70_000, &[Problem::Port(70_000)]);
    check(
        |w| service(w).path = "/a/../b".into(),
        &[Problem::Path {
            path: "/a/../b".into(),
            why: "'.' and '..' segments are not allowed",
        }],
    );
    check(
        |w| w.client_config.ca_bundle = None,
        &[Problem::MissingCaBundle],
    );
    check(
        |w| w.client_config.ca_bundle = Some("not base64 at all!".into()),
        &[Problem::CaBundleBase64],
    );
    check(
        |w| w.client_config.ca_bundle = Some(b64("just some text\n")),
        &[Problem::CaBundlePem("no PEM block".into())],
    );
    check(
        |w| w.client_config.ca_bundle = Some(b64(&pem_block("PRIVATE KEY", b"secret"))),
        &[Problem::CaBundlePem(
            "block 1 is \"PRIVATE KEY\", not CERTIFICATE".into(),
        )],
    );
    // A second, broken certificate after a good one spoils the bundle.
    let broken = format!("{CA_PEM}{}", pem_block("CERTIFICATE", b"not DER"));
    let mut w = webhook("svc");
    w.client_config.ca_bundle = Some(b64(&broken));
    match extender(&w, &domain()).err().as_deref() {
        Some([Problem::CaBundlePem(why)]) => assert!(why.starts_with("certificate 2: "), "{why}"),
        other => panic!("expected a PEM problem, got {other:?}"),
    }
}

#[test]
fn ca_bundles_may_hold_several_certificates_and_line_breaks() {
    let mut w = webhook("svc");
    let both = format!("{CA_PEM}{CA2_PEM}");
    let wrapped: String = b64(&both)
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    w.client_config.ca_bundle = Some(wrapped);
    assert_eq!(
        extender(&w, &domain()).unwrap().tls_config.ca_data,
        both.as_bytes()
    );
}

#[test]
fn every_problem_of_a_webhook_is_reported_in_field_order() {
    check(
        |w| {
            w.weight = 0;
            w.timeout_seconds = 60;
            w.client_config.service = None;
            w.client_config.ca_bundle = Some("garbage".into());
        },
        &[
            Problem::Weight(0),
            Problem::Timeout(60),
            Problem::MissingService,
            Problem::CaBundleBase64,
        ],
    );
    let mut bad = webhook("svc");
    bad.weight = 0;
    bad.client_config.service = None;
    let set = desired_extenders(&[with_webhooks("o", vec![bad])], &domain());
    assert_eq!(
        set.rejections[0].reason(),
        "weight must be at least 1, got 0; clientConfig.service is missing"
    );
    assert_eq!(
        set.rejections[0].to_string(),
        "o: webhooks[0]: weight must be at least 1, got 0; clientConfig.service is missing"
    );
}

#[test]
fn invalid_webhooks_are_left_out_and_the_others_still_rendered() {
    let mut zero = webhook("zero");
    zero.weight = 0;
    let mut garbage = webhook("garbage");
    garbage.client_config.ca_bundle = Some("%%%".into());
    let mut no_service = webhook("none");
    no_service.client_config.service = None;
    let objects = [
        with_webhooks("mixed", vec![webhook("first"), zero, webhook("third")]),
        with_webhooks("all-bad", vec![garbage, no_service]),
        with_webhooks("fine", vec![webhook("fine")]),
    ];
    let set = desired_extenders(&objects, &domain());
    let urls: Vec<&str> = set
        .extenders
        .iter()
        .map(|e| e.url_prefix.as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "https://fine.ns.svc.cluster.local:443",
            "https://first.ns.svc.cluster.local:443",
            "https://third.ns.svc.cluster.local:443",
        ]
    );
    let rejected: Vec<(&str, usize, String)> = set
        .rejections
        .iter()
        .map(|r| (r.object.as_str(), r.index, r.reason()))
        .collect();
    assert_eq!(
        rejected,
        [
            (
                "all-bad",
                0,
                "clientConfig.caBundle is not base64".to_string()
            ),
            ("all-bad", 1, "clientConfig.service is missing".to_string()),
            ("mixed", 1, "weight must be at least 1, got 0".to_string()),
        ]
    );
    for r in &set.rejections {
        assert_eq!(r.uid, Some(format!("uid-{}", r.object)));
        assert_eq!(r.generation, Some(1));
    }
}

/// Finds the schema at `path` (property names) under the CRD's `spec` schema.
fn schema_at<'a>(root: &'a JSONSchemaProps, path: &[&str]) -> &'a JSONSchemaProps {
    let mut s = root;
    for p in path {
        s = if *p == "[]" {
            match s.items.as_ref().unwrap() {
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s) => s,
                other => panic!("unexpected items {other:?}"),
            }
        } else {
            s.properties
                .as_ref()
                .unwrap()
                .get(*p)
                .unwrap_or_else(|| panic!("no {p}"))
        };
    }
    s
}

#[test]
fn crd_yaml_is_a_cluster_scoped_crd_whose_schema_has_the_bounds() {
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&crd_yaml()).unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("kubeschedulerwebhookconfigurations.cpm.dev")
    );
    assert_eq!(crd.spec.group, "cpm.dev");
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.kind, "KubeSchedulerWebhookConfiguration");
    assert_eq!(crd.spec.names.plural, "kubeschedulerwebhookconfigurations");
    assert_eq!(crd.spec.versions.len(), 1);
    let v = &crd.spec.versions[0];
    assert_eq!(
        (v.name.as_str(), v.served, v.storage),
        ("v1alpha1", true, true)
    );
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let root = v
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    let hook = schema_at(root, &["spec", "webhooks", "[]"]);
    assert_eq!(
        hook.required.as_deref(),
        Some(&["clientConfig".to_string(), "weight".to_string()][..])
    );
    let weight = schema_at(hook, &["weight"]);
    assert_eq!(weight.type_.as_deref(), Some("integer"));
    assert_eq!(weight.minimum, Some(1.0));
    let timeout = schema_at(hook, &["timeoutSeconds"]);
    assert_eq!((timeout.minimum, timeout.maximum), (Some(1.0), Some(30.0)));
    assert_eq!(
        timeout.default.as_ref().map(|d| d.0.clone()),
        Some(5.into())
    );
    let policy = schema_at(hook, &["failurePolicy"]);
    let values: Vec<serde_json::Value> = policy
        .enum_
        .as_ref()
        .unwrap()
        .iter()
        .map(|j| j.0.clone())
        .collect();
    assert_eq!(values, ["Fail", "Ignore"]);
    assert_eq!(
        policy.default.as_ref().map(|d| d.0.clone()),
        Some("Fail".into())
    );
    let client = schema_at(hook, &["clientConfig"]);
    assert_eq!(
        client.required.as_deref(),
        Some(&["caBundle".to_string(), "service".to_string()][..])
    );
    let ca = schema_at(client, &["caBundle"]);
    assert_eq!(ca.format.as_deref(), Some("byte"));
    assert_eq!(ca.min_length, Some(1));
    let svc = schema_at(client, &["service"]);
    assert_eq!(
        svc.required.as_deref(),
        Some(&["name".to_string(), "namespace".to_string()][..])
    );
    let port = schema_at(svc, &["port"]);
    assert_eq!((port.minimum, port.maximum), (Some(1.0), Some(65535.0)));
    assert_eq!(port.default.as_ref().map(|d| d.0.clone()), Some(443.into()));
    let path = schema_at(svc, &["path"]);
    assert_eq!(path.default.as_ref().map(|d| d.0.clone()), Some("/".into()));
    for field in ["name", "namespace"] {
        let s = schema_at(svc, &[field]);
        assert_eq!((s.min_length, s.max_length), (Some(1), Some(63)), "{field}");
        assert!(s.pattern.is_some(), "{field} has a pattern");
    }
    let rejected = schema_at(root, &["status", "rejected", "[]"]);
    assert!(rejected.properties.as_ref().unwrap().contains_key("reason"));
}

#[test]
fn status_lists_the_rejections_of_its_own_object() {
    let mut bad = webhook("svc");
    bad.weight = 0;
    let mut obj = with_webhooks("one", vec![webhook("ok"), bad.clone()]);
    obj.metadata.generation = Some(7);
    let other = with_webhooks("two", vec![bad]);
    let set = desired_extenders(&[obj.clone(), other], &domain());
    assert_eq!(set.rejections.len(), 2);
    assert_eq!(
        desired_status(&obj, &set.rejections),
        KubeSchedulerWebhookConfigurationStatus {
            observed_generation: Some(7),
            rejected: vec![RejectedWebhook {
                index: 1,
                reason: "weight must be at least 1, got 0".into(),
            }],
        }
    );
    // Valid again: the list is empty (cleared), the generation still recorded.
    assert_eq!(
        desired_status(&obj, &[]),
        KubeSchedulerWebhookConfigurationStatus {
            observed_generation: Some(7),
            rejected: vec![],
        }
    );
}

fn rejection(object: &str, generation: i64, index: usize) -> Rejection {
    Rejection {
        object: object.into(),
        uid: Some("u-1".into()),
        generation: Some(generation),
        index,
        problems: vec![Problem::Weight(0)],
    }
}

#[test]
fn event_names_identify_the_rejection_of_one_generation() {
    let r = rejection("gpu", 1, 0);
    let name = event_name(&r);
    assert_eq!(name, event_name(&r.clone()), "stable");
    assert!(name.starts_with("gpu."), "{name}");
    assert_eq!(name.len(), "gpu.".len() + 16);
    let differs = [
        rejection("gpu", 2, 0),
        rejection("gpu", 1, 1),
        rejection("gpu2", 1, 0),
        Rejection {
            problems: vec![Problem::MissingService],
            ..r.clone()
        },
        Rejection {
            uid: Some("u-2".into()),
            ..r.clone()
        },
    ];
    for other in differs {
        assert_ne!(event_name(&other), name, "{other:?}");
    }
    let long = rejection(&"a".repeat(253), 1, 0);
    let long_name = event_name(&long);
    assert!(long_name.len() <= 253, "{}", long_name.len());
    assert_eq!(long_name.matches('.').count(), 1);
}

#[test]
fn rejection_events_are_warnings_about_the_cluster_scoped_object() {
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let e = rejection_event(&rejection("gpu", 3, 2), "cpm-manifests", &now);
    assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(e.metadata.name, Some(event_name(&rejection("gpu", 3, 2))));
    assert_eq!(e.reason.as_deref(), Some("InvalidWebhook"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(
        e.message.as_deref(),
        Some(
            "webhooks[2] is left out of kube-scheduler's extenders: weight must be at least 1, got 0"
        )
    );
    let obj = &e.involved_object;
    assert_eq!(obj.api_version.as_deref(), Some("cpm.dev/v1alpha1"));
    assert_eq!(
        obj.kind.as_deref(),
        Some("KubeSchedulerWebhookConfiguration")
    );
    assert_eq!(obj.name.as_deref(), Some("gpu"));
    assert_eq!(obj.uid.as_deref(), Some("u-1"));
    assert_eq!(obj.namespace, None, "cluster-scoped");
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("cpm-manifests")
    );
    assert_eq!(e.count, Some(1));
    assert_eq!(e.first_timestamp, Some(now));
}

#[test]
fn metrics_count_rendered_and_rejected_webhooks() {
    let mut registry = Registry::default();
    let metrics = SchedulerWebhookMetrics::register(&mut registry);
    let encode = |registry: &Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    };
    let text = encode(&registry);
    assert!(
        text.contains("cpm_scheduler_webhooks{state=\"rendered\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("cpm_scheduler_webhooks{state=\"rejected\"} 0"),
        "{text}"
    );

    let mut bad = webhook("svc");
    bad.weight = 0;
    let set = desired_extenders(
        &[with_webhooks("o", vec![webhook("a"), bad, webhook("b")])],
        &domain(),
    );
    metrics.record(&set);
    let text = encode(&registry);
    assert!(
        text.contains("# TYPE cpm_scheduler_webhooks gauge"),
        "{text}"
    );
    assert!(
        text.contains("cpm_scheduler_webhooks{state=\"rendered\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("cpm_scheduler_webhooks{state=\"rejected\"} 1"),
        "{text}"
    );
}
