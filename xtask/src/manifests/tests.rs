//! Tests of the generated manifests: drift against the committed tree, determinism, offline
//! schema validation (kubernetes-validate --strict), structural checks of the
//! monitoring.coreos.com kinds, least-privilege RBAC, and the alert rules under promtool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use cpm_testing::etcd::find_tool;
use serde_json::Value;

use super::*;

fn default_opts() -> Options {
    Options {
        registry: "cpm".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Every Kubernetes object of every generated file, with the file it came from.
fn documents(files: &BTreeMap<String, String>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (rel, text) in files {
        if rel == "monitoring/cpm-rules.yaml" {
            // A plain Prometheus rule file, not a Kubernetes object.
            continue;
        }
        for doc in text.split("\n---\n") {
            let value: Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}"));
            out.push((rel.clone(), value));
        }
    }
    out
}

fn put(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    cpm_core::apply::write_atomic(path, text.as_bytes(), 0o644, None, None).unwrap();
}

#[test]
fn committed_manifests_match_the_generator() {
    let files = render(&default_opts()).unwrap();
    let drifted = drift(&workspace_root().join("manifests"), &files).unwrap();
    assert!(
        drifted.is_empty(),
        "manifests/ is out of date, run `cargo xtask manifests`: {drifted:?}"
    );
}

#[test]
fn generation_is_deterministic_and_every_file_has_the_header() {
    let a = render(&default_opts()).unwrap();
    let b = render(&default_opts()).unwrap();
    assert_eq!(a, b);
    for (rel, text) in &a {
        assert!(text.starts_with(common::HEADER), "{rel}");
    }
}

#[test]
fn check_names_changed_missing_and_stale_files_and_write_repairs_them() {
    let files = render(&default_opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(drift(dir.path(), &files).unwrap().len(), files.len());
    assert_eq!(write(dir.path(), &files).unwrap(), files.len());
    assert!(drift(dir.path(), &files).unwrap().is_empty());
    assert_eq!(
        write(dir.path(), &files).unwrap(),
        0,
        "a second write changes nothing"
    );

    put(&dir.path().join("cpm-agents.yaml"), "# edited by hand\n");
    put(
        &dir.path().join("old/gone.yaml"),
        &format!("{}kind: Gone\n", common::HEADER),
    );
    put(&dir.path().join("README.md"), "hand-written, kept\n");
    let drifted = drift(dir.path(), &files).unwrap();
    assert_eq!(
        drifted,
        vec![
            "cpm-agents.yaml differs".to_string(),
            "old/gone.yaml is no longer generated".to_string()
        ]
    );
    write(dir.path(), &files).unwrap();
    assert!(drift(dir.path(), &files).unwrap().is_empty());
    assert!(!dir.path().join("old/gone.yaml").exists());
    assert!(dir.path().join("README.md").exists());
}

#[test]
fn registry_prefix_and_version_name_the_images() {
    let opts = Options {
        registry: "registry.example.com/cpm".to_string(),
        version: "9.9.9".to_string(),
    };
    let files = render(&opts).unwrap();
    let agents = &files["cpm-agents.yaml"];
    for bin in ["cpm-certs", "cpm-kubeconfig", "cpm-manifests", "cpm-etcd"] {
        assert!(
            agents.contains(&format!("image: registry.example.com/cpm/{bin}:9.9.9")),
            "{bin}"
        );
    }
    // cpm-manifests is told the cpm-holder image; the example holder pod runs it.
    assert!(agents.contains("value: registry.example.com/cpm/cpm-holder:9.9.9"));
    assert!(
        files["examples/image-holder-pod.yaml"]
            .contains("image: registry.example.com/cpm/cpm-holder:9.9.9")
    );
    assert!(
        files["control-plane-proxy.yaml"]
            .contains("registry.example.com/cpm/metrics-rbac-proxy:9.9.9")
    );
    assert!(
        files["etcd-backup/cronjob-template.yaml"]
            .contains("registry.example.com/cpm/etcd-backup:9.9.9")
    );
    let pod = &files["static-pods/kubernetes-api-proxy.yaml"];
    assert!(pod.contains("registry.example.com/cpm/api-proxy:9.9.9"));
    assert!(pod.contains("registry.example.com/cpm/proxy-reloader:9.9.9"));
}

fn is_monitoring(v: &Value) -> bool {
    v["apiVersion"]
        .as_str()
        .is_some_and(|a| a.starts_with("monitoring.coreos.com/"))
}

#[test]
fn every_object_validates_against_the_kubernetes_openapi_schema() {
    let Some(tool) = find_tool("kubernetes-validate", "KUBERNETES_VALIDATE") else {
        return;
    };
    let files = render(&default_opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, (rel, doc)) in documents(&files).into_iter().enumerate() {
        if is_monitoring(&doc) {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap().to_lowercase();
        let path = dir.path().join(format!("{i:02}-{kind}.yaml"));
        put(&path, &serde_saphyr::to_string(&doc).unwrap());
        paths.push((rel, path));
    }
    // The CronJob template with a real node name, as a user would render it.
    let config = cpm_core::config::ControlPlaneConfiguration::parse(
        &std::fs::read_to_string(workspace_root().join(EXAMPLE_CONFIG)).unwrap(),
        Path::new(EXAMPLE_CONFIG),
    )
    .unwrap();
    let job = workloads::backup_cronjob(&default_opts(), "master-1", &config.etcd.backup);
    let path = dir.path().join("cronjob-master-1.yaml");
    put(&path, &serde_saphyr::to_string(&job).unwrap());
    paths.push(("etcd-backup (master-1)".to_string(), path));
    assert!(
        paths
            .iter()
            .any(|(rel, _)| rel == "examples/image-holder-pod.yaml"),
        "the example image-holder pod is validated"
    );
    assert!(paths.len() >= 20, "{} objects", paths.len());
    for version in ["1.31.0", "1.33.0", "1.34.0"] {
        let out = Command::new(&tool)
            .args(["-k", version, "--strict"])
            .args(paths.iter().map(|(_, p)| p))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate -k {version} --strict: {text}\nfiles: {paths:?}"
        );
        assert_eq!(
            text.matches(" passed for resource ").count(),
            paths.len(),
            "{text}"
        );
    }
}

fn non_empty_str(v: &Value, what: &str) {
    assert!(
        v.as_str().is_some_and(|s| !s.is_empty()),
        "{what} must be a non-empty string: {v}"
    );
}

#[test]
fn monitoring_objects_have_their_required_fields() {
    let files = render(&default_opts()).unwrap();
    let mut kinds = BTreeSet::new();
    for (rel, doc) in documents(&files) {
        if !is_monitoring(&doc) {
            continue;
        }
        assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1", "{rel}");
        non_empty_str(&doc["metadata"]["name"], "metadata.name");
        assert_eq!(doc["metadata"]["namespace"], common::NAMESPACE, "{rel}");
        let kind = doc["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "PrometheusRule" => {
                let groups = doc["spec"]["groups"].as_array().unwrap();
                assert!(!groups.is_empty());
                for g in groups {
                    non_empty_str(&g["name"], "group name");
                    for r in g["rules"].as_array().unwrap() {
                        non_empty_str(&r["alert"], "alert");
                        non_empty_str(&r["expr"], "expr");
                        non_empty_str(&r["for"], "for");
                        let sev = r["labels"]["severity"].as_str().unwrap();
                        assert!(["warning", "critical"].contains(&sev), "{r}");
                        non_empty_str(&r["annotations"]["summary"], "summary");
                        non_empty_str(&r["annotations"]["description"], "description");
                        assert!(
                            r["annotations"]["runbook_url"]
                                .as_str()
                                .unwrap()
                                .starts_with("docs/operations.md#"),
                            "{r}"
                        );
                    }
                }
            }
            "ServiceMonitor" => {
                assert!(doc["spec"]["selector"].is_object(), "{rel}");
                let endpoints = doc["spec"]["endpoints"].as_array().unwrap();
                assert!(!endpoints.is_empty());
                for e in endpoints {
                    non_empty_str(&e["port"], "endpoint port");
                    non_empty_str(&e["path"], "endpoint path");
                    assert_eq!(e["scheme"], "https", "{e}");
                    non_empty_str(&e["bearerTokenFile"], "bearerTokenFile");
                    assert!(e["tlsConfig"].is_object(), "{e}");
                }
            }
            other => panic!("{rel}: unexpected monitoring kind {other}"),
        }
        kinds.insert(kind);
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["PrometheusRule".to_string(), "ServiceMonitor".to_string()])
    );
    // The plain rule file is exactly the PrometheusRule's spec.
    let plain: Value = serde_saphyr::from_str(&files["monitoring/cpm-rules.yaml"]).unwrap();
    let rule: Value = serde_saphyr::from_str(&files["monitoring/prometheusrule.yaml"]).unwrap();
    assert_eq!(plain, rule["spec"]);
}

