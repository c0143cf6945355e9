//! Unit tests for server-side apply field ownership.

use serde_json::json;

use super::*;

fn p(s: &str) -> FieldPath {
    s.split('.').map(str::to_string).collect()
}

#[test]
fn apply_creates_merges_and_removes_own_fields() {
    let empty = json!({});
    let (obj, m) = apply(
        &empty,
        &Managers::default(),
        &json!({"data": {"a": "1", "b": "2"}}),
        "x",
        false,
    )
    .expect("no conflict");
    assert_eq!(obj, json!({"data": {"a": "1", "b": "2"}}));
    let (obj, m) = apply(&obj, &m, &json!({"data": {"a": "1"}}), "x", false).expect("no conflict");
    assert_eq!(
        obj,
        json!({"data": {"a": "1"}}),
        "b was x's and x stopped applying it"
    );
    let (obj, m) = apply(&obj, &m, &json!({"data": {"c": "3"}}), "y", false).expect("no conflict");
    assert_eq!(obj, json!({"data": {"a": "1", "c": "3"}}));
    assert_eq!(
        m.0.keys().cloned().collect::<Vec<_>>(),
        vec!["x".to_string(), "y".to_string()]
    );
}

#[test]
fn apply_conflicts_unless_forced_or_equal() {
    let (obj, m) = apply(
        &json!({}),
        &Managers::default(),
        &json!({"spec": {"n": 1}}),
        "x",
        false,
    )
    .expect("no conflict");
    let err = apply(&obj, &m, &json!({"spec": {"n": 2}}), "y", false).expect_err("conflict");
    assert_eq!(
        err,
        vec![Conflict {
            manager: "x".into(),
            path: p("spec.n")
        }]
    );
    // Equal value: co-owned, no conflict.
    let (_, shared) = apply(&obj, &m, &json!({"spec": {"n": 1}}), "y", false).expect("no conflict");
    assert_eq!(shared.0.len(), 2);
    // Forced: y takes the field over.
    let (obj2, m2) = apply(&obj, &m, &json!({"spec": {"n": 2}}), "y", true).expect("forced");
    assert_eq!(obj2, json!({"spec": {"n": 2}}));
    assert_eq!(m2.0.get("x"), None);
}

#[test]
fn updates_take_ownership_of_changed_fields() {
    let (obj, mut m) = apply(
        &json!({}),
        &Managers::default(),
        &json!({"spec": {"n": 1, "k": "v"}}),
        "x",
        false,
    )
    .expect("ok");
    let new = json!({"spec": {"n": 5, "k": "v"}});
    record_update(&mut m, &obj, &new, "editor");
    assert_eq!(
        m.0.get("editor").map(|s| s.contains(&p("spec.n"))),
        Some(true)
    );
    let err =
        apply(&new, &m, &json!({"spec": {"n": 1, "k": "v"}}), "x", false).expect_err("conflict");
    assert_eq!(
        err,
        vec![Conflict {
            manager: "editor".into(),
            path: p("spec.n")
        }]
    );
    assert_eq!(render(&p("spec.n")), ".spec.n");
}
