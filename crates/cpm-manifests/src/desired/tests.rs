//! Tests of desired(): each checksum changes exactly when one of its component's inputs changes.

use std::path::Path;

use cpm_testing::fixtures::config_yaml;

use super::*;
use crate::files::EncryptionKey;

struct World {
    config: ControlPlaneConfiguration,
    files: BTreeMap<String, Option<Vec<u8>>>,
    keys: Vec<EncryptionKey>,
    scheduler: String,
}

fn world(extra: &str) -> World {
    let config =
        ControlPlaneConfiguration::parse(&config_yaml(extra), Path::new("t.yaml")).unwrap();
    let files = Component::ALL
        .into_iter()
        .flat_map(referenced_files)
        .map(|p| (p.clone(), Some(p.into_bytes())))
        .collect();
    World {
        config,
        files,
        keys: vec![],
        scheduler: "scheduler config v1\n".into(),
    }
}

/// The checksums of the three components.
fn sums(w: &World) -> BTreeMap<Component, String> {
    let inputs = Inputs {
        config: &w.config,
        node_ip: "192.0.2.10".parse().unwrap(),
        peers: &[],
        node_files: &w.files,
        custom_audit_policy: None,
        encryption_keys: &w.keys,
        scheduler_config: &w.scheduler,
    };
    desired(&inputs)
        .unwrap()
        .manifests
        .into_iter()
        .map(|m| (m.component, m.checksum))
        .collect()
}

/// Applies `change` and checks that exactly `expected` components get a new checksum.
fn check(w: &mut World, change: impl FnOnce(&mut World), expected: &[Component]) {
    let before = sums(w);
    change(w);
    let after = sums(w);
    let changed: Vec<Component> = Component::ALL
        .into_iter()
        .filter(|c| before[c] != after[c])
        .collect();
    assert_eq!(changed, expected);
}

#[test]
fn every_referenced_file_changes_exactly_its_components_checksums() {
    let mut w = world("");
    let all: Vec<String> = w.files.keys().cloned().collect();
    for path in all {
        let users: Vec<Component> = Component::ALL
            .into_iter()
            .filter(|c| referenced_files(*c).contains(&path))
            .collect();
        check(
            &mut w,
            |w| {
                w.files
                    .insert(path.clone(), Some(b"rotated".to_vec()))
                    .map(|_| ())
                    .unwrap_or(());
            },
            &users,
        );
        check(
            &mut w,
            |w| w.files.insert(path.clone(), None).map(|_| ()).unwrap_or(()),
            &users,
        );
    }
    assert_eq!(sums(&w), sums(&w), "deterministic");
}

#[test]
fn own_config_files_change_only_their_component() {
    let mut w = world("");
    check(
        &mut w,
        |w| w.scheduler = "scheduler config v2\n".into(),
        &[Component::Scheduler],
    );
    check(
        &mut w,
        |w| {
            w.keys = vec![EncryptionKey {
                name: "key-1".into(),
                secret: "a2V5".into(),
            }];
        },
        &[Component::Apiserver],
    );
    check(
        &mut w,
        |w| w.keys[0].secret = "b3RoZXI=".into(),
        &[Component::Apiserver],
    );
    check(
        &mut w,
        |w| w.config.apiserver.audit_policy.mode = AuditMode::None,
        &[Component::Apiserver],
    );
    check(
        &mut w,
        |w| {
            w.config
                .controller_manager
                .node_monitor_grace_period_seconds = 20;
        },
        &[Component::ControllerManager],
    );
    check(
        &mut w,
        |w| w.config.kubernetes_version = "1.34".parse().unwrap(),
        &Component::ALL,
    );
    check(&mut w, |_| {}, &[]);
}

#[test]
fn audit_none_drops_the_policy_file_and_its_flags() {
    let mut w = world("apiserver: {auditPolicy: {mode: None}}\n");
    let files = w.files.clone();
    let inputs = Inputs {
        config: &w.config,
        node_ip: "192.0.2.10".parse().unwrap(),
        peers: &[],
        node_files: &files,
        custom_audit_policy: None,
        encryption_keys: &[],
        scheduler_config: "s",
    };
    let d = desired(&inputs).unwrap();
    assert!(
        d.set
            .get(Path::new("etc/kubernetes/cpm/audit-policy.yaml"))
            .is_none()
    );
    assert_eq!(
        d.set.orphans().collect::<Vec<_>>(),
        vec![Path::new("etc/kubernetes/cpm/audit-policy.yaml")],
        "a policy from before is removed"
    );
    let apiserver = String::from_utf8(d.manifests[0].bytes.clone()).unwrap();
    assert!(
        !apiserver.contains("--audit-policy-file") && !apiserver.contains("audit-log"),
        "{apiserver}"
    );
    w.config.apiserver.audit_policy.mode = AuditMode::Basic;
}

#[test]
fn protected_flags_and_bad_names_are_refused_with_the_field() {
    for (extra, want) in [
        (
            "apiserver: {extraArgs: {tls-cert-file: /tmp/x}}\n",
            "apiserver.extraArgs.tls-cert-file: may not be overridden: cpm manages it",
        ),
        (
            "apiserver: {extraArgs: {etcd-servers: \"https://x:2379\"}}\n",
            "apiserver.extraArgs.etcd-servers: may not be overridden",
        ),
        (
            "apiserver: {extraArgs: {authorization-mode: AlwaysAllow}}\n",
            "apiserver.extraArgs.authorization-mode: may not be overridden",
        ),
        (
            "apiserver: {extraArgs: {feature-gates: \"A=true\"}}\n",
            "(use apiserver.featureGates)",
        ),
        (
            "apiserver: {extraArgs: {profiling: \"true\"}}\n",
            "apiserver.extraArgs.profiling: may not be overridden",
        ),
        (
            "apiserver: {extraArgs: {\"--v\": \"4\"}}\n",
            "apiserver.extraArgs.--v: a flag name without leading dashes",
        ),
        (
            "apiserver: {featureGates: {\"Bad Gate\": true}}\n",
            "apiserver.featureGates.Bad Gate",
        ),
        (
            "apiserver: {admissionPlugins: [\"\"]}\n",
            "apiserver.admissionPlugins[0]",
        ),
    ] {
        let w = world(extra);
        let err = flags::validate(&w.config).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    assert!(
        flags::validate(
            &world("apiserver: {extraArgs: {max-requests-inflight: \"800\", v: \"2\"}}\n").config
        )
        .is_ok()
    );
}