#[test]
fn rbac_is_least_privilege() {
    let files = render(&default_opts()).unwrap();
    let mut holder_pod_rules = 0;
    for (rel, doc) in documents(&files) {
        let kind = doc["kind"].as_str().unwrap();
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        let namespace = doc["metadata"]["namespace"].as_str();
        for r in doc["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                r[k].as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            };
            for k in ["verbs", "resources", "apiGroups", "nonResourceURLs"] {
                assert!(
                    !list(k).contains(&"*".to_string()),
                    "{rel}: wildcard {k}: {r}"
                );
            }
            // The only deletion: cpm-manifests' image-holder pods, in cpm-system only.
            let holder_pods = kind == "Role"
                && namespace == Some(common::NAMESPACE)
                && list("resources") == ["pods"];
            if holder_pods {
                assert_eq!(rel, "rbac/cpm-agents.yaml");
                assert_eq!(list("apiGroups"), [""], "{rel}: {r}");
                assert!(list("resourceNames").is_empty(), "{rel}: {r}");
                assert_eq!(
                    list("verbs"),
                    ["get", "list", "watch", "create", "delete"],
                    "{rel}: {r}"
                );
                holder_pod_rules += 1;
            } else {
                assert!(!list("verbs").contains(&"delete".to_string()), "{rel}: {r}");
            }
            if kind == "ClusterRole" {
                assert!(
                    !list("resources").contains(&"pods".to_string()),
                    "{rel}: pods cluster-wide: {r}"
                );
            }
            if list("resources").contains(&"secrets".to_string()) {
                let verbs = list("verbs");
                assert!(
                    verbs == ["create"] || !list("resourceNames").is_empty(),
                    "{rel}: secrets readable without a name: {r}"
                );
                assert!(!verbs.contains(&"list".to_string()), "{rel}: {r}");
            }
        }
    }
    assert_eq!(
        holder_pod_rules, 1,
        "one Role rule for the image-holder pods"
    );
}

