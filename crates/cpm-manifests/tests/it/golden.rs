//! Golden files: every rendered file of each case is compared byte for byte with
//! `tests/golden/<case>/`, regenerated only with `UPDATE_GOLDEN=1`. Each manifest must also
//! deserialize as a k8s-openapi `Pod` without losing a field and pass `kubernetes-validate
//! --strict` for its Kubernetes version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cpm_core::config::ControlPlaneConfiguration;
use cpm_manifests::desired::{Inputs, desired, referenced_files};
use cpm_manifests::files::{EncryptionKey, parse_audit_policy};
use cpm_manifests::layout::Component;
use cpm_manifests::scheduler::render_scheduler_config;
use cpm_testing::etcd::find_tool;
use k8s_openapi::api::core::v1::Pod;

struct Case {
    name: &'static str,
    config: &'static str,
    peers: &'static [&'static str],
    encryption: bool,
    custom_audit: Option<&'static str>,
}

const CASES: [Case; 3] = [
    Case {
        name: "v1.31-defaults",
        config: "kubernetesVersion: \"1.31\"\n",
        peers: &[],
        encryption: false,
        custom_audit: None,
    },
    Case {
        name: "v1.33-three-masters-hardened",
        config: "kubernetesVersion: \"1.33\"\nimageRepository: registry.example.com/k8s\nclusterDomain: corp.local\napiserver:\n  bindToWildcard: true\n  admissionPlugins: [AlwaysPullImages]\n  featureGates: {InPlacePodVerticalScaling: true}\n  extraArgs: {max-requests-inflight: \"800\"}\n  auditPolicy: {mode: None}\n  encryptionAtRest: true\ncontrollerManager: {nodeMonitorGracePeriodSeconds: 20}\n",
        peers: &["192.0.2.11", "192.0.2.12"],
        encryption: true,
        custom_audit: None,
    },
    Case {
        name: "v1.34-custom-audit",
        config: "kubernetesVersion: \"1.34\"\napiserver:\n  auditPolicy: {mode: Custom, file: /etc/cpm/audit.yaml}\n",
        peers: &["192.0.2.11"],
        encryption: false,
        custom_audit: Some(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n  resources: [{group: \"\", resources: [pods]}]\n- level: Metadata\n",
        ),
    },
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Fixed stand-ins for the files other agents write, so checksums are reproducible.
fn node_files() -> BTreeMap<String, Option<Vec<u8>>> {
    Component::ALL
        .into_iter()
        .flat_map(referenced_files)
        .map(|p| {
            let content = format!("content of {p}\n").into_bytes();
            (p, Some(content))
        })
        .collect()
}

/// Renders a case: relative path → bytes.
fn render(case: &Case) -> BTreeMap<String, Vec<u8>> {
    let text = format!(
        "apiVersion: cpm.dev/v1alpha1\nkind: ControlPlaneConfiguration\n{}",
        case.config
    );
    let config = ControlPlaneConfiguration::parse(&text, Path::new("golden.yaml")).unwrap();
    let peers: Vec<std::net::IpAddr> = case.peers.iter().map(|p| p.parse().unwrap()).collect();
    let keys = if case.encryption {
        vec![EncryptionKey {
            name: "key-1".into(),
            secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        }]
    } else {
        vec![]
    };
    let audit = case.custom_audit.map(|t| parse_audit_policy(t).unwrap());
    let files = node_files();
    let scheduler = render_scheduler_config(&[], "/etc/kubernetes/scheduler.conf");
    let inputs = Inputs {
        config: &config,
        node_ip: "192.0.2.10".parse().unwrap(),
        peers: &peers,
        node_files: &files,
        custom_audit_policy: audit.as_ref(),
        encryption_keys: &keys,
        scheduler_config: &scheduler,
    };
    let d = desired(&inputs).unwrap();
    d.set
        .files()
        .iter()
        .map(|f| (f.path.to_string_lossy().into_owned(), f.bytes.clone()))
        .collect()
}

#[test]
fn rendered_files_match_the_golden_files() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for case in &CASES {
        let dir = golden_dir().join(case.name);
        for (rel, bytes) in render(case) {
            let name = rel.rsplit('/').next().unwrap().to_string();
            let path = dir.join(&name);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                cpm_core::apply::write_atomic(&path, &bytes, 0o644, None, None).unwrap();
                continue;
            }
            match std::fs::read(&path) {
                Ok(want) if want == bytes => {}
                _ => mismatches.push(format!("{}/{name}", case.name)),
            }
        }
        assert_eq!(render(case), render(case), "{}: deterministic", case.name);
    }
    assert!(
        mismatches.is_empty(),
        "golden files differ (review, then UPDATE_GOLDEN=1 cargo test -p cpm-manifests --test it): {mismatches:?}"
    );
}

#[test]
fn manifests_are_lossless_k8s_openapi_pods() {
    for case in &CASES {
        for (rel, bytes) in render(case)
            .into_iter()
            .filter(|(p, _)| p.contains("/manifests/"))
        {
            let value: serde_json::Value =
                serde_saphyr::from_str(std::str::from_utf8(&bytes).unwrap()).unwrap();
            let pod: Pod =
                serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(
                serde_json::to_value(&pod).unwrap(),
                value,
                "{}/{rel}: a field k8s-openapi does not know was dropped",
                case.name
            );
            let spec = pod.spec.unwrap();
            assert_eq!(
                spec.priority_class_name.as_deref(),
                Some("system-node-critical")
            );
            let c = &spec.containers[0];
            assert!(
                c.liveness_probe.is_some()
                    && c.readiness_probe.is_some()
                    && c.startup_probe.is_some(),
                "{rel}"
            );
            assert!(
                c.command
                    .as_ref()
                    .unwrap()
                    .contains(&"--profiling=false".to_string()),
                "{rel}"
            );
        }
    }
}

#[test]
fn manifests_validate_against_the_kubernetes_openapi_schema() {
    let Some(tool) = find_tool("kubernetes-validate", "KUBERNETES_VALIDATE") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for case in &CASES {
        let version = format!("{}.0", &case.name[1..5]);
        let mut paths = Vec::new();
        for (rel, bytes) in render(case)
            .into_iter()
            .filter(|(p, _)| p.contains("/manifests/"))
        {
            let path =
                dir.path()
                    .join(format!("{}-{}", case.name, rel.rsplit('/').next().unwrap()));
            cpm_core::apply::write_atomic(&path, &bytes, 0o644, None, None).unwrap();
            paths.push(path);
        }
        let out = Command::new(&tool)
            .args(["-k", &version, "--strict"])
            .args(&paths)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{}: kubernetes-validate -k {version}: {text}",
            case.name
        );
        assert_eq!(
            text.matches(" passed for resource pod/").count(),
            3,
            "{text}"
        );
    }
    // The validator is strict: a field the schema does not know fails.
    let bad = dir.path().join("bad.yaml");
    cpm_core::apply::write_atomic(&bad, b"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: c, image: i, bogusField: 1}]\n", 0o644, None, None).unwrap();
    let out = Command::new(&tool)
        .args(["-k", "1.33.0", "--strict"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an unknown field must fail validation"
    );
}
