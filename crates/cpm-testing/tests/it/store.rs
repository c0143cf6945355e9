//! `cpm-test-apiserver store` as a process, with the cluster CA of a cpm CA bundle, driven by a
//! real kubectl as a new user would drive it (no `--validate=false`, no special flags). The
//! store reports v1.32.4, so on machines where kubectl is gcloud's version dispatcher, kubectl
//! 1.32 runs: it sends built-in kinds as protobuf and validates fields server-side.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cpm_core::config::KeyAlgorithm;
use cpm_testing::control_plane::harness::{Kubectl, Store};
use cpm_testing::fixtures::ca_bundle;
use cpm_testing::process::{code, stderr, stdout};
use serde_json::Value;

const VERSION: &str = "v1.32.4";

struct Cluster {
    dir: tempfile::TempDir,
    /// Kept running until the test ends.
    _store: Store,
    kubectl: Kubectl,
}

/// A store and kubectl, or `None` when kubectl is missing (outside CI).
fn cluster() -> Option<Cluster> {
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(&dir.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_cpm-test-apiserver"));
    let store = Store::start(&bin, &bundle, dir.path(), VERSION);
    let kubectl = Kubectl::find(&store.admin_kubeconfig, &dir.path().join("home"))?;
    Some(Cluster {
        dir,
        _store: store,
        kubectl,
    })
}

impl Cluster {
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        cpm_core::apply::write_atomic(&path, text.as_bytes(), 0o600, None, None).unwrap();
        path.display().to_string()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.kubectl.ok(&[args, &["-o", "json"]].concat())).unwrap()
    }
}

const OBJECTS: &str = r"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        env:
        - {name: A, value: '1'}
        - {name: B, value: '2'}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
---
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
spec:
  size: 3
";

#[test]
fn kubectl_creates_applies_and_reads_back() {
    let Some(c) = cluster() else { return };
    let out = c
        .kubectl
        .ok(&["create", "configmap", "plain", "--from-literal=a=b"]);
    assert_eq!(out.trim(), "configmap/plain created");
    assert_eq!(
        c.kubectl
            .ok(&["get", "configmap", "plain", "-o", "jsonpath={.data.a}"]),
        "b"
    );

    // As against a real server: the custom resource cannot be mapped before its CRD exists,
    // so the first apply creates the rest and fails on it; the second creates it.
    let file = c.file("objects.yaml", OBJECTS);
    let first = c.kubectl.run(&["apply", "-f", &file]);
    assert_eq!(code(&first), 1, "{}", stderr(&first));
    for created in [
        "configmap/settings created",
        "deployment.apps/web created",
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created",
    ] {
        assert!(stdout(&first).contains(created), "{}", stdout(&first));
    }
    assert!(
        stderr(&first).contains("ensure CRDs are installed first"),
        "{}",
        stderr(&first)
    );
    let second = c.kubectl.ok(&["apply", "-f", &file]);
    assert!(second.contains("widget.example.com/w1 created"), "{second}");
    assert!(second.contains("deployment.apps/web unchanged"), "{second}");

    let widget = c.json(&["get", "widget", "w1"]);
    assert_eq!(widget["spec"]["size"], 3);
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 2);

    // A change is a strategic merge patch: the container is patched by name, the removed env
    // var deleted, the rest kept.
    let changed = OBJECTS
        .replace("replicas: 2", "replicas: 3")
        .replace("nginx:1.27", "nginx:1.28")
        .replace("        - {name: A, value: '1'}\n", "");
    let file = c.file("objects.yaml", &changed);
    let third = c.kubectl.ok(&["apply", "-f", &file]);
    assert!(third.contains("deployment.apps/web configured"), "{third}");
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers,
        &serde_json::json!([{
            "name": "web",
            "image": "nginx:1.28",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "B", "value": "2"}],
        }])
    );
    // The scale subresource, and the `all` category.
    let scaled = c
        .kubectl
        .ok(&["scale", "deployment", "web", "--replicas=5"]);
    assert_eq!(scaled.trim(), "deployment.apps/web scaled");
    assert_eq!(c.json(&["get", "deployment", "web"])["spec"]["replicas"], 5);
    let all = c.kubectl.ok(&["get", "all", "-o", "name"]);
    assert_eq!(all.trim(), "deployment.apps/web");
}