#[test]
fn agents_rbac_covers_holder_pods_control_plane_nodes_and_events() {
    let files = render(&default_opts()).unwrap();
    let docs: Vec<Value> = documents(&files)
        .into_iter()
        .filter(|(rel, _)| rel == "rbac/cpm-agents.yaml")
        .map(|(_, d)| d)
        .collect();
    let rules = |kind: &str, namespace: Option<&str>| -> Vec<(Vec<String>, Vec<String>)> {
        docs.iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["namespace"].as_str() == namespace)
            .flat_map(|d| d["rules"].as_array().unwrap().clone())
            .map(|r| {
                let list = |k: &str| -> Vec<String> {
                    r[k].as_array()
                        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default()
                };
                (list("resources"), list("verbs"))
            })
            .collect()
    };
    let grants = |rules: &[(Vec<String>, Vec<String>)], resource: &str, verb: &str| {
        rules.iter().any(|(res, verbs)| {
            res.iter().any(|r| r == resource) && verbs.iter().any(|v| v == verb)
        })
    };
    // The image-holder pods: a Role in cpm-system, bound to the agents' ServiceAccount.
    let holder = rules("Role", Some(common::NAMESPACE));
    assert_eq!(
        holder,
        vec![(
            vec!["pods".to_string()],
            ["get", "list", "watch", "create", "delete"]
                .map(str::to_string)
                .to_vec()
        )]
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == common::NAMESPACE)
        .expect("a RoleBinding in cpm-system");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["subjects"][0]["name"], rbac::AGENTS_SA);
    assert_eq!(binding["subjects"][0]["namespace"], common::NAMESPACE);
    // The ControlPlaneNode records and their status.
    let cluster = rules("ClusterRole", None);
    for verb in ["get", "list", "watch", "create", "patch"] {
        assert!(grants(&cluster, "controlplanenodes", verb), "{verb}");
    }
    assert!(grants(&cluster, "controlplanenodes/status", "patch"));
    // Events in `default`.
    assert!(grants(&rules("Role", Some("default")), "events", "create"));
}

fn containers(doc: &Value) -> Vec<Value> {
    let spec = &doc["spec"]["template"]["spec"];
    spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .cloned()
        .collect()
}

