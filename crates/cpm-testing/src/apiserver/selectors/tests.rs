//! Unit tests for label and field selector parsing and matching.

use serde_json::json;

use super::*;

fn obj(labels: &serde_json::Value) -> Value {
    json!({"metadata": {"name": "a", "namespace": "ns1", "labels": labels}, "type": "Opaque", "spec": {"nodeName": "n1"}})
}

/// `check(selector, labels, expected)`: parse must succeed and matching give `expected`.
fn check(selector: &str, labels: &serde_json::Value, expected: bool) {
    let sel = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
    assert_eq!(
        sel.matches(&obj(labels)),
        expected,
        "selector {selector:?} on {labels}"
    );
}

#[test]
fn label_selector_operators() {
    check("", &json!({}), true);
    check("app=web", &json!({"app": "web"}), true);
    check("app==web", &json!({"app": "web"}), true);
    check("app=web", &json!({"app": "db"}), false);
    check("app!=web", &json!({"app": "db"}), true);
    check("app!=web", &json!({}), true);
    check("app!=web", &json!({"app": "web"}), false);
    check("app in (web, db)", &json!({"app": "db"}), true);
    check("app in (web,db)", &json!({"app": "x"}), false);
    check("app in (web,db)", &json!({}), false);
    check("app notin (web,db)", &json!({"app": "x"}), true);
    check("app notin (web,db)", &json!({}), true);
    check("app notin (web,db)", &json!({"app": "web"}), false);
    check("app", &json!({"app": ""}), true);
    check("app", &json!({}), false);
    check("!app", &json!({}), true);
    check("!app", &json!({"app": "x"}), false);
    check(
        "app in (a,b),tier=fe,!legacy",
        &json!({"app": "a", "tier": "fe"}),
        true,
    );
    check(
        "app in (a,b),tier=fe,!legacy",
        &json!({"app": "a", "tier": "fe", "legacy": "1"}),
        false,
    );
    check(
        "example.com/role=master",
        &json!({"example.com/role": "master"}),
        true,
    );
}

#[test]
fn label_selector_rejects_garbage() {
    for bad in [
        "app in (a",
        "a=b=c",
        "app between (1,2)",
        ",",
        "app=va lue",
        "app)",
    ] {
        assert!(
            LabelSelector::parse(bad).is_err(),
            "{bad:?} should not parse"
        );
    }
}

#[test]
fn field_selectors() {
    let o = obj(&json!({}));
    let check = |sel: &str, kind: &str, expected: bool| {
        let f = FieldSelector::parse(sel, kind).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
        assert_eq!(f.matches(&o), expected, "{sel:?}");
    };
    check("metadata.name=a", "ConfigMap", true);
    check("metadata.name==b", "ConfigMap", false);
    check("metadata.name!=b", "ConfigMap", true);
    check("metadata.namespace=ns1,metadata.name=a", "ConfigMap", true);
    check("metadata.namespace=ns2", "ConfigMap", false);
    check("type=Opaque", "Secret", true);
    check("spec.nodeName=n1", "Pod", true);
    assert_eq!(
        FieldSelector::parse("spec.nodeName=n1", "ConfigMap"),
        Err("field label not supported: spec.nodeName".to_string())
    );
}
