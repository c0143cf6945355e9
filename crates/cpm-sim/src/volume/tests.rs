//! hostPath types, payloads and the atomic layout.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn hp(path: &str, type_: &str) -> HostPathVolumeSource {
    HostPathVolumeSource {
        path: path.into(),
        type_: Some(type_.into()).filter(|t: &String| !t.is_empty()),
    }
}

#[test]
fn host_path_types_check_and_create_under_the_master_root() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let made = host_path(r, &hp("/etc/kubernetes/pki", "DirectoryOrCreate")).expect("created");
    assert_eq!(made, r.join("etc/kubernetes/pki"));
    assert_eq!(
        std::fs::metadata(&made).expect("dir").permissions().mode() & 0o777,
        0o755
    );
    assert!(host_path(r, &hp("/etc/kubernetes", "Directory")).is_ok());
    let err = host_path(r, &hp("/var/lib", "Directory")).expect_err("missing");
    assert_eq!(
        err,
        "hostPath type check failed: /var/lib is not a directory"
    );
    let err = host_path(r, &hp("/etc/kubernetes/pki/ca.crt", "File")).expect_err("missing");
    assert_eq!(
        err,
        "hostPath type check failed: /etc/kubernetes/pki/ca.crt is not a file"
    );
    let file = host_path(r, &hp("/etc/kubernetes/pki/ca.crt", "FileOrCreate")).expect("created");
    assert_eq!(
        std::fs::metadata(&file).expect("file").permissions().mode() & 0o777,
        0o644
    );
    assert!(host_path(r, &hp("/etc/kubernetes/pki/ca.crt", "File")).is_ok());
    assert!(host_path(r, &hp("/etc/kubernetes/pki/ca.crt", "Directory")).is_err());
    assert!(host_path(r, &hp("/missing/parent/file", "FileOrCreate")).is_err());
    assert!(host_path(r, &hp("/etc/kubernetes/pki", "Socket")).is_err());
    assert_eq!(
        host_path(r, &hp("/anything", "")).expect("unchecked"),
        r.join("anything")
    );
}

fn volume(yaml: &str) -> Volume {
    serde_saphyr::from_str(yaml).expect("a volume")
}

fn objects() -> Objects {
    Objects {
        secrets: BTreeMap::from([(
            "cpm-pki".into(),
            BTreeMap::from([
                ("ca.crt".into(), b"CA".to_vec()),
                ("ca.key".into(), b"KEY".to_vec()),
            ]),
        )]),
        config_maps: BTreeMap::from([
            (
                "kube-root-ca.crt".into(),
                BTreeMap::from([("ca.crt".into(), b"ROOT".to_vec())]),
            ),
            (
                "cpm-agent-kubeconfig".into(),
                BTreeMap::from([("kubeconfig".into(), b"KC".to_vec())]),
            ),
        ]),
    }
}

