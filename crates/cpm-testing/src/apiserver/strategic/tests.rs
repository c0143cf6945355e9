//! Unit tests of strategic merge patches, with patches as kubectl computes them.

use serde_json::json;

use super::*;

fn deployment(containers: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a", "b"]},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {"spec": {"containers": containers}},
        },
    })
}

/// `check(original, patch, expected)` on a Deployment.
fn check(original: &Value, patch: &Value, expected: &Value) {
    let got = apply(original, patch, "apps/v1", "Deployment").unwrap();
    assert_eq!(&got, expected, "patch {patch}");
}

#[test]
fn lists_with_a_merge_key_merge_by_it() {
    let before = deployment(&json!([
        {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        {"name": "sidecar", "image": "envoy", "args": ["-v", "2"]},
    ]));
    // kubectl apply changing one image, deleting an env var, replacing args (no merge strategy)
    // and adding a container, with the order it wants.
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "log"}, {"name": "web"}, {"name": "sidecar"}],
        "containers": [
            {"name": "web", "image": "nginx:2", "env": [{"name": "A", "$patch": "delete"}]},
            {"name": "sidecar", "args": ["-q"]},
            {"name": "log", "image": "fluent", "$setElementOrder/env": []},
        ],
    }}}});
    check(
        &before,
        &patch,
        &deployment(&json!([
            {"name": "log", "image": "fluent"},
            {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "envoy", "args": ["-q"]},
        ])),
    );
}

#[test]
fn maps_directives_and_sets() {
    let before = deployment(&json!([{"name": "web", "image": "nginx"}]));
    let mut expected = before.clone();
    expected["metadata"]["labels"] = json!({"app": "web", "new": "1"});
    expected["metadata"]["finalizers"] = json!(["b", "c"]);
    expected["spec"]["strategy"] = json!({"type": "Recreate"});
    expected["spec"]["replicas"] = json!(5);
    check(
        &before,
        &json!({
            "metadata": {
                "labels": {"tier": null, "new": "1"},
                "finalizers": ["c"],
                "$deleteFromPrimitiveList/finalizers": ["a"],
            },
            "spec": {"replicas": 5, "strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
        }),
        &expected,
    );
    // `$patch: replace` on a map; `$patch: delete` removes it.
    let mut replaced = before.clone();
    replaced["metadata"]["labels"] = json!({"only": "this"});
    check(
        &before,
        &json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
        &replaced,
    );
    let mut deleted = before.clone();
    deleted["spec"].as_object_mut().unwrap().remove("strategy");
    check(
        &before,
        &json!({"spec": {"strategy": {"$patch": "delete"}}}),
        &deleted,
    );
}

#[test]
fn kinds_without_a_schema_patch_like_merge_patches() {
    let before = json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"parts": [1, 2], "a": {"b": 1}}});
    let got = apply(
        &before,
        &json!({"spec": {"parts": [3], "a": {"c": 2}}}),
        "example.com/v1",
        "Widget",
    )
    .unwrap();
    assert_eq!(got["spec"], json!({"parts": [3], "a": {"b": 1, "c": 2}}));
}

#[test]
fn malformed_patches_are_400() {
    let before = deployment(&json!([{"name": "web"}]));
    let bad = |patch: Value| {
        let err = apply(&before, &patch, "apps/v1", "Deployment").unwrap_err();
        assert_eq!(err.code, 400, "{patch}");
    };
    bad(json!([1]));
    bad(json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}));
    bad(json!({"spec": {"template": {"spec": {"containers": ["web"]}}}}));
    bad(json!({"metadata": {"$patch": "explode"}}));
    bad(json!({"$patch": "delete"}));
}