#[test]
fn agents_daemonset_runs_on_masters_with_hardened_containers() {
    let files = render(&default_opts()).unwrap();
    let docs = documents(&files);
    let ds = &docs
        .iter()
        .find(|(_, d)| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "cpm")
        .unwrap()
        .1;
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert!(
        spec["nodeSelector"]
            .as_object()
            .unwrap()
            .contains_key(common::CONTROL_PLANE_LABEL)
    );
    let names: Vec<String> = containers(ds)
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["cpm-certs", "cpm-kubeconfig", "cpm-manifests", "cpm-etcd"],
        "no image holders or init containers in the DaemonSet"
    );
    assert!(spec["initContainers"].is_null());
    assert!(
        !spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "holder")
    );
    for c in containers(ds) {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{name}");
        assert!(sc["capabilities"]["add"].is_null(), "{name}");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
        assert_eq!(sc["runAsUser"], 0, "{name} writes host files");
        assert!(c["livenessProbe"]["httpGet"]["path"] == "/livez", "{name}");
        assert!(
            c["readinessProbe"]["httpGet"]["path"] == "/readyz",
            "{name}"
        );
        let env: BTreeMap<&str, &Value> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), &e["value"]))
            .collect();
        for e in ["NODE_NAME", "NODE_IP", "CPM_ROOT"] {
            assert!(env.contains_key(e), "{name}: {e}");
        }
        if name == "cpm-manifests" {
            assert_eq!(
                env["CPM_HOLDER_IMAGE"].as_str(),
                Some(default_opts().image("cpm-holder").as_str())
            );
            assert_eq!(env["CPM_HOLDER_NAMESPACE"], common::NAMESPACE);
        } else {
            assert!(!env.contains_key("CPM_HOLDER_IMAGE"), "{name}");
        }
    }
}

#[test]
fn example_holder_pod_is_hardened_and_bound_to_its_node() {
    let files = render(&default_opts()).unwrap();
    let text = &files["examples/image-holder-pod.yaml"];
    assert!(text.starts_with(common::HEADER));
    assert!(text.contains("not something to apply"), "{text}");
    let docs = documents(&files);
    let pods: Vec<&Value> = docs
        .iter()
        .filter(|(rel, _)| rel == "examples/image-holder-pod.yaml")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(pods.len(), 1);
    let pod = pods[0];
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["namespace"], common::NAMESPACE);
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"],
        cpm_manifests::holder::HOLDER_APP
    );
    let spec = &pod["spec"];
    assert_eq!(spec["nodeName"], agents::EXAMPLE_NODE);
    let tolerations = spec["tolerations"].as_array().unwrap();
    assert!(!tolerations.is_empty());
    for t in tolerations {
        assert_eq!(t["operator"], "Exists", "{t}");
        assert!(
            t["key"].is_null() && t["effect"].is_null(),
            "tolerates every taint: {t}"
        );
    }
    // The images of the example config's minor, from its repository.
    let config = cpm_core::config::ControlPlaneConfiguration::parse(
        &std::fs::read_to_string(workspace_root().join(EXAMPLE_CONFIG)).unwrap(),
        Path::new(EXAMPLE_CONFIG),
    )
    .unwrap();
    let want =
        cpm_manifests::holder::images(&config.image_repository, config.kubernetes_version, None)
            .unwrap();
    let versions = cpm_core::versions::lookup(config.kubernetes_version).unwrap();
    let holders = spec["containers"].as_array().unwrap();
    let images: Vec<&str> = holders
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, want);
    for c in holders {
        assert_eq!(c["command"][0], "/holder/cpm-holder", "{c}");
        assert_eq!(c["command"][1], "hold", "{c}");
        assert_eq!(c["command"].as_array().unwrap().len(), 2, "{c}");
        let image = c["image"].as_str().unwrap();
        if image.contains("/kube-") {
            assert!(image.ends_with(&format!(":{}", versions.kubernetes)), "{c}");
        } else {
            assert!(image.starts_with("registry.k8s.io/etcd:"), "{c}");
        }
    }
    let init = spec["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0]["image"], default_opts().image("cpm-holder"));
    for c in holders.iter().chain(init) {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["runAsUser"], 65532, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert!(sc["capabilities"]["add"].is_null(), "{name}");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
    }
}

/// The promtool unit tests, hand-written beside the suite.
const PROMTOOL_TESTS: &str = "tests/promtool/cpm-rules.test.yaml";
/// How the unit tests name the committed rule file.
const COMMITTED_RULES: &str = "../../manifests/monitoring/cpm-rules.yaml";

