//! Tests of the audit, admission and encryption files.

use super::*;

#[test]
fn basic_policy_logs_writes_at_metadata_and_drops_reads() {
    let p = basic_audit_policy();
    let text = yaml(&p);
    assert!(
        text.starts_with("apiVersion: audit.k8s.io/v1\nkind: Policy\n"),
        "{text}"
    );
    let last = p.rules.last().unwrap();
    assert_eq!(last.level, AuditLevel::Metadata);
    assert!(last.verbs.contains(&"create".to_string()));
    assert!(
        p.rules
            .iter()
            .all(|r| matches!(r.level, AuditLevel::None | AuditLevel::Metadata)),
        "never request bodies"
    );
    assert_eq!(parse_audit_policy(&text).unwrap(), p, "round trip");
}

#[test]
fn custom_policies_are_parsed_strictly() {
    let ok = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n  resources: [{group: apps, resources: [deployments]}]\n";
    assert_eq!(
        parse_audit_policy(ok).unwrap().rules[0].level,
        AuditLevel::RequestResponse
    );
    for (bad, want) in [
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
            "unknown variant `Everything`",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  verb: [get]\n",
            "unknown field `verb`",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
            "rules: at least one rule",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nrules:\n- level: None\n",
            "must be audit.k8s.io/v1 Policy",
        ),
        ("rules: [", "invalid YAML"),
    ] {
        let err = parse_audit_policy(bad).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn encryption_config_round_trips_keys_and_keeps_identity_last() {
    let keys = vec![
        EncryptionKey {
            name: "key-2".into(),
            secret: "c2Vjb25k".into(),
        },
        EncryptionKey {
            name: "key-1".into(),
            secret: "Zmlyc3Q=".into(),
        },
    ];
    let text = yaml(&encryption_config(&keys));
    assert_eq!(encryption_keys(&text).unwrap(), keys);
    let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        v.pointer("/resources/0/providers/1/identity"),
        Some(&serde_json::json!({}))
    );
    assert!(
        !format!("{:?}", keys[0]).contains("c2Vjb25k"),
        "Debug redacts"
    );
    assert_eq!(encryption_keys("garbage: ["), None);
}
