//! Unit tests of field validation.

use serde_json::json;

use super::super::resources::{builtins, from_crd};
use super::*;

fn builtin(kind: &str) -> ResourceDef {
    builtins().into_iter().find(|d| d.kind == kind).unwrap()
}

fn widget() -> ResourceDef {
    from_crd(&json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "parts": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}},
                    }},
                },
            }}}],
        },
    }))
    .unwrap()
}

/// `check(def, object, unknown paths)` under Warn: the paths are warned about and removed.
fn check(def: &ResourceDef, mut obj: Value, unknown: &[&str]) {
    let before = obj.clone();
    let warnings = super::check(def, "v1", &mut obj, Directive::Warn).unwrap();
    let want: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    assert_eq!(warnings, want, "{before}");
    assert!(unknown_fields(def, "v1", &obj).unwrap().is_empty(), "{obj}");
}

#[test]
fn unknown_fields_of_built_in_kinds() {
    let cm = builtin("ConfigMap");
    check(
        &cm,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v"}}),
        &[],
    );
    check(
        &cm,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "colour": 1}, "colour": "red", "data": null}),
        &["colour", "metadata.colour"],
    );
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [
            {"name": "c", "image": "i"},
            {"name": "d", "image": "i", "imagePullPolicyy": "Always"},
        ]}}},
    });
    let d = builtin("Deployment");
    let mut strict = deployment.clone();
    let err = super::check(&d, "v1", &mut strict, Directive::Strict).unwrap_err();
    assert_eq!((err.code, err.reason), (400, "BadRequest"));
    assert_eq!(
        err.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.template.spec.containers[1].imagePullPolicyy\""
    );
    check(
        &d,
        deployment,
        &["spec.template.spec.containers[1].imagePullPolicyy"],
    );
    // Ignore drops them silently.
    let mut ignored =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "x": 1});
    let w = super::check(&cm, "v1", &mut ignored, Directive::Ignore).unwrap();
    assert!(w.is_empty() && ignored.get("x").is_none());
}

#[test]
fn wrong_types_are_refused_and_missing_fields_are_not_decoding_errors() {
    let d = builtin("Deployment");
    let mut wrong = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": "three", "selector": {}, "template": {}}});
    let err = super::check(&d, "v1", &mut wrong, Directive::Warn).unwrap_err();
    assert_eq!(err.code, 400);
    assert!(
        err.message
            .starts_with("Deployment in version \"v1\" cannot be handled as a Deployment: ")
    );
    // Missing required fields are validation's business (422 on a real server), not decoding's.
    let p = builtin("Pod");
    let mut incomplete = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"image": "i"}]}});
    assert!(
        super::check(&p, "v1", &mut incomplete, Directive::Strict)
            .unwrap()
            .is_empty()
    );
    // Another kind is the store's to refuse.
    let mut other = json!({"apiVersion": "v1", "kind": "Secret", "x": 1});
    assert!(
        super::check(&builtin("ConfigMap"), "v1", &mut other, Directive::Strict)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unknown_fields_of_custom_resources_follow_the_schema() {
    let w = widget();
    let obj = |spec: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "anything": 1}, "spec": spec});
    check(
        &w,
        obj(json!({"size": 1, "labels": {"a": "b"}, "parts": [{"name": "x"}]})),
        &[],
    );
    check(
        &w,
        obj(json!({"size": 1, "colour": "red", "parts": [{"name": "x", "weight": 2}]})),
        &["spec.colour", "spec.parts[0].weight"],
    );
    check(&w, obj(json!({"free": {"anything": {"at": ["all"]}}})), &[]);
    check(
        &w,
        obj(
            json!({"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}, "status": {}}}),
        ),
        &["spec.template.spec.x", "spec.template.status"],
    );
    let mut root = obj(json!({}));
    root["status"] = json!({"ready": true});
    check(&w, root, &["status"]);
}

#[test]
fn the_directive_is_read_from_field_validation() {
    assert_eq!(Directive::parse(None).unwrap(), Directive::Warn);
    assert_eq!(Directive::parse(Some("Strict")).unwrap(), Directive::Strict);
    assert_eq!(Directive::parse(Some("Ignore")).unwrap(), Directive::Ignore);
    assert_eq!(Directive::parse(Some("strict")).unwrap_err().code, 400);
}