#[test]
fn every_alert_has_firing_and_quiet_promtool_cases() {
    let rules = monitoring::rules("0 */6 * * *").unwrap();
    let text = std::fs::read_to_string(workspace_root().join(PROMTOOL_TESTS)).unwrap();
    let tests: Value = serde_saphyr::from_str(&text).unwrap();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for g in &rules.groups {
        for r in &g.rules {
            assert!(firing.contains(&r.alert), "{}: no firing case", r.alert);
            assert!(quiet.contains(&r.alert), "{}: no quiet case", r.alert);
        }
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = find_tool("promtool", "PROMTOOL") else {
        return;
    };
    let files = render(&default_opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("cpm-rules.yaml");
    put(&rules, &files["monitoring/cpm-rules.yaml"]);
    let out = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The unit tests name the committed file; run them on the generated one.
    let text = std::fs::read_to_string(workspace_root().join(PROMTOOL_TESTS)).unwrap();
    assert!(text.contains(COMMITTED_RULES));
    let test_file = dir.path().join("cpm-rules.test.yaml");
    put(&test_file, &text.replace(COMMITTED_RULES, "cpm-rules.yaml"));
    let out = Command::new(&promtool)
        .arg("test")
        .arg("rules")
        .arg(&test_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn backup_alert(schedule: &str) -> monitoring::Alert {
    monitoring::rules(schedule)
        .unwrap()
        .groups
        .into_iter()
        .flat_map(|g| g.rules)
        .find(|r| r.alert == "CpmEtcdBackupTooOld")
        .unwrap()
}

#[test]
fn backup_age_threshold_is_twice_the_longest_gap_of_the_schedule() {
    let six_hourly = backup_alert("0 */6 * * *");
    assert!(six_hourly.expr.ends_with("> 43200"), "{}", six_hourly.expr);
    assert!(
        six_hourly.annotations["description"].contains("older than 12 hours"),
        "{:?}",
        six_hourly.annotations
    );
    // A weekly schedule: two weeks, not two days.
    let weekly = backup_alert("0 0 * * 1");
    assert!(weekly.expr.ends_with("> 1209600"), "{}", weekly.expr);
    assert!(
        weekly.annotations["description"].contains("older than 14 days"),
        "{:?}",
        weekly.annotations
    );
    assert!(backup_alert("*/30 * * * *").expr.ends_with("> 3600"));
    let err = monitoring::rules("0 0 * * 8").unwrap_err();
    assert!(
        format!("{err:#}").contains("etcd.backup.schedule"),
        "{err:#}"
    );
}

#[test]
fn backup_cronjob_mounts_exactly_what_etcd_backup_reads_and_names_every_path() {
    let config = cpm_core::config::ControlPlaneConfiguration::parse(
        &std::fs::read_to_string(workspace_root().join(EXAMPLE_CONFIG)).unwrap(),
        Path::new(EXAMPLE_CONFIG),
    )
    .unwrap();
    let job = workloads::backup_cronjob(&default_opts(), "master-1", &config.etcd.backup);
    let job = serde_json::to_value(&job).unwrap();
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    // Every path is an argument: nothing rests on a default that no mount backs.
    assert_eq!(
        args,
        [
            "--root=/host",
            "--config=/config/config.yaml",
            "--dir=/host/var/lib/etcd/backups",
            "--log-format=json",
            "snapshot"
        ]
    );
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [("NODE_NAME", "spec.nodeName"), ("NODE_IP", "status.hostIP")]
    );
    let mounts: BTreeMap<&str, (&str, bool)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                (m["mountPath"].as_str().unwrap(), m["readOnly"] == true),
            )
        })
        .collect();
    let mut host = BTreeMap::new();
    for v in pod["volumes"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let (at, read_only) = mounts[name];
        if let Some(secret) = v.get("secret") {
            // Only the configuration, read-only, owner-readable; never the CA bundle.
            assert_eq!(secret["secretName"], "cpm-config", "{v}");
            assert_eq!(secret["items"][0]["path"], "config.yaml", "{v}");
            assert_eq!(secret["defaultMode"], 0o400, "{v}");
            assert_eq!((at, read_only), ("/config", true));
        } else {
            let path = v["hostPath"]["path"].as_str().unwrap();
            assert_eq!(at, format!("/host{path}"), "{v}");
            host.insert(path, (v["hostPath"]["type"].as_str().unwrap(), read_only));
        }
    }
    assert_eq!(mounts.len(), pod["volumes"].as_array().unwrap().len());
    assert_eq!(
        host,
        BTreeMap::from([
            ("/etc/kubernetes/pki/etcd/ca.crt", ("File", true)),
            (
                "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
                ("File", true)
            ),
            (
                "/etc/kubernetes/pki/etcd/healthcheck-client.key",
                ("File", true)
            ),
            ("/var/lib/etcd/backups", ("DirectoryOrCreate", false)),
        ]),
        "the CA key and the server and peer keys stay on the host"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
}
