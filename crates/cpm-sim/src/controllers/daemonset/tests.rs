//! Scheduling decisions and rolling updates.

use super::*;

fn node(name: &str, master: bool, taints: &str) -> Node {
    let labels = if master {
        "{node-role.kubernetes.io/control-plane: ''}"
    } else {
        "{}"
    };
    serde_saphyr::from_str(&format!(
        "metadata: {{name: {name}, labels: {labels}}}\nspec: {{taints: {taints}}}"
    ))
    .expect("a node")
}

fn agents_spec() -> PodSpec {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../manifests/cpm-agents.yaml"
    ))
    .expect("manifest");
    let doc = text
        .split("\n---\n")
        .find(|d| d.contains("kind: DaemonSet"))
        .expect("the DaemonSet");
    let ds: DaemonSet = serde_saphyr::from_str(doc).expect("a DaemonSet");
    ds.spec.and_then(|s| s.template.spec).expect("a template")
}

const MASTER_TAINT: &str = "[{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]";

#[test]
fn the_agents_run_on_tainted_masters_only() {
    let spec = agents_spec();
    assert!(fits(&spec, &node("m1", true, MASTER_TAINT)));
    assert!(fits(
        &spec,
        &node("m1", true, "[{key: other, value: x, effect: NoExecute}]")
    ));
    assert!(!fits(&spec, &node("w1", false, "[]")));
    let plain: PodSpec = serde_saphyr::from_str("containers: [{name: c}]").expect("spec");
    assert!(fits(&plain, &node("w1", false, "[]")));
    assert!(!fits(&plain, &node("m1", true, MASTER_TAINT)));
    assert!(fits(
        &plain,
        &node("m1", true, "[{key: soft, effect: PreferNoSchedule}]")
    ));
}

#[test]
fn required_node_affinity_by_field_and_label() {
    let by_name: PodSpec = serde_saphyr::from_str(
        "containers: [{name: c}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchFields: [{key: metadata.name, operator: In, values: [m2]}]}]}}}",
    )
    .expect("spec");
    assert!(!fits(&by_name, &node("m1", false, "[]")));
    assert!(fits(&by_name, &node("m2", false, "[]")));
    let by_label: PodSpec = serde_saphyr::from_str(
        "containers: [{name: c}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]}, {matchExpressions: [{key: x, operator: Exists}]}]}}}",
    )
    .expect("spec");
    assert!(fits(&by_label, &node("w", false, "[]")));
    assert!(!fits(&by_label, &node("m", true, "[]")));
}

fn ds(image: &str) -> DaemonSet {
    serde_saphyr::from_str(&format!(
        "metadata: {{name: d, namespace: ns, uid: u1, generation: 1}}
spec:
  selector: {{matchLabels: {{a: b}}}}
  template: {{metadata: {{labels: {{a: b}}}}, spec: {{containers: [{{name: c, image: {image}}}]}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1}}}}"
    ))
    .expect("a DaemonSet")
}

fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Pod {
    let status = if ready { "True" } else { "False" };
    serde_saphyr::from_str(&format!(
        "metadata: {{name: {name}, labels: {{controller-revision-hash: '{hash}'}}}}
spec: {{nodeName: {node}, containers: [{{name: c}}]}}
status: {{phase: Running, conditions: [{{type: Ready, status: '{status}'}}]}}"
    ))
    .expect("a pod")
}

fn check(ds: &DaemonSet, pods: &[Pod], expected: &[Action]) {
    let nodes = [
        node("m1", false, "[]"),
        node("m2", false, "[]"),
        node("m3", false, "[]"),
    ];
    assert_eq!(plan(ds, &nodes, pods), expected);
}

#[test]
fn missing_pods_are_created_and_extra_ones_deleted() {
    let d = ds("x:1");
    let h = template_hash(&d);
    check(
        &d,
        &[],
        &[
            Action::Create("m1".into()),
            Action::Create("m2".into()),
            Action::Create("m3".into()),
        ],
    );
    check(
        &d,
        &[
            pod("a", "m1", &h, true),
            pod("b", "m1", &h, true),
            pod("c", "m2", &h, true),
            pod("z", "gone", &h, true),
        ],
        &[
            Action::Delete("z".into()),
            Action::Delete("b".into()),
            Action::Create("m3".into()),
        ],
    );
}

#[test]
fn a_template_change_rolls_one_node_at_a_time() {
    let old = ds("x:1");
    let new = ds("x:2");
    let (ho, hn) = (template_hash(&old), template_hash(&new));
    assert_ne!(ho, hn);
    // All old and ready: one is replaced.
    check(
        &new,
        &[
            pod("a", "m1", &ho, true),
            pod("b", "m2", &ho, true),
            pod("c", "m3", &ho, true),
        ],
        &[Action::Delete("a".into())],
    );
    // One node is being replaced (no pod): nothing else moves.
    check(
        &new,
        &[pod("b", "m2", &ho, true), pod("c", "m3", &ho, true)],
        &[Action::Create("m1".into())],
    );
    // The new pod is not ready yet: wait.
    check(
        &new,
        &[
            pod("a2", "m1", &hn, false),
            pod("b", "m2", &ho, true),
            pod("c", "m3", &ho, true),
        ],
        &[],
    );
    // It is ready: the next one goes.
    check(
        &new,
        &[
            pod("a2", "m1", &hn, true),
            pod("b", "m2", &ho, true),
            pod("c", "m3", &ho, true),
        ],
        &[Action::Delete("b".into())],
    );
    // Outdated pods that are not ready are replaced without waiting.
    check(
        &new,
        &[
            pod("a2", "m1", &hn, false),
            pod("b", "m2", &ho, false),
            pod("c", "m3", &ho, true),
        ],
        &[Action::Delete("b".into())],
    );
    // OnDelete never replaces by itself.
    let mut on_delete = new.clone();
    if let Some(s) = on_delete.spec.as_mut() {
        s.update_strategy = serde_saphyr::from_str("{type: OnDelete}").ok();
    }
    check(
        &on_delete,
        &[
            pod("a", "m1", &ho, true),
            pod("b", "m2", &ho, true),
            pod("c", "m3", &ho, true),
        ],
        &[],
    );
}

#[test]
fn new_pods_are_bound_owned_and_labelled() {
    let d = ds("x:1");
    let p = new_pod(&d, "m2").expect("a pod");
    assert_eq!(
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("m2")
    );
    let labels = p.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(HASH_LABEL), Some(&template_hash(&d)));
    assert_eq!(labels.get("a").map(String::as_str), Some("b"));
    let owner = &p.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("DaemonSet", "u1", Some(true))
    );
    assert!(
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("d-") && n.len() == 7)
    );
}
