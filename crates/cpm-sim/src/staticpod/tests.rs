//! Manifest parsing, hashing and change detection.

use super::*;

const ETCD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
  annotations: {cpm.dev/checksum: abc}
  labels: {component: etcd}
spec:
  hostNetwork: true
  containers: [{name: etcd, image: 'registry.k8s.io/etcd:3.5.21-0', command: [etcd, --name=m1]}]
";

#[test]
fn a_manifest_becomes_a_bound_pod_with_a_content_hash() {
    let p = parse(
        Path::new("/r/etc/kubernetes/manifests/etcd.yaml"),
        ETCD,
        "m1",
    )
    .expect("a pod");
    assert_eq!(p.key(), "kube-system/etcd-m1");
    assert_eq!(
        p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("m1")
    );
    let a = p.pod.metadata.annotations.clone().expect("annotations");
    assert_eq!(a[HASH], p.hash);
    assert_eq!(a[SOURCE], "file");
    assert_eq!(a["cpm.dev/checksum"], "abc");
    assert_eq!(p.hash.len(), 32);
    // The same content gives the same hash; any change another.
    let again = parse(
        Path::new("/r/etc/kubernetes/manifests/etcd.yaml"),
        ETCD,
        "m1",
    )
    .expect("a pod");
    assert_eq!(again.hash, p.hash);
    let changed = parse(
        Path::new("/r/etc/kubernetes/manifests/etcd.yaml"),
        &ETCD.replace("abc", "abd"),
        "m1",
    )
    .expect("a pod");
    assert_ne!(changed.hash, p.hash);
    let other_node = parse(
        Path::new("/r/etc/kubernetes/manifests/etcd.yaml"),
        ETCD,
        "m2",
    )
    .expect("a pod");
    assert_ne!(other_node.hash, p.hash);
    // Reformatting that keeps the object keeps the hash.
    let json =
        serde_json::to_string(&serde_saphyr::from_str::<serde_json::Value>(ETCD).expect("yaml"))
            .expect("json");
    assert_eq!(
        parse(
            Path::new("/r/etc/kubernetes/manifests/etcd.yaml"),
            &json,
            "m1"
        )
        .expect("a pod")
        .hash,
        p.hash
    );
}

#[test]
fn bad_manifests_are_reported_not_run() {
    assert!(
        parse(
            Path::new("x.yaml"),
            "kind: Pod\nmetadata: {}\nspec: {containers: []}",
            "m1"
        )
        .is_err()
    );
    assert!(
        parse(
            Path::new("x.yaml"),
            "kind: ConfigMap\nmetadata: {name: x}",
            "m1"
        )
        .is_err()
    );
    assert!(parse(Path::new("x.yaml"), ": not yaml [", "m1").is_err());
}

#[test]
fn changes_start_restart_and_stop() {
    let a = parse(Path::new("a.yaml"), ETCD, "m1").expect("a pod");
    let b = parse(
        Path::new("b.yaml"),
        &ETCD.replace("name: etcd\n", "name: other\n"),
        "m1",
    )
    .expect("a pod");
    let running = BTreeMap::from([
        (a.key(), "old".to_string()),
        ("kube-system/gone-m1".to_string(), "x".to_string()),
    ]);
    assert_eq!(
        changes(&running, &[a.clone(), b.clone()]),
        Changes {
            start: vec![b.key()],
            restart: vec![a.key()],
            stop: vec!["kube-system/gone-m1".into()],
        }
    );
    let steady = BTreeMap::from([(a.key(), a.hash.clone())]);
    assert_eq!(
        changes(&steady, std::slice::from_ref(&a)),
        Changes::default()
    );
}

#[test]
fn the_mirror_pod_carries_the_manifest_annotations_and_the_mirror_hash() {
    let p = parse(Path::new("etcd.yaml"), ETCD, "m1").expect("a pod");
    let m = mirror_pod(&p, "m1", "node-uid").expect("a mirror");
    let a = m.metadata.annotations.clone().expect("annotations");
    assert_eq!(a[MIRROR], p.hash);
    assert_eq!(a[HASH], p.hash);
    assert_eq!(a["cpm.dev/checksum"], "abc");
    assert!(is_mirror(&m));
    assert!(m.metadata.uid.is_none());
    assert_eq!(
        m.metadata.labels.clone().expect("labels")["component"],
        "etcd"
    );
    assert_eq!(m.metadata.owner_references.expect("owner")[0].kind, "Node");
}

#[test]
fn hidden_files_are_not_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    cpm_core::apply::write_atomic(
        &dir.path().join("etcd.yaml"),
        ETCD.as_bytes(),
        0o600,
        None,
        None,
    )
    .expect("write");
    cpm_core::apply::write_atomic(
        &dir.path().join(".etcd.yaml.swp"),
        b"junk",
        0o600,
        None,
        None,
    )
    .expect("write");
    cpm_core::apply::write_atomic(
        &dir.path().join("broken.yaml"),
        b"kind: Pod",
        0o600,
        None,
        None,
    )
    .expect("write");
    let (pods, errors) = read_dir(dir.path(), "m1");
    assert_eq!(pods.len(), 1);
    assert_eq!(errors.len(), 1, "{errors:?}");
}