#[test]
fn unknown_fields_are_refused_unless_validation_is_relaxed() {
    let Some(c) = cluster() else { return };
    let file = c.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ncolour: red\ndata: {a: b}\n",
    );
    let out = c.kubectl.run(&["apply", "-f", &file]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains(
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"colour\""
        ),
        "{}",
        stderr(&out)
    );
    let missing = c.kubectl.run(&["get", "configmap", "bad"]);
    assert!(
        stderr(&missing).contains("NotFound"),
        "{}",
        stderr(&missing)
    );
    let out = c.kubectl.run(&["apply", "-f", &file, "--validate=warn"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Warning: unknown field \"colour\""),
        "{}",
        stderr(&out)
    );
    let stored = c.json(&["get", "configmap", "bad"]);
    assert_eq!(stored.get("colour"), None);
}

#[test]
fn whoami_names_the_certificate_user_and_service_account_tokens() {
    let Some(c) = cluster() else { return };
    let me = c.json(&["auth", "whoami"]);
    assert_eq!(me["status"]["userInfo"]["username"], "cpm-test-admin");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );

    c.kubectl.ok(&["create", "serviceaccount", "robot"]);
    let token = c
        .kubectl
        .ok(&["create", "token", "robot", "--duration=10m"]);
    let robot = c.kubectl.with_token(token.trim());
    let me: Value = serde_json::from_str(&robot.ok(&["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:serviceaccount:default:robot"
    );
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );

    // A token for another audience is no API credential, but TokenReview accepts it for that
    // audience, as the kubelet's and a webhook's reviews do.
    let vault = c
        .kubectl
        .ok(&["create", "token", "robot", "--audience=vault"]);
    let denied = c.kubectl.with_token(vault.trim()).run(&["get", "pods"]);
    let unauthorized = "You must be logged in to the server";
    assert!(
        stderr(&denied).contains(unauthorized),
        "{}",
        stderr(&denied)
    );
    let review = c.file(
        "review.json",
        &serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": vault.trim(), "audiences": ["vault"]},
        })
        .to_string(),
    );
    let reviewed: Value =
        serde_json::from_str(&c.kubectl.ok(&["create", "-f", &review, "-o", "json"])).unwrap();
    assert_eq!(reviewed["status"]["authenticated"], true);
    assert_eq!(
        reviewed["status"]["audiences"],
        serde_json::json!(["vault"])
    );

    let ghost = c.kubectl.run(&["create", "token", "ghost"]);
    assert!(
        stderr(&ghost).contains("serviceaccounts \"ghost\" not found"),
        "{}",
        stderr(&ghost)
    );
    // The token dies with its ServiceAccount.
    c.kubectl.ok(&["delete", "serviceaccount", "robot"]);
    let gone = robot.run(&["auth", "whoami"]);
    assert!(stderr(&gone).contains(unauthorized), "{}", stderr(&gone));
}

#[test]
fn a_watch_receives_events() {
    let Some(c) = cluster() else { return };
    c.kubectl.ok(&["create", "configmap", "before"]);
    let mut watch = c
        .kubectl
        .command()
        .args(["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = std::io::BufReader::new(watch.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
                && line == want
            {
                return true;
            }
        }
        false
    };
    // The initial list, then (anything after it is an event of the watch) a creation.
    let listed = next("configmap/before");
    c.kubectl.ok(&["create", "configmap", "watched"]);
    let watched = next("configmap/watched");
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(listed && watched, "listed {listed}, watched {watched}");
}

#[tokio::test]
async fn bodies_it_cannot_read_are_415_and_openapi_tells_kubectl_to_validate_server_side() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(&dir.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_cpm-test-apiserver"));
    let store = Store::start(&bin, &bundle, dir.path(), VERSION);
    let client = cpm_core::kube::optional_client(Some(&store.admin_kubeconfig))
        .await
        .unwrap()
        .unwrap();
    let raw = |method: &str, uri: &str, ct: &str, body: &[u8]| {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, ct)
            .body(body.to_vec())
            .unwrap()
    };
    let r = client
        .request_text(raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/cbor",
            &[0xa0],
        ))
        .await;
    match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
        }
        other => panic!("expected 415, got {other:?}"),
    }
    let root: Value = serde_json::from_str(
        &client
            .request_text(raw("GET", "/openapi/v3", "", b""))
            .await
            .unwrap(),
    )
    .unwrap();
    let apps = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    let doc: Value = serde_json::from_str(
        &client
            .request_text(raw("GET", apps, "", b""))
            .await
            .unwrap(),
    )
    .unwrap();
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    );
    drop(store);
}
