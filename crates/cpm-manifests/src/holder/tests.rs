//! Tests of the holder pod and of reading its state.

use super::*;

fn spec(node: &str) -> HolderSpec {
    HolderSpec {
        namespace: "cpm-system".into(),
        node: node.into(),
        holder_image: "cpm/cpm-holder:0.1.0".into(),
        images: images("registry.k8s.io", "1.33".parse().unwrap(), None).unwrap(),
    }
}

fn with_status(pod: &Pod, status: serde_json::Value) -> Pod {
    let mut p = pod.clone();
    p.status = Some(serde_json::from_value(status).unwrap());
    p
}

fn running(name: &str, ready: bool) -> serde_json::Value {
    serde_json::json!({"name": name, "image": "x", "imageID": "", "ready": ready, "restartCount": 0,
        "state": {"running": {}}})
}

#[test]
fn images_are_the_minor_s_components_and_an_etcd_that_never_goes_back() {
    let v = images("reg.example/k8s", "1.33".parse().unwrap(), None).unwrap();
    assert_eq!(
        v,
        [
            "reg.example/k8s/kube-apiserver:v1.33.5",
            "reg.example/k8s/kube-controller-manager:v1.33.5",
            "reg.example/k8s/kube-scheduler:v1.33.5",
            "reg.example/k8s/etcd:3.5.21-0",
        ]
    );
    let down = images("r", "1.33".parse().unwrap(), Some("3.6.4-0")).unwrap();
    assert_eq!(down[3], "r/etcd:3.6.4-0");
    assert_eq!(images("r", "1.30".parse().unwrap(), None), None);
}

#[test]
fn the_pod_is_bound_to_its_node_hardened_and_named_by_its_images() {
    let s = spec("master-1");
    let pod = holder_pod(&s);
    let p = pod.spec.as_ref().unwrap();
    assert_eq!(p.node_name.as_deref(), Some("master-1"));
    assert_eq!(p.containers.len(), 4);
    let names: std::collections::BTreeSet<&str> =
        p.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 4, "container names are unique: {names:?}");
    assert!(names.contains("0-kube-apiserver-v1-33-5"), "{names:?}");
    for c in p
        .containers
        .iter()
        .chain(p.init_containers.iter().flatten())
    {
        assert!(c.name.len() <= 63);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }
    assert_eq!(
        p.containers[0].command.as_deref().unwrap(),
        ["/holder/cpm-holder", "hold"]
    );
    // Another image list is another pod; the same list, the same pod.
    let mut other = s.clone();
    other.images.pop();
    assert_ne!(pod_name(&s), pod_name(&other));
    assert_eq!(pod_name(&s), pod_name(&spec("master-1")));
    assert!(pod_name(&s).starts_with("cpm-images-") && pod_name(&s).ends_with("-master-1"));
    let long = spec(&"n".repeat(253));
    assert!(pod_name(&long).len() <= 253);
}

#[test]
fn ready_only_when_every_holder_container_runs_ready() {
    let pod = holder_pod(&spec("m"));
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert!(
        matches!(state(&pod), HolderState::Waiting(w) if w.contains("4 of 4 images not running"))
    );
    let mut statuses: Vec<_> = names.iter().map(|n| running(n, true)).collect();
    let ready = with_status(
        &pod,
        serde_json::json!({"phase": "Running", "containerStatuses": statuses}),
    );
    assert_eq!(state(&ready), HolderState::Ready);
    statuses[2] = running(&names[2], false);
    let one_short = with_status(
        &pod,
        serde_json::json!({"phase": "Running", "containerStatuses": statuses}),
    );
    assert!(
        matches!(state(&one_short), HolderState::Waiting(w) if w.contains("1 of 4 images not running")),
        "{:?}",
        state(&one_short)
    );
}

#[test]
fn an_image_that_cannot_be_pulled_is_named_with_the_kubelet_s_reason() {
    let pod = holder_pod(&spec("m"));
    let name = pod.spec.as_ref().unwrap().containers[3].name.clone();
    let failing = with_status(
        &pod,
        serde_json::json!({"phase": "Pending", "containerStatuses": [
            {"name": name, "image": "registry.k8s.io/etcd:3.5.21-0", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}
        ]}),
    );
    assert_eq!(
        state(&failing),
        HolderState::Waiting(
            "image registry.k8s.io/etcd:3.5.21-0 is not present on the node: ImagePullBackOff: Back-off pulling image".into()
        )
    );
    // Still creating is not a failure worth naming.
    let creating = with_status(
        &pod,
        serde_json::json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "install-holder", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "PodInitializing"}}}
        ]}),
    );
    assert!(matches!(state(&creating), HolderState::Waiting(w) if w.contains("not running yet")));
}