fn check(yaml: &str, expected: Result<&[(&str, &str, u32)], &str>) {
    let fields = PodFields {
        name: "p".into(),
        namespace: "cpm-system".into(),
        ..PodFields::default()
    };
    let mut issued = Vec::new();
    let mut token = |aud: Option<&str>, exp: i64| {
        issued.push((aud.map(str::to_string), exp));
        Ok::<_, String>("TOKEN".to_string())
    };
    let got = payload(&volume(yaml), &objects(), &fields, &mut token).expect("a payload volume");
    match (got, expected) {
        (Ok(p), Ok(want)) => {
            let want: Payload = want
                .iter()
                .map(|(k, v, m)| (k.to_string(), (v.as_bytes().to_vec(), *m)))
                .collect();
            assert_eq!(p, want, "{yaml}");
        }
        (Err(e), Err(want)) => assert!(e.contains(want), "{e}"),
        (got, want) => panic!("{yaml}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn secret_and_config_map_volumes_take_items_and_modes() {
    check(
        "{name: pki, secret: {secretName: cpm-pki, defaultMode: 256}}",
        Ok(&[("ca.crt", "CA", 0o400), ("ca.key", "KEY", 0o400)]),
    );
    check(
        "{name: pki, secret: {secretName: cpm-pki, items: [{key: ca.crt, path: sub/ca.pem, mode: 0o444}]}}",
        Ok(&[("sub/ca.pem", "CA", 0o444)]),
    );
    check(
        "{name: x, secret: {secretName: gone}}",
        Err("secret \"gone\" not found"),
    );
    check(
        "{name: x, secret: {secretName: gone, optional: true}}",
        Ok(&[]),
    );
    check(
        "{name: x, configMap: {name: kube-root-ca.crt, items: [{key: nope, path: x}]}}",
        Err("key nope of configmap kube-root-ca.crt"),
    );
}

#[test]
fn the_agents_projected_api_access_volume_has_token_ca_and_kubeconfig() {
    check(
        "name: kube-api-access
projected:
  defaultMode: 256
  sources:
  - serviceAccountToken: {expirationSeconds: 3607, path: token}
  - configMap: {items: [{key: ca.crt, path: ca.crt}], name: kube-root-ca.crt}
  - configMap: {items: [{key: kubeconfig, path: kubeconfig}], name: cpm-agent-kubeconfig}
  - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
",
        Ok(&[
            ("ca.crt", "ROOT", 0o400),
            ("kubeconfig", "KC", 0o400),
            ("namespace", "cpm-system", 0o400),
            ("token", "TOKEN", 0o400),
        ]),
    );
    assert_eq!(
        referenced(&volume(
            "{name: v, projected: {sources: [{secret: {name: s}}, {configMap: {name: c}}]}}"
        )),
        (vec!["s".to_string()], vec!["c".to_string()])
    );
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match std::fs::read_link(e.path()) {
                Ok(t) => format!("{name} -> {}", t.display()),
                Err(_) if name.starts_with("..") => "..<timestamp>/".to_string(),
                Err(_) => name,
            }
        })
        .collect();
    out.sort();
    out
}

#[test]
fn payloads_are_written_atomically_through_a_data_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = dir.path().join("vol");
    let first: Payload = BTreeMap::from([
        ("config.yaml".to_string(), (b"a".to_vec(), 0o400)),
        ("sub/x".to_string(), (b"x".to_vec(), 0o644)),
    ]);
    assert!(write_payload(&v, &first, None).expect("write"));
    let data = std::fs::read_link(v.join("..data")).expect("..data");
    assert_eq!(
        tree(&v),
        [
            "..<timestamp>/",
            &format!("..data -> {}", data.display()),
            "config.yaml -> ..data/config.yaml",
            "sub -> ..data/sub"
        ]
    );
    assert_eq!(std::fs::read(v.join("config.yaml")).expect("read"), b"a");
    let mode = std::fs::metadata(v.join("config.yaml"))
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400);
    // The same payload writes nothing.
    assert!(!write_payload(&v, &first, None).expect("write"));
    assert_eq!(std::fs::read_link(v.join("..data")).expect("..data"), data);
    // A change swaps the link, drops names no longer there and the old directory.
    let second: Payload = BTreeMap::from([("config.yaml".to_string(), (b"b".to_vec(), 0o400))]);
    assert!(write_payload(&v, &second, None).expect("write"));
    let data2 = std::fs::read_link(v.join("..data")).expect("..data");
    assert_ne!(data, data2);
    assert_eq!(
        tree(&v),
        [
            "..<timestamp>/",
            &format!("..data -> {}", data2.display()),
            "config.yaml -> ..data/config.yaml"
        ]
    );
    assert_eq!(std::fs::read(v.join("config.yaml")).expect("read"), b"b");
    // fsGroup makes the files group-readable and owned by the group.
    assert!(write_payload(&v, &first, Some(2000)).expect("write"));
    let meta = std::fs::metadata(v.join("config.yaml")).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o777, 0o440);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 2000);
}
